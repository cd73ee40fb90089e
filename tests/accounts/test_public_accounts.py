"""Accounts a stranger can safely be given (CONTRACT.md part 2, "Accounts for the public"),
through the API, with mail delivered to a real SMTP server on loopback and every link's token
read from the received message."""

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone
from knox.models import AuthToken

from accounts.models import (
    ApiKey,
    MailboxClaim,
    OutboundEmail,
    OutboundEmailStatus,
    User,
    normalize_email,
)
from accounts.tokens import token_make
from credits.models import CreditAccount, EntryKind, LedgerEntry
from tests.gateway.conftest import Gateway
from tests.mail_support import Mailbox, text_of, token_in

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "a-long and unusual passphrase 42"
NEW_PASSWORD = "another long passphrase 77"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()  # throttle counts
    yield


@pytest.fixture
def gateway() -> Gateway:
    from accounts.service_tokens import clear_cache, service_token_create
    from tests.factories import ensure_documented_tiers

    ensure_documented_tiers()
    clear_cache()
    return Gateway(service_token_create(name="gateway")[1])


def _post(client: Client, path: str, body: Any, **extra: Any) -> Any:
    return client.post(path, body, content_type="application/json", **extra)


def _register(client: Client, email: str, **extra: Any) -> Any:
    return _post(client, "/api/auth/register", {"email": email, "password": PASSWORD, **extra})


def _login(email: str, password: str = PASSWORD) -> tuple[int, str]:
    response = _post(Client(), "/api/auth/login", {"email": email, "password": password})
    return response.status_code, response.json().get("token", "")


def _balance(email: str) -> int:
    return CreditAccount.objects.get(pk=User.objects.get(email=email).pk).balance


def _verified_user(smtp: Mailbox, email: str) -> tuple[User, Client]:
    assert _register(Client(), email).status_code == 201
    email = normalize_email(email)
    token = token_in(smtp.wait_for(email)[-1])
    assert _post(Client(), "/api/auth/verify-email", {"token": token}).status_code == 200
    status, login_token = _login(email)
    assert status == 200
    return User.objects.get(email=email), Client(HTTP_AUTHORIZATION=f"Token {login_token}")


# --- registration and verification ------------------------------------------------------------


def test_registering_mails_a_link_whose_token_verifies_and_grants_100(smtp: Mailbox) -> None:
    response = _register(Client(), "Ann@Example.com")
    assert response.status_code == 201
    assert response.json()["user"]["email_verified"] is False
    assert _balance("ann@example.com") == 0

    [message] = smtp.wait_for("ann@example.com")
    assert message["Subject"] == "Confirm your email address"
    assert "Kimi K2" in str(message["From"])
    assert "http://localhost:8000/verify-email?token=" in text_of(message)
    assert OutboundEmail.objects.get().status == OutboundEmailStatus.SENT
    assert OutboundEmail.objects.get().body_text == ""  # the link is not kept once sent

    verified = _post(Client(), "/api/auth/verify-email", {"token": token_in(message)})
    assert verified.status_code == 200
    assert verified.json()["user"]["email_verified"] is True
    assert _balance("ann@example.com") == 100
    # Verifying again: 200, nothing granted twice.
    again = _post(Client(), "/api/auth/verify-email", {"token": token_in(message)})
    assert again.status_code == 200
    assert _balance("ann@example.com") == 100


def test_resend_mails_a_new_link_and_is_throttled(smtp: Mailbox) -> None:
    _register(Client(), "ann@example.com")
    _, token = _login("ann@example.com")
    client = Client(HTTP_AUTHORIZATION=f"Token {token}")
    statuses = [_post(client, "/api/auth/verify-email/resend", {}).status_code for _ in range(6)]
    assert statuses == [202] * 5 + [429]
    assert len(smtp.wait_for("ann@example.com", count=6)) == 6


def test_a_disposable_address_is_refused() -> None:
    for email in ("someone@mailinator.com", "someone@x.mailinator.com"):
        response = _register(Client(), email)
        assert response.status_code == 400
        assert response.json()["error"] == {
            "code": "disposable_email",
            "message": "Addresses of disposable-mail services cannot be used; use a permanent "
            "address.",
            "field": "email",
        }
    assert not User.objects.exists()


