"""Staff refunds: sent to the recorded Stripe API after commit with an idempotency key, and
clawed back once whichever of the refund's confirmation and `charge.refunded` comes first."""

import uuid
from typing import Any

import pytest
from django.test import Client, TestCase

from accounts.models import User
from credits import services as ledger
from credits.models import EntryKind, LedgerEntry
from credits.payments import refunds
from credits.payments.models import (
    Purchase,
    PurchaseStatus,
    StaffRefund,
    StaffRefundStatus,
)
from credits.payments.refunds import RefundRefused, refund_preview, staff_refund_request
from credits.reconciliation import reconcile
from tests.concurrency import run_together
from tests.factories import registered_user
from tests.stripe_support import StripeRecordedServer, build_event, new_id, signed_webhook

from .conftest import WEBHOOK_SECRET, WEBHOOK_URL, balance, deliver, paid_with_charge

pytestmark = pytest.mark.django_db


def staff() -> User:
    return User.objects.create_user(email=f"{uuid.uuid4().hex[:8]}@staff.example.com")


def refund_event(purchase: Purchase, server: StripeRecordedServer) -> dict[str, Any]:
    """Stripe's `charge.refunded` for the charge as it stands at Stripe now."""
    assert purchase.charge_id is not None
    return build_event("charge.refunded", dict(server.charges[purchase.charge_id]))


def clawbacks(purchase: Purchase) -> list[int]:
    return list(
        LedgerEntry.objects.filter(lot__purchase=purchase, kind=EntryKind.CLAWBACK)
        .order_by("id")
        .values_list("amount", flat=True)
    )


def refund_posts(server: StripeRecordedServer) -> list[Any]:
    return [r for r in server.requests if r.path == "/v1/refunds"]


