"""CSRF holds on every unsafe endpoint a browser session can reach: without the token a
session-authenticated POST/DELETE is a 403 in our error shape and changes nothing; with it the
same request goes through. Token-authenticated calls carry no cookie and need no CSRF token."""

import json

import pytest
from django.test import Client

from accounts.models import ApiKey
from credits.payments.models import Purchase
from tests.stripe_support import StripeRecordedServer

from .conftest import Person

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def _session(person: Person) -> tuple[Client, str]:
    """A browser: logs in through the API (which sets the session and CSRF cookies)."""
    browser = Client(enforce_csrf_checks=True)
    login = browser.post(
        "/api/auth/login",
        {"email": person.user.email, "password": PASSWORD},
        content_type="application/json",
    )
    assert login.status_code == 200
    assert "sessionid" in browser.cookies
    csrf = browser.cookies.get("csrftoken")
    if csrf is None:  # not rotated by login: a safe request hands one out
        browser.get("/admin/login/")
        csrf = browser.cookies["csrftoken"]
    return browser, csrf.value


def _assert_csrf_refused(response: object) -> None:
    assert response.status_code == 403  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert set(body) == {"error"}
    assert "CSRF" in body["error"]["message"]


def test_creating_a_key_from_a_session_needs_the_csrf_token(alice: Person) -> None:
    browser, csrf = _session(alice)
    before = ApiKey.objects.filter(user=alice.user).count()
    body = json.dumps({"name": "forged"})
    _assert_csrf_refused(browser.post("/api/user/keys", body, content_type="application/json"))
    assert ApiKey.objects.filter(user=alice.user).count() == before
    made = browser.post(
        "/api/user/keys", body, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert made.status_code == 201


def test_revoking_a_key_from_a_session_needs_the_csrf_token(alice: Person) -> None:
    browser, csrf = _session(alice)
    path = f"/api/user/keys/{alice.key.pk}"
    _assert_csrf_refused(browser.delete(path))
    assert ApiKey.objects.filter(pk=alice.key.pk).live().exists()
    assert browser.delete(path, HTTP_X_CSRFTOKEN=csrf).status_code == 204


def test_a_wrong_csrf_token_is_refused(alice: Person) -> None:
    browser, csrf = _session(alice)
    wrong = ("x" if csrf[0] != "x" else "y") + csrf[1:]
    _assert_csrf_refused(
        browser.post(
            "/api/user/keys",
            json.dumps({"name": "forged"}),
            content_type="application/json",
            HTTP_X_CSRFTOKEN=wrong,
        )
    )


def test_buying_from_a_session_needs_the_csrf_token(
    alice: Person, stripe: StripeRecordedServer
) -> None:
    browser, csrf = _session(alice)
    body = json.dumps({"package": "starter"})
    _assert_csrf_refused(browser.post("/api/purchases", body, content_type="application/json"))
    assert not Purchase.objects.filter(user=alice.user).exists()
    bought = browser.post(
        "/api/purchases", body, content_type="application/json", HTTP_X_CSRFTOKEN=csrf
    )
    assert bought.status_code == 201


def test_logging_out_a_session_needs_the_csrf_token(alice: Person) -> None:
    browser, csrf = _session(alice)
    _assert_csrf_refused(browser.post("/api/auth/logout", content_type="application/json"))
    assert browser.get("/api/user/keys").status_code == 200  # still logged in
    ended = browser.post("/api/auth/logout", content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert ended.status_code == 204
    assert browser.get("/api/user/keys").status_code == 401


def test_token_authenticated_writes_need_no_csrf_token(alice: Person) -> None:
    client = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Token {alice.token}")
    made = client.post(
        "/api/user/keys", json.dumps({"name": "cli"}), content_type="application/json"
    )
    assert made.status_code == 201
