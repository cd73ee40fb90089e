"""`from` and `to` bound `GET /api/user/credits` exactly, also inside an hour (CONTRACT.md,
"GET /api/user/credits": `from` inclusive, `to` exclusive).

Whole hours come from the hourly buckets; an hour that a bound cuts is summed from the usage
records, over the part of it inside the window. Carol's requests (tokens prompt/completion):

    2026-11-24T23:45:00  laptop  S     1/2
    2026-11-25T09:59:00  laptop  S     3/4
    2026-11-25T10:05:00  laptop  S    10/20
    2026-11-25T10:40:00  server  S    50/50
    2026-11-25T10:45:00  laptop  S   100/200
    2026-11-25T10:50:00  laptop  F     7/7     a request, not a credit; tokens not counted
    2026-11-25T11:15:00  laptop  S  1000/2000
"""

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.models import User
from tests.factories import registered_user

from .conftest import clock_at, new_key, settle, utc

pytestmark = pytest.mark.django_db


class Carol:
    user: User
    client: APIClient
    laptop_id: str
    server_id: str


@pytest.fixture
def carol() -> Carol:
    c = Carol()
    clock_at(utc("2026-11-20T09:00:00"))
    c.user = registered_user(email="carol@example.com")
    laptop, _ = new_key(c.user, "laptop")
    server, _ = new_key(c.user, "server")
    c.laptop_id, c.server_id = str(laptop.pk), str(server.pk)
    # (request id, key, settled at, success, prompt tokens, completion tokens), as listed above.
    requests = [
        ("c1", laptop, "2026-11-24T23:45:00", True, 1, 2),
        ("c2", laptop, "2026-11-25T09:59:00", True, 3, 4),
        ("c3", laptop, "2026-11-25T10:05:00", True, 10, 20),
        ("c4", server, "2026-11-25T10:40:00", True, 50, 50),
        ("c5", laptop, "2026-11-25T10:45:00", True, 100, 200),
        ("c6", laptop, "2026-11-25T10:50:00", False, 7, 7),
        ("c7", laptop, "2026-11-25T11:15:00", True, 1000, 2000),
    ]
    for request_id, key, at, success, prompt, completion in requests:
        settle(
            c.user,
            key,
            request_id,
            at=utc(at),
            success=success,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
    clock_at(utc("2026-11-25T12:00:00"))
    c.client = APIClient()
    _, token = AuthToken.objects.create(c.user)
    c.client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return c


def _get(carol: Carol, query: str) -> dict[str, Any]:
    response = carol.client.get(f"/api/user/credits{query}")
    assert response.status_code == 200, response.content
    body: dict[str, Any] = response.json()
    return body


def _totals(requests: int, credits: int, prompt: int, completion: int) -> dict[str, int]:
    return {
        "requests": requests,
        "credits": credits,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def _day(date: str, *totals: int) -> dict[str, Any]:
    return {"date": date, **_totals(*totals)}


def _hour(hour: str, *totals: int) -> dict[str, Any]:
    return {"hour": hour, **_totals(*totals)}


def test_to_inside_an_hour_leaves_out_the_rest_of_that_hour(carol: Carol) -> None:
    body = _get(carol, "?from=2026-11-25&to=2026-11-25T10:30:00Z")
    assert body["usage_by_hour"] == [
        _hour("2026-11-25T09:00:00Z", 1, 1, 3, 4),
        _hour("2026-11-25T10:00:00Z", 1, 1, 10, 20),  # 10:05 only
    ]
    assert body["usage_by_day"] == [_day("2026-11-25", 2, 2, 13, 24)]
    assert body["average_tokens_per_request"] == 18.5  # (7 + 30) / 2


def test_from_inside_an_hour_leaves_out_the_start_of_that_hour(carol: Carol) -> None:
    body = _get(carol, "?from=2026-11-25T10:30:00Z")
    assert body["usage_by_hour"] == [
        _hour("2026-11-25T10:00:00Z", 3, 2, 150, 250),  # 10:40, 10:45 and the failed 10:50
        _hour("2026-11-25T11:00:00Z", 1, 1, 1000, 2000),
    ]
    # The cut hour and the whole hour of the same day add up.
    assert body["usage_by_day"] == [_day("2026-11-25", 4, 3, 1150, 2250)]
    assert body["average_tokens_per_request"] == 1133.3  # 3400 / 3


def test_a_window_inside_one_hour_counts_only_what_lies_between_its_bounds(carol: Carol) -> None:
    body = _get(carol, "?from=2026-11-25T10:10:00Z&to=2026-11-25T10:50:00Z")
    assert body["usage_by_hour"] == [_hour("2026-11-25T10:00:00Z", 2, 2, 150, 250)]
    assert body["usage_by_day"] == [_day("2026-11-25", 2, 2, 150, 250)]
    assert body["average_tokens_per_request"] == 200.0


def test_the_key_filter_applies_to_the_cut_hours_too(carol: Carol) -> None:
    body = _get(carol, f"?from=2026-11-25T10:30:00Z&to=2026-11-25T11:00:00Z&key={carol.laptop_id}")
    assert body["usage_by_hour"] == [_hour("2026-11-25T10:00:00Z", 2, 1, 100, 200)]
    assert body["usage_by_day"] == [_day("2026-11-25", 2, 1, 100, 200)]
    assert body["average_tokens_per_request"] == 300.0
    server = _get(carol, f"?from=2026-11-25T10:30:00Z&key={carol.server_id}")
    assert server["usage_by_hour"] == [_hour("2026-11-25T10:00:00Z", 1, 1, 50, 50)]


def test_an_unaligned_bound_with_an_aligned_one_cuts_only_its_own_hour(carol: Carol) -> None:
    cut_end = _get(carol, "?from=2026-11-25T10:00:00Z&to=2026-11-25T10:42:00Z")
    assert cut_end["usage_by_hour"] == [_hour("2026-11-25T10:00:00Z", 2, 2, 60, 70)]
    assert cut_end["average_tokens_per_request"] == 65.0
    cut_start = _get(carol, "?from=2026-11-25T09:30:00Z&to=2026-11-25T11:00:00Z")
    assert cut_start["usage_by_hour"] == [
        _hour("2026-11-25T09:00:00Z", 1, 1, 3, 4),
        _hour("2026-11-25T10:00:00Z", 4, 3, 160, 270),
    ]
    assert cut_start["usage_by_day"] == [_day("2026-11-25", 5, 4, 163, 274)]


def test_cut_hours_on_two_days_land_on_their_own_days(carol: Carol) -> None:
    body = _get(carol, "?from=2026-11-24T23:50:00Z&to=2026-11-25T10:06:00Z")
    # 23:45 is before `from`; 09:59 is a whole hour; 10:05 is in the cut 10:00 hour.
    assert body["usage_by_hour"] == [
        _hour("2026-11-25T09:00:00Z", 1, 1, 3, 4),
        _hour("2026-11-25T10:00:00Z", 1, 1, 10, 20),
    ]
    assert body["usage_by_day"] == [_day("2026-11-25", 2, 2, 13, 24)]
    body = _get(carol, "?from=2026-11-24T23:30:00Z&to=2026-11-25T09:59:30Z")
    assert body["usage_by_day"] == [
        _day("2026-11-24", 1, 1, 1, 2),
        _day("2026-11-25", 1, 1, 3, 4),
    ]


def _record_queries(carol: Carol, query: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        _get(carol, query)
    return sum("credits_usagerecord" in q["sql"] for q in queries.captured_queries)


def test_the_records_are_read_only_for_the_hours_a_bound_cuts(carol: Carol) -> None:
    queries = [
        "",
        "?from=2026-11-25",
        "?from=2026-11-24&to=2026-11-26",
        "?from=2026-11-25T10:00:00Z&to=2026-11-25T11:00:00Z",
        "?to=2026-11-25T11:00:00%2B01:00",
        "?from=2026-11-25T10:30:00Z",
        "?from=2026-11-25T10:10:00Z&to=2026-11-25T10:50:00Z",
        "?from=2026-11-25T09:30:00Z&to=2026-11-25T10:30:00Z",
    ]
    assert [_record_queries(carol, query) for query in queries] == [
        0,  # the default windows are whole days and hours
        0,
        0,
        0,
        0,  # 10:00 UTC
        1,  # the 10:00 hour, from 10:30
        1,  # one hour holds both bounds
        2,  # the 09:00 hour from 09:30, and the 10:00 hour to 10:30
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?from=0001-01-01T00:00:00%2B01:00", "from"),
        ("?to=9999-12-31T23:59:59-01:00", "to"),
    ],
)
def test_a_bound_outside_the_representable_range_in_utc_is_a_400(
    carol: Carol, query: str, field: str
) -> None:
    response = carol.client.get(f"/api/user/credits{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field
