"""Logins: a sliding lifetime, `GET/DELETE /api/user/sessions`, browser logins without a token,
and logouts that end both halves of what the login started."""

from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken

from accounts.login_sessions import SESSION_SEEN_AT
from accounts.models import LoginSession, User
from tests.factories import registered_user

pytestmark = pytest.mark.django_db

PASSWORD = "a long and unusual passphrase"
TTL = timedelta(days=30)


@pytest.fixture
def alice() -> User:
    return registered_user(email="alice@example.com", password=PASSWORD)


def log_in(client: Client, email: str = "alice@example.com", **extra: object) -> dict[str, object]:
    response = client.post(
        "/api/auth/login",
        {"email": email, "password": PASSWORD, **extra},
        content_type="application/json",
        HTTP_USER_AGENT="curl/8.5.0",
    )
    assert response.status_code == 200, response.content
    body: dict[str, object] = response.json()
    return body


def by_token(token: object) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def assert_about(moment: datetime | None, expected: datetime) -> None:
    assert moment is not None
    assert abs((moment - expected).total_seconds()) < 30


def test_the_default_lifetime_is_30_days() -> None:
    assert settings.LOGIN_TTL_DAYS == 30


def test_a_login_token_lasts_the_login_lifetime_and_so_does_its_row(alice: User) -> None:
    token = log_in(Client())["token"]
    stored = AuthToken.objects.get(user=alice)
    assert_about(stored.expiry, timezone.now() + TTL)
    row = LoginSession.objects.get(user=alice)
    assert row.auth_token_id == stored.pk
    assert row.expires_at == stored.expiry
    assert Client().get("/api/user/keys", headers=by_token(token)).status_code == 200


def test_each_use_moves_the_token_expiry_on(alice: User) -> None:
    token = log_in(Client())["token"]
    soon = timezone.now() + timedelta(days=1)
    AuthToken.objects.filter(user=alice).update(expiry=soon)
    LoginSession.objects.filter(user=alice).update(expires_at=soon)
    assert Client().get("/api/user/keys", headers=by_token(token)).status_code == 200
    assert_about(AuthToken.objects.get(user=alice).expiry, timezone.now() + TTL)
    row = LoginSession.objects.get(user=alice)
    assert_about(row.expires_at, timezone.now() + TTL)
    assert_about(row.last_used_at, timezone.now())


def test_an_expired_token_is_refused_and_its_login_is_gone(alice: User) -> None:
    token = log_in(Client())["token"]
    AuthToken.objects.filter(user=alice).update(expiry=timezone.now() - timedelta(seconds=1))
    assert Client().get("/api/user/keys", headers=by_token(token)).status_code == 401
    assert not AuthToken.objects.filter(user=alice).exists()
    assert not LoginSession.objects.filter(user=alice, auth_token__isnull=False).exists()


def test_a_browser_login_issues_no_token_and_its_cookie_works(alice: User) -> None:
    browser = Client()
    body = log_in(browser, session_only=True)
    assert body["token"] is None
    assert not AuthToken.objects.exists()
    assert browser.get("/api/user/keys").status_code == 200
    row = LoginSession.objects.get(user=alice)
    assert (row.auth_token_id, row.session_key) == (None, browser.session.session_key)


def test_a_browser_cookie_slides_at_most_once_a_minute(alice: User) -> None:
    browser = Client()
    log_in(browser, session_only=True)
    soon = timezone.now() + timedelta(days=1)
    LoginSession.objects.filter(user=alice).update(expires_at=soon)
    response = browser.get("/api/user/keys")  # seen a moment ago: nothing written
    assert settings.SESSION_COOKIE_NAME not in response.cookies
    assert LoginSession.objects.get(user=alice).expires_at == soon
    session = browser.session
    session[SESSION_SEEN_AT] = 0
    session.save()
    response = browser.get("/api/user/keys")
    assert response.cookies[settings.SESSION_COOKIE_NAME]["max-age"] == TTL.total_seconds()
    assert_about(LoginSession.objects.get(user=alice).expires_at, timezone.now() + TTL)
    stored = Session.objects.get(session_key=browser.session.session_key)
    assert_about(stored.expire_date, timezone.now() + TTL)


