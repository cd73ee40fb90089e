"""GET /api/packages, POST and GET /api/purchases, against a recorded-response Stripe API."""

import threading
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from credits import services as ledger
from credits.payments.models import Package, Purchase, PurchaseStatus
from tests.factories import registered_user
from tests.stripe_support import StripeRecordedServer

from .conftest import api_client, buy, completion_event, deliver

pytestmark = pytest.mark.django_db

SEEDED_PACKAGES = [
    {
        "package": "starter",
        "name": "Starter",
        "credits": 500,
        "price": {"amount": 499, "currency": "usd"},
        "validity_months": None,
    },
    {
        "package": "standard",
        "name": "Standard",
        "credits": 5000,
        "price": {"amount": 2999, "currency": "usd"},
        "validity_months": 1,
    },
    {
        "package": "premium",
        "name": "Premium",
        "credits": 20000,
        "price": {"amount": 5999, "currency": "usd"},
        "validity_months": 1,
    },
]


def enterprise_package(*customers: Any, slug: str = "acme") -> Package:
    package = Package.objects.create(
        slug=slug,
        name="Acme Enterprise",
        credits=1_000_000,
        price_amount=250_000,
        currency="usd",
        validity_months=12,
        enterprise=True,
    )
    package.customers.set(customers)
    return package


# --- packages --------------------------------------------------------------------------------


def test_anyone_can_list_the_seeded_packages_with_the_contract_fields() -> None:
    response = api_client().get("/api/packages")

    assert response.status_code == 200
    assert response.json() == SEEDED_PACKAGES


def test_enterprise_packages_are_listed_only_to_their_customers() -> None:
    customer, stranger = registered_user(), registered_user()
    enterprise_package(customer)

    def slugs(user: Any) -> list[str]:
        return [p["package"] for p in api_client(user).get("/api/packages").json()]

    assert slugs(customer) == ["starter", "standard", "premium", "acme"]
    assert slugs(stranger) == ["starter", "standard", "premium"]
    assert slugs(None) == ["starter", "standard", "premium"]


def test_inactive_packages_are_not_listed() -> None:
    Package.objects.filter(slug="premium").update(active=False)

    assert [p["package"] for p in api_client().get("/api/packages").json()] == [
        "starter",
        "standard",
    ]


# --- creating a purchase ---------------------------------------------------------------------


def test_a_purchase_opens_a_checkout_session_priced_from_our_database(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()

    response = api_client(user).post(
        "/api/purchases", {"package": "standard", "price": 1}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"purchase_id", "checkout_url"}
    purchase = Purchase.objects.get(pk=body["purchase_id"])
    assert (purchase.user, purchase.status) == (user, PurchaseStatus.PENDING)
    assert (purchase.credits, purchase.price_amount, purchase.currency) == (5000, 2999, "usd")
    assert purchase.validity_months == 1
    [request] = stripe_settings.requests
    assert purchase.checkout_session_id is not None
    assert body["checkout_url"] == stripe_settings.sessions[purchase.checkout_session_id]["url"]
    assert request.idempotency_key == f"purchase-{purchase.pk}-checkout"
    assert request.stripe_version == "2025-08-27.basil"
    assert request.header("Authorization") == "Bearer sk_test_payments"
    form = request.form
    assert form["mode"] == "payment"
    assert form["line_items"] == [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": "2999",
                "product_data": {"name": "Standard: 5,000 credits"},
            },
            "quantity": "1",
        }
    ]
    assert form["client_reference_id"] == str(purchase.pk)
    assert form["metadata"]["purchase_id"] == str(purchase.pk)
    assert form["payment_intent_data"]["metadata"]["purchase_id"] == str(purchase.pk)
    assert form["success_url"].startswith("https://dashboard.example.com/")
    assert form["cancel_url"].startswith("https://dashboard.example.com/")


def test_the_snapshot_keeps_the_price_the_purchase_was_made_at(
    stripe_settings: StripeRecordedServer,
) -> None:
    purchase = buy(registered_user(), "premium")
    Package.objects.filter(slug="premium").update(price_amount=6999, credits=1)

    purchase.refresh_from_db()
    assert (purchase.credits, purchase.price_amount) == (20000, 5999)


def test_a_retried_post_with_the_same_idempotency_key_returns_the_same_purchase(
    stripe_settings: StripeRecordedServer,
) -> None:
    client = api_client(registered_user())

    first = client.post(
        "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    second = client.post(
        "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    other = client.post(
        "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2"
    )

    assert first.status_code == second.status_code == other.status_code == 201
    assert second.json() == first.json()
    assert other.json()["purchase_id"] != first.json()["purchase_id"]
    assert Purchase.objects.count() == 2
    assert len(stripe_settings.sessions) == 2


