"""What each Stripe event does to a purchase and the ledger, delivered through the endpoint."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accounts.models import User
from credits import clock
from credits import services as ledger
from credits.models import CreditAccount, EntryKind, LedgerEntry
from credits.payments.models import Purchase, PurchaseStatus, StripeEvent, StripeEventStatus
from credits.payments.signals import purchase_paid, purchase_reversed
from credits.reconciliation import reconcile
from tests.factories import registered_user
from tests.stripe_support import (
    build_event,
    charge,
    checkout_session,
    dispute,
    new_id,
    payment_intent,
)

from .conftest import balance, buy, completion_event, deliver

pytestmark = pytest.mark.django_db


def paid(user: User, slug: str, *, created: int | None = None, **overrides: Any) -> Purchase:
    """A purchase completed through a signed `checkout.session.completed` delivery."""
    purchase = buy(user, slug)
    assert deliver(completion_event(purchase, created=created, **overrides)).status_code == 200
    purchase.refresh_from_db()
    return purchase


def refund_event(purchase: Purchase, amount_refunded: int) -> dict[str, Any]:
    return build_event(
        "charge.refunded",
        charge(
            id=purchase.charge_id or "ch_for_" + str(purchase.pk)[:8],
            amount=purchase.price_amount,
            amount_refunded=amount_refunded,
            currency=purchase.currency,
            payment_intent=purchase.payment_intent_id,
            metadata={"purchase_id": str(purchase.pk)},
        ),
    )


def spend(user: User, credits: int) -> None:
    for n in range(credits):
        ledger.hold_create(user_id=user.pk, request_id=f"spend-{user.pk}-{n}")
        ledger.hold_commit(request_id=f"spend-{user.pk}-{n}")


def clawbacks(purchase: Purchase) -> list[int]:
    assert purchase.lot_id is not None
    return list(
        LedgerEntry.objects.filter(lot_id=purchase.lot_id, kind=EntryKind.CLAWBACK)
        .order_by("id")
        .values_list("amount", flat=True)
    )


# --- expiry by package -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slug", "paid_at", "expires"),
    [
        (
            "standard",
            datetime(2027, 1, 31, 10, 0, 5, tzinfo=UTC),
            datetime(2027, 2, 28, 10, 0, 5, tzinfo=UTC),
        ),
        (
            "premium",
            datetime(2028, 1, 31, 23, 59, tzinfo=UTC),
            datetime(2028, 2, 29, 23, 59, tzinfo=UTC),
        ),
        (
            "standard",
            datetime(2027, 3, 15, 8, 30, tzinfo=UTC),
            datetime(2027, 4, 15, 8, 30, tzinfo=UTC),
        ),
        (
            "premium",
            datetime(2027, 12, 31, 12, 0, tzinfo=UTC),
            datetime(2028, 1, 31, 12, 0, tzinfo=UTC),
        ),
    ],
)
def test_standard_and_premium_lots_expire_one_calendar_month_after_the_payment_event(
    stripe_settings: Any, slug: str, paid_at: datetime, expires: datetime
) -> None:
    user = registered_user()
    # The payment event is in the future of the real clock: move the ledger's clock there too.
    clock.advance(paid_at - clock.now())

    purchase = paid(user, slug, created=int(paid_at.timestamp()))

    assert purchase.paid_at == paid_at
    assert purchase.lot is not None
    assert purchase.lot.expires_at == expires
    credits = purchase.credits
    clock.advance(expires - clock.now() - timedelta(seconds=1))
    assert (
        ledger.account_balance(account=CreditAccount.objects.get(pk=user.pk)).balance
        == 100 + credits
    )
    clock.advance(timedelta(seconds=1))
    ledger.account_settle_due(user_id=user.pk)
    assert balance(user) == 100
    assert reconcile() == []


def test_starter_lots_never_expire(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = paid(user, "starter")

    assert purchase.lot is not None and purchase.lot.expires_at is None
    clock.advance(timedelta(days=3650))
    ledger.account_settle_due(user_id=user.pk)
    assert balance(user) == 600


def test_async_payment_grants_only_when_it_succeeds(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    pending = completed_unpaid = completion_event(purchase, payment_status="unpaid")
    deliver(pending)
    assert balance(user) == 100
    assert Purchase.objects.get(pk=purchase.pk).status == PurchaseStatus.PENDING

    succeeded = build_event(
        "checkout.session.async_payment_succeeded",
        completed_unpaid["data"]["object"] | {"payment_status": "paid"},
    )
    deliver(succeeded)

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID
    assert purchase.paid_at == datetime.fromtimestamp(succeeded["created"], UTC)
    assert balance(user) == 5100


def test_async_payment_failure_and_session_expiry_fail_the_purchase(stripe_settings: Any) -> None:
    user = registered_user()
    failed, expired = buy(user, "standard"), buy(user, "starter")
    deliver(
        build_event(
            "checkout.session.async_payment_failed",
            checkout_session(
                id=failed.checkout_session_id,
                payment_status="unpaid",
                metadata={"purchase_id": str(failed.pk)},
            ),
        )
    )
    deliver(
        build_event(
            "checkout.session.expired",
            checkout_session(
                id=expired.checkout_session_id,
                status="expired",
                client_reference_id=str(expired.pk),
            ),
        )
    )

    assert Purchase.objects.get(pk=failed.pk).status == PurchaseStatus.FAILED
    assert Purchase.objects.get(pk=expired.pk).status == PurchaseStatus.EXPIRED
    assert balance(user) == 100


def test_payment_intent_succeeded_after_completion_grants_nothing_more(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    intent = payment_intent(
        id=purchase.payment_intent_id,
        amount=2999,
        amount_received=2999,
        currency="usd",
        status="succeeded",
        latest_charge="ch_latest",
        metadata={"purchase_id": str(purchase.pk)},
    )

    deliver(build_event("payment_intent.succeeded", intent))

    purchase.refresh_from_db()
    assert purchase.charge_id == "ch_latest"
    assert LedgerEntry.objects.filter(kind=EntryKind.GRANT, lot__purchase=purchase).count() == 1
    assert balance(user) == 5100


def test_the_paid_signal_is_sent_once_per_purchase(stripe_settings: Any) -> None:
    seen: list[Purchase] = []

    def receiver(sender: object, purchase: Purchase, **kwargs: Any) -> None:
        seen.append(purchase)

    purchase_paid.connect(receiver)
    try:
        purchase = buy(registered_user(), "starter")
        event = completion_event(purchase)
        deliver(event)
        deliver(event)
        deliver(completion_event(purchase))  # another event id for the same payment
    finally:
        purchase_paid.disconnect(receiver)

    assert [p.pk for p in seen] == [purchase.pk]


# --- only the Checkout Session events grant ---------------------------------------------------


def intent_succeeded(
    purchase: Purchase, completed: dict[str, Any], *, created: int | None = None, **overrides: Any
) -> dict[str, Any]:
    """The `payment_intent.succeeded` of the payment the Session event `completed` completes."""
    fields: dict[str, Any] = {
        "id": completed["data"]["object"]["payment_intent"],
        "amount": purchase.price_amount,
        "amount_received": purchase.price_amount,
        "currency": purchase.currency,
        "status": "succeeded",
        "latest_charge": new_id("ch"),
        "metadata": {"purchase_id": str(purchase.pk)},
    }
    fields.update(overrides)
    return build_event("payment_intent.succeeded", payment_intent(**fields), created=created)


def purchase_grant_count(purchase: Purchase) -> int:
    return LedgerEntry.objects.filter(
        kind=EntryKind.GRANT, idempotency_key=f"purchase:{purchase.pk}"
    ).count()


def test_a_payment_intent_before_the_session_grants_nothing_and_the_session_event_dates_the_lot(
    stripe_settings: Any,
) -> None:
    intent_at = datetime(2027, 1, 31, 23, 59, 59, tzinfo=UTC)
    session_at = datetime(2027, 2, 1, 0, 0, 1, tzinfo=UTC)
    user = registered_user()
    clock.advance(intent_at - clock.now())
    purchase = buy(user, "standard")
    completed = completion_event(purchase, created=int(session_at.timestamp()))
    intent = intent_succeeded(purchase, completed, created=int(intent_at.timestamp()))

    assert deliver(intent).status_code == 200

    assert StripeEvent.objects.get(event_id=intent["id"]).status == StripeEventStatus.PROCESSED
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING
    assert (purchase.lot_id, purchase.paid_at, purchase.amount_paid) == (None, None, None)
    assert purchase.payment_intent_id == intent["data"]["object"]["id"]
    assert purchase.charge_id == intent["data"]["object"]["latest_charge"]
    assert purchase_grant_count(purchase) == 0
    assert balance(user) == 100

    clock.advance(session_at - clock.now())
    assert deliver(completed).status_code == 200

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID
    assert purchase.paid_at == session_at
    assert purchase.lot is not None
    assert purchase.lot.expires_at == datetime(2027, 3, 1, 0, 0, 1, tzinfo=UTC)
    assert purchase_grant_count(purchase) == 1
    assert balance(user) == 100 + 5000
    # Past the expiry the PaymentIntent's time would have given (Feb 28 23:59:59): still there.
    clock.advance(datetime(2027, 3, 1, 0, 0, 0, tzinfo=UTC) - clock.now())
    ledger.account_settle_due(user_id=user.pk)
    assert balance(user) == 100 + 5000
    clock.advance(timedelta(seconds=1))
    ledger.account_settle_due(user_id=user.pk)
    assert balance(user) == 100
    assert reconcile() == []


def test_a_payment_intent_alone_never_grants(stripe_settings: Any) -> None:
    seen: list[Purchase] = []

    def receiver(sender: object, purchase: Purchase, **kwargs: Any) -> None:
        seen.append(purchase)

    user = registered_user()
    purchase = buy(user, "standard")
    completed = completion_event(purchase)  # built, never delivered
    intent = intent_succeeded(purchase, completed)
    purchase_paid.connect(receiver)
    try:
        deliver(intent)
        deliver(intent)  # redelivered
        deliver(
            intent_succeeded(
                purchase, completed, latest_charge=intent["data"]["object"]["latest_charge"]
            )
        )
    finally:
        purchase_paid.disconnect(receiver)

    stored = StripeEvent.objects.get(event_id=intent["id"])
    assert (stored.status, stored.purchase_id) == (StripeEventStatus.PROCESSED, purchase.pk)
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PENDING
    assert (purchase.lot_id, purchase.paid_at, purchase.amount_paid) == (None, None, None)
    assert purchase.payment_intent_id == intent["data"]["object"]["id"]
    assert purchase_grant_count(purchase) == 0
    assert seen == []
    assert balance(user) == 100


@pytest.mark.parametrize(
    ("intent_overrides", "session_overrides", "status", "amount_paid", "credited"),
    [
        ({"amount_received": 1}, {}, PurchaseStatus.PAID, 2999, 5000),
        ({"amount_received": 2999, "currency": "eur"}, {}, PurchaseStatus.PAID, 2999, 5000),
        ({}, {"amount_total": 29990}, PurchaseStatus.NEEDS_REVIEW, 29990, 0),
    ],
)
def test_the_sessions_amount_decides_even_when_the_payment_intent_arrives_first(
    stripe_settings: Any,
    intent_overrides: dict[str, Any],
    session_overrides: dict[str, Any],
    status: str,
    amount_paid: int,
    credited: int,
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    completed = completion_event(purchase, **session_overrides)
    deliver(intent_succeeded(purchase, completed, **intent_overrides))

    deliver(completed)

    purchase.refresh_from_db()
    assert purchase.status == status
    assert (purchase.amount_paid, purchase.currency_paid) == (amount_paid, "usd")
    assert purchase_grant_count(purchase) == (1 if credited else 0)
    assert balance(user) == 100 + credited
    if not credited:
        assert purchase.lot is None
        assert "no credits granted" in purchase.status_reason


def test_a_dispute_naming_only_the_charge_finds_the_purchase_the_payment_intent_linked(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    completed = completion_event(purchase)
    intent = intent_succeeded(purchase, completed)
    deliver(intent)
    opened = build_event(
        "charge.dispute.created",
        dispute(amount=2999, charge=intent["data"]["object"]["latest_charge"], payment_intent=None),
    )

    deliver(opened)

    assert StripeEvent.objects.get(event_id=opened["id"]).status == StripeEventStatus.PROCESSED
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.DISPUTED
    assert purchase.lot_id is None  # nothing granted before the Checkout Session event
    assert CreditAccount.objects.get(pk=user.pk).frozen_at is not None

    deliver(completed)

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.DISPUTED
    assert clawbacks(purchase) == [-5000]
    assert balance(user) == 100
    assert reconcile() == []


# --- amount and currency are checked against the purchase ------------------------------------


@pytest.mark.parametrize(
    "overrides", [{"amount_total": 1}, {"currency": "eur"}, {"amount_total": 29990}]
)
def test_a_payment_that_disagrees_with_the_purchase_is_flagged_and_not_granted(
    stripe_settings: Any, overrides: dict[str, Any]
) -> None:
    user = registered_user()
    purchase = paid(user, "standard", **overrides)

    assert purchase.status == PurchaseStatus.NEEDS_REVIEW
    assert purchase.lot is None
    assert "no credits granted" in purchase.status_reason
    assert balance(user) == 100


def test_a_later_price_change_does_not_refuse_a_genuine_payment(stripe_settings: Any) -> None:
    from credits.payments.models import Package

    user = registered_user()
    purchase = buy(user, "standard")
    Package.objects.filter(slug="standard").update(price_amount=3999, credits=6000)

    deliver(completion_event(purchase, amount_total=2999))

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID
    assert balance(user) == 100 + 5000


# --- refunds ---------------------------------------------------------------------------------


def test_partial_then_full_refund_claws_back_proportionally_with_one_entry_each(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")  # 5,000 credits for 2,999 cents
    reversed_causes: list[str] = []

    def receiver(sender: object, purchase: Purchase, cause: str, **kwargs: Any) -> None:
        reversed_causes.append(cause)

    purchase_reversed.connect(receiver)
    try:
        first = refund_event(purchase, 1000)
        deliver(first)
        purchase.refresh_from_db()
        assert purchase.status == PurchaseStatus.PARTIALLY_REFUNDED
        assert clawbacks(purchase) == [-(5000 * 1000 // 2999)]  # -1667
        assert reversed_causes == []
        deliver(first)  # redelivered: nothing more
        deliver(refund_event(purchase, 2999))
    finally:
        purchase_reversed.disconnect(receiver)

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.REFUNDED
    assert clawbacks(purchase) == [-1667, -3333]
    assert purchase.credits_clawed_back == 5000
    assert balance(user) == 100
    assert reversed_causes == ["refund"]
    assert reconcile() == []


def test_a_refund_takes_only_unspent_credits_of_the_purchase_lot(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    spend(user, 5)  # the Standard lot expires first, so it is spent first
    ledger.hold_create(user_id=user.pk, request_id="held")  # one more held, not yet charged

    deliver(refund_event(purchase, 2999))

    purchase.refresh_from_db()
    assert clawbacks(purchase) == [-(5000 - 5 - 1)]
    lot = purchase.lot
    assert lot is not None
    assert (lot.remaining, lot.reserved) == (1, 1)
    assert balance(user) == 100 + 1  # the signup lot is untouched
    assert reconcile() == []


def test_a_refund_that_arrives_before_the_completion_ends_with_the_right_balance(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    completed = completion_event(purchase)
    refunded = build_event(
        "charge.refunded",
        charge(
            amount=2999,
            amount_refunded=1500,
            payment_intent=completed["data"]["object"]["payment_intent"],
            metadata={"purchase_id": str(purchase.pk)},
        ),
    )

    deliver(refunded)
    assert StripeEvent.objects.get(event_id=refunded["id"]).status == StripeEventStatus.PROCESSED
    assert balance(user) == 100
    deliver(completed)

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PARTIALLY_REFUNDED
    assert clawbacks(purchase) == [-(5000 * 1500 // 2999)]
    assert balance(user) == 100 + 5000 - 2500
    assert reconcile() == []


def test_refund_events_out_of_order_keep_the_highest_cumulative_amount(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = paid(user, "premium")  # 20,000 credits for 5,999 cents
    later, earlier = refund_event(purchase, 3000), refund_event(purchase, 1000)

    deliver(later)
    deliver(earlier)

    purchase.refresh_from_db()
    assert purchase.amount_refunded == 3000
    assert clawbacks(purchase) == [-(20000 * 3000 // 5999)]


# --- disputes --------------------------------------------------------------------------------


def test_a_dispute_freezes_the_account_and_claws_back_the_unspent_credits(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    spend(user, 3)
    reversed_causes: list[str] = []

    def receiver(sender: object, purchase: Purchase, cause: str, **kwargs: Any) -> None:
        reversed_causes.append(cause)

    purchase_reversed.connect(receiver)
    try:
        opened = build_event(
            "charge.dispute.created",
            dispute(amount=2999, charge="ch_disputed", payment_intent=purchase.payment_intent_id),
        )
        deliver(opened)
        deliver(opened)
    finally:
        purchase_reversed.disconnect(receiver)

    purchase.refresh_from_db()
    account = CreditAccount.objects.get(pk=user.pk)
    assert account.frozen_at is not None
    assert purchase.dispute_id is not None
    assert purchase.dispute_id in account.frozen_reason
    assert purchase.status == PurchaseStatus.DISPUTED
    assert purchase.charge_id == "ch_disputed"
    assert clawbacks(purchase) == [-(5000 - 3)]
    assert balance(user) == 100
    assert reversed_causes == ["dispute"]
    with pytest.raises(Exception, match="frozen"):
        ledger.hold_create(user_id=user.pk, request_id="after-dispute")
    assert reconcile() == []


def test_a_won_dispute_is_shown_to_staff_and_restores_nothing(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = paid(user, "standard")
    opened = dispute(amount=2999, payment_intent=purchase.payment_intent_id)
    deliver(build_event("charge.dispute.created", opened))

    deliver(build_event("charge.dispute.closed", opened | {"status": "won"}))

    purchase.refresh_from_db()
    assert (purchase.status, purchase.dispute_status) == (PurchaseStatus.DISPUTED, "won")
    assert "won" in purchase.status_reason
    assert CreditAccount.objects.get(pk=user.pk).frozen_at is not None
    assert balance(user) == 100


def test_a_dispute_before_the_completion_is_applied_when_the_payment_arrives(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = buy(user, "premium")
    completed = completion_event(purchase)
    intent_id = completed["data"]["object"]["payment_intent"]
    # The refund tells us the payment intent; the dispute then matches on it.
    paid_charge = charge(
        amount=5999,
        amount_refunded=0,
        payment_intent=intent_id,
        metadata={"purchase_id": str(purchase.pk)},
    )
    deliver(build_event("charge.refunded", paid_charge))
    deliver(
        build_event(
            "charge.dispute.created",
            dispute(amount=5999, charge=paid_charge["id"], payment_intent=intent_id),
        )
    )
    assert CreditAccount.objects.get(pk=user.pk).frozen_at is not None

    deliver(completed)

    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.DISPUTED
    assert clawbacks(purchase) == [-20000]
    assert balance(user) == 100
    assert reconcile() == []


def test_after_a_dispute_the_gateway_is_refused_with_account_frozen(stripe_settings: Any) -> None:
    from django.test import Client

    from accounts.service_tokens import service_token_create
    from accounts.services import api_key_create

    user = registered_user()
    purchase = paid(user, "standard")
    _, raw_key = api_key_create(user=user, name="main")
    _, token = service_token_create(name="gateway")

    def authorize(request_id: str) -> dict[str, Any]:
        response = Client().post(
            "/internal/v1/authorize",
            data={
                "api_key": raw_key,
                "request_id": request_id,
                "model": "kimi-k2-0905",
                "format": "openai",
            },
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 200, response.content
        body: dict[str, Any] = response.json()
        return body

    assert authorize("before-dispute")["allowed"] is True
    deliver(
        build_event(
            "charge.dispute.created",
            dispute(amount=2999, payment_intent=purchase.payment_intent_id),
        )
    )

    denied = authorize("after-dispute")
    assert denied["allowed"] is False
    assert denied["status"] == 403
    assert denied["error"]["error"]["code"] == "account_frozen"
