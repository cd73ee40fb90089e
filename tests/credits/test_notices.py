"""The ledger's notification events (issue 17), each written in the transaction of its cause and
exactly once: `credits.expiring` from the beat (two beats racing), `credits.expired` with its
expire entry, `credits.low` from the services, the `key.*` events from the key services."""

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.db import transaction

from accounts.models import ApiKey
from accounts.services import api_key_create, api_key_revoke, api_key_rotate
from config.fields import rfc3339
from credits import clock, notices, services
from credits.models import Event, EventType, Hold, LotSource
from credits.signals import event_recorded
from tests.concurrency import run_together
from tests.credits.conftest import funded_user
from tests.factories import UserFactory

DAY = timedelta(days=1)


def events(type: str, user_id: UUID | None = None) -> list[Event]:
    found = Event.objects.filter(type=type).order_by("created_at", "cause")
    if user_id is not None:
        found = found.filter(user_id=user_id)
    return list(found)


def sweeps_racing() -> None:
    """Two beats at once, each on its own connection."""
    results = run_together(2, lambda _: notices.notices_sweep())
    assert all(isinstance(r, int) for r in results), results


# --- credits.expiring ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_lot_due_in_six_days_gets_one_7_day_and_later_one_24_hour_notice_with_beats_racing() -> (
    None
):
    user = funded_user((50, clock.now() + 6 * DAY), (7, None))
    lot = user.credit_account.lots.get(expires_at__isnull=False)

    sweeps_racing()
    sweeps_racing()
    [seven] = events(EventType.CREDITS_EXPIRING)
    assert seven.cause == f"credits.expiring:{lot.pk}:168"
    assert seven.user_id == user.pk
    assert seven.data == {
        "lot": {
            "id": lot.pk,
            "source": "purchase",
            "package": "",
            "remaining": 50,
            "expires_at": seven.data["lot"]["expires_at"],
        },
        "within_hours": 168,
    }

    clock.advance(5 * DAY + timedelta(hours=1))  # 23 hours left
    sweeps_racing()
    sweeps_racing()
    assert [e.data["within_hours"] for e in events(EventType.CREDITS_EXPIRING)] == [168, 24]
    lot.refresh_from_db()
    assert lot.expiry_notice_at is None  # nothing more to come: the index no longer holds it


@pytest.mark.django_db
def test_a_lot_first_seen_inside_24_hours_gets_only_the_24_hour_notice() -> None:
    funded_user((5, clock.now() + timedelta(hours=20)))
    notices.notices_sweep()
    notices.notices_sweep()
    [notice] = events(EventType.CREDITS_EXPIRING)
    assert notice.data["within_hours"] == 24


@pytest.mark.django_db
def test_a_lot_spent_to_zero_gets_no_expiry_notice() -> None:
    user = funded_user((3, clock.now() + 6 * DAY))
    services.credits_adjust(user_id=user.pk, amount=-3, reason="spent", idempotency_key="spend")
    notices.notices_sweep()
    clock.advance(5 * DAY + timedelta(hours=1))
    notices.notices_sweep()
    assert events(EventType.CREDITS_EXPIRING) == []


@pytest.mark.django_db
def test_a_lot_expiring_in_a_month_is_not_due_yet_and_one_without_expiry_never() -> None:
    user = funded_user((5, clock.now() + 30 * DAY), (5, None))
    assert notices.notices_sweep() == 0
    assert events(EventType.CREDITS_EXPIRING) == []
    due = user.credit_account.lots.exclude(expiry_notice_at=None).get()
    assert due.expires_at is not None
    assert due.expiry_notice_at == due.expires_at - 7 * DAY
    clock.advance(23 * DAY + timedelta(minutes=1))
    notices.notices_sweep()
    assert [e.data["within_hours"] for e in events(EventType.CREDITS_EXPIRING)] == [168]


# --- credits.expired ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_expire_entry_writes_one_credits_expired_with_the_lot_and_amount() -> None:
    user = funded_user((8, clock.now() + timedelta(hours=1)), (20, None))
    services.hold_create(
        user_id=user.pk, request_id="held-when-expiring", amount=3, ttl=timedelta(hours=3)
    )
    clock.advance(timedelta(hours=2))
    services.accounts_sweep()
    services.accounts_sweep()
    [expired] = events(EventType.CREDITS_EXPIRED)
    lot = user.credit_account.lots.get(expires_at__isnull=False)
    assert expired.cause == f"credits.expired:expire:lot:{lot.pk}"
    assert expired.data["amount"] == 5  # the unheld part; the held 3 expire with their hold
    assert expired.data["lot"]["id"] == lot.pk
    assert expired.data["lot"]["remaining"] == 3

    services.hold_release(request_id="held-when-expiring")
    second = events(EventType.CREDITS_EXPIRED)[1]
    assert (second.cause, second.data["amount"]) == (
        f"credits.expired:expire:hold:{Hold.objects.get().pk}",
        3,
    )


# --- credits.low (services; the SQL twin: tests/gateway/test_low_balance.py) --------------------


