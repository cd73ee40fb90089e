"""Helpers for the payments tests: Stripe settings aimed at a local recorded-response server,
purchases created through the real Checkout path, and webhook deliveries signed the way Stripe
signs them."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, TestCase, override_settings
from rest_framework.test import APIClient

from accounts.models import User
from credits.models import CreditAccount
from credits.payments import services
from credits.payments.models import Package, Purchase
from tests import stripe_support
from tests.factories import ensure_seeded_packages
from tests.stripe_support import (
    StripeRecordedServer,
    build_event,
    charge,
    checkout_session,
    new_id,
    signed_webhook,
)

WEBHOOK_SECRET = "whsec_test_payments"
WEBHOOK_URL = "/api/webhooks/stripe"

stripe_server = stripe_support.stripe_server


@pytest.fixture(autouse=True)
def _seeded_packages(request: pytest.FixtureRequest) -> None:
    """Transactional tests flush the database, seeded rows included: put them back."""
    if "transactional_db" not in request.fixturenames and not any(
        m.kwargs.get("transaction") for m in request.node.iter_markers("django_db")
    ):
        return
    request.getfixturevalue("transactional_db")
    ensure_seeded_packages()


@pytest.fixture
def stripe_settings(stripe_server: StripeRecordedServer) -> Iterator[StripeRecordedServer]:
    """Stripe credentials set and the API aimed at the recorded-response server."""
    with override_settings(
        STRIPE_SECRET_KEY="sk_test_payments",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=stripe_server.api_base + "/",
        DASHBOARD_URL="https://dashboard.example.com",
    ):
        yield stripe_server


def api_client(user: User | None = None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def buy(user: User, slug: str = "standard") -> Purchase:
    """A pending purchase with its Checkout Session, made the way the API makes it."""
    return services.purchase_create(user=user, package_slug=slug)


def deliver(
    event: dict[str, Any], *, timestamp: int | None = None, client: Client | None = None
) -> Any:
    """POST a Stripe-signed event to the webhook endpoint.

    Inside a test's transaction, commit callbacks (the enqueued processing task, which runs
    eagerly here) are run as if the view's transaction had committed."""
    body, header = signed_webhook(event, WEBHOOK_SECRET, timestamp)
    with TestCase.captureOnCommitCallbacks(execute=True):
        return (client or Client(enforce_csrf_checks=True)).post(
            WEBHOOK_URL, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header
        )


def completed_session(purchase: Purchase, **overrides: Any) -> dict[str, Any]:
    """The Checkout Session of `purchase` as Stripe sends it once the customer has paid."""
    fields: dict[str, Any] = {
        "id": purchase.checkout_session_id,
        "client_reference_id": str(purchase.pk),
        "metadata": {"purchase_id": str(purchase.pk)},
        "amount_total": purchase.price_amount,
        "currency": purchase.currency,
        "payment_status": "paid",
        "status": "complete",
    }
    fields.update(overrides)
    return checkout_session(**fields)


def completion_event(purchase: Purchase, *, created: int | None = None, **overrides: Any) -> Any:
    return build_event(
        "checkout.session.completed", completed_session(purchase, **overrides), created=created
    )


def balance(user: User) -> int:
    return CreditAccount.objects.get(pk=user.pk).balance


def package(slug: str) -> Package:
    return Package.objects.get(slug=slug)


def paid_with_charge(user: User, server: StripeRecordedServer, slug: str = "standard") -> Purchase:
    """A granted purchase whose charge Stripe (the recorded server) knows."""
    purchase = buy(user, slug)
    charge_id, intent_id = new_id("ch"), new_id("pi")
    assert deliver(completion_event(purchase, payment_intent=intent_id)).status_code == 200
    Purchase.objects.filter(pk=purchase.pk).update(charge_id=charge_id)
    purchase.refresh_from_db()
    server.charges[charge_id] = charge(
        id=charge_id,
        amount=purchase.price_amount,
        amount_refunded=0,
        currency=purchase.currency,
        payment_intent=intent_id,
        metadata={"purchase_id": str(purchase.pk)},
    )
    return purchase
