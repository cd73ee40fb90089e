"""Retention of the per-request tables (issue 23, "Data growth"): settled holds past
`HOLD_RETENTION_DAYS` and usage records past `USAGE_RETENTION_DAYS` go; a live hold, the
ledger, the buckets and every report read from them stay; `reconcile()` stays clean. Through the
gateway's own API, against both implementations of the database side."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from credits import clock
from credits.gateway.models import UsageBucket, UsageRecord
from credits.gateway.partitions import month_add, month_start
from credits.gateway.retention import usage_delete_before, usage_upkeep
from credits.models import Hold, HoldStatus, LedgerEntry
from credits.reconciliation import reconcile
from credits.retention import holds_prune

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
