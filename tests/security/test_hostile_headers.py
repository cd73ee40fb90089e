"""Odd headers, query parameters and keys get a 4xx in our JSON error shape, never a 500: what
an HTTP server passes through (bytes that are not UTF-8, a NUL) reaches the authentication
classes, the cursor decoder and the admin's filters before any validation of ours."""

import base64
import json

import pytest
from django.test import Client

from accounts.models import User

from .conftest import Person
from .test_hostile_bodies import _wsgi_post

pytestmark = pytest.mark.django_db

# The test client puts a header in the environ as WSGI does: bytes decoded as latin-1.
ODD_TOKENS = ["caf\xe9", "a\x00b", "\x7f" * 64, "x" * 5000]


@pytest.mark.parametrize("token", ODD_TOKENS, ids=["latin-1", "nul", "del", "long"])
@pytest.mark.parametrize("path", ["/api/packages", "/api/user/keys", "/api/user/credits"])
def test_an_odd_login_token_is_a_401(token: str, path: str) -> None:
    response = Client().get(path, HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_a_login_token_still_works(alice: Person) -> None:
    assert alice.client().get("/api/user/keys").status_code == 200


def test_an_api_key_of_the_right_length_with_an_unpaired_surrogate_is_a_bad_key(
    alice: Person, service_token: str
) -> None:
    # The key's shape is checked before anything is encoded (was a 500 from its checksum).
    odd = alice.raw_key[:8] + "\ud800" + alice.raw_key[9:]
    assert len(odd) == len(alice.raw_key)
    body = json.dumps({"api_key": odd, "request_id": "r1", "format": "openai"}).encode()
    status, content = _wsgi_post("/internal/v1/authorize", body, service_token)
    assert status == 200
    decision = json.loads(content)
    assert (decision["allowed"], decision["status"]) == (False, 401)


@pytest.mark.parametrize(
    "cursor",
    [
        base64.urlsafe_b64encode(b"[" * 3000)
        .decode()
        .rstrip("="),  # nested past the recursion limit
        "A" * 65,
    ],
    ids=["deeply-nested", "too-long"],
)
def test_a_ledger_cursor_we_never_gave_out_is_a_400(alice: Person, cursor: str) -> None:
    response = alice.client().get("/api/user/ledger", {"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"


def test_the_cursors_we_give_out_fit_the_bound(alice: Person) -> None:
    from credits.usage.views import _MAX_CURSOR, _encode_cursor

    assert len(_encode_cursor(2**63 - 1)) <= _MAX_CURSOR


@pytest.fixture
def staff_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser(email="root@example.com", password="pw"))
    return client


def test_the_admins_ledger_filter_with_a_nul_finds_nothing(staff_client: Client) -> None:
    response = staff_client.get("/admin/credits/ledgerentry/", {"user": "a\x00b@example.com"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/admin/knox/authtoken/", "/admin/knox/authtoken/add/"])
def test_staff_cannot_mint_or_list_login_tokens(staff_client: Client, path: str) -> None:
    # knox's own admin would create a token for any user and show it in clear.
    assert staff_client.get(path).status_code == 404
