"""Monthly partitions of the usage records (credits/gateway/partitions.py): the months to come
exist before they are needed, a record with no partition of its month lands in the DEFAULT and
moves to its month when that is made (counted once), a partition goes only when wholly past the
retention, and each keeps the one-record-per-request guard."""

from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import override_settings

from credits import clock
from credits.gateway import partitions
from credits.gateway.models import UsageBucket, UsageRecord
from credits.gateway.partitions import month_add, month_start, partition_name
from credits.gateway.retention import usage_upkeep
from credits.gateway.tasks import usage_upkeep_task

from .conftest import Customer, funded_customer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("partitions are PostgreSQL's (SQLite deletes in batches)")


def _far_month() -> datetime:
    month = month_add(month_start(datetime.now(UTC)), 26)
    return datetime(month.year, month.month, 1, tzinfo=UTC)


def _names() -> dict[str, datetime | None]:
    with connection.cursor() as cursor:
        return {p.name: p.upper for p in partitions.partitions(cursor)}


def _home(request_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tableoid::regclass::text FROM credits_usagerecord WHERE request_id = %s",
            [request_id],
        )
        (name,) = cursor.fetchone()
    return str(name)


def _record(customer: Customer, request_id: str, at: datetime) -> None:
    UsageRecord.objects.create(
        request_id=request_id,
        account_id=customer.user.pk,
        api_key=customer.key,
        model="kimi-k2-0905",
        outcome="success",
        charged=1,
        prompt_tokens=3,
        completion_tokens=4,
        settled_at=at,
    )


def test_the_beat_makes_this_month_and_the_next_three_and_nothing_twice() -> None:
    start = _far_month() + timedelta(days=20)
    clock.advance(start - clock.now())

    usage_upkeep_task()
    again = usage_upkeep(now=start, days=0)

    expected = {partition_name(month_add(month_start(start), n)) for n in range(4)}
    assert expected <= set(_names())
    assert again.created == []
    assert settings.CELERY_BEAT_SCHEDULE["usage-upkeep"]["task"] == "credits.gateway.usage_upkeep"


def test_a_record_without_a_partition_lands_in_the_default_and_moves_once() -> None:
    customer = funded_customer(10)
    month = _far_month()
    _record(customer, "early", month + timedelta(days=2, hours=5))
    assert _home("early") == partitions.DEFAULT

    created = usage_upkeep(now=month, days=0).created

    assert partition_name(month_start(month)) in created
    assert _home("early") == partition_name(month_start(month))
    bucket = UsageBucket.objects.get(account_id=customer.user.pk)
    assert (bucket.requests, bucket.credits, bucket.prompt_tokens) == (1, 1, 3)  # not twice


def test_only_partitions_wholly_past_the_retention_are_dropped() -> None:
    customer = funded_customer(10)
    month = _far_month()
    usage_upkeep(now=month, days=0)
    next_month = datetime.combine(month_add(month_start(month), 1), datetime.min.time(), UTC)
    _record(customer, "first-month", month + timedelta(days=1))
    _record(customer, "second-month", next_month + timedelta(days=1))

    # 30 days after the second month's first record: the first month ended 31 days before.
    now = next_month + timedelta(days=31)
    done = usage_upkeep(now=now, days=30)

    assert partition_name(month_start(month)) in done.dropped
    assert partition_name(month_start(next_month)) not in done.dropped
    assert partitions.DEFAULT in _names()
    assert partitions.LEGACY not in _names()  # every month of it is long past
    assert list(UsageRecord.objects.values_list("request_id", flat=True)) == ["second-month"]
    # Buckets are never dropped.
    assert UsageBucket.objects.filter(account_id=customer.user.pk).count() == 2


@override_settings(USAGE_RETENTION_DAYS=30)
def test_the_beat_applies_the_configured_retention() -> None:
    customer = funded_customer(10)
    month = _far_month()
    usage_upkeep(now=month, days=0)
    _record(customer, "aged", month + timedelta(days=1))
    clock.advance(month + timedelta(days=75) - clock.now())

    usage_upkeep_task()

    assert not UsageRecord.objects.filter(request_id="aged").exists()
    assert partition_name(month_start(month)) not in _names()
