"""Retention of the per-request tables (issue 23, "Data growth"): settled holds past
`HOLD_RETENTION_DAYS` and usage records past `USAGE_RETENTION_DAYS` go; a live hold, the
ledger, the buckets and every report read from them stay; `reconcile()` stays clean. Through the
gateway's own API, against both implementations of the database side."""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.db import connection
from django.test import Client

from config.ids import uuid7_floor
from credits import clock
from credits.gateway.models import UsageBucket, UsageRecord
from credits.gateway.partitions import month_add, month_start
from credits.gateway.retention import usage_delete_before, usage_upkeep
from credits.models import Hold, HoldStatus, LedgerEntry
from credits.reconciliation import reconcile
from credits.retention import holds_prune
from tests.embedded import embedded_python

from .conftest import Customer, Gateway, funded_customer

pytestmark = pytest.mark.django_db


def _clock_to(moment: datetime) -> None:
    clock.advance(moment - clock.now())


def _far_month_day(day: int) -> datetime:
    """A day of a month two years on, past every partition the migration made whenever the
    suite runs; the test makes that month's partitions itself, as the beat does."""
    month = month_add(month_start(datetime.now(UTC)), 26)
    return datetime(month.year, month.month, day, 12, tzinfo=UTC)


def _paired(gateway: Gateway, customer: Customer, request_id: str, outcome: str) -> str:
    decision = gateway.authorize(customer.raw_key, request_id)
    assert decision["allowed"] is True, decision
    settled = gateway.settle(request_id, outcome)
    assert settled.status_code == 200, settled.content
    return str(decision["hold_id"])


def _credits_report(customer: Customer, start: datetime, end: datetime) -> Any:
    response = Client().get(
        "/api/user/credits",
        {"from": start.date().isoformat(), "to": end.date().isoformat()},
        HTTP_X_API_KEY=customer.raw_key,
    )
    assert response.status_code == 200, response.content
    return response.json()


def _request_ids(customer: Customer) -> list[str]:
    client = Client()
    client.force_login(customer.user)
    response = client.get("/api/user/requests")
    assert response.status_code == 200, response.content
    return [row["request_id"] for row in response.json()["results"]]


def test_settled_holds_past_retention_go_and_a_live_one_or_a_recent_one_stays(
    gateway: Gateway, backend: str
) -> None:
    start = _far_month_day(3)
    _clock_to(start)
    usage_upkeep(now=start, days=0)
    customer = funded_customer(100)
    idle = funded_customer(100)  # no later operation on it expires its hold
    _paired(gateway, customer, "old-charged", "success")
    _paired(gateway, customer, "old-released", "failure")
    assert gateway.authorize(idle.raw_key, "old-live")["allowed"] is True
    clock.advance(timedelta(days=10))
    _paired(gateway, customer, "recent", "success")
    clock.advance(timedelta(days=21, seconds=1))  # the first three are 31 days old

    deleted = holds_prune(now=clock.now(), days=30, batch=1)

    assert deleted == 2
    left = dict(Hold.objects.values_list("request_id", "status"))
    assert left == {"old-live": HoldStatus.LIVE, "recent": HoldStatus.COMMITTED}
    # The ledger is kept: both charges are still there, and everything reconciles.
    charges = LedgerEntry.objects.filter(account_id=customer.user.pk, kind="charge")
    assert charges.count() == 2
    assert reconcile() == []


def test_hold_ids_follow_their_creation_so_old_holds_are_a_prefix_of_the_key(
    gateway: Gateway, backend: str
) -> None:
    customer = funded_customer(10)
    first = UUID(gateway.authorize(customer.raw_key, "first")["hold_id"])
    clock.advance(timedelta(milliseconds=5))
    second = UUID(gateway.authorize(customer.raw_key, "second")["hold_id"])

    assert first.version == second.version == 7
    assert first < second
    for hold in Hold.objects.all():  # each id carries its hold's creation, to the millisecond
        assert uuid7_floor(hold.created_at) <= hold.pk
        assert hold.pk < uuid7_floor(hold.created_at + timedelta(milliseconds=1))


