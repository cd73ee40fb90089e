"""A replayed authorize answers exactly as the first time (CONTRACT.md, "Retries"), though the
answer is no longer stored (issue 23): it is rebuilt from the hold's columns
(`credits.gateway.decisions.allowed_answer`), and holds written before keep their stored answer.
Both database implementations (`backend`)."""

from datetime import timedelta
from typing import Any

import pytest

from credits import clock, services
from credits.gateway.models import Tier
from credits.gateway.ratelimit import tiers_cache_clear
from credits.models import Hold
from credits.reconciliation import reconcile
from tests.gateway.conftest import Gateway, funded_customer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("backend")]


def _authorize(gateway: Gateway, raw_key: str, request_id: str, fmt: str) -> Any:
    return gateway.post(
        "authorize",
        {"api_key": raw_key, "request_id": request_id, "model": "kimi-k2-0905", "format": fmt},
    )


@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_a_replay_is_the_first_answer_byte_for_byte_whatever_changed_since(
    gateway: Gateway, fmt: str
) -> None:
    customer = funded_customer(500)
    first = _authorize(gateway, customer.raw_key, "req_bytes", fmt)
    assert first.status_code == 200 and first.json()["allowed"] is True
    # Everything the answer was made of moves on: the windows (another minute, hour and day),
    # the counts, the balance (settled, then more requests), the tier's name.
    assert gateway.settle("req_bytes").status_code == 200
    for _ in range(3):
        assert gateway.authorize(customer.raw_key, fmt=fmt)["allowed"] is True
    clock.advance(timedelta(days=1, hours=1, minutes=1, seconds=1))
    Tier.objects.filter(name=first.json()["tier"]).update(name="renamed")
    tiers_cache_clear()
    again = _authorize(gateway, customer.raw_key, "req_bytes", fmt)
    assert again.status_code == 200
    assert again.content == first.content
    assert reconcile() == []


def test_the_hold_keeps_what_the_answer_is_rebuilt_from_not_the_answer(gateway: Gateway) -> None:
    customer = funded_customer(500)
    answer = gateway.authorize(customer.raw_key, "req_columns", fmt="anthropic")
    hold = Hold.objects.get(request_id="req_columns")
    assert hold.decision is None
    headers = answer["headers"]
    assert (
        hold.answer_format,
        hold.answer_tier,
        hold.answer_window,
        hold.answer_limit,
        hold.answer_remaining,
        hold.answer_available,
    ) == (
        1,
        answer["tier"],
        0,  # the minute window: the fewest remaining
        int(headers["X-RateLimit-Limit"]),
        int(headers["X-RateLimit-Remaining"]),
        answer["credits_remaining"],
    )
    settled = gateway.settle("req_columns").json()
    hold.refresh_from_db()
    assert hold.settled_available == settled["credits_remaining"]
    assert hold.decision is None


def test_a_hold_written_before_issue_23_replays_its_stored_answer(gateway: Gateway) -> None:
    """A deployment upgrades with holds that carry their answer (`decision`, with the first
    settle's answer under `_settle`) and none of the new columns: both replays read it."""
    customer = funded_customer(500)
    first = gateway.authorize(customer.raw_key, "req_old")
    settled = gateway.settle("req_old").json()
    # As the previous version wrote it (a tier named differently, to tell where it came from).
    stored = {**first, "tier": "as stored", "_settle": {"charged": 1, "credits_remaining": 7}}
    Hold.objects.filter(request_id="req_old").update(
        decision=stored,
        answer_format=None,
        answer_tier="",
        answer_window=None,
        answer_limit=None,
        answer_remaining=None,
        answer_available=None,
        settled_available=None,
    )
    assert gateway.authorize(customer.raw_key, "req_old") == {**first, "tier": "as stored"}
    assert gateway.settle("req_old").json() == {**settled, "credits_remaining": 7}


def test_a_live_hold_written_before_issue_23_settles_and_replays_as_before(
    gateway: Gateway,
) -> None:
    customer = funded_customer(500)
    first = gateway.authorize(customer.raw_key, "req_live")
    Hold.objects.filter(request_id="req_live").update(
        decision=first, answer_format=None, answer_available=None
    )
    settled = gateway.settle("req_live")
    assert settled.status_code == 200
    hold = Hold.objects.get(request_id="req_live")
    assert hold.decision == first  # the stored answer is left as it was
    assert hold.settled_available == settled.json()["credits_remaining"]
    assert gateway.settle("req_live").json() == settled.json()
    assert gateway.authorize(customer.raw_key, "req_live") == first
    assert services.account_balance(account=hold.account).reserved == 0
