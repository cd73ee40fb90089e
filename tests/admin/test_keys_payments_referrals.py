"""Revoking API keys and service tokens, purchases and Stripe events (with "reprocess"), and
the referral list: each action works for staff allowed to change the model, and only for them."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import ApiKey, ServiceToken
from accounts.service_tokens import service_token_create, service_token_verify
from accounts.services import api_key_create, user_register
from credits import clock, services
from credits.models import CreditAccount, LedgerEntry
from credits.payments.models import Package, Purchase, PurchaseStatus, StripeEvent
from referrals.models import Referral
from tests.factories import registered_user
from tests.payments.conftest import completion_event

pytestmark = pytest.mark.django_db

KEYS = "/admin/accounts/apikey/"
TOKENS = "/admin/accounts/servicetoken/"
EVENTS = "/admin/payments/stripeevent/"


# --- API keys and service tokens -------------------------------------------------------------


def test_staff_revoke_a_users_key_and_the_digest_is_never_shown(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    key, secret = api_key_create(user=alice, name="laptop")
    kept, _ = api_key_create(user=alice, name="desktop")

    for page in (root.get(KEYS), root.get(f"{KEYS}{key.pk}/change/")):
        html = page.content.decode()
        assert key.prefix in html
        assert key.digest not in html and secret not in html

    response = root.post(KEYS, {"action": "revoke", "_selected_action": [str(key.pk)]}, follow=True)

    assert "Revoked 1 API key(s)." in response.content.decode()
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None
    assert ApiKey.objects.get(pk=kept.pk).revoked_at is None
    assert root.get(f"{KEYS}add/").status_code == 403


def test_staff_who_may_only_view_keys_cannot_revoke_them(staff: Callable[..., Client]) -> None:
    alice = registered_user(email="alice@example.com")
    key, _ = api_key_create(user=alice, name="laptop")
    viewer = staff("accounts.view_apikey")
    assert viewer.get(KEYS).status_code == 200

    viewer.post(KEYS, {"action": "revoke", "_selected_action": [str(key.pk)]})

    assert ApiKey.objects.get(pk=key.pk).revoked_at is None
    changer = staff("accounts.view_apikey", "accounts.change_apikey")
    changer.post(KEYS, {"action": "revoke", "_selected_action": [str(key.pk)]})
    assert ApiKey.objects.get(pk=key.pk).revoked_at is not None


def test_a_revoked_service_token_is_refused_by_the_internal_api(root: Client) -> None:
    token, secret = service_token_create(name="gateway-1")
    assert service_token_verify(secret) == token.pk
    assert secret not in root.get(f"{TOKENS}{token.pk}/change/").content.decode()

    root.post(TOKENS, {"action": "revoke", "_selected_action": [token.pk]})

    assert ServiceToken.objects.get(pk=token.pk).revoked_at is not None
    response = Client().post(
        "/internal/v1/authorize",
        {"api_key": "sk-kimi-x", "request_id": "r1", "model": "m", "format": "openai"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_service_token"


def test_staff_who_may_only_view_service_tokens_cannot_revoke_them(
    staff: Callable[..., Client],
) -> None:
    token, _ = service_token_create(name="gateway-1")
    staff("accounts.view_servicetoken").post(
        TOKENS, {"action": "revoke", "_selected_action": [token.pk]}
    )
    assert ServiceToken.objects.get(pk=token.pk).revoked_at is None


# --- purchases and Stripe events -------------------------------------------------------------


def pending_purchase(email: str = "alice@example.com", slug: str = "standard") -> Purchase:
    user = registered_user(email=email)
    package = Package.objects.get(slug=slug)
    return Purchase.objects.create(
        user=user,
        package=package,
        credits=package.credits,
        price_amount=package.price_amount,
        currency=package.currency,
        validity_months=package.validity_months,
        checkout_session_id=f"cs_test_{email.split('@')[0]}",
        created_at=clock.now(),
    )


def failed_completion(purchase: Purchase) -> StripeEvent:
    """The purchase's `checkout.session.completed`, stored as if its first run had failed."""
    event = completion_event(purchase)
    return StripeEvent.objects.create(
        event_id=event["id"],
        type=event["type"],
        created=datetime.fromtimestamp(event["created"], UTC),
        payload=event,
        status="failed",
        attempts=1,
        error="OperationalError: the database went away",
        received_at=timezone.now(),
    )


def test_purchases_show_their_stripe_ids_and_states_and_are_found_by_them(root: Client) -> None:
    purchase = pending_purchase()
    pending_purchase(email="bob@example.com")
    listing = root.get("/admin/payments/purchase/", {"q": "cs_test_alice"})
    assert [p.pk for p in listing.context["cl"].result_list] == [purchase.pk]
    assert "pending: checkout not completed" in listing.content.decode()
    page = root.get(f"/admin/payments/purchase/{purchase.pk}/change/").content.decode()
    assert "cs_test_alice" in page
    assert root.get("/admin/payments/purchase/add/").status_code == 403


def test_staff_reprocess_a_failed_stripe_event_and_the_credits_arrive(root: Client) -> None:
    purchase = pending_purchase()
    event = failed_completion(purchase)
    listing = root.get(EVENTS, {"status__exact": "failed"}).content.decode()
    assert event.event_id in listing

    response = root.post(
        EVENTS, {"action": "reprocess", "_selected_action": [event.pk]}, follow=True
    )

    assert "Reprocessed 1 event(s); 0 failed again." in response.content.decode()
    event.refresh_from_db()
    assert (event.status, event.attempts) == ("processed", 2)
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID
    assert CreditAccount.objects.get(pk=purchase.user_id).balance == 5100
    assert LedgerEntry.objects.filter(lot__purchase=purchase).count() == 1


def test_staff_who_may_only_view_events_cannot_reprocess_them(
    staff: Callable[..., Client],
) -> None:
    purchase = pending_purchase()
    event = failed_completion(purchase)
    viewer = staff("payments.view_stripeevent")
    assert viewer.get(EVENTS).status_code == 200

    viewer.post(EVENTS, {"action": "reprocess", "_selected_action": [event.pk]})

    event.refresh_from_db()
    assert (event.status, event.attempts) == ("failed", 1)
    assert CreditAccount.objects.get(pk=purchase.user_id).balance == 100


# --- referrals -------------------------------------------------------------------------------


def test_staff_see_the_referrals_list(root: Client) -> None:
    inviter = registered_user(email="inviter@example.com")
    user_register(email="invitee@example.com", password="x" * 12, invite_code=inviter.invite_code)
    assert Referral.objects.get().inviter == inviter
    html = root.get("/admin/referrals/referral/").content.decode()
    assert "inviter@example.com" in html and "invitee@example.com" in html
    assert root.get("/admin/referrals/referral/add/").status_code == 403


def test_only_staff_who_may_change_purchases_unfreeze_a_buyer(
    staff: Callable[..., Client],
) -> None:
    purchase = pending_purchase()
    services.account_freeze(user_id=purchase.user_id, reason="dispute du_1")
    action = {"action": "unfreeze_buyers", "_selected_action": [str(purchase.pk)]}

    staff("payments.view_purchase").post("/admin/payments/purchase/", action)
    assert CreditAccount.objects.get(pk=purchase.user_id).frozen_at is not None

    staff("payments.view_purchase", "payments.change_purchase").post(
        "/admin/payments/purchase/", action
    )
    assert CreditAccount.objects.get(pk=purchase.user_id).frozen_at is None
