"""Auto top-up end to end (credits/payments/autotopup.py): a card saved through a setup-mode
Checkout, the trigger stamped by the ledger (Python paths and the gateway's SQL), one pending
top-up per account, the off-session PaymentIntent on the recorded-response Stripe server, the
grant by a signed `payment_intent.succeeded`, failures, the monthly limit. Real PostgreSQL and
real threads; each test ends with the ledger reconciling."""

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest
from django.db import connection
from django.test import Client

from accounts.models import User
from credits import clock, services
from credits.models import CreditAccount, EntryKind, Event, LedgerEntry, LotSource
from credits.payments import autotopup
from credits.payments.models import AutoTopup, Purchase, PurchaseStatus, StripeCustomer
from credits.reconciliation import reconcile
from tests.factories import registered_user
from tests.stripe_support import StripeRecordedServer, build_event, dispute

from .conftest import WEBHOOK_SECRET, WEBHOOK_URL, api_client, balance, deliver

pytestmark = pytest.mark.django_db(transaction=True)

STARTER_PRICE, STARTER_CREDITS = 499, 500


@pytest.fixture(autouse=True)
def _reconciles() -> Any:
    yield
    assert reconcile() == []


# --- helpers -----------------------------------------------------------------------------------


def card_saved(user: User, server: StripeRecordedServer, outcome: str = "succeeds") -> None:
    """The user saves a card the way the dashboard does: POST, Stripe's page, the webhook."""
    response = api_client(user).post("/api/user/payment-method")
    assert response.status_code == 201, response.content
    session_id = response.json()["checkout_url"].rsplit("/", 1)[-1]
    session = server.complete_setup(session_id, brand="mastercard", last4="4444", outcome=outcome)
    assert deliver(build_event("checkout.session.completed", session)).status_code == 200


