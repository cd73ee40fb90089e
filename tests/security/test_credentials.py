"""The three kinds of credential never cross over: internal endpoints refuse every user
credential (knox token, session cookie, API key), and the user API refuses service tokens."""

import json

import pytest
from django.test import Client

from .conftest import Person

pytestmark = pytest.mark.django_db

INTERNAL = ["/internal/v1/authorize", "/internal/v1/settle"]
USER_GETS = [
    "/api/user/keys",
    "/api/user/credits",
    "/api/user/ledger",
    "/api/user/referrals",
    "/api/purchases",
]


def _authorize_body(person: Person) -> str:
    return json.dumps(
        {"api_key": person.raw_key, "request_id": "req-1", "model": "m", "format": "openai"}
    )


def _refused(response: object) -> None:
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert response.json()["error"]["code"] == "invalid_service_token"  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", INTERNAL)
def test_internal_endpoints_refuse_a_users_login_token(alice: Person, path: str) -> None:
    for header in (f"Token {alice.token}", f"Bearer {alice.token}"):
        _refused(
            Client().post(
                path,
                _authorize_body(alice),
                content_type="application/json",
                HTTP_AUTHORIZATION=header,
            )
        )


@pytest.mark.parametrize("path", INTERNAL)
def test_internal_endpoints_refuse_a_users_api_key(alice: Person, path: str) -> None:
    body = _authorize_body(alice)
    _refused(
        Client().post(
            path,
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}",
        )
    )
    _refused(
        Client().post(path, body, content_type="application/json", HTTP_X_API_KEY=alice.raw_key)
    )


@pytest.mark.parametrize("path", INTERNAL)
def test_internal_endpoints_refuse_a_logged_in_session(alice: Person, path: str) -> None:
    client = Client()
    client.force_login(alice.user)
    assert client.get("/api/user/keys").status_code == 200  # the session itself works
    _refused(client.post(path, _authorize_body(alice), content_type="application/json"))


@pytest.mark.parametrize("path", INTERNAL)
def test_internal_endpoints_refuse_a_staff_session(alice: Person, path: str) -> None:
    alice.user.is_staff = True
    alice.user.is_superuser = True
    alice.user.save()
    client = Client()
    client.force_login(alice.user)
    _refused(client.post(path, _authorize_body(alice), content_type="application/json"))


def test_the_internal_api_answers_the_service_token(alice: Person, service_token: str) -> None:
    answer = Client().post(
        "/internal/v1/authorize",
        _authorize_body(alice),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {service_token}",
    )
    assert answer.status_code == 200
    assert answer.json()["allowed"] is True


@pytest.mark.parametrize("path", USER_GETS)
def test_user_endpoints_refuse_a_service_token(service_token: str, path: str) -> None:
    for header in (f"Bearer {service_token}", f"Token {service_token}"):
        response = Client(HTTP_AUTHORIZATION=header).get(path)
        assert response.status_code == 401, (path, header)
        assert set(response.json()) == {"error"}
    response = Client(HTTP_X_API_KEY=service_token).get(path)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/user/keys", {"name": "svc"}),
        ("delete", "/api/user/keys/00000000-0000-0000-0000-000000000000", None),
        ("post", "/api/purchases", {"package": "starter"}),
        ("post", "/api/auth/logout", None),
    ],
)
def test_user_writes_refuse_a_service_token(
    service_token: str, method: str, path: str, body: dict[str, str] | None
) -> None:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}")
    response = getattr(client, method)(
        path, json.dumps(body) if body else "", content_type="application/json"
    )
    assert response.status_code == 401


def test_the_credits_endpoint_accepts_the_users_own_api_key_but_not_on_other_endpoints(
    alice: Person,
) -> None:
    assert Client(HTTP_X_API_KEY=alice.raw_key).get("/api/user/credits").status_code == 200
    for path in ("/api/user/keys", "/api/user/ledger", "/api/user/referrals", "/api/purchases"):
        assert Client(HTTP_X_API_KEY=alice.raw_key).get(path).status_code == 401, path
        assert Client(HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}").get(path).status_code == 401, (
            path
        )