def test_a_hold_with_a_random_id_from_before_is_pruned_too(gateway: Gateway, backend: str) -> None:
    """Holds made before time-ordered ids (version 4 UUIDs) sort anywhere in the key."""
    start = _far_month_day(3)
    _clock_to(start)
    customer = funded_customer(10)
    below, above = UUID(int=1 << 120 | 4 << 76), UUID(int=2**128 - 1)  # of the v7 range
    for n, legacy_id in enumerate((below, uuid4(), uuid4(), above)):
        _paired(gateway, customer, f"legacy-{n}", "failure")  # released: no entry names its id
        Hold.objects.filter(request_id=f"legacy-{n}").update(id=legacy_id)
    clock.advance(timedelta(days=29))
    _paired(gateway, customer, "young", "failure")
    clock.advance(timedelta(days=2))

    assert holds_prune(now=clock.now(), days=30, batch=2) == 4

    assert list(Hold.objects.values_list("request_id", flat=True)) == ["young"]
    assert reconcile() == []


def test_nothing_is_pruned_while_retention_is_off(gateway: Gateway, backend: str) -> None:
    start = _far_month_day(3)
    _clock_to(start)
    usage_upkeep(now=start, days=0)
    customer = funded_customer(10)
    _paired(gateway, customer, "kept", "success")
    clock.advance(timedelta(days=3650))

    assert holds_prune(now=clock.now(), days=0) == 0
    done = usage_upkeep(now=clock.now(), days=0)

    assert done.dropped == [] and done.deleted == 0
    assert Hold.objects.filter(request_id="kept").exists()
    assert UsageRecord.objects.filter(request_id="kept").exists()


def test_a_pruned_request_id_is_decided_afresh_and_its_settle_is_not_found(
    gateway: Gateway, backend: str
) -> None:
    """Documented (README, "Data growth"): the replay promise lasts as long as the hold."""
    start = _far_month_day(3)
    _clock_to(start)
    customer = funded_customer(10)
    first = _paired(gateway, customer, "pruned", "success")
    assert gateway.authorize(customer.raw_key, "pruned")["hold_id"] == first  # a replay
    clock.advance(timedelta(days=31))
    holds_prune(now=clock.now(), days=30)

    again = gateway.authorize(customer.raw_key, "pruned")

    assert again["allowed"] is True and again["hold_id"] != first
    assert again["credits_remaining"] == 8  # a new hold: 10 - the first charge - this hold
    clock.advance(timedelta(days=31))
    holds_prune(now=clock.now(), days=30)  # the second hold is live: it stays
    assert Hold.objects.get(request_id="pruned").status == HoldStatus.LIVE
    response = gateway.settle("not-there-either", "success")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"
    assert reconcile() == []


def test_a_settle_of_a_pruned_hold_is_not_found(gateway: Gateway, backend: str) -> None:
    start = _far_month_day(3)
    _clock_to(start)
    customer = funded_customer(10)
    _paired(gateway, customer, "gone", "failure")
    clock.advance(timedelta(days=31))
    holds_prune(now=clock.now(), days=30)

    response = gateway.settle("gone", "failure")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"


def test_reports_read_the_same_after_holds_and_usage_are_pruned(
    gateway: Gateway, backend: str
) -> None:
    start = _far_month_day(3)
    _clock_to(start)
    usage_upkeep(now=start, days=0)
    customer = funded_customer(100)
    for n in range(3):
        _paired(gateway, customer, f"old-{n}", "success" if n else "failure")
    clock.advance(timedelta(days=70))
    _paired(gateway, customer, "recent", "success")
    clock.advance(timedelta(hours=1))
    window = (start - timedelta(days=1), clock.now() + timedelta(days=1))
    before = _credits_report(customer, *window)
    buckets = sorted(UsageBucket.objects.values_list("hour", "requests", "credits"))
    assert _request_ids(customer) == ["recent", "old-2", "old-1", "old-0"]

    holds_prune(now=clock.now(), days=30)
    done = usage_upkeep(now=clock.now(), days=30)

    assert _credits_report(customer, *window) == before
    assert before["usage_by_day"][0]["requests"] == 3  # the pruned day is still counted
    assert sorted(UsageBucket.objects.values_list("hour", "requests", "credits")) == buckets
    assert _request_ids(customer) == ["recent"]
    assert done.deleted + len(done.dropped) > 0
    assert reconcile() == []