@override_settings(SIGNUP_LIMIT_PER_IP_PER_HOUR=3)
def test_registrations_are_limited_per_client_address() -> None:
    client = Client(REMOTE_ADDR="203.0.113.9")
    # A refused registration (a typo) does not count.
    assert _register(client, "not an address").status_code == 400
    statuses = [
        _register(client, f"u{n}@example.com", HTTP_X_FORWARDED_FOR=f"10.9.9.{n}").status_code
        for n in range(4)
    ]
    assert statuses == [201, 201, 201, 429]
    refused = _register(client, "u9@example.com")
    assert refused.json()["error"]["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert _register(Client(REMOTE_ADDR="198.51.100.7"), "u8@example.com").status_code == 201


@override_settings(SIGNUP_LIMIT_PER_IP_PER_HOUR=0)
def test_a_limit_of_zero_means_none() -> None:
    client = Client(REMOTE_ADDR="203.0.113.9")
    assert all(_register(client, f"u{n}@example.com").status_code == 201 for n in range(12))


# --- tokens ------------------------------------------------------------------------------------


def _state() -> list[tuple[Any, ...]]:
    users = User.objects.order_by("email").values_list(
        "email", "password", "email_verified_at", "pending_email"
    )
    return [*users, (LedgerEntry.objects.count(),)]


def _refused(path: str, body: dict[str, str]) -> None:
    before = _state()
    response = _post(Client(), path, body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_token"
    assert _state() == before


def test_bad_verification_tokens_are_400_invalid_token_and_change_nothing(
    smtp: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register(Client(), "ann@example.com")
    _register(Client(), "bob@example.com")
    token = token_in(smtp.wait_for("ann@example.com")[0])
    ann = User.objects.get(email="ann@example.com")
    bob = User.objects.get(email="bob@example.com")
    url = "/api/auth/verify-email"

    _refused(url, {"token": token[:-2] + ("AA" if not token.endswith("AA") else "BB")})
    _refused(url, {"token": "not-a-token"})
    # Bound to the address: a token naming bob's id with ann's address, signed by us, is void.
    _refused(url, {"token": token_make(purpose="verify_email", user=bob, email=ann.email)})
    # Single-purpose: a reset token is no verification token.
    _refused(url, {"token": token_make(purpose="password_reset", user=ann, email=ann.email)})
    # Expired: 48 hours later.
    real = time.time
    monkeypatch.setattr("time.time", lambda: real() + 48 * 3600 + 5)
    _refused(url, {"token": token})
    monkeypatch.undo()
    assert _post(Client(), url, {"token": token}).status_code == 200


def test_a_verification_token_for_a_changed_address_is_void(smtp: Mailbox) -> None:
    _, client = _verified_user(smtp, "ann@example.com")
    first = token_in(smtp.to("ann@example.com")[0])
    assert (
        _post(
            client, "/api/user/email", {"email": "ann@example.org", "password": PASSWORD}
        ).status_code
        == 202
    )
    change = token_in(smtp.wait_for("ann@example.org")[0])
    assert _post(Client(), "/api/auth/verify-email", {"token": change}).status_code == 200
    _refused("/api/auth/verify-email", {"token": first})


def test_reset_tokens_are_single_use_and_void_after_any_password_change(smtp: Mailbox) -> None:
    _verified_user(smtp, "ann@example.com")
    assert (
        _post(Client(), "/api/auth/password-reset", {"email": "ANN@example.com"}).status_code == 202
    )
    assert (
        _post(Client(), "/api/auth/password-reset", {"email": "ann@example.com"}).status_code == 202
    )
    first, second = (token_in(m) for m in smtp.wait_for("ann@example.com", count=3)[1:])
    assert "http://localhost:8000/reset-password?token=" in text_of(smtp.to("ann@example.com")[1])

    url = "/api/auth/password-reset/confirm"
    weak = _post(Client(), url, {"token": first, "password": "123"})
    assert (weak.status_code, weak.json()["error"]["code"]) == (400, "weak_password")
    assert _post(Client(), url, {"token": first, "password": NEW_PASSWORD}).status_code == 200
    assert _login("ann@example.com", NEW_PASSWORD)[0] == 200
    _refused(url, {"token": first, "password": "yet another passphrase 99"})  # reused
    _refused(url, {"token": second, "password": "yet another passphrase 99"})  # issued before

    # A token issued, then a password change by the user: void too.
    _post(Client(), "/api/auth/password-reset", {"email": "ann@example.com"})
    third = token_in(smtp.wait_for("ann@example.com", count=4)[-1])
    _, token = _login("ann@example.com", NEW_PASSWORD)
    changed = _post(
        Client(HTTP_AUTHORIZATION=f"Token {token}"),
        "/api/auth/password",
        {"current_password": NEW_PASSWORD, "new_password": PASSWORD},
    )
    assert changed.status_code == 204
    _refused(url, {"token": third, "password": "yet another passphrase 99"})
    # Expired after an hour.
    _post(Client(), "/api/auth/password-reset", {"email": "ann@example.com"})
    fourth = token_in(smtp.wait_for("ann@example.com", count=5)[-1])
    with pytest.MonkeyPatch.context() as patch:
        real = time.time
        patch.setattr("time.time", lambda: real() + 3600 + 5)
        _refused(url, {"token": fourth, "password": "yet another passphrase 99"})


def test_a_reset_ends_every_login_token_and_session_but_not_api_keys(smtp: Mailbox) -> None:
    ann, client = _verified_user(smtp, "ann@example.com")
    browser = Client()
    assert (
        _post(
            browser, "/api/auth/login", {"email": "ann@example.com", "password": PASSWORD}
        ).status_code
        == 200
    )
    assert browser.get("/api/user").status_code == 200
    key = _post(client, "/api/user/keys", {"name": "k"}).json()["key"]

    _post(Client(), "/api/auth/password-reset", {"email": "ann@example.com"})
    token = token_in(smtp.wait_for("ann@example.com", count=2)[-1])
    confirm = {"token": token, "password": NEW_PASSWORD}
    assert _post(Client(), "/api/auth/password-reset/confirm", confirm).status_code == 200

    assert client.get("/api/user").status_code == 401
    assert browser.get("/api/user").status_code in (401, 403)
    assert not AuthToken.objects.filter(user=ann).exists()
    assert Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/user/credits").status_code == 200


def test_unknown_and_known_addresses_get_the_same_reset_answer(smtp: Mailbox) -> None:
    _verified_user(smtp, "ann@example.com")
    known = _post(Client(), "/api/auth/password-reset", {"email": "ann@example.com"})
    unknown = _post(Client(), "/api/auth/password-reset", {"email": "nobody@example.com"})
    assert (known.status_code, known.content) == (unknown.status_code, unknown.content)
    assert (known.status_code, known.json()) == (202, {})
    assert smtp.to("nobody@example.com") == []
    assert not OutboundEmail.objects.filter(to="nobody@example.com").exists()


def test_reset_requests_are_throttled_per_email_and_per_client_address() -> None:
    per_email = [
        _post(
            Client(REMOTE_ADDR=f"198.51.100.{n}"),
            "/api/auth/password-reset",
            {"email": "ann@example.com"},
        ).status_code
        for n in range(6)
    ]
    assert per_email == [202] * 5 + [429]
    client = Client(REMOTE_ADDR="203.0.113.9")
    per_client = [
        _post(client, "/api/auth/password-reset", {"email": f"u{n}@example.com"}).status_code
        for n in range(11)
    ]
    assert per_client == [202] * 10 + [429]


# --- password change, address change, the user -----------------------------------------------


def test_a_password_change_ends_the_other_logins_and_keeps_this_one(smtp: Mailbox) -> None:
    _, client = _verified_user(smtp, "ann@example.com")
    _, other_token = _login("ann@example.com")
    other = Client(HTTP_AUTHORIZATION=f"Token {other_token}")
    browser = Client()
    _post(browser, "/api/auth/login", {"email": "ann@example.com", "password": PASSWORD})

    wrong = _post(
        client, "/api/auth/password", {"current_password": "nope", "new_password": NEW_PASSWORD}
    )
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "invalid_credentials")
    assert other.get("/api/user").status_code == 200

    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert _post(client, "/api/auth/password", body).status_code == 204
    assert client.get("/api/user").status_code == 200
    assert other.get("/api/user").status_code == 401
    assert browser.get("/api/user").status_code in (401, 403)
    assert _login("ann@example.com", NEW_PASSWORD)[0] == 200


def test_a_password_change_by_session_keeps_that_session(smtp: Mailbox) -> None:
    _verified_user(smtp, "ann@example.com")
    browser = Client(enforce_csrf_checks=False)
    _post(browser, "/api/auth/login", {"email": "ann@example.com", "password": PASSWORD})
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert _post(browser, "/api/auth/password", body).status_code == 204
    assert browser.get("/api/user").status_code == 200


def test_get_user_shows_the_contract_fields(smtp: Mailbox) -> None:
    ann, client = _verified_user(smtp, "ann@example.com")
    body = client.get("/api/user").json()
    assert body == {
        "id": str(ann.pk),
        "email": "ann@example.com",
        "email_verified": True,
        "invite_code": ann.invite_code,
        "created_at": ann.date_joined.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert Client().get("/api/user").status_code == 401


def test_changing_the_address_verifies_the_new_one_and_notifies_the_old(smtp: Mailbox) -> None:
    _, client = _verified_user(smtp, "ann@example.com")
    _verified_user(smtp, "bob@example.com")

    wrong = _post(client, "/api/user/email", {"email": "ann@example.org", "password": "nope"})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "invalid_credentials")
    taken = _post(client, "/api/user/email", {"email": "BOB@example.com", "password": PASSWORD})
    assert (taken.status_code, taken.json()["error"]["code"]) == (400, "email_taken")

    moved = _post(client, "/api/user/email", {"email": "ann@example.org", "password": PASSWORD})
    assert (moved.status_code, moved.json()) == (202, {})
    notice = smtp.wait_for("ann@example.com", count=2)[-1]
    assert "ann@example.org" in text_of(notice)
    assert client.get("/api/user").json()["email"] == "ann@example.com"  # not yet

    token = token_in(smtp.wait_for("ann@example.org")[0])
    verified = _post(Client(), "/api/auth/verify-email", {"token": token})
    assert verified.status_code == 200
    assert verified.json()["user"]["email"] == "ann@example.org"
    assert "was changed" in text_of(smtp.wait_for("ann@example.com", count=3)[-1])
    assert _login("ann@example.org")[0] == 200
    assert _balance("ann@example.org") == 100  # no second grant for a second address


def test_an_address_taken_before_the_change_is_verified_is_400_email_taken(smtp: Mailbox) -> None:
    ann, client = _verified_user(smtp, "ann@example.com")
    _post(client, "/api/user/email", {"email": "cat@example.com", "password": PASSWORD})
    token = token_in(smtp.wait_for("cat@example.com")[0])
    assert _register(Client(), "cat@example.com").status_code == 201
    taken = _post(Client(), "/api/auth/verify-email", {"token": token})
    assert (taken.status_code, taken.json()["error"]["code"]) == (400, "email_taken")
    assert User.objects.get(pk=ann.pk).email == "ann@example.com"


# --- deletion ---------------------------------------------------------------------------------


def test_deleting_the_account(smtp: Mailbox, gateway: Gateway) -> None:
    ann, client = _verified_user(smtp, "Ann.Lee+x@gmail.com")
    key = _post(client, "/api/user/keys", {"name": "k"}).json()["key"]
    held = gateway.authorize(key)
    assert held["allowed"] is True
    wrong = client.delete("/api/user", {"password": "nope"}, content_type="application/json")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "invalid_credentials")

    deleted = client.delete("/api/user", {"password": PASSWORD}, content_type="application/json")
    assert deleted.status_code == 204

    gone = User.objects.get(pk=ann.pk)
    assert gone.email.endswith("@deleted.invalid") and "ann" not in gone.email
    assert not gone.is_active and not gone.has_usable_password() and gone.deleted_at
    assert _login("ann.lee+x@gmail.com")[0] == 400
    assert client.get("/api/user").status_code == 401
    assert gateway.authorize(key)["status"] == 401
    assert not ApiKey.objects.filter(user=ann, revoked_at__isnull=True).exists()
    assert not OutboundEmail.objects.filter(to__icontains="ann").exists()
    # The books stay; the balance (100, one held) is forfeited by an adjust entry.
    account = CreditAccount.objects.get(pk=ann.pk)
    assert (account.balance, account.reserved) == (0, 0)
    forfeit = LedgerEntry.objects.get(account=account, kind=EntryKind.ADJUST)
    assert (forfeit.amount, forfeit.reason) == (-100, "account deleted")
    assert LedgerEntry.objects.filter(account=account, kind=EntryKind.GRANT).count() == 1
    call_command("reconcile_ledger")  # exits non-zero (raises) if anything disagrees

    # The mailbox registers again, under another spelling, and verifies: no second grant.
    again, _ = _verified_user(smtp, "annlee@googlemail.com")
    assert CreditAccount.objects.get(pk=again.pk).balance == 0
    assert MailboxClaim.objects.count() == 1


def test_the_admin_anonymises_through_the_same_deletion(smtp: Mailbox) -> None:
    ann, _ = _verified_user(smtp, "ann@example.com")
    staff = User.objects.create_superuser("staff@example.com", PASSWORD)
    admin = Client()
    admin.force_login(staff)
    url = "/admin/accounts/user/"
    page = admin.get(url)
    assert "delete_selected" not in page.content.decode()
    assert admin.get(f"{url}{ann.pk}/delete/").status_code == 403
    response = admin.post(url, {"action": "anonymise", "_selected_action": [str(ann.pk)]})
    assert response.status_code == 302
    gone = User.objects.get(pk=ann.pk)
    assert gone.deleted_at is not None and gone.email.endswith("@deleted.invalid")
    assert LedgerEntry.objects.get(account_id=ann.pk, kind=EntryKind.ADJUST).amount == -100


def test_the_admin_verifies_and_resends_and_filters(smtp: Mailbox) -> None:
    _register(Client(), "ann@example.com")
    _register(Client(), "bob@example.com")
    ann = User.objects.get(email="ann@example.com")
    staff = User.objects.create_superuser("staff@example.com", PASSWORD)
    admin = Client()
    admin.force_login(staff)
    url = "/admin/accounts/user/"
    admin.post(url, {"action": "resend_verification", "_selected_action": [str(ann.pk)]})
    assert len(smtp.wait_for("ann@example.com", count=2)) == 2
    admin.post(url, {"action": "verify_email", "_selected_action": [str(ann.pk)]})
    assert User.objects.get(pk=ann.pk).email_verified
    assert _balance("ann@example.com") == 100
    unverified = admin.get(url, {"verified": "no"}).content.decode()
    assert "bob@example.com" in unverified and "ann@example.com" not in unverified


# --- the outbox ---------------------------------------------------------------------------------


def test_mail_whose_send_failed_is_retried_by_the_sweep_with_backoff(
    smtp: Mailbox, settings: Any
) -> None:
    from accounts.tasks import outbound_email_sweep

    port = settings.EMAIL_PORT
    settings.EMAIL_PORT = 1  # nothing listens there: the send fails
    _register(Client(), "ann@example.com")
    row = OutboundEmail.objects.get()
    assert (row.status, row.attempts) == (OutboundEmailStatus.PENDING, 1)
    assert row.next_attempt_at > timezone.now() + timedelta(seconds=50)
    assert row.last_error and row.body_text  # kept until sent
    assert outbound_email_sweep() == 0  # not due yet
    settings.EMAIL_PORT = port
    OutboundEmail.objects.update(next_attempt_at=timezone.now())
    assert outbound_email_sweep() == 1
    assert len(smtp.wait_for("ann@example.com")) == 1
    assert outbound_email_sweep() == 0  # sent once


def test_a_row_is_sent_once_by_concurrent_senders(smtp: Mailbox) -> None:
    from accounts.mail import outbound_email_send
    from tests.concurrency import run_together

    row = OutboundEmail.objects.create(to="ann@example.com", subject="s", body_text="t")
    results = run_together(10, lambda i: outbound_email_send(email_id=row.pk))
    assert results.count(True) == 1
    time.sleep(0.2)
    assert len(smtp.to("ann@example.com")) == 1


def test_mail_whose_after_commit_task_was_lost_is_sent_by_the_beat_sweep(
    smtp: Mailbox, settings: Any
) -> None:
    """A row committed while the broker was away (the after-commit task never ran) waits for
    the sweep, which beat runs every minute: delayed, not lost."""
    from accounts.tasks import outbound_email_sweep

    assert settings.CELERY_BEAT_SCHEDULE["outbound-email-sweep"] == {
        "task": "accounts.tasks.outbound_email_sweep",
        "schedule": 60.0,
    }
    OutboundEmail.objects.create(to="ann@example.com", subject="Hello", body_text="Hi Ann")
    assert smtp.to("ann@example.com") == []
    assert outbound_email_sweep() == 1
    [message] = smtp.wait_for("ann@example.com")
    assert (message["Subject"], text_of(message).strip()) == ("Hello", "Hi Ann")
    assert OutboundEmail.objects.get().status == OutboundEmailStatus.SENT
