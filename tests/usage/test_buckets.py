"""The hourly buckets are kept by the database: every inserted usage record lands in its UTC
hour's bucket, in the inserting transaction, whoever inserts it (the ORM, raw SQL, another
session's time zone)."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from credits.gateway.models import UsageBucket, UsageRecord
from tests.factories import registered_user

from .conftest import new_key, record, utc

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]


def _buckets(user_id: Any) -> list[tuple[str, object, str, int, int, int, int]]:
    return [
        (
            b.hour.isoformat(),
            b.api_key_id,
            b.model,
            b.requests,
            b.credits,
            b.prompt_tokens,
            b.completion_tokens,
        )
        for b in UsageBucket.objects.filter(account_id=user_id).order_by("hour", "model")
    ]


def test_a_record_lands_in_its_hour_bucket_with_tokens_only_when_charged() -> None:
    user = registered_user()
    key, _ = new_key(user)
    record(user, key, "a", at=utc("2026-11-25T10:00:00"), prompt_tokens=10, completion_tokens=20)
    record(
        user, key, "b", at=utc("2026-11-25T10:59:59.999999"), prompt_tokens=1, completion_tokens=2
    )
    record(
        user,
        key,
        "c",
        at=utc("2026-11-25T10:30:00"),
        charged=0,
        prompt_tokens=500,
        completion_tokens=500,
    )
    assert _buckets(user.pk) == [
        ("2026-11-25T10:00:00+00:00", key.pk, "kimi-k2-0905", 3, 2, 11, 22),
    ]


def test_hours_and_models_and_keys_get_separate_buckets() -> None:
    user = registered_user()
    laptop, _ = new_key(user, "laptop")
    server, _ = new_key(user, "server")
    record(user, laptop, "a", at=utc("2026-11-24T23:59:59.999999"), prompt_tokens=1)
    record(user, laptop, "b", at=utc("2026-11-25T00:00:00"), prompt_tokens=2)
    record(user, server, "c", at=utc("2026-11-25T00:00:01"), prompt_tokens=3)
    record(user, laptop, "d", at=utc("2026-11-25T00:10:00"), prompt_tokens=4, model="kimi-k2-x")
    assert _buckets(user.pk) == [
        ("2026-11-24T23:00:00+00:00", laptop.pk, "kimi-k2-0905", 1, 1, 1, 0),
        ("2026-11-25T00:00:00+00:00", laptop.pk, "kimi-k2-0905", 1, 1, 2, 0),
        ("2026-11-25T00:00:00+00:00", server.pk, "kimi-k2-0905", 1, 1, 3, 0),
        ("2026-11-25T00:00:00+00:00", laptop.pk, "kimi-k2-x", 1, 1, 4, 0),
    ]


def test_records_without_a_key_share_one_bucket_per_hour() -> None:
    user = registered_user()
    record(user, None, "a", at=utc("2026-11-25T10:01:00"), prompt_tokens=5)
    record(user, None, "b", at=utc("2026-11-25T10:02:00"), prompt_tokens=6)
    assert _buckets(user.pk) == [("2026-11-25T10:00:00+00:00", None, "kimi-k2-0905", 2, 2, 11, 0)]


def test_a_second_keyless_bucket_for_the_same_hour_is_refused_by_the_database() -> None:
    user = registered_user()
    record(user, None, "a", at=utc("2026-11-25T10:01:00"))
    bucket = UsageBucket.objects.get(account_id=user.pk)
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageBucket.objects.create(
            account_id=user.pk, api_key=None, model=bucket.model, hour=bucket.hour
        )


def test_the_bucket_hour_is_the_utc_hour_whatever_the_session_time_zone() -> None:
    """A session in a half-hour zone (Asia/Kolkata, +05:30) would cut hours at :30 if the
    trigger truncated in the session's zone."""
    user = registered_user()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL TIME ZONE 'Asia/Kolkata'")
        cursor.execute(
            "INSERT INTO credits_usagerecord (request_id, account_id, model, prompt_tokens,"
            " completion_tokens, outcome, reason, charged, settled_at)"
            " VALUES ('tz', %s, 'm', 1, 1, 'success', '', 1, '2026-11-25 10:45:00+00')",
            [user.pk],
        )
        cursor.execute("SET LOCAL TIME ZONE 'UTC'")
    assert [b.hour for b in UsageBucket.objects.filter(account_id=user.pk)] == [
        utc("2026-11-25T10:00:00")
    ]


def test_a_rolled_back_settle_leaves_no_bucket_behind() -> None:
    user = registered_user()
    with pytest.raises(RuntimeError), transaction.atomic():
        record(user, None, "a", at=utc("2026-11-25T10:01:00"))
        assert UsageBucket.objects.filter(account_id=user.pk).count() == 1  # seen at once
        raise RuntimeError("the settle failed after the insert")
    assert not UsageBucket.objects.filter(account_id=user.pk).exists()
    assert not UsageRecord.objects.filter(account_id=user.pk).exists()