def test_an_idempotency_key_reused_for_another_package_is_a_conflict(
    stripe_settings: StripeRecordedServer,
) -> None:
    client = api_client(registered_user())
    client.post("/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="k")

    response = client.post(
        "/api/purchases", {"package": "premium"}, format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_conflict"
    assert Purchase.objects.count() == 1


def test_the_same_idempotency_key_is_independent_between_users(
    stripe_settings: StripeRecordedServer,
) -> None:
    a = api_client(registered_user()).post(
        "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="same"
    )
    b = api_client(registered_user()).post(
        "/api/purchases", {"package": "premium"}, format="json", HTTP_IDEMPOTENCY_KEY="same"
    )

    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["purchase_id"] != b.json()["purchase_id"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_with_one_idempotency_key_make_one_purchase_and_one_session(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    barrier = threading.Barrier(8)
    bodies: list[dict[str, Any]] = []

    def post() -> None:
        try:
            barrier.wait()
            response = api_client(user).post(
                "/api/purchases",
                {"package": "standard"},
                format="json",
                HTTP_IDEMPOTENCY_KEY="retry-me",
            )
            assert response.status_code == 201, response.content
            bodies.append(response.json())
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(bodies) == 8
    assert all(body == bodies[0] for body in bodies)
    assert Purchase.objects.count() == 1
    assert len(stripe_settings.sessions) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "missing_field"),
        ({"package": ""}, 400, "missing_field"),
        ({"package": "platinum"}, 400, "unknown_package"),
        ({"package": "acme"}, 400, "unknown_package"),  # someone else's Enterprise package
        ({"package": "retired"}, 400, "unknown_package"),
    ],
)
def test_a_purchase_of_nothing_buyable_is_refused_and_creates_nothing(
    stripe_settings: StripeRecordedServer, body: dict[str, Any], status: int, code: str
) -> None:
    enterprise_package(registered_user())
    Package.objects.create(slug="retired", name="Old", credits=1, price_amount=1, active=False)

    response = api_client(registered_user()).post("/api/purchases", body, format="json")

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert Purchase.objects.count() == 0
    assert stripe_settings.requests == []


def test_an_enterprise_customer_can_buy_their_package(
    stripe_settings: StripeRecordedServer,
) -> None:
    customer = registered_user()
    enterprise_package(customer)

    response = api_client(customer).post("/api/purchases", {"package": "acme"}, format="json")

    assert response.status_code == 201
    assert (
        stripe_settings.requests[0].form["line_items"][0]["price_data"]["unit_amount"] == "250000"
    )


@pytest.mark.parametrize("missing", ["STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"])
def test_without_stripe_credentials_purchases_are_unavailable(
    stripe_settings: StripeRecordedServer, missing: str
) -> None:
    with override_settings(**{missing: ""}):
        response = api_client(registered_user()).post(
            "/api/purchases", {"package": "starter"}, format="json"
        )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payments_unavailable"
    assert Purchase.objects.count() == 0
    assert stripe_settings.requests == []


def test_a_stripe_failure_is_a_clear_error_and_a_retry_completes_the_same_purchase(
    stripe_settings: StripeRecordedServer,
) -> None:
    client = api_client(registered_user())
    with override_settings(STRIPE_API_BASE="http://127.0.0.1:9"):  # nothing listens there
        failed = client.post(
            "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="net"
        )
    assert failed.status_code == 502
    assert failed.json()["error"]["code"] == "payment_provider_error"

    retried = client.post(
        "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY="net"
    )

    assert retried.status_code == 201
    assert Purchase.objects.count() == 1
    assert str(Purchase.objects.get().pk) == retried.json()["purchase_id"]


def test_a_frozen_account_cannot_buy(stripe_settings: StripeRecordedServer) -> None:
    user = registered_user()
    ledger.account_freeze(user_id=user.pk, reason="disputed")

    response = api_client(user).post("/api/purchases", {"package": "starter"}, format="json")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_frozen"


def test_purchases_require_a_logged_in_user() -> None:
    assert (
        api_client().post("/api/purchases", {"package": "starter"}, format="json").status_code
        == 401
    )
    assert api_client().get("/api/purchases").status_code == 401


# --- listing purchases -----------------------------------------------------------------------


def test_a_user_lists_only_their_own_purchases_with_states_and_amounts(
    stripe_settings: StripeRecordedServer,
) -> None:
    user, other = registered_user(), registered_user()
    pending = buy(user, "starter")
    paid = buy(user, "standard")
    deliver(completion_event(paid))
    buy(other, "premium")

    rows = api_client(user).get("/api/purchases").json()

    assert [row["id"] for row in rows] == [str(paid.pk), str(pending.pk)]
    paid_row, pending_row = rows
    assert paid_row["status"] == "paid"
    assert paid_row["package"] == "standard"
    assert paid_row["price"] == {"amount": 2999, "currency": "usd"}
    assert paid_row["credits"] == 5000
    assert paid_row["paid_at"].endswith("Z") and paid_row["credits_expire_at"].endswith("Z")
    assert paid_row["checkout_url"] is None
    assert pending_row["status"] == "pending"
    assert pending_row["paid_at"] is None
    assert pending_row["checkout_url"].startswith("https://checkout.stripe.com/")


@pytest.mark.parametrize(
    "key",
    ["a\x00b", "\x00", "a\ud800b", "\udfff", "line\nbreak", "tab\there", "del\x7f", "c1\x85"],
)
def test_an_idempotency_key_that_cannot_be_stored_is_refused_and_creates_nothing(
    stripe_settings: StripeRecordedServer, key: str
) -> None:
    response = api_client(registered_user()).post(
        "/api/purchases", {"package": "starter"}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_idempotency_key"
    assert "Idempotency-Key" in error["message"]
    assert Purchase.objects.count() == 0
    assert stripe_settings.requests == []