def auto_topup_on(user: User, *, threshold: int = 50, monthly_limit: int = 10_000) -> Any:
    response = api_client(user).put(
        "/api/user/auto-topup",
        {
            "enabled": True,
            "threshold": threshold,
            "package": "starter",
            "monthly_limit": monthly_limit,
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def spend(user: User, amount: int) -> None:
    """Take credits out through a ledger operation (a staff adjustment): a Python path."""
    services.credits_adjust(
        user_id=user.pk, amount=-amount, reason="test spend", idempotency_key=f"spend:{uuid4()}"
    )


def refill(user: User, amount: int) -> None:
    services.credits_grant(
        user_id=user.pk,
        amount=amount,
        source=LotSource.ADJUSTMENT,
        idempotency_key=f"refill:{uuid4()}",
    )


def top_ups(user: User) -> list[Purchase]:
    return list(Purchase.objects.filter(user=user, auto_topup=True).order_by("created_at"))


def intent_creations(server: StripeRecordedServer) -> list[Any]:
    return [r for r in server.requests if r.method == "POST" and r.path == "/v1/payment_intents"]


def succeeded(server: StripeRecordedServer, purchase: Purchase) -> dict[str, Any]:
    """Stripe's `payment_intent.succeeded` for the purchase's PaymentIntent."""
    purchase.refresh_from_db()
    assert purchase.payment_intent_id is not None
    return build_event(
        "payment_intent.succeeded", server.payment_intents[purchase.payment_intent_id]
    )


def events(user: User, type_: str) -> list[Event]:
    return list(Event.objects.filter(user=user, type=type_).order_by("created_at"))


def grants_of(purchase: Purchase) -> int:
    return LedgerEntry.objects.filter(
        idempotency_key=f"purchase:{purchase.pk}", kind=EntryKind.GRANT
    ).count()


def pending_after_a_lost_answer(server: StripeRecordedServer) -> tuple[User, Purchase]:
    """A crossing whose top-up Stripe made, while every answer to the create call was lost (the
    library's own retries too): the purchase stays pending without a PaymentIntent."""
    user = registered_user()
    card_saved(user, server)
    auto_topup_on(user)
    server.drop_payment_intents = 3
    spend(user, 60)
    [purchase] = top_ups(user)
    return user, purchase


# --- saving a card, the configuration -----------------------------------------------------------


def test_a_card_saved_through_setup_checkout_shows_its_display_fields_only(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    assert api_client(user).get("/api/user/payment-method").status_code == 404

    card_saved(user, stripe_settings)

    response = api_client(user).get("/api/user/payment-method")
    assert response.status_code == 200
    assert response.json() == {
        "brand": "mastercard",
        "last4": "4444",
        "exp_month": 12,
        "exp_year": 2030,
    }
    customer = StripeCustomer.objects.get(user=user)
    assert customer.customer_id in stripe_settings.customers
    assert customer.payment_method_id in stripe_settings.payment_methods
    # The setup session was made for the user's customer, in setup mode.
    session_request = next(r for r in stripe_settings.requests if r.path == "/v1/checkout/sessions")
    assert session_request.form["mode"] == "setup"
    assert session_request.form["customer"] == customer.customer_id
    # Another user sees nothing of it.
    assert api_client(registered_user()).get("/api/user/payment-method").status_code == 404


def test_a_redelivered_setup_completion_does_not_bring_back_a_removed_card(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    response = api_client(user).post("/api/user/payment-method")
    session_id = response.json()["checkout_url"].rsplit("/", 1)[-1]
    completed = build_event(
        "checkout.session.completed", stripe_settings.complete_setup(session_id)
    )
    deliver(completed)
    assert api_client(user).get("/api/user/payment-method").status_code == 200
    assert api_client(user).delete("/api/user/payment-method").status_code == 204

    deliver(completed)
    deliver(dict(completed, id=f"evt_{uuid4().hex}"))  # the same session, another event

    assert api_client(user).get("/api/user/payment-method").status_code == 404


def test_a_card_fetch_that_found_stripe_away_is_done_by_the_sweep(
    stripe_settings: StripeRecordedServer,
) -> None:
    from django.test import override_settings

    user = registered_user()
    response = api_client(user).post("/api/user/payment-method")
    session_id = response.json()["checkout_url"].rsplit("/", 1)[-1]
    session = stripe_settings.complete_setup(session_id)
    with override_settings(STRIPE_API_BASE="http://127.0.0.1:9"):  # nothing listens there
        deliver(build_event("checkout.session.completed", session))
    assert api_client(user).get("/api/user/payment-method").status_code == 404

    autotopup.auto_topups_sweep()

    assert api_client(user).get("/api/user/payment-method").json()["last4"] == "4242"


def test_the_stripe_customer_is_created_once_even_by_two_requests_at_once(
    stripe_settings: StripeRecordedServer,
) -> None:
    from tests.concurrency import run_together

    user = registered_user()

    def start(_: int) -> int:
        return int(api_client(user).post("/api/user/payment-method").status_code)

    assert run_together(2, start) == [201, 201]
    assert StripeCustomer.objects.filter(user=user).count() == 1
    assert len(stripe_settings.customers) == 1
    keys = {r.idempotency_key for r in stripe_settings.requests if r.path == "/v1/customers"}
    assert keys == {f"customer-{user.pk}"}


def test_enabling_needs_a_saved_card_and_each_bad_field_is_named(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    client = api_client(user)
    body = {"enabled": True, "threshold": 50, "package": "starter", "monthly_limit": 1000}

    def put(**changes: Any) -> Any:
        return client.put("/api/user/auto-topup", {**body, **changes}, format="json")

    refused = put()
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "payment_method_required"
    card_saved(user, stripe_settings)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"threshold": 0}, "threshold"),
        ({"package": "no-such"}, "package"),
        ({"monthly_limit": STARTER_PRICE - 1}, "monthly_limit"),
        ({"enabled": "yes"}, "enabled"),
    ]
    for changes, field in bad:
        answer = put(**changes)
        assert answer.status_code == 400, changes
        assert answer.json()["error"]["field"] == field
    assert put().status_code == 200
    assert client.get("/api/user/auto-topup").json() == {
        "enabled": True,
        "threshold": 50,
        "package": "starter",
        "monthly_limit": 1000,
        "failures": 0,
        "disabled_reason": None,
    }
    assert CreditAccount.objects.get(pk=user.pk).auto_topup_threshold == 50


# --- the trigger, one pending at a time ---------------------------------------------------------


def test_a_crossing_starts_one_top_up_charged_off_session_with_a_key_from_the_purchase(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()  # 100 credits
    card_saved(user, stripe_settings)
    auto_topup_on(user, threshold=50)

    spend(user, 40)  # 100 -> 60: above the threshold
    assert top_ups(user) == []
    spend(user, 20)  # 60 -> 40: crosses

    [purchase] = top_ups(user)
    [create] = intent_creations(stripe_settings)
    assert create.idempotency_key == f"purchase-{purchase.pk}-auto-topup"
    assert create.form["off_session"] == "true" and create.form["confirm"] == "true"
    assert create.form["amount"] == str(STARTER_PRICE)
    assert create.form["metadata"]["purchase_id"] == str(purchase.pk)
    assert purchase.status == PurchaseStatus.PENDING and purchase.payment_intent_id

    response = deliver(succeeded(stripe_settings, purchase))

    assert response.status_code == 200
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID
    assert balance(user) == 40 + STARTER_CREDITS
    assert [e.data for e in events(user, "auto_topup.succeeded")] == [
        {"purchase_id": str(purchase.pk)}
    ]


def test_a_second_crossing_while_one_is_pending_starts_none_and_after_success_the_next_starts(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user, threshold=50)
    spend(user, 60)  # 100 -> 40
    [first] = top_ups(user)

    refill(user, 30)  # 70
    spend(user, 30)  # 70 -> 40: a second crossing, the first still pending

    assert top_ups(user) == [first]
    deliver(succeeded(stripe_settings, first))
    assert balance(user) == 40 + STARTER_CREDITS
    spend(user, STARTER_CREDITS)  # 540 -> 40: the next crossing

    assert len(top_ups(user)) == 2
    assert len(intent_creations(stripe_settings)) == 2


def test_a_webhook_delivered_twice_grants_once(stripe_settings: StripeRecordedServer) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user)
    spend(user, 60)
    [purchase] = top_ups(user)
    event = succeeded(stripe_settings, purchase)

    deliver(event)
    again = dict(event, id=f"evt_{uuid4().hex}")  # the same payment, another event id
    deliver(event)
    deliver(again)

    assert grants_of(purchase) == 1
    assert balance(user) == 40 + STARTER_CREDITS
    assert len(events(user, "auto_topup.succeeded")) == 1


def test_a_succeeded_event_before_the_create_call_returned_grants_once(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user)
    answers: list[int] = []

    def webhook_first(intent: dict[str, Any]) -> None:
        # Stripe's webhook overtakes the create call's answer (another connection, as Stripe's).
        stripe_settings.on_payment_intent_created = None
        try:
            event = build_event("payment_intent.succeeded", intent)
            answers.append(deliver(event, client=Client()).status_code)
        finally:
            connection.close()

    stripe_settings.on_payment_intent_created = webhook_first
    spend(user, 60)

    assert answers == [200]
    [purchase] = top_ups(user)
    assert purchase.status == PurchaseStatus.PAID
    assert grants_of(purchase) == 1
    assert balance(user) == 40 + STARTER_CREDITS
    assert purchase.payment_intent_id in stripe_settings.payment_intents


def test_a_create_retried_after_a_timeout_reuses_its_key_and_charges_once(
    stripe_settings: StripeRecordedServer,
) -> None:
    _, purchase = pending_after_a_lost_answer(stripe_settings)

    assert purchase.status == PurchaseStatus.PENDING and purchase.payment_intent_id is None
    assert len(stripe_settings.payment_intents) == 1  # made once, whatever the client saw
    # The beat's sweep sends it again (once it is a minute old): Stripe answers the same object.
    clock.advance(timedelta(seconds=autotopup.STALE_CHARGE_SECONDS + 1))
    autotopup.auto_topups_sweep()

    purchase.refresh_from_db()
    assert purchase.payment_intent_id == next(iter(stripe_settings.payment_intents))
    creations = intent_creations(stripe_settings)
    assert len(creations) == 4
    assert {r.idempotency_key for r in creations} == {f"purchase-{purchase.pk}-auto-topup"}
    deliver(succeeded(stripe_settings, purchase))
    assert grants_of(purchase) == 1


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["card_declined", "authentication_required", "requires_action"])
def test_a_refused_charge_fails_the_top_up_and_fires_auto_topup_failed(
    stripe_settings: StripeRecordedServer, outcome: str
) -> None:
    user = registered_user()
    card_saved(user, stripe_settings, outcome=outcome)
    auto_topup_on(user)

    spend(user, 60)

    [purchase] = top_ups(user)
    assert purchase.status == PurchaseStatus.FAILED
    reason = "authentication_required" if outcome == "requires_action" else outcome
    assert [e.data for e in events(user, "auto_topup.failed")] == [
        {"purchase_id": str(purchase.pk), "reason": reason}
    ]
    assert AutoTopup.objects.get(user=user).failures == 1
    assert balance(user) == 40
    # Stripe's own `payment_intent.payment_failed` about the same decline counts nothing more.
    intent = stripe_settings.payment_intents[purchase.payment_intent_id or ""]
    deliver(build_event("payment_intent.payment_failed", intent))
    assert AutoTopup.objects.get(user=user).failures == 1
    assert len(events(user, "auto_topup.failed")) == 1


def test_three_failures_in_a_row_turn_auto_top_up_off_and_a_success_resets_the_count(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    card_saved(user, stripe_settings, outcome="card_declined")
    auto_topup_on(user)
    spend(user, 60)  # failure 1
    refill(user, 20)
    spend(user, 20)  # failure 2
    assert AutoTopup.objects.get(user=user).failures == 2

    # The customer saves a card that works: the next success ends the run.
    card_saved(user, stripe_settings)
    refill(user, 20)
    spend(user, 20)
    deliver(succeeded(stripe_settings, top_ups(user)[-1]))
    assert AutoTopup.objects.get(user=user).failures == 0

    card_saved(user, stripe_settings, outcome="card_declined")
    for _ in range(3):
        if balance(user) < 50:
            refill(user, 20)
        spend(user, balance(user) - 40)

    config = api_client(user).get("/api/user/auto-topup").json()
    assert (config["enabled"], config["failures"], config["disabled_reason"]) == (
        False,
        3,
        "payment_failures",
    )
    assert CreditAccount.objects.get(pk=user.pk).auto_topup_threshold is None
    count = len(top_ups(user))
    refill(user, 100)
    spend(user, 100)
    assert len(top_ups(user)) == count  # off: no more charges


def test_a_removed_card_turns_auto_top_up_off_and_starts_nothing(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user)

    assert api_client(user).delete("/api/user/payment-method").status_code == 204

    assert api_client(user).get("/api/user/payment-method").status_code == 404
    config = api_client(user).get("/api/user/auto-topup").json()
    assert (config["enabled"], config["disabled_reason"]) == (False, "payment_method_removed")
    spend(user, 60)
    assert top_ups(user) == []
    assert intent_creations(stripe_settings) == []


def test_a_card_removed_while_a_top_up_waits_for_its_charge_fails_it(
    stripe_settings: StripeRecordedServer,
) -> None:
    user, purchase = pending_after_a_lost_answer(stripe_settings)
    api_client(user).delete("/api/user/payment-method")

    autotopup.auto_topup_charge(purchase_id=purchase.pk)

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.FAILED
    assert [e.data["reason"] for e in events(user, "auto_topup.failed")] == [
        "payment_method_removed"
    ]


def test_a_frozen_account_gets_no_top_up(stripe_settings: StripeRecordedServer) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user)
    services.account_freeze(user_id=user.pk, reason="disputed elsewhere")

    spend(user, 60)

    assert top_ups(user) == []
    assert CreditAccount.objects.get(pk=user.pk).auto_topup_requested_at is None  # claimed


def test_a_disputed_auto_top_up_is_clawed_back_and_freezes_the_account(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user)
    spend(user, 60)
    [purchase] = top_ups(user)
    deliver(succeeded(stripe_settings, purchase))
    purchase.refresh_from_db()

    deliver(
        build_event(
            "charge.dispute.created",
            dispute(charge=purchase.charge_id, payment_intent=purchase.payment_intent_id),
        )
    )

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.DISPUTED
    assert CreditAccount.objects.get(pk=user.pk).frozen_at is not None
    assert balance(user) == 40
    # The claw-back took the balance below the threshold again: no top-up (a claw-back never
    # stamps, and the account is frozen).
    assert len(top_ups(user)) == 1


def test_an_auto_top_up_as_the_first_payment_rewards_the_inviter_and_its_refund_takes_it_back(
    stripe_settings: StripeRecordedServer,
) -> None:
    from referrals.models import PaymentReward
    from tests.referrals.conftest import referral_of, register

    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    card_saved(bob, stripe_settings)
    auto_topup_on(bob)
    spend(bob, 60)
    [purchase] = top_ups(bob)
    deliver(succeeded(stripe_settings, purchase))
    assert referral_of(bob).paid_purchase == str(purchase.pk)
    assert balance(ann) == 100 + 50 + 500
    purchase.refresh_from_db()
    paid_charge = stripe_settings.charges[purchase.charge_id or ""]
    refunded = dict(paid_charge, amount_refunded=STARTER_PRICE)

    deliver(build_event("charge.refunded", refunded))

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.REFUNDED
    assert referral_of(bob).payment_status == PaymentReward.REVERSED
    assert balance(ann) == 150
    assert balance(bob) == 40
    # The claw-back took Bob's balance below the threshold: a refund never charges again.
    assert top_ups(bob) == [purchase]


# --- the monthly limit -------------------------------------------------------------------------


def test_the_monthly_limit_stops_top_ups_fires_limit_reached_once_and_rolls_over_at_midnight_utc(
    stripe_settings: StripeRecordedServer,
) -> None:
    # Start on the 1st of next month, 00:00:10 UTC, so that the whole test is in one month.
    now = clock.now()
    first = (now.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=10, microsecond=0
    )
    clock.advance(first - now)
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user, monthly_limit=2 * STARTER_PRICE)

    for _ in range(2):
        spend(user, balance(user) - 40)
        deliver(succeeded(stripe_settings, top_ups(user)[-1]))
    assert len(top_ups(user)) == 2

    for _ in range(2):  # a third and a fourth crossing this month: over the limit
        spend(user, balance(user) - 40)
        refill(user, 20)
    assert len(top_ups(user)) == 2
    [reached] = events(user, "auto_topup.limit_reached")
    assert reached.data == {"reason": f"The monthly limit of {2 * STARTER_PRICE} is reached."}

    # 00:00:00 UTC of the next month: a new month, a new limit.
    now = clock.now()
    next_month = (now.replace(day=28) + timedelta(days=4)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    clock.advance(next_month - now)
    spend(user, balance(user) - 40)
    assert len(top_ups(user)) == 3


# --- the webhook is signed as Stripe signs it --------------------------------------------------


def test_an_unsigned_payment_intent_event_is_refused(stripe_settings: StripeRecordedServer) -> None:
    user = registered_user()
    card_saved(user, stripe_settings)
    auto_topup_on(user)
    spend(user, 60)
    [purchase] = top_ups(user)
    body = Client().post(
        WEBHOOK_URL,
        data=b"{}",
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=f"t=1,v1={WEBHOOK_SECRET}",
    )
    assert body.status_code == 400
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING


# --- the race: many settles crossing at once -----------------------------------------------------


@pytest.mark.parametrize("implementation", ["sql", "services"])
def test_100_concurrent_settles_crossing_the_threshold_start_one_top_up(
    stripe_settings: StripeRecordedServer, implementation: str
) -> None:
    """Through the gateway's settle endpoint, on 20 threads: the SQL function (or the services)
    stamps the account once, and however many kicks and claims race, one top-up starts."""
    from accounts.service_tokens import clear_cache, service_token_create
    from accounts.services import api_key_create
    from credits.gateway import backends
    from tests.concurrency import run_together
    from tests.gateway.conftest import Gateway

    user = registered_user()  # 100 credits
    card_saved(user, stripe_settings)
    auto_topup_on(user, threshold=50)
    key, _ = api_key_create(user=user, name="main")
    request_ids = [f"req_{uuid4().hex}" for _ in range(100)]
    for request_id in request_ids:
        services.hold_create(user_id=user.pk, request_id=request_id, api_key_id=key.pk)
    clear_cache()
    _, token = service_token_create(name=f"gateway-{uuid4().hex[:8]}")
    backends.FORCE = "services" if implementation == "services" else None
    try:

        def settle(thread: int) -> list[int]:
            gateway = Gateway(token, Client())
            return [gateway.settle(r).status_code for r in request_ids[thread::20]]

        results = run_together(20, settle)
    finally:
        backends.FORCE = None

    assert all(statuses == [200] * 5 for statuses in results), results
    assert balance(user) == 0
    [purchase] = top_ups(user)
    assert len(intent_creations(stripe_settings)) == 1
    assert CreditAccount.objects.get(pk=user.pk).auto_topup_requested_at is None
    deliver(succeeded(stripe_settings, purchase))
    assert balance(user) == STARTER_CREDITS