@pytest.mark.parametrize("column", ["prompt_tokens", "completion_tokens", "charged", "http_status"])
def test_a_usage_record_never_counts_less_than_nothing(column: str) -> None:
    user = registered_user()
    values = {"prompt_tokens": 1, "completion_tokens": 1, "charged": 1, "http_status": 200}
    values[column] = -1
    refused = pytest.raises(IntegrityError, match="usage_counts_not_negative")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO credits_usagerecord (request_id, account_id, model, outcome, reason,"
            " settled_at, prompt_tokens, completion_tokens, charged, http_status)"
            " VALUES ('neg', %s, 'm', 'success', '', now(), %s, %s, %s, %s)",
            [user.pk, *values.values()],
        )
    assert not UsageRecord.objects.filter(account_id=user.pk).exists()


@pytest.mark.parametrize(
    "change", ["credits = -1", "requests = -1, credits = 0", "credits = requests + 1"]
)
def test_a_bucket_never_counts_less_than_nothing_nor_more_credits_than_requests(
    change: str,
) -> None:
    user = registered_user()
    record(user, None, "a", at=utc("2026-11-25T10:01:00"))
    bucket = UsageBucket.objects.get(account_id=user.pk)
    refused = pytest.raises(IntegrityError, match="usagebucket_credits_within_requests")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE credits_usagebucket SET {change} WHERE id = %s", [bucket.pk])


SQLITE_SCRIPT = """
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from datetime import UTC, datetime
from accounts.models import User
from credits.models import CreditAccount
from credits.gateway.models import UsageBucket, UsageRecord
from accounts.models import ApiKey
user = User.objects.create_user("lite@example.com", "pw-pw-pw-pw")
account = CreditAccount.objects.get(user=user)  # opened with the user (credits/receivers.py)
key = ApiKey.objects.create(user=user, name="k", prefix="p", digest="d" * 64)
def add(rid, key, when, charged, p, c):
    UsageRecord.objects.create(request_id=rid, account=account, api_key=key, model="m",
        prompt_tokens=p, completion_tokens=c, outcome="success", charged=charged,
        settled_at=datetime.fromisoformat(when).replace(tzinfo=UTC))
add("1", key, "2026-11-25T10:00:00", 1, 10, 20)
add("2", key, "2026-11-25T10:59:59.999999", 0, 99, 99)
add("3", key, "2026-11-25T11:00:00", 1, 1, 2)
add("4", None, "2026-11-25T10:05:00", 1, 3, 4)
add("5", None, "2026-11-25T10:06:00", 1, 5, 6)
rows = UsageBucket.objects.values_list(
    "hour", "api_key_id", "requests", "credits", "prompt_tokens", "completion_tokens")
for hour, key_id, *numbers in sorted(rows, key=lambda row: (row[0], row[1] is None)):
    print(hour.isoformat(), "key" if key_id else "none", *numbers)
# The API's own query over SQLite's text datetimes.
from credits.usage.selectors import Window, usage_hourly, usage_of_cut_hours
window = Window(
    datetime(2026, 11, 25, 10, 30, tzinfo=UTC), datetime(2026, 11, 25, 11, 0, tzinfo=UTC))
hourly = usage_hourly(account_id=account.pk, window=window,
    cut_hours=usage_of_cut_hours(account_id=account.pk, window=window))
print([(h.isoformat(), t.requests) for h, t in hourly])
from credits.usage.selectors import credits_report
report = credits_report(user=user, start=datetime(2026, 11, 25, tzinfo=UTC), end=None)
print([(d.isoformat(), t.requests, t.credits) for d, t in report.usage_by_day],
      report.average_tokens_per_request)
"""


def test_the_sqlite_triggers_keep_the_same_buckets(tmp_path: Path) -> None:
    """The embedded default (SQLite) gets its own triggers: same buckets, same report query."""
    env = {
        **os.environ,
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "DEBUG": "1",
        "SQLITE_PATH": str(tmp_path / "lite.sqlite3"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    out = subprocess.run(
        [sys.executable, "-c", SQLITE_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "2026-11-25T10:00:00+00:00 key 2 1 10 20",
        "2026-11-25T10:00:00+00:00 none 2 2 8 10",
        "2026-11-25T11:00:00+00:00 key 1 1 1 2",
        "[('2026-11-25T10:00:00+00:00', 1)]",  # [10:30, 11:00) of the records: "2" only
        "[('2026-11-25', 5, 4)] 12.8",  # (10+20 + 3+4 + 5+6 + 1+2) / 4 = 12.75
    ]