@pytest.mark.django_db
def test_credits_low_fires_on_the_crossing_only_and_again_after_a_grant() -> None:
    user = funded_user((12, None))
    announced: list[Any] = []

    def kicked(sender: object, event_id: Any, **kwargs: Any) -> None:
        announced.append(event_id)

    event_recorded.connect(kicked, dispatch_uid="test-kicked")
    try:
        for n in range(6):  # 12 -> 6: crosses 10 once, at 10 -> 9
            services.credits_adjust(
                user_id=user.pk, amount=-1, reason="spend", idempotency_key=f"a{n}"
            )
        services.credits_grant(
            user_id=user.pk, amount=10, source=LotSource.ADJUSTMENT, idempotency_key="g"
        )
        services.credits_adjust(user_id=user.pk, amount=-7, reason="x", idempotency_key="b")
    finally:
        event_recorded.disconnect(dispatch_uid="test-kicked")
    low = events(EventType.CREDITS_LOW)
    assert [(e.cause, e.data) for e in low] == [
        ("credits.low:a2", {"balance": 9, "threshold": 10}),
        ("credits.low:b/2", {"balance": 9, "threshold": 10}),  # its second lot's entry
    ]
    assert announced == [e.pk for e in low]


@pytest.mark.django_db
def test_holds_alone_and_a_null_threshold_give_no_credits_low() -> None:
    user = funded_user((20, None))
    for n in range(15):
        services.hold_create(user_id=user.pk, request_id=f"h{n}")
    for n in range(15):
        services.hold_release(request_id=f"h{n}")
    services.low_balance_threshold_set(user_id=user.pk, threshold=None)
    services.credits_adjust(user_id=user.pk, amount=-20, reason="all", idempotency_key="all")
    assert events(EventType.CREDITS_LOW) == []


@pytest.mark.django_db
def test_a_charge_rolled_back_leaves_no_credits_low() -> None:
    user = funded_user((10, None))
    with pytest.raises(RuntimeError), transaction.atomic():
        services.credits_adjust(user_id=user.pk, amount=-1, reason="x", idempotency_key="gone")
        assert len(events(EventType.CREDITS_LOW)) == 1
        raise RuntimeError("the cause fails")
    assert events(EventType.CREDITS_LOW) == []


def test_a_cause_too_long_for_the_column_is_hashed_the_same_way_each_time() -> None:
    key = "k" * 250
    cause = notices.cause_for("credits.low", key)
    assert len(cause) <= notices.CAUSE_MAX
    assert cause == notices.cause_for("credits.low", key) != notices.cause_for("credits.low", "k")
    assert notices.cause_for("credits.low", "charge:x") == "credits.low:charge:x"


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_key_changes_write_one_event_each_and_a_repeated_revoke_none() -> None:
    user = UserFactory.create()
    key, _ = api_key_create(user=user, name="ci")
    api_key_rotate(user=user, key_id=key.pk, grace_seconds=0)
    api_key_rotate(user=user, key_id=key.pk, grace_seconds=0, now=clock.now() + DAY)
    api_key_revoke(user=user, key_id=key.pk)
    api_key_revoke(user=user, key_id=key.pk)
    key.refresh_from_db()
    found = [
        (e.type, e.data)
        for e in Event.objects.filter(user_id=user.pk).order_by("created_at", "cause")
    ]
    data = {"key": {"id": str(key.pk), "name": "ci", "prefix": key.prefix}}
    assert [t for t, _ in found] == ["key.created", "key.rotated", "key.rotated", "key.revoked"]
    assert found[-1][1] == data
    assert found[0][1]["key"]["id"] == str(key.pk)


@pytest.mark.django_db
def test_a_key_refused_by_its_rollback_writes_no_event() -> None:
    user = UserFactory.create()
    with pytest.raises(RuntimeError), transaction.atomic():
        api_key_create(user=user, name="gone")
        raise RuntimeError("the caller fails")
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_key_expiring_within_7_days_gets_one_notice_with_beats_racing() -> None:
    user = UserFactory.create()
    soon, _ = api_key_create(user=user, name="soon", expires_at=clock.now() + 3 * DAY)
    api_key_create(user=user, name="later", expires_at=clock.now() + 10 * DAY)
    revoked, _ = api_key_create(user=user, name="revoked", expires_at=clock.now() + DAY)
    api_key_revoke(user=user, key_id=revoked.pk)

    sweeps_racing()
    sweeps_racing()
    [notice] = events(EventType.KEY_EXPIRING)
    assert notice.data == {
        "key": {"id": str(soon.pk), "name": "soon", "prefix": soon.prefix},
        "expires_at": rfc3339(soon.expires_at),
    }
    assert notice.cause == f"key.expiring:{soon.pk}:{rfc3339(soon.expires_at)}"
    ApiKey.objects.filter(pk=soon.pk).update(expires_at=clock.now() + 2 * DAY)
    notices.notices_sweep()  # a new expiry is a new notice
    assert len(events(EventType.KEY_EXPIRING)) == 2


@pytest.mark.django_db
def test_an_event_of_another_user_is_not_theirs() -> None:
    a, b = funded_user((10, None)), funded_user((10, None))
    services.credits_adjust(user_id=a.pk, amount=-1, reason="x", idempotency_key=str(uuid4()))
    assert [e.user_id for e in events(EventType.CREDITS_LOW)] == [a.pk]
    assert events(EventType.CREDITS_LOW, b.pk) == []
