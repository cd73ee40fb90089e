"""`GET /api/user/ledger`: the user's entries, newest first, a page at a time, by kind."""

import base64
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from knox.models import AuthToken
from rest_framework.test import APIClient

from accounts.models import User
from credits import services
from credits.models import LedgerEntry, LotSource
from tests.factories import registered_user

from .conftest import clock_at, settle, utc

pytestmark = pytest.mark.django_db


def _client(user: User) -> APIClient:
    client = APIClient()
    _, token = AuthToken.objects.create(user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def carol() -> User:
    """signup grant (100), a purchase (500), three charges, an adjustment of -2, with a reason."""
    clock_at(utc("2026-11-20T08:00:00"))
    user = registered_user(email="carol@example.com")
    clock_at(utc("2026-11-21T09:30:15"))
    services.credits_grant(
        user_id=user.pk,
        amount=500,
        source=LotSource.PURCHASE,
        package="standard",
        expires_at=utc("2026-12-21T09:30:15"),
        idempotency_key="test:carol-standard",
        reference="purchase:p1",
    )
    for n in range(3):
        settle(user, None, f"carol-{n}", at=utc(f"2026-11-22T10:0{n}:00"))
    clock_at(utc("2026-11-23T12:00:00"))
    services.credits_adjust(
        user_id=user.pk, amount=-2, reason="goodwill correction", idempotency_key="test:adj"
    )
    # Dave's entries sit between Carol's ids: they must never show on her pages.
    registered_user(email="dave@example.com")
    return user


def _all_pages(client: APIClient, url: str) -> tuple[list[dict[str, Any]], list[str]]:
    results: list[dict[str, Any]] = []
    urls = [url]
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        assert set(body) == {"results", "next"}
        results += body["results"]
        url = body["next"]
        if url:
            urls.append(url)
    return results, urls


def test_entries_come_newest_first_with_every_field(carol: User) -> None:
    response = _client(carol).get("/api/user/ledger")
    assert response.status_code == 200
    body = response.json()
    assert body["next"] is None
    rows = [
        (
            e["kind"],
            e["amount"],
            e["balance_after"],
            e["source"],
            e["reference"],
            e["reason"],
            e["created_at"],
        )
        for e in body["results"]
    ]
    assert rows == [
        (
            "adjust",
            -2,
            595,
            "purchase",
            "adjustment",
            "goodwill correction",
            "2026-11-23T12:00:00Z",
        ),
        ("charge", -1, 597, "purchase", "request:carol-2", "", "2026-11-22T10:02:00Z"),
        ("charge", -1, 598, "purchase", "request:carol-1", "", "2026-11-22T10:01:00Z"),
        ("charge", -1, 599, "purchase", "request:carol-0", "", "2026-11-22T10:00:00Z"),
        ("grant", 500, 600, "purchase", "purchase:p1", "", "2026-11-21T09:30:15Z"),
        ("grant", 100, 100, "signup", "signup", "", "2026-11-20T08:00:00Z"),
    ]
    ids = [e["id"] for e in body["results"]]
    assert ids == sorted(ids, reverse=True)
    assert set(ids) == set(
        LedgerEntry.objects.filter(account_id=carol.pk).values_list("id", flat=True)
    )


def test_pages_follow_the_cursor_without_gaps_or_repeats(carol: User) -> None:
    client = _client(carol)
    everything = client.get("/api/user/ledger").json()["results"]
    paged, urls = _all_pages(client, "/api/user/ledger?limit=4")
    assert paged == everything
    assert len(urls) == 2  # 6 entries: a page of 4, then a page of 2 with next = null
    assert urls[1].startswith("http://testserver/api/user/ledger?")


def test_a_new_entry_does_not_shift_the_next_page(carol: User) -> None:
    client = _client(carol)
    first = client.get("/api/user/ledger?limit=2").json()
    settle(carol, None, "carol-late", at=utc("2026-11-24T00:00:00"))
    second = client.get(first["next"]).json()
    assert [e["id"] for e in second["results"]] == [
        e["id"] for e in client.get("/api/user/ledger").json()["results"][3:5]
    ]
    assert second["results"][0]["id"] < first["results"][-1]["id"]


def test_the_kind_filter_keeps_to_one_kind_across_pages(carol: User) -> None:
    client = _client(carol)
    results, urls = _all_pages(client, "/api/user/ledger?kind=charge&limit=2")
    assert [e["reference"] for e in results] == [
        "request:carol-2",
        "request:carol-1",
        "request:carol-0",
    ]
    assert all(parse_qs(urlsplit(u).query).get("kind") == ["charge"] for u in urls[1:])
    grants = client.get("/api/user/ledger?kind=grant").json()["results"]
    assert [e["amount"] for e in grants] == [500, 100]
    assert client.get("/api/user/ledger?kind=expire").json() == {"results": [], "next": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("kind=refund", "kind"),
        ("kind=CHARGE", "kind"),
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'{"before": "x"}').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b'{"before": -5}').decode(), "cursor"),
        ("cursor=" + base64.urlsafe_b64encode(b"[1]").decode(), "cursor"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_parameter(carol: User, query: str, field: str) -> None:
    response = _client(carol).get(f"/api/user/ledger?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["field"] == field


def test_another_users_entries_never_appear(carol: User) -> None:
    dave = User.objects.get(email="dave@example.com")
    results, _ = _all_pages(_client(dave), "/api/user/ledger?limit=1")
    assert [(e["kind"], e["amount"], e["source"]) for e in results] == [("grant", 100, "signup")]
    # A cursor is only a position: Dave replaying Carol's cursor still sees only his entries.
    carol_next = _client(carol).get("/api/user/ledger?limit=1").json()["next"]
    replay = _client(dave).get(carol_next).json()["results"]
    assert all(e["id"] in {r["id"] for r in results} for e in replay)


def test_anonymous_callers_get_a_401() -> None:
    response = APIClient().get("/api/user/ledger")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
