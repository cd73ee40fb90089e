"""`GET /api/user/requests` and the two CSV streams: every settled request, newest first, a page
at a time; the CSVs carry the same rows; all of it agrees with `/api/user/credits`."""

import csv
import io
import re
from datetime import timedelta
from typing import Any

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from credits.models import LedgerEntry
from tests.factories import registered_user

from .conftest import new_key, record, settle, utc
from .test_ledger_api import _client

pytestmark = pytest.mark.django_db


def _all_pages(client: APIClient, url: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        results.extend(response.json()["results"])
        url = response.json()["next"]
    return results


def _csv_rows(client: APIClient, url: str) -> list[dict[str, str]]:
    response = client.get(url)
    assert response.status_code == 200, response.content
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    body = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def erin() -> tuple[User, Any]:
    """Ten requests over two days through the services (charged and not), on two keys, and
    twelve records settled in the same microsecond (ties the cursor must not skip or repeat)."""
    user = registered_user(email="erin@example.com")
    laptop, _ = new_key(user, "laptop")
    server, _ = new_key(user, "server")
    start = utc("2026-11-20T10:00:00")
    for n in range(10):
        settle(
            user,
            laptop if n % 2 else server,
            f"erin-{n}",
            at=start + timedelta(hours=5 * n, minutes=7),
            success=n % 3 != 0,
            prompt_tokens=10 * n,
            completion_tokens=n,
            reason="" if n % 3 else "upstream_error",
        )
    tie = utc("2026-11-21T18:30:00.123456")
    for n in range(12):
        record(user, laptop, f"erin-tie-{n}", at=tie, charged=n % 2)
    return user, laptop


def test_the_list_is_every_request_newest_first_across_pages_without_gaps(erin: Any) -> None:
    user, _ = erin
    results = _all_pages(_client(user), "/api/user/requests?limit=5")

    assert len(results) == 22
    assert len({row["request_id"] for row in results}) == 22
    assert [row["settled_at"] for row in results] == sorted(
        (row["settled_at"] for row in results), reverse=True
    )
    first = next(row for row in results if row["request_id"] == "erin-3")
    assert first == {
        "request_id": "erin-3",
        "key_id": first["key_id"],
        "model": "kimi-k2-0905",
        "outcome": "failure",
        "http_status": 502,
        "charged": 0,
        "reason": "upstream_error",
        "prompt_tokens": 30,
        "completion_tokens": 3,
        "authorized_at": "2026-11-21T01:07:00Z",
        "settled_at": "2026-11-21T01:07:00Z",
    }


@pytest.mark.parametrize(
    "query",
    [
        "",
        "from=2026-11-21",
        "from=2026-11-20T12:30:00Z&to=2026-11-21T18:30:00.5Z",
        "to=2026-11-21T18:30:00.123456Z",
    ],
)
def test_list_and_csv_agree_with_the_credits_totals_for_any_range(erin: Any, query: str) -> None:
    user, laptop = erin
    client = _client(user)
    for extra in ("", f"&key={laptop.pk}"):
        suffix = query + extra
        listed = _all_pages(client, f"/api/user/requests?limit=7&{suffix}")
        rows = _csv_rows(client, f"/api/user/requests.csv?{suffix}")
        credits = client.get(f"/api/user/credits?from=2026-11-01&to=2026-12-01&{suffix}")
        days = credits.json()["usage_by_day"]

        assert [row["request_id"] for row in rows] == [row["request_id"] for row in listed]
        assert [int(row["charged"]) for row in rows] == [row["charged"] for row in listed]
        if "from" in suffix or "to" in suffix:
            assert len(listed) == sum(day["requests"] for day in days)
            assert sum(row["charged"] for row in listed) == sum(day["credits"] for day in days)


def test_the_ledger_csv_is_the_ledger_api_in_one_stream(erin: Any) -> None:
    user, _ = erin
    client = _client(user)
    rows = _csv_rows(client, "/api/user/ledger.csv")
    assert list(rows[0]) == [
        "id",
        "kind",
        "amount",
        "balance_after",
        "source",
        "reference",
        "reason",
        "created_at",
    ]
    api = _all_pages(client, "/api/user/ledger?limit=200")
    assert [(int(r["id"]), r["kind"], int(r["amount"]), r["created_at"]) for r in rows] == [
        (e["id"], e["kind"], e["amount"], e["created_at"]) for e in api
    ]
    charges = _csv_rows(client, "/api/user/ledger.csv?kind=charge&from=2026-11-21")
    assert charges and {r["kind"] for r in charges} == {"charge"}
    assert (
        len(charges)
        == LedgerEntry.objects.filter(
            account_id=user.pk, kind="charge", created_at__gte=utc("2026-11-21T00:00:00")
        ).count()
    )


def test_a_user_sees_only_their_own_requests(erin: Any) -> None:
    _, laptop = erin
    other = registered_user(email="mallory@example.com")
    client = _client(other)
    assert client.get("/api/user/requests").json() == {"results": [], "next": None}
    assert len(_csv_rows(client, "/api/user/requests.csv")) == 0
    assert len(_csv_rows(client, "/api/user/ledger.csv")) == 1  # mallory's own signup grant
    for url in (f"/api/user/requests?key={laptop.pk}", f"/api/user/requests.csv?key={laptop.pk}"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "key_not_found"


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/user/requests?cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("/api/user/requests?from=yesterday", "from"),
        ("/api/user/requests?from=2026-11-21&to=2026-11-20", "to"),
        ("/api/user/requests?limit=0", "limit"),
        ("/api/user/requests.csv?to=nope", "to"),
        ("/api/user/ledger.csv?kind=gift", "kind"),
    ],
)
def test_bad_parameters_are_a_400_naming_them(erin: Any, url: str, field: str) -> None:
    user, _ = erin
    response = _client(user).get(url)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_anonymous_callers_get_401() -> None:
    for url in ("/api/user/requests", "/api/user/requests.csv", "/api/user/ledger.csv"):
        assert APIClient().get(url).status_code == 401


def test_a_page_is_read_in_order_from_the_index_without_a_sort(erin: Any) -> None:
    from django.db import connection

    from credits.usage.selectors import Window, usage_records

    user, _ = erin
    page = usage_records(
        user=user,
        window=Window(utc("2026-11-20T00:00:00"), None),
        before=(utc("2026-11-21T18:30:00.123456"), 10**9),
    )[:51]
    with connection.cursor() as cursor:
        # A table this small would be scanned whole; the question is whether the index can
        # serve the page, in order, with the cursor's bound as its range.
        cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = page.query.sql_with_params()
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        # The table is partitioned by month (credits/gateway/partitions.py): each partition's
        # part of `usage_account_settled_id` serves its rows, merged in order across months.
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_account_settled_id'::regclass"
        )
        parts = {name for (name,) in cursor.fetchall()}
    served = re.findall(r"Index Scan Backward using (\S+) on credits_usagerecord", plan)
    assert served and set(served) <= parts, plan
    assert "Seq Scan on credits_usagerecord" not in plan, plan
    assert "Sort" not in plan, plan
