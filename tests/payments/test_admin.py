"""Staff's tools: reprocessing failed events and unfreezing a disputed buyer."""

import re
from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from credits.models import CreditAccount
from credits.payments.models import Purchase, PurchaseStatus, StripeEvent, StripeEventStatus
from tests.factories import registered_user
from tests.stripe_support import build_event, dispute

from .conftest import balance, buy, completion_event, deliver

pytestmark = pytest.mark.django_db


def staff_client() -> Client:
    admin = User.objects.create_superuser(email="staff@example.com", password="pw-staff-123")
    client = Client()
    client.force_login(admin)
    return client


def test_staff_reprocess_a_failed_event_from_the_admin(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    early = build_event(
        "charge.dispute.created", dispute(amount=2999, payment_intent="pi_known_later")
    )
    deliver(early)
    stored = StripeEvent.objects.get(event_id=early["id"])
    assert stored.status == StripeEventStatus.FAILED
    deliver(completion_event(purchase, payment_intent="pi_known_later"))

    response = staff_client().post(
        "/admin/payments/stripeevent/",
        {"action": "reprocess", "_selected_action": [stored.pk]},
        follow=True,
    )

    assert response.status_code == 200
    stored.refresh_from_db()
    assert (stored.status, stored.attempts) == (StripeEventStatus.PROCESSED, 2)
    assert Purchase.objects.get(pk=purchase.pk).status == PurchaseStatus.DISPUTED
    assert balance(user) == 100


def test_staff_unfreeze_a_disputed_buyer_from_the_admin(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "starter")
    deliver(completion_event(purchase))
    purchase.refresh_from_db()
    deliver(
        build_event("charge.dispute.created", dispute(payment_intent=purchase.payment_intent_id))
    )
    assert CreditAccount.objects.get(pk=user.pk).frozen_at is not None
    client = staff_client()

    for page in (
        "/admin/payments/purchase/",
        f"/admin/payments/purchase/{purchase.pk}/change/",
        "/admin/payments/stripeevent/",
        "/admin/payments/package/",
    ):
        assert client.get(page).status_code == 200, page
    client.post(
        "/admin/payments/purchase/",
        {"action": "unfreeze_buyers", "_selected_action": [str(purchase.pk)]},
    )

    assert CreditAccount.objects.get(pk=user.pk).frozen_at is None
    assert balance(user) == 100  # nothing restored automatically


def test_staff_see_what_a_refund_could_not_take_back(stripe_settings: Any) -> None:
    from django.urls import reverse

    from credits import services as ledger
    from tests.payments.test_handlers import paid, refund_event

    user = registered_user()
    purchase = paid(user, "standard")
    ledger.credits_adjust(user_id=user.pk, amount=-4998, reason="spent", idempotency_key="s")
    ledger.hold_create(user_id=user.pk, request_id="in-flight")  # one of the two left is held
    deliver(refund_event(purchase, purchase.price_amount))
    changelist = reverse(f"admin:{Purchase._meta.app_label}_purchase_changelist")
    client = staff_client()

    owed = client.get(changelist, {"shortfall": "owed"})
    uncollectable = client.get(changelist, {"shortfall": "uncollectable"})
    page = client.get(
        reverse(f"admin:{Purchase._meta.app_label}_purchase_change", args=[purchase.pk])
    )

    assert list(owed.context["cl"].result_list) == [purchase]
    assert list(uncollectable.context["cl"].result_list) == [purchase]
    text = page.content.decode().lower()
    assert "claw-back owed" in text and "uncollectable" in text
    assert re.search(r"4,?998", text)  # what was spent before the refund: uncollectable
