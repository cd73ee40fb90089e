"""The webhook endpoint end to end: real signatures, real stripe library, real PostgreSQL."""

import threading
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings

from credits.models import EntryKind, LedgerEntry
from credits.payments import services
from credits.payments.models import PurchaseStatus, StripeEvent, StripeEventStatus
from credits.payments.tasks import stripe_event_process_task
from credits.reconciliation import reconcile
from tests.factories import registered_user
from tests.stripe_support import build_event, dispute, event_payload, sign_payload

from .conftest import (
    WEBHOOK_SECRET,
    WEBHOOK_URL,
    balance,
    buy,
    completion_event,
    deliver,
)

pytestmark = pytest.mark.django_db


def _post_signed(body: bytes) -> Any:
    """POST raw bytes, correctly signed: for bodies `deliver` cannot build from an event."""
    return Client().post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(body, WEBHOOK_SECRET),
    )


def purchase_grants(purchase_pk: object) -> int:
    return LedgerEntry.objects.filter(
        idempotency_key=f"purchase:{purchase_pk}", kind=EntryKind.GRANT
    ).count()


def test_a_signed_completion_is_stored_once_and_grants_the_package(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    event = completion_event(purchase)

    response = deliver(event)

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert (stored.type, stored.status, stored.attempts) == (
        "checkout.session.completed",
        StripeEventStatus.PROCESSED,
        1,
    )
    assert stored.purchase_id == purchase.pk
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.PAID
    assert purchase.lot is not None and purchase.lot.package == "standard"
    assert balance(user) == 100 + 5000
    assert reconcile() == []


def test_a_redelivered_event_is_acknowledged_and_changes_nothing(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "starter")
    event = completion_event(purchase)
    deliver(event)

    again = deliver(event)

    assert again.status_code == 200
    assert again.json()["duplicate"] is True
    assert StripeEvent.objects.filter(event_id=event["id"]).count() == 1
    assert purchase_grants(purchase.pk) == 1
    assert balance(user) == 600


@pytest.mark.parametrize(
    ("case", "mangle"),
    [
        ("tampered", lambda body, header: (body.replace(b'"paid"', b'"PAID"'), header)),
        ("wrong secret", lambda body, header: (body, sign_payload(body, "whsec_other"))),
        ("missing signature", lambda body, header: (body, None)),
        ("garbage signature", lambda body, header: (body, "t=1,v1=00")),
        (
            "signed 301 s ago",
            lambda body, header: (body, sign_payload(body, WEBHOOK_SECRET, int(time.time()) - 301)),
        ),
    ],
)
def test_an_unverifiable_delivery_is_refused_with_nothing_stored(
    stripe_settings: Any, case: str, mangle: Any
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    body = event_payload(completion_event(purchase))
    body, header = mangle(body, sign_payload(body, WEBHOOK_SECRET))
    extra = {"HTTP_STRIPE_SIGNATURE": header} if header is not None else {}

    response = Client().post(WEBHOOK_URL, data=body, content_type="application/json", **extra)

    assert response.status_code == 400, case
    assert response.json()["error"]["code"] == "invalid_signature"
    assert StripeEvent.objects.count() == 0
    assert balance(user) == 100


def test_a_delivery_signed_four_minutes_ago_is_still_accepted(stripe_settings: Any) -> None:
    purchase = buy(registered_user(), "starter")

    response = deliver(completion_event(purchase), timestamp=int(time.time()) - 240)

    assert response.status_code == 200


def test_without_a_webhook_secret_nothing_is_stored(stripe_settings: Any) -> None:
    purchase = buy(registered_user(), "starter")
    with override_settings(STRIPE_WEBHOOK_SECRET=""):
        response = deliver(completion_event(purchase))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "payments_unavailable"
    assert StripeEvent.objects.count() == 0


def test_a_signed_body_that_is_not_an_event_is_refused(stripe_settings: Any) -> None:
    response = _post_signed(b'{"id": "evt_1", "type": "x"}')

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
    assert StripeEvent.objects.count() == 0


def test_an_unknown_event_type_is_recorded_and_acknowledged(stripe_settings: Any) -> None:
    event = build_event("customer.created", {"id": "cus_1", "object": "customer"})

    response = deliver(event)

    assert response.status_code == 200
    stored = StripeEvent.objects.get(event_id=event["id"])
    assert stored.status == StripeEventStatus.IGNORED
    assert "not handled" in stored.error


def test_a_session_that_is_not_one_of_our_purchases_is_ignored(stripe_settings: Any) -> None:
    from tests.stripe_support import checkout_session

    event = build_event(
        "checkout.session.completed", checkout_session(payment_status="paid", status="complete")
    )

    assert deliver(event).status_code == 200
    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.IGNORED
    assert (
        LedgerEntry.objects.filter(kind=EntryKind.GRANT, reference__startswith="purchase:").count()
        == 0
    )


def test_a_worker_killed_after_the_grant_committed_grants_once_on_redelivery(
    stripe_settings: Any,
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    event = completion_event(purchase)
    deliver(event)
    assert purchase_grants(purchase.pk) == 1
    # The worker died after the grant committed but before the task was acknowledged; we model
    # the worst case, where the event's own status did not record it either.
    StripeEvent.objects.filter(event_id=event["id"]).update(
        status=StripeEventStatus.PENDING, processed_at=None
    )

    stripe_event_process_task.apply(args=(event["id"],))  # Celery redelivers the task
    redelivery = deliver(event)  # and Stripe, having seen no 2xx, redelivers the webhook

    assert redelivery.status_code == 200
    assert purchase_grants(purchase.pk) == 1
    assert balance(user) == 100 + 5000
    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.PROCESSED
    assert reconcile() == []


def test_a_processing_failure_is_recorded_and_can_be_reprocessed(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    # A dispute on a payment we have not heard about yet: nothing matches it.
    disputed = build_event(
        "charge.dispute.created", dispute(amount=2999, payment_intent="pi_later_known")
    )

    assert deliver(disputed).status_code == 200
    stored = StripeEvent.objects.get(event_id=disputed["id"])
    assert stored.status == StripeEventStatus.FAILED
    assert "No purchase matches dispute" in stored.error
    assert stored.attempts == 1

    deliver(completion_event(purchase, payment_intent="pi_later_known"))
    assert balance(user) == 5100
    results = services.stripe_events_reprocess(event_ids=[disputed["id"]])

    assert results == {disputed["id"]: StripeEventStatus.PROCESSED}
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.DISPUTED
    assert balance(user) == 100
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_the_same_event_delivered_ten_times_at_once_grants_once(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "premium")
    event = completion_event(purchase)
    body_and_header = [event] * 10
    barrier = threading.Barrier(10)
    statuses: list[int] = []

    def post(ev: dict[str, Any]) -> None:
        try:
            barrier.wait()
            statuses.append(deliver(ev).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(ev,)) for ev in body_and_header]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * 10
    assert StripeEvent.objects.filter(event_id=event["id"]).count() == 1
    assert purchase_grants(purchase.pk) == 1
    assert balance(user) == 100 + 20000
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_completion_and_payment_intent_events_racing_grant_once(stripe_settings: Any) -> None:
    from tests.stripe_support import payment_intent

    user = registered_user()
    purchase = buy(user, "standard")
    completed = completion_event(purchase)
    intent = payment_intent(
        id=completed["data"]["object"]["payment_intent"],
        amount=2999,
        amount_received=2999,
        currency="usd",
        status="succeeded",
        metadata={"purchase_id": str(purchase.pk)},
    )
    events = [completed, build_event("payment_intent.succeeded", intent)] * 5
    barrier = threading.Barrier(len(events))

    def post(ev: dict[str, Any]) -> None:
        try:
            barrier.wait()
            deliver(ev)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(ev,)) for ev in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert StripeEvent.objects.count() == 2
    assert purchase_grants(purchase.pk) == 1
    assert balance(user) == 5100
    assert reconcile() == []


def test_an_event_whose_enqueue_was_lost_is_processed_by_the_requeue_sweep(
    stripe_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from credits import clock
    from credits.payments.tasks import stripe_events_requeue_stale_task

    user = registered_user()
    purchase = buy(user, "standard")
    event = completion_event(purchase)
    # The broker is down when the webhook is answered: the event is stored, Stripe gets its 2xx
    # (and will not redeliver), but no task is queued.
    with monkeypatch.context() as patched:
        patched.setattr(stripe_event_process_task, "delay", lambda *args: None)
        assert deliver(event).status_code == 200
    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.PENDING

    stripe_events_requeue_stale_task.apply()  # too soon: it may still be on its way
    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.PENDING

    clock.advance(services.STALE_PENDING + timedelta(seconds=1))
    stripe_events_requeue_stale_task.apply()

    assert StripeEvent.objects.get(event_id=event["id"]).status == StripeEventStatus.PROCESSED
    assert purchase_grants(purchase.pk) == 1
    assert balance(user) == 100 + 5000
    assert reconcile() == []


# --- signed events that can never be stored --------------------------------------------------


def _nest_deeply(event: dict[str, Any]) -> bytes:
    event["data"]["object"]["metadata"]["deep"] = "__deep__"
    return event_payload(event).replace(b'"__deep__"', b"[" * 3000 + b"]" * 3000)


def _put(path: str, value: Any) -> Any:
    def mutate(event: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = event
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


@pytest.mark.parametrize(
    ("case", "mutate", "field", "logs_id"),
    [
        ("created far in the future", _put("created", 10**20), "created", True),
        ("created far in the past", _put("created", -(10**12)), "created", True),
        ("created beyond any float", _put("created", 10**400), "created", True),
        ("created is a boolean", _put("created", True), "created", True),
        ("id over 255 characters", _put("id", "evt_" + "x" * 300), "id", False),
        ("empty id", _put("id", ""), "id", False),
        ("NUL in the id", _put("id", "evt_a\u0000b"), "id", False),
        ("lone surrogate in the id", _put("id", "evt_a\ud800b"), "id", False),
        ("NUL in the type", _put("type", "checkout.session.completed\u0000"), None, True),
        (
            "NUL in the object",
            _put("data.object.customer_details", {"name": "a\u0000b"}),
            None,
            True,
        ),
        (
            "lone surrogate in the object",
            _put("data.object.customer_details", {"name": "a\ud800b"}),
            None,
            True,
        ),
        ("NUL in a key", _put("data.object.metadata", {"a\u0000": "b"}), None, True),
        ("lone surrogate in a key", _put("data.object.metadata", {"\udfff": "b"}), None, True),
        ("NaN in the object", _put("data.object.amount_subtotal", float("nan")), None, True),
        ("Infinity in the object", _put("data.object.amount_subtotal", float("inf")), None, True),
    ],
)
def test_a_signed_event_that_cannot_be_stored_is_refused_with_nothing_stored_or_granted(
    stripe_settings: Any,
    caplog: pytest.LogCaptureFixture,
    case: str,
    mutate: Any,
    field: str | None,
    logs_id: bool,
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    event = completion_event(purchase)
    mutate(event)

    with caplog.at_level("WARNING", logger="credits.payments.services"):
        response = deliver(event)

    assert response.status_code == 400, case
    assert response.json()["error"]["code"] == "invalid_payload"
    assert response.json()["error"].get("field") == field
    assert StripeEvent.objects.count() == 0
    assert purchase_grants(purchase.pk) == 0
    assert balance(user) == 100
    refusals = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "refused" in r.getMessage().lower()
    ]
    assert len(refusals) == 1
    # The id is named when it is printable as is; a NUL or a surrogate never reaches the log.
    if logs_id:
        assert event["id"] in refusals[0]
    elif event["id"]:
        assert event["id"] not in refusals[0]
    assert "\u0000" not in refusals[0]
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in refusals[0])


def test_a_signed_event_nested_too_deeply_to_parse_is_refused(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    response = _post_signed(_nest_deeply(completion_event(purchase)))

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_payload"
    assert StripeEvent.objects.count() == 0
    assert balance(user) == 100


def test_an_event_created_at_the_edges_of_the_datetime_range_is_stored(
    stripe_settings: Any,
) -> None:
    earliest = build_event("customer.created", {"id": "cus_1"}, created=-62135596800)
    latest = build_event("customer.created", {"id": "cus_2"}, created=253402300799)

    assert deliver(earliest).status_code == 200
    assert deliver(latest).status_code == 200
    assert StripeEvent.objects.get(event_id=earliest["id"]).created.year == 1
    assert StripeEvent.objects.get(event_id=latest["id"]).created.year == 9999
