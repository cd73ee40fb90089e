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


# --- issue 16's password and account operations end the logins they end (issue 22's rows) ----

NEW_PASSWORD = "another long passphrase 77"


def listed(client: Client, **headers: str) -> list[dict[str, object]]:
    response = client.get("/api/user/sessions", headers=headers)
    assert response.status_code == 200, response.content
    rows: list[dict[str, object]] = response.json()
    return rows


def three_logins() -> tuple[object, Client]:
    """An API login (token and cookie), another token, and a browser login (cookie only)."""
    token = log_in(Client())["token"]
    log_in(Client())
    browser = Client()
    log_in(browser, session_only=True)
    return token, browser


def test_a_password_reset_ends_every_login_and_none_is_listed(alice: User) -> None:
    from accounts.tokens import token_make

    _, browser = three_logins()
    assert LoginSession.objects.filter(user=alice).count() == 3
    reset = token_make(purpose="password_reset", user=alice, email=alice.email)
    confirmed = Client().post(
        "/api/auth/password-reset/confirm",
        {"token": reset, "password": NEW_PASSWORD},
        content_type="application/json",
    )
    assert confirmed.status_code == 200, confirmed.content
    assert not LoginSession.objects.filter(user=alice).exists()
    assert not AuthToken.objects.filter(user=alice).exists()
    assert browser.get("/api/user/sessions").status_code in (401, 403)
    fresh = Client()
    fresh.post(
        "/api/auth/login",
        {"email": "alice@example.com", "password": NEW_PASSWORD, "session_only": True},
        content_type="application/json",
    )
    assert len(listed(fresh)) == 1  # only the login made after the reset


def test_a_password_change_by_token_ends_the_other_logins_and_keeps_this_one(
    alice: User,
) -> None:
    token, browser = three_logins()
    changed = Client().post(
        "/api/auth/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        content_type="application/json",
        headers=by_token(token),
    )
    assert changed.status_code == 204, changed.content
    [kept] = listed(Client(), **by_token(token))
    assert kept["current"] is True and kept["token"] is True
    assert LoginSession.objects.filter(user=alice).count() == 1
    assert AuthToken.objects.filter(user=alice).count() == 1
    assert browser.get("/api/user/sessions").status_code in (401, 403)


def test_a_password_change_by_cookie_keeps_that_login_with_its_new_session_key(
    alice: User,
) -> None:
    log_in(Client())
    browser = Client()
    log_in(browser, session_only=True)
    changed = browser.post(
        "/api/auth/password",
        {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        content_type="application/json",
    )
    assert changed.status_code == 204, changed.content
    [kept] = listed(browser)
    assert kept["current"] is True and kept["cookie"] is True
    row = LoginSession.objects.get(user=alice)
    assert row.session_key == browser.session.session_key  # Django cycled it; the row followed
    assert not AuthToken.objects.filter(user=alice).exists()
    # Ending it by its id still ends the cookie: the row names the live session.
    assert browser.delete(f"/api/user/sessions/{row.pk}").status_code == 204
    assert browser.get("/api/user/sessions").status_code in (401, 403)


def test_deleting_the_account_ends_every_login(alice: User) -> None:
    token, _ = three_logins()
    deleted = Client().delete(
        "/api/user",
        {"password": PASSWORD},
        content_type="application/json",
        headers=by_token(token),
    )
    assert deleted.status_code == 204, deleted.content
    assert not LoginSession.objects.filter(user=alice).exists()
    assert not AuthToken.objects.filter(user=alice).exists()