def test_without_partitions_usage_is_deleted_in_bounded_batches() -> None:
    """The embedded default's path (SQLite has no partitions), run here on any database."""
    start = _far_month_day(3)
    _clock_to(start)
    usage_upkeep(now=start, days=0)
    customer = funded_customer(10)
    for n in range(5):
        _record(customer, f"old-{n}", start + timedelta(minutes=n))
    _record(customer, "new", start + timedelta(days=2))

    deleted = usage_delete_before(start + timedelta(days=1), batch=2)

    assert deleted == 5
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["new"]
    assert UsageBucket.objects.get(account_id=customer.user.pk, hour=start).requests == 5


def _record(customer: Customer, request_id: str, at: datetime) -> None:
    UsageRecord.objects.create(
        request_id=request_id,
        account_id=customer.user.pk,
        api_key=customer.key,
        model="kimi-k2-0905",
        outcome="success",
        charged=0,
        settled_at=at,
    )


@pytest.fixture
def postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("partitions are PostgreSQL's")


SQLITE_SCRIPT = """
from datetime import timedelta
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.db import connection
from accounts.models import User
from credits import clock, services
from credits.gateway.models import UsageBucket, UsageRecord
from credits.gateway.retention import usage_upkeep
from credits.models import Hold, LotSource
from credits.retention import holds_prune
assert connection.vendor == "sqlite"
user = User.objects.create_user("lite@example.com", "pw-pw-pw-pw")
services.credits_grant(user_id=user.pk, amount=10, source=LotSource.PURCHASE, expires_at=None,
                       idempotency_key="lite-grant")
def pair(rid, outcome):
    services.hold_create(user_id=user.pk, request_id=rid)
    (services.hold_commit if outcome else services.hold_release)(request_id=rid)
    UsageRecord.objects.create(request_id=rid, account_id=user.pk, model="m",
        outcome="success" if outcome else "failure", charged=int(outcome),
        settled_at=clock.now())
for n in range(3):
    pair(f"old-{n}", n % 2)
idle = User.objects.create_user("idle@example.com", "pw-pw-pw-pw")  # nothing expires its hold
services.credits_grant(user_id=idle.pk, amount=1, source=LotSource.PURCHASE, expires_at=None,
                       idempotency_key="idle-grant")
services.hold_create(user_id=idle.pk, request_id="live")
clock.advance(timedelta(days=20))
pair("young", 1)
clock.advance(timedelta(days=11))
print(holds_prune(now=clock.now(), days=30, batch=2), usage_upkeep(now=clock.now(), days=30,
      batch=2).deleted)
print(sorted(Hold.objects.values_list("request_id", flat=True)),
      list(UsageRecord.objects.values_list("request_id", flat=True)),
      sum(UsageBucket.objects.values_list("requests", flat=True)))
from credits.reconciliation import reconcile
print(reconcile())
"""


def test_the_embedded_default_prunes_in_batches_too(tmp_path: Path) -> None:
    """SQLite: no partitions; both retentions delete in bounded batches, same rules."""
    done = embedded_python(tmp_path, SQLITE_SCRIPT)

    assert done.returncode == 0, done.stderr
    # 3 old holds and 3 old records deleted; the live hold and the young pair kept; the
    # buckets still count all 4 requests; the ledger reconciles.
    assert done.stdout.splitlines()[-3:] == ["3 3", "['live', 'young'] ['young'] 4", "[]"]
