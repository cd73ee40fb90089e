"""One address, one account, for every operation.

Registration, the API login, `authenticate()` (the admin login) and the login throttles all
use `accounts.models.normalize_email` (NFKC, then lower-case) and compare by exact match.
So U+017F (long s) and U+212A (Kelvin sign) are the same account as their ASCII look-alike
everywhere, while U+0131 (dotless i) is another address and another account everywhere.
PostgreSQL's UPPER() (`iexact`) equates dotless i with `i` and long s with `s`, which once let a
look-alike registration lock its original out of login (MultipleObjectsReturned, a 500) and log
in as it.
"""

import importlib
import json
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.test import Client
from rest_framework.response import Response
from rest_framework.test import APIClient

from accounts.models import User
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "Other-Passw0rd-xyz"

# (original, look-alike, whether they are one account)
LOOKALIKES = [
    pytest.param("alice@example.com", "al\u0131ce@example.com", False, id="dotless-i"),
    pytest.param("bob@gmail.com", "bob@gma\u0131l.com", False, id="dotless-i-domain"),
    pytest.param("sam@example.com", "\u017fam@example.com", True, id="long-s"),
    pytest.param("kate@example.com", "\u212aate@example.com", True, id="kelvin-sign"),
]


def _error(response: Response) -> dict[str, Any]:
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}, body
    return body["error"]


def _register(email: str, password: str) -> Response:
    return APIClient().post(
        "/api/auth/register", {"email": email, "password": password}, format="json"
    )


def _login(email: str, password: str, addr: str = "127.0.0.1") -> Response:
    return APIClient(REMOTE_ADDR=addr).post(
        "/api/auth/login", {"email": email, "password": password}, format="json"
    )


def _admin_login(email: str, password: str) -> str | None:
    """The id of the user the admin login form logs in, if any."""
    client = Client()
    client.post("/admin/login/", {"username": email, "password": password})
    return client.session.get("_auth_user_id")


@pytest.mark.parametrize(("original", "lookalike", "same"), LOOKALIKES)
def test_a_lookalike_is_one_account_or_another_for_every_operation(
    original: str, lookalike: str, same: bool
) -> None:
    assert _register(original, PASSWORD).status_code == 201
    response = _register(lookalike, OTHER_PASSWORD)
    if same:
        assert response.status_code == 400
        assert _error(response)["code"] == "email_taken"
    else:
        assert response.status_code == 201
    victim = User.objects.get(email=original)
    User.objects.filter(pk=victim.pk).update(is_staff=True)  # so the admin login applies

    # The original logs in: API, authenticate() and the admin login form.
    for spelling in (original, original.upper()):
        response = _login(spelling, PASSWORD)
        assert response.status_code == 200, response.content
        assert response.json()["user"]["id"] == str(victim.pk)  # type: ignore[attr-defined]
        assert authenticate(None, username=spelling, password=PASSWORD) == victim
    assert _admin_login(original, PASSWORD) == str(victim.pk)

    # Whoever registered the look-alike never gets into the original.
    response = _login(lookalike, OTHER_PASSWORD)
    if same:
        assert response.status_code == 400
        assert authenticate(None, username=lookalike, password=OTHER_PASSWORD) is None
    else:
        assert response.status_code == 200
        assert response.json()["user"]["id"] != str(victim.pk)  # type: ignore[attr-defined]
        other = authenticate(None, username=lookalike, password=OTHER_PASSWORD)
        assert other is not None and other != victim

    # The original's password with the look-alike spelling: the same account if they are one,
    # else nothing, and the API and the admin agree.
    response = _login(lookalike, PASSWORD)
    by_backend = authenticate(None, username=lookalike, password=PASSWORD)
    if same:
        assert response.status_code == 200
        assert response.json()["user"]["id"] == str(victim.pk)  # type: ignore[attr-defined]
        assert by_backend == victim
        assert _admin_login(lookalike, PASSWORD) == str(victim.pk)
    else:
        assert response.status_code == 400
        assert _error(response)["code"] == "invalid_credentials"
        assert by_backend is None
        assert _admin_login(lookalike, PASSWORD) is None


@pytest.mark.parametrize(("original", "lookalike", "same"), LOOKALIKES)
def test_the_login_throttle_counts_a_lookalike_with_its_own_account(
    original: str, lookalike: str, same: bool
) -> None:
    UserFactory.create(email=original)
    # 29 of the 30 a minute per email, each from another client address.
    for n in range(29):
        assert _login(original, "wrong", addr=f"10.0.0.{n}").status_code == 400
    # The 30th, with the look-alike spelling and the original's password.
    response = _login(lookalike, PASSWORD, addr="10.0.1.1")
    if same:
        assert response.status_code == 200  # the same account, counted as such
        assert _login(original, "wrong", addr="10.0.1.2").status_code == 429
        assert _login(lookalike, PASSWORD, addr="10.0.1.3").status_code == 429
    else:
        assert response.status_code == 400  # another account, counted on its own
        assert _login(original, "wrong", addr="10.0.1.2").status_code == 400  # its 30th
        assert _login(original, PASSWORD, addr="10.0.1.3").status_code == 429
        assert _login(lookalike, PASSWORD, addr="10.0.1.4").status_code == 400


def test_a_user_is_stored_with_the_normalized_email() -> None:
    assert UserFactory.create(email=" \u017fAM@Example.COM ").email == "sam@example.com"
    assert User.objects.filter(email="sam@example.com").exists()


def test_a_lone_surrogate_in_the_login_email_is_a_400_and_is_counted() -> None:
    body = json.dumps({"email": "\ud800", "password": "x"})
    statuses = []
    for n in range(31):
        response = Client(raise_request_exception=False, REMOTE_ADDR=f"10.0.0.{n}").post(
            "/api/auth/login", body, content_type="application/json"
        )
        statuses.append(response.status_code)
        if response.status_code == 400:
            assert _error(response)["field"] == "email"  # type: ignore[arg-type]
    assert statuses == [400] * 30 + [429]


def test_the_migration_normalizes_stored_emails_unless_taken(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from django.apps import apps

    migration = importlib.import_module("accounts.migrations.0003_normalize_user_emails")
    alone = UserFactory.create(email="x@example.com")
    taken = UserFactory.create(email="y@example.com")
    original = UserFactory.create(email="som@example.com")
    # As rows were stored before: lower-cased only, bypassing today's save().
    User.objects.filter(pk=alone.pk).update(email="\u017fue@example.com")
    User.objects.filter(pk=taken.pk).update(email="\u017fom@example.com")
    migration.normalize_emails(apps, None)
    assert User.objects.get(pk=alone.pk).email == "sue@example.com"
    assert User.objects.get(pk=taken.pk).email == "\u017fom@example.com"
    assert User.objects.get(pk=original.pk).email == "som@example.com"
    assert str(taken.pk) in capsys.readouterr().err
    # Login finds the rewritten row; the left-over look-alike never shadows its original.
    assert authenticate(None, username="\u017fue@example.com", password=PASSWORD) == alone
    assert authenticate(None, username="\u017fom@example.com", password=PASSWORD) == original