def test_the_sessions_list_shows_each_live_login_of_the_user_only(alice: User) -> None:
    registered_user(email="bob@example.com", password=PASSWORD)
    log_in(Client(), "bob@example.com")
    api = Client()
    token = log_in(api)["token"]
    browser = Client()
    log_in(browser, session_only=True)
    expired = Client()
    log_in(expired, session_only=True)
    LoginSession.objects.filter(session_key=expired.session.session_key).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    listed = Client().get("/api/user/sessions", headers=by_token(token)).json()
    assert [(s["token"], s["cookie"], s["current"]) for s in listed] == [
        (False, True, False),  # the browser: used last
        (True, True, True),  # this token's login (an API login sets a cookie too)
    ]
    assert {s["user_agent"] for s in listed} == {"curl/8.5.0"}
    assert set(listed[0]) == {
        "id",
        "token",
        "cookie",
        "current",
        "user_agent",
        "created_at",
        "last_used_at",
        "expires_at",
    }
    assert listed[0]["expires_at"].endswith("Z")
    from_browser = browser.get("/api/user/sessions").json()
    assert [s["current"] for s in from_browser] == [True, False]


def test_ending_a_session_ends_its_token_and_its_cookie(alice: User) -> None:
    api = Client()
    token = log_in(api)["token"]
    browser = Client()
    log_in(browser, session_only=True)
    sessions = browser.get("/api/user/sessions").json()
    api_login = next(s for s in sessions if s["token"])
    assert browser.delete(f"/api/user/sessions/{api_login['id']}").status_code == 204
    assert Client().get("/api/user/keys", headers=by_token(token)).status_code == 401
    assert api.get("/api/user/keys").status_code in (401, 403)  # its cookie too
    assert not AuthToken.objects.exists()
    assert browser.delete(f"/api/user/sessions/{api_login['id']}").status_code == 404
    # Ending one's own login is a logout.
    own = browser.get("/api/user/sessions").json()[0]
    assert browser.delete(f"/api/user/sessions/{own['id']}").status_code == 204
    assert browser.get("/api/user/keys").status_code in (401, 403)
    assert not LoginSession.objects.exists()


def test_another_users_session_or_a_malformed_id_is_the_same_404(alice: User) -> None:
    registered_user(email="bob@example.com", password=PASSWORD)
    bob = Client()
    log_in(bob, "bob@example.com", session_only=True)
    bobs = bob.get("/api/user/sessions").json()[0]["id"]
    token = log_in(Client())["token"]
    for session_id in (bobs, "not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        response = Client().delete(f"/api/user/sessions/{session_id}", headers=by_token(token))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "session_not_found"
    assert bob.get("/api/user/keys").status_code == 200


def test_a_logout_by_cookie_ends_the_token_the_same_login_issued(alice: User) -> None:
    both = Client()
    token = log_in(both)["token"]
    assert both.post("/api/auth/logout").status_code == 204  # the cookie only
    assert Client().get("/api/user/keys", headers=by_token(token)).status_code == 401
    assert not AuthToken.objects.exists()
    assert not LoginSession.objects.exists()


def test_a_logout_by_token_ends_the_cookie_the_same_login_set(alice: User) -> None:
    both = Client()
    token = log_in(both)["token"]
    other = log_in(Client())["token"]
    assert Client().post("/api/auth/logout", headers=by_token(token)).status_code == 204
    assert both.get("/api/user/keys").status_code in (401, 403)
    # Another login of the same user is untouched.
    assert Client().get("/api/user/keys", headers=by_token(other)).status_code == 200
    assert LoginSession.objects.count() == 1


def test_logging_in_again_in_a_browser_replaces_its_earlier_browser_login(alice: User) -> None:
    browser = Client()
    log_in(browser, session_only=True)
    log_in(browser, session_only=True)
    assert LoginSession.objects.count() == 1
    assert LoginSession.objects.get().session_key == browser.session.session_key