def test_the_refund_leaves_for_stripe_only_after_commit_with_its_idempotency_key(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)  # 5,000 credits for 2,999 cents

    with TestCase.captureOnCommitCallbacks(execute=False) as callbacks:
        refund = staff_refund_request(
            refund_id=uuid.uuid4(),
            purchase_id=purchase.pk,
            amount=1000,
            reason="Customer asked",
            staff=staff(),
        )
    # Written (the outbox row), nothing sent and nothing clawed back inside the transaction.
    assert refund.status == StaffRefundStatus.PENDING
    assert refund_posts(stripe_settings) == []
    assert clawbacks(purchase) == []

    for callback in callbacks:
        callback()

    [sent] = refund_posts(stripe_settings)
    assert sent.idempotency_key == f"staff-refund-{refund.pk}"
    assert sent.form["amount"] == "1000"
    assert sent.form["charge"] == purchase.charge_id
    refund.refresh_from_db()
    purchase.refresh_from_db()
    assert refund.status == StaffRefundStatus.SUCCEEDED
    assert refund.stripe_refund_id in stripe_settings.refunds
    assert (purchase.amount_refunded, purchase.status) == (1000, PurchaseStatus.PARTIALLY_REFUNDED)
    assert clawbacks(purchase) == [-(5000 * 1000 // 2999)]
    assert reconcile() == []


def refund_committed(purchase: Purchase, amount: int) -> tuple[StaffRefund, list[Any]]:
    with TestCase.captureOnCommitCallbacks(execute=False) as callbacks:
        refund = staff_refund_request(
            refund_id=uuid.uuid4(),
            purchase_id=purchase.pk,
            amount=amount,
            reason="Support ticket 42",
            staff=staff(),
        )
    return refund, list(callbacks)


def test_the_webhook_after_the_staff_refund_claws_back_nothing_more(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    _, callbacks = refund_committed(purchase, 2999)
    for callback in callbacks:
        callback()
    assert clawbacks(purchase) == [-5000]

    assert deliver(refund_event(purchase, stripe_settings)).status_code == 200

    purchase.refresh_from_db()
    assert clawbacks(purchase) == [-5000]
    assert purchase.status == PurchaseStatus.REFUNDED
    assert balance(user) == 100
    assert reconcile() == []


def test_the_webhook_before_the_staff_refunds_confirmation_claws_back_once(
    stripe_settings: StripeRecordedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stripe's event can overtake the task's own confirmation: the send reaches Stripe, the
    event is applied, then the confirmation commits and finds nothing more to claim."""
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    refund, _ = refund_committed(purchase, 1000)
    confirm = refunds.staff_refund_confirm
    held: list[dict[str, Any]] = []
    monkeypatch.setattr(refunds, "staff_refund_confirm", lambda **kw: held.append(kw))
    refunds.staff_refund_send(refund_id=refund.pk)  # Stripe refunded; not confirmed yet
    assert held[0]["charge_amount_refunded"] == 1000

    assert deliver(refund_event(purchase, stripe_settings)).status_code == 200
    assert clawbacks(purchase) == [-1667]
    confirm(**held[0])

    purchase.refresh_from_db()
    refund.refresh_from_db()
    assert refund.status == StaffRefundStatus.SUCCEEDED
    assert clawbacks(purchase) == [-1667]
    assert purchase.amount_refunded == 1000
    assert len(stripe_settings.refunds) == 1
    assert reconcile() == []


def test_a_retried_send_refunds_once_at_stripe(
    stripe_settings: StripeRecordedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that dies after Stripe answered (here: the confirmation raises) sends again with
    the same key: Stripe replays its first answer, one refund, one claw-back."""
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    refund, _ = refund_committed(purchase, 2999)
    confirm = refunds.staff_refund_confirm

    def dies(**kwargs: Any) -> Any:
        raise RuntimeError("worker killed")

    monkeypatch.setattr(refunds, "staff_refund_confirm", dies)
    with pytest.raises(RuntimeError):
        refunds.staff_refund_send(refund_id=refund.pk)
    monkeypatch.setattr(refunds, "staff_refund_confirm", confirm)
    refunds.staff_refund_send(refund_id=refund.pk)

    posts = refund_posts(stripe_settings)
    assert len(posts) == 2
    assert {p.idempotency_key for p in posts} == {f"staff-refund-{refund.pk}"}
    assert len(stripe_settings.refunds) == 1
    assert clawbacks(purchase) == [-5000]


def test_the_same_form_submitted_twice_is_one_refund(stripe_settings: StripeRecordedServer) -> None:
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    refund_id, by = uuid.uuid4(), staff()
    with TestCase.captureOnCommitCallbacks(execute=True):
        first = staff_refund_request(
            refund_id=refund_id, purchase_id=purchase.pk, amount=500, reason="x", staff=by
        )
    with TestCase.captureOnCommitCallbacks(execute=True):
        again = staff_refund_request(
            refund_id=refund_id, purchase_id=purchase.pk, amount=500, reason="x", staff=by
        )
    assert first.pk == again.pk
    assert StaffRefund.objects.count() == 1
    assert len(refund_posts(stripe_settings)) == 1


def test_more_than_is_left_to_refund_is_refused_and_writes_nothing(
    stripe_settings: StripeRecordedServer,
) -> None:
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    refund_committed(purchase, 2000)  # pending: counts against what is left
    with pytest.raises(RefundRefused) as refused:
        staff_refund_request(
            refund_id=uuid.uuid4(), purchase_id=purchase.pk, amount=1000, reason="x", staff=staff()
        )
    assert refused.value.field == "amount"
    assert "between 1 and 999" in refused.value.message
    with pytest.raises(RefundRefused) as no_reason:
        staff_refund_request(
            refund_id=uuid.uuid4(), purchase_id=purchase.pk, amount=1, reason="  ", staff=staff()
        )
    assert no_reason.value.field == "reason"
    assert StaffRefund.objects.count() == 1


def test_a_refund_stripe_refuses_fails_and_takes_no_credits(
    stripe_settings: StripeRecordedServer,
) -> None:
    """Refunded in the Dashboard meanwhile (its event not seen yet): Stripe says so, nothing is
    clawed back for the staff refund, and the error is kept for staff."""
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    stripe_settings.charges[purchase.charge_id]["amount_refunded"] = 2999  # type: ignore[index]
    refund, callbacks = refund_committed(purchase, 2999)
    for callback in callbacks:
        callback()
    refund.refresh_from_db()
    assert refund.status == StaffRefundStatus.FAILED
    assert "already been refunded" in refund.error
    assert clawbacks(purchase) == []
    assert balance(user) == 5100


def test_the_preview_is_what_the_claw_back_then_does(stripe_settings: StripeRecordedServer) -> None:
    user = registered_user()
    purchase = paid_with_charge(user, stripe_settings)
    for n in range(3):  # spent from the Standard lot (it expires first)
        ledger.hold_create(user_id=user.pk, request_id=f"spent-{n}")
        ledger.hold_commit(request_id=f"spent-{n}")
    ledger.hold_create(user_id=user.pk, request_id="held")
    preview = refund_preview(purchase=purchase, amount=2999)
    assert (preview.claim, preview.take_now, preview.owed, preview.uncollectable) == (
        5000,
        4996,
        1,
        3,
    )

    _, callbacks = refund_committed(purchase, 2999)
    for callback in callbacks:
        callback()
    purchase.refresh_from_db()
    assert purchase.lot is not None
    assert clawbacks(purchase) == [-preview.take_now]
    assert purchase.lot.clawback_owed == preview.owed
    assert purchase.lot.clawback_uncollectable == preview.uncollectable


@pytest.mark.django_db(transaction=True)
def test_the_confirmation_and_the_webhook_at_once_claw_back_once(
    stripe_settings: StripeRecordedServer,
) -> None:
    """The staff refund's confirmation and Stripe's `charge.refunded` applied concurrently, each
    on its own connection, for several purchases: one claw-back each, never two."""
    user = registered_user()
    raced = []
    for _ in range(4):
        purchase = paid_with_charge(user, stripe_settings, "starter")
        refund = StaffRefund.objects.create(
            purchase=purchase, amount=499, currency="usd", reason="x", created_by=staff()
        )
        stripe_settings.charges[purchase.charge_id]["amount_refunded"] = 499  # type: ignore[index]
        raced.append((purchase, refund, refund_event(purchase, stripe_settings)))

    for purchase, refund, event in raced:

        def work(i: int, refund: StaffRefund = refund, event: dict[str, Any] = event) -> int:
            if i == 0:
                refunds.staff_refund_confirm(
                    refund_id=refund.pk, stripe_refund_id=new_id("re"), charge_amount_refunded=499
                )
                return 200
            body, header = signed_webhook(event, WEBHOOK_SECRET)
            response = Client().post(
                WEBHOOK_URL,
                data=body,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=header,
            )
            return response.status_code

        assert run_together(2, work) == [200, 200]
        assert clawbacks(purchase) == [-500]
        purchase.refresh_from_db()
        assert purchase.status == PurchaseStatus.REFUNDED
    assert reconcile() == []
