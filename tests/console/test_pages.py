"""The console's pages through Django's test client (no browser): the login gate, CSRF, each
user seeing only their own things, the forms' validation, and the secret shown once."""

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import Client

from accounts.models import ApiKey, OutboundEmail, User
from accounts.services import (
    api_key_create,
    email_change_request,
    password_reset_message,
    password_reset_request,
    user_register,
)
from credits import services
from credits.console.panels import console_panel
from credits.gateway.models import UsageRecord
from credits.models import CreditAccount, LotSource
from credits.payments.models import Package, Purchase
from referrals.selectors import referral_share_url
from tests.factories import registered_user
from tests.usage.conftest import clock_at, utc

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"  # the factory's


def _client(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ann() -> User:
    return registered_user(email="ann@example.com")


@pytest.mark.parametrize(
    "path",
    [
        "/my-credits",
        "/my-credits/keys",
        "/my-credits/buy",
        "/my-credits/activity",
        "/my-credits/account",
        "/my-credits/invite",
    ],
)
def test_every_console_page_sends_an_anonymous_visitor_to_the_login_page(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login?next={path.replace('/', '%2F')}"


def test_the_live_figures_are_401_without_a_login_and_the_balance_with_one(ann: User) -> None:
    assert Client().get("/my-credits/live").status_code == 401
    body = _client(ann).get("/my-credits/live").json()
    assert body["credits_remaining"] == 100
    assert (body["today_requests"], body["today_credits"]) == (0, 0)
    assert body["as_of"].endswith("Z")


def test_a_form_posted_without_the_csrf_token_is_refused(ann: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(ann)
    assert client.post("/my-credits/keys/new", {"name": "x"}).status_code == 403
    assert not ApiKey.objects.filter(user=ann).exists()


def test_login_brings_the_user_back_to_the_page_asked_for_but_never_to_another_site(
    ann: User,
) -> None:
    back = Client().post(
        "/login", {"email": ann.email, "password": PASSWORD, "next": "/my-credits/keys"}
    )
    assert back["Location"] == "/my-credits/keys"
    away = Client().post(
        "/login", {"email": ann.email, "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert away["Location"] == "/my-credits"


def test_a_wrong_password_is_explained_and_logs_nobody_in(ann: User) -> None:
    client = Client()
    response = client.post("/login", {"email": ann.email, "password": "wrong"})
    assert response.status_code == 400
    assert "Email or password is incorrect." in response.content.decode()
    assert client.get("/my-credits").status_code == 302


def test_the_share_link_fills_in_the_invite_code(ann: User) -> None:
    page = Client().get(f"/register?invite={ann.invite_code}").content.decode()
    assert f'name="invite_code" value="{ann.invite_code}"' in page


def test_an_unknown_invite_code_is_shown_on_its_field_and_creates_nobody() -> None:
    response = Client().post(
        "/register",
        {
            "email": "bob@example.com",
            "password": "a long and unusual passphrase",
            "invite_code": "NOSUCHCODE",
        },
    )
    assert response.status_code == 400
    assert 'id="register-invite-error"' in response.content.decode()
    assert not User.objects.filter(email="bob@example.com").exists()


def test_a_new_key_secret_is_in_the_creating_answer_only_and_never_cached(ann: User) -> None:
    client = _client(ann)
    response = client.post(
        "/my-credits/keys/new",
        {
            "name": "ci",
            "budget_credits": "1,000",
            "budget_period": "month",
            "allowed_models": "kimi-k2-0905, kimi-k2-turbo",
        },
    )
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    secret = re.search(r'id="new-secret"[^>]* value="([^"]+)"', response.content.decode())
    assert secret is not None and secret.group(1).startswith("sk-kimi-")
    key = ApiKey.objects.get(user=ann)
    assert (key.name, key.budget_credits, key.budget_period) == ("ci", 1000, "month")
    assert key.allowed_models == ["kimi-k2-0905", "kimi-k2-turbo"]
    assert secret.group(1) not in client.get("/my-credits/keys").content.decode()


def test_saving_a_key_unchanged_keeps_every_model_allowed_and_no_budget(ann: User) -> None:
    key, _ = api_key_create(user=ann, name="laptop")
    client = _client(ann)
    page = client.get("/my-credits/keys").content.decode()
    form = re.search(rf'action="/my-credits/keys/{key.pk}".*?</form>', page, re.S)
    assert form is not None
    values = dict(
        re.findall(
            r'name="(name|budget_credits|allowed_models)"[^>]*? value="([^"]*)"', form.group(0)
        )
    )
    assert values == {"name": "laptop", "budget_credits": "", "allowed_models": ""}
    saved = client.post(f"/my-credits/keys/{key.pk}", {**values, "budget_period": "month"})
    assert saved.status_code == 302
    key.refresh_from_db()
    assert (key.name, key.budget_credits, key.allowed_models) == ("laptop", None, None)


def test_a_bad_budget_is_refused_with_the_apis_message_and_nothing_is_created(ann: User) -> None:
    response = _client(ann).post(
        "/my-credits/keys/new", {"name": "ci", "budget_credits": "-5", "budget_period": "day"}
    )
    assert response.status_code == 400
    assert 'role="alert"' in response.content.decode()
    assert not ApiKey.objects.filter(user=ann).exists()


def test_another_users_key_cannot_be_changed_rotated_or_revoked(ann: User) -> None:
    bob = registered_user(email="bob@example.com")
    key, _ = api_key_create(user=bob, name="bob's")
    client = _client(ann)
    for action in ("", "/rotate", "/revoke"):
        response = client.post(f"/my-credits/keys/{key.pk}{action}", {"name": "mine now"})
        assert response.status_code == 404
    key.refresh_from_db()
    assert (key.name, key.revoked_at) == ("bob's", None)


def test_another_users_purchase_page_is_404(ann: User, settings: Any) -> None:
    bob = registered_user(email="bob@example.com")
    package = Package.objects.get(slug="standard")
    purchase = Purchase.objects.create(
        user=bob,
        package=package,
        credits=package.credits,
        price_amount=package.price_amount,
        currency=package.currency,
        validity_months=package.validity_months,
        created_at=ann.date_joined,
    )
    assert _client(ann).get(f"/purchases/{purchase.pk}?checkout=success").status_code == 404
    assert _client(bob).get(f"/purchases/{purchase.pk}?checkout=success").status_code == 200
    assert _client(ann).get("/purchases/not-a-uuid").status_code == 404


def test_the_monthly_limit_is_set_with_thousands_separators_and_removed_when_empty(
    ann: User,
) -> None:
    client = _client(ann)
    set_ = client.post("/my-credits/account/limit", {"monthly_credit_limit": "12,500"})
    assert set_.status_code == 302
    assert CreditAccount.objects.get(pk=ann.pk).monthly_credit_limit == 12500
    refused = client.post("/my-credits/account/limit", {"monthly_credit_limit": "lots"})
    assert refused.status_code == 400
    assert CreditAccount.objects.get(pk=ann.pk).monthly_credit_limit == 12500
    client.post("/my-credits/account/limit", {"monthly_credit_limit": ""})
    assert CreditAccount.objects.get(pk=ann.pk).monthly_credit_limit is None


def test_deleting_the_account_needs_the_box_ticked_and_the_password(ann: User) -> None:
    client = _client(ann)
    unticked = client.post("/my-credits/account/delete", {"password": PASSWORD})
    assert unticked.status_code == 400
    wrong = client.post("/my-credits/account/delete", {"password": "nope", "confirm": "yes"})
    assert wrong.status_code == 400
    assert User.objects.get(pk=ann.pk).is_active
    done = client.post("/my-credits/account/delete", {"password": PASSWORD, "confirm": "yes"})
    assert done["Location"] == "/login"
    assert not User.objects.get(pk=ann.pk).is_active


def test_activity_lists_only_the_users_own_requests(ann: User) -> None:
    bob = registered_user(email="bob@example.com")
    for user, request_id in ((ann, "ann-1"), (bob, "bob-1")):
        UsageRecord.objects.create(
            request_id=request_id,
            account_id=user.pk,
            model="kimi-k2-0905",
            outcome="success",
            http_status=200,
            charged=1,
            settled_at=ann.date_joined,
        )
    page = _client(ann).get("/my-credits/activity").content.decode()
    assert "ann-1" in page and "bob-1" not in page


def test_the_invite_panel_is_registered_by_referrals_and_shows_the_share_link(
    ann: User, settings: Any
) -> None:
    settings.DASHBOARD_URL = "https://dash.example.com"
    assert console_panel("invite") is not None
    page = _client(ann).get("/my-credits/invite").content.decode()
    assert f'value="https://dash.example.com/register?invite={ann.invite_code}"' in page
    assert 'href="/my-credits/invite" aria-current="page"' in page


def test_every_link_the_service_sends_opens_a_page_of_this_service_by_default(
    ann: User, settings: Any
) -> None:
    """With the default DASHBOARD_URL no link in a mail, nor the invite share link, is a 404
    (the Checkout return pages are opened by the browser test, through the Stripe server)."""
    settings.DASHBOARD_URL = "http://localhost:8000"
    user_register(email="bob@example.com", password="a long and unusual passphrase")
    email_change_request(user=ann, email="ann.new@example.com", password=PASSWORD)
    password_reset_request(email=ann.email)
    bodies = [row.body_text for row in OutboundEmail.objects.exclude(prepare__gt="")]
    reset = password_reset_message(ann.email)  # made at send time
    assert reset is not None
    links = [url for body in [*bodies, reset[1]] for url in re.findall(r"https?://\S+", body)]
    links.append(referral_share_url(invite_code=ann.invite_code))
    assert {urlsplit(link).path for link in links} == {
        "/verify-email",
        "/reset-password",
        "/register",
    }
    for link in links:
        assert link.startswith("http://localhost:8000/")
        response = Client().get(link.removeprefix("http://localhost:8000"))
        assert response.status_code in (200, 400), link  # a page, even for a spent token
        assert response["Content-Type"].startswith("text/html")


def _standard_lot(user: User, expires_at: datetime, key: str) -> None:
    services.credits_grant(
        user_id=user.pk,
        amount=5000,
        source=LotSource.PURCHASE,
        package="standard",
        expires_at=expires_at,
        idempotency_key=f"test:{key}",
    )


def test_the_overview_warns_of_credits_expiring_within_7_days_only(ann: User) -> None:
    clock_at(utc("2026-11-25T10:10:00"))
    _standard_lot(ann, utc("2026-12-05T07:00:00"), "later")
    page = _client(ann).get("/my-credits").content.decode()
    assert 'id="expiring-warning"' not in page
    _standard_lot(ann, utc("2026-11-28T07:00:00"), "soon")
    page = _client(ann).get("/my-credits").content.decode()
    warning = re.search(r'id="expiring-warning">(.*?)</div>', page, re.S)
    assert warning is not None
    text = " ".join(re.sub(r"<[^>]+>", "", warning.group(1)).split())
    assert text.startswith("5,000 credits expire within 7 days: 5,000 on 2026-11-28 07:00:00 UTC.")
    assert (
        '<div class="value" id="credits-remaining" data-live="credits_remaining">10,100</div>'
        in page
    )


def test_the_overview_draws_the_chosen_days_and_explains_a_bad_range(ann: User) -> None:
    clock_at(utc("2026-11-25T10:10:00"))
    client = _client(ann)
    page = client.get("/my-credits?from=2026-11-01&to=2026-11-03").content.decode()
    days = re.findall(r'<g class="bar" data-key="([^"]+)"', page)
    assert days[:3] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    hours = days[3:]
    assert (len(hours), hours[-1]) == (72, "2026-11-03T23:00:00Z")  # the range's last hours
    bad = client.get("/my-credits?from=2026-11-05&to=2026-11-01")
    assert bad.status_code == 200
    assert "The first day must not be after the last." in bad.content.decode()


def _logged_in(user: User, password: str = PASSWORD) -> Client:
    client = Client()
    assert client.post("/login", {"email": user.email, "password": password}).status_code == 302
    return client


def test_changing_the_password_keeps_this_login_and_ends_the_others(ann: User) -> None:
    here, elsewhere = _logged_in(ann), _logged_in(ann)
    new = "a brand new and long passphrase"
    wrong = here.post(
        "/my-credits/account/password", {"current_password": "nope", "new_password": new}
    )
    assert wrong.status_code == 400
    done = here.post(
        "/my-credits/account/password", {"current_password": PASSWORD, "new_password": new}
    )
    assert done["Location"] == "/my-credits/account"
    assert here.get("/my-credits").status_code == 200
    assert elsewhere.get("/my-credits").status_code == 302
    assert _logged_in(ann, new).get("/my-credits").status_code == 200


def test_changing_the_address_mails_the_new_one_and_keeps_the_old_until_verified(
    ann: User,
) -> None:
    client = _client(ann)
    taken = registered_user(email="bob@example.com")
    refused = client.post("/my-credits/account/email", {"email": taken.email, "password": PASSWORD})
    assert refused.status_code == 400
    sent = client.post(
        "/my-credits/account/email", {"email": "ann.new@example.com", "password": PASSWORD}
    )
    assert sent["Location"] == "/my-credits/account"
    assert OutboundEmail.objects.filter(to="ann.new@example.com").exists()
    assert User.objects.get(pk=ann.pk).email == "ann@example.com"


def test_a_new_verification_link_is_mailed_and_counted_in_the_apis_throttle() -> None:
    bob = user_register(email="bob@example.com", password="a long and unusual passphrase")
    client = _client(bob)
    for _ in range(5):  # VerifyResendThrottle: 5 an hour (README)
        assert client.post("/my-credits/account/verify").status_code == 302
    assert OutboundEmail.objects.filter(to=bob.email).count() == 1 + 5
    page = client.post("/my-credits/account/verify", follow=True).content.decode()
    assert "Too many attempts; try again in" in page
    assert OutboundEmail.objects.filter(to=bob.email).count() == 1 + 5


def test_an_unknown_console_page_is_a_404_inside_the_console(ann: User) -> None:
    response = _client(ann).get("/my-credits/no-such-panel")
    assert response.status_code == 404
    assert 'id="not-found"' in response.content.decode()
