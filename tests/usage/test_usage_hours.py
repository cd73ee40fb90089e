"""The admin index's "consumed today" (credits.usage.dashboard): the closed hours from their
roll-ups (`UsageHour`, written by the beat once an hour can no longer change), the others from
their buckets, the same figure either way."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from credits import services
from credits.models import LotSource
from credits.usage.dashboard import consumed_between, day_totals, usage_hours_roll_up
from credits.usage.models import UsageHour
from tests.factories import registered_user

from .conftest import settle, utc

pytestmark = pytest.mark.django_db

DAY = utc("2026-11-21T00:00:00")


@pytest.fixture
def carol() -> User:
    user = registered_user(email="carol@example.com")
    services.credits_grant(
        user_id=user.pk, amount=1000, source=LotSource.PURCHASE, idempotency_key="carol-buy"
    )
    return user


@pytest.fixture
def busy_hours(carol: User) -> None:
    """Charges at 09:10 (two), 10:59:59 (one, and a failure), 11:00 (one) and 12:03 (one)."""
    settle(carol, None, "a", at=utc("2026-11-21T09:10:00"))
    settle(carol, None, "b", at=utc("2026-11-21T09:50:00"))
    settle(carol, None, "c", at=utc("2026-11-21T10:59:59"))
    settle(carol, None, "d", at=utc("2026-11-21T10:30:00"), success=False)
    settle(carol, None, "e", at=utc("2026-11-21T11:00:00"))
    settle(carol, None, "f", at=utc("2026-11-21T12:03:00"))


def test_an_hour_is_rolled_up_once_it_can_no_longer_change(busy_hours: None) -> None:
    # 12:04: 11:00-12:00 ended 4 minutes ago, within the settles' grace: not yet.
    usage_hours_roll_up(now=utc("2026-11-21T12:04:00"))
    rows = dict(UsageHour.objects.filter(hour__gte=DAY).values_list("hour", "credits"))
    assert max(rows) == utc("2026-11-21T10:00:00")
    assert rows[utc("2026-11-21T09:00:00")] == 2
    assert rows[utc("2026-11-21T10:00:00")] == 1  # the failure is a request, not a credit
    assert UsageHour.objects.get(hour=utc("2026-11-21T10:00:00")).requests == 2
    assert rows[utc("2026-11-21T08:00:00")] == 0  # no usage: a row of zeros, not read again
    # 12:05: now it is; and a second run writes nothing twice.
    assert usage_hours_roll_up(now=utc("2026-11-21T12:05:00")) == 1
    assert usage_hours_roll_up(now=utc("2026-11-21T12:05:00")) == 0
    assert UsageHour.objects.get(hour=utc("2026-11-21T11:00:00")).credits == 1
    # The horizon: two days of hours back from the first run's last closed one, no more.
    assert UsageHour.objects.order_by("hour").first().hour == utc("2026-11-19T11:00:00")  # type: ignore[union-attr]
    assert UsageHour.objects.count() == 48 + 1


def test_consumed_today_is_the_same_with_or_without_the_roll_ups(busy_hours: None) -> None:
    end = DAY + timedelta(days=1)
    assert consumed_between(DAY, end) == 5
    usage_hours_roll_up(now=utc("2026-11-21T12:30:00"))
    assert consumed_between(DAY, end) == 5
    assert day_totals(now=utc("2026-11-21T12:30:00")).consumed == 5


def test_with_the_roll_ups_only_the_open_hours_read_buckets(busy_hours: None) -> None:
    usage_hours_roll_up(now=utc("2026-11-21T12:30:00"))
    with CaptureQueriesContext(connection) as captured:
        assert consumed_between(DAY, DAY + timedelta(days=1)) == 5
    (bucket_query,) = [q["sql"] for q in captured if "credits_usagebucket" in q["sql"]]
    assert "2026-11-21T12:00:00" in bucket_query.replace(" ", "T")
    assert "2026-11-21T09:00:00" not in bucket_query.replace(" ", "T")


def test_a_missing_roll_up_is_read_from_its_buckets(busy_hours: None) -> None:
    usage_hours_roll_up(now=utc("2026-11-21T12:30:00"))
    UsageHour.objects.filter(hour=utc("2026-11-21T09:00:00")).delete()  # the beat was down
    assert consumed_between(DAY, DAY + timedelta(days=1)) == 5
