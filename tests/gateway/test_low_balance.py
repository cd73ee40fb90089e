"""`credits.low` through the gateway (issue 17): exactly one per crossing of the threshold under
200 concurrent settles, on both database implementations; the SQL function's event announced
(`event_recorded`) like the services'; and what it costs the hot path, counted statement by
statement inside PostgreSQL (auto_explain logs every nested statement of the PL/pgSQL
functions): a pair that does not cross runs exactly the statements it ran before."""

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.db import connection
from django.test import Client

from credits import clock, services
from credits.gateway import backends
from credits.gateway.decisions import AnswerShape
from credits.gateway.outcomes import Outcome
from credits.models import CreditAccount, Event, EventType, LotSource
from credits.reconciliation import reconcile
from credits.signals import event_recorded
from tests import concurrency
from tests.gateway.conftest import Gateway, funded_customer

THREADS = 20
PER_THREAD = 10


@pytest.fixture
def announced() -> Iterator[set[UUID]]:
    """The event ids `event_recorded` announced, from any thread."""
    found: set[UUID] = set()
    lock = threading.Lock()

    def receiver(sender: object, event_id: UUID, **kwargs: Any) -> None:
        with lock:
            found.add(event_id)

    event_recorded.connect(receiver, dispatch_uid="test-low-balance")
    yield found
    event_recorded.disconnect(dispatch_uid="test-low-balance")


def holds(user_id: UUID, key_id: UUID, count: int) -> list[str]:
    request_ids = [f"low-{uuid4().hex}" for _ in range(count)]
    for request_id in request_ids:
        services.hold_create(user_id=user_id, request_id=request_id, api_key_id=key_id)
    return request_ids


def low_events(user_id: UUID) -> list[Event]:
    return list(
        Event.objects.filter(user_id=user_id, type=EventType.CREDITS_LOW).order_by("created_at")
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("backend")
def test_200_concurrent_settles_crossing_the_threshold_write_one_credits_low_and_a_grant_rearms(
    service_token: str, announced: set[UUID]
) -> None:
    customer = funded_customer(THREADS * PER_THREAD + 5)  # threshold 10 by default
    user_id = customer.user.pk
    request_ids = holds(user_id, customer.key.pk, THREADS * PER_THREAD)
    assert low_events(user_id) == []  # holds alone: no entry, no event

    def settle_ten(n: int) -> list[int]:
        gateway = Gateway(service_token, Client())
        return [
            gateway.settle(request_id).status_code
            for request_id in request_ids[n * PER_THREAD : (n + 1) * PER_THREAD]
        ]

    results = concurrency.run_together(THREADS, settle_ten)
    assert results == [[200] * PER_THREAD] * THREADS
    assert CreditAccount.objects.get(pk=user_id).balance == 5
    [first] = low_events(user_id)
    assert first.data == {"balance": 9, "threshold": 10}
    assert first.cause.startswith("credits.low:charge:")

    # Back above the threshold, then below it again: a second notice.
    services.credits_grant(
        user_id=user_id, amount=10, source=LotSource.ADJUSTMENT, idempotency_key=str(uuid4())
    )
    gateway = Gateway(service_token)
    for request_id in holds(user_id, customer.key.pk, 6):  # 15 -> 9
        assert gateway.settle(request_id).status_code == 200
        assert gateway.settle(request_id).status_code == 200  # a replay writes nothing
    assert [e.data for e in low_events(user_id)] == [{"balance": 9, "threshold": 10}] * 2
    # Each event was announced (the customer's `key.created` too), the SQL function's included.
    assert announced == set(Event.objects.values_list("pk", flat=True))
    assert reconcile() == []


@pytest.mark.django_db
@pytest.mark.usefixtures("backend")
def test_settles_with_a_null_threshold_or_above_it_write_no_event(gateway: Gateway) -> None:
    customer = funded_customer(30)
    services.low_balance_threshold_set(user_id=customer.user.pk, threshold=None)
    for request_id in holds(customer.user.pk, customer.key.pk, 25):
        assert gateway.settle(request_id).status_code == 200
    other = funded_customer(30)
    for request_id in holds(other.user.pk, other.key.pk, 20):  # 30 -> 10: never below 10
        assert gateway.settle(request_id).status_code == 200
    for request_id in holds(other.user.pk, other.key.pk, 5):
        assert gateway.settle(request_id, "failure").status_code == 200  # released: no entry
    assert not Event.objects.filter(type=EventType.CREDITS_LOW).exists()


# --- what it costs: statements per authorize + settle pair ---------------------------------------


@contextmanager
def nested_statements() -> Iterator[list[str]]:
    """The first line of every statement PostgreSQL runs inside the gateway's functions on
    this connection meanwhile (auto_explain's nested statements, logged to this client)."""
    texts: list[str] = []
    connection.ensure_connection()
    raw = connection.connection

    def collect(diagnostic: Any) -> None:
        # One message per statement; its first line of text is enough to tell them apart. The
        # top-level calls are left out: the log of the last one may come after the handler is
        # gone (it is written when the call's portal closes).
        found = re.search(r"Query Text: (.*)", diagnostic.message_primary)
        if found and not found.group(1).startswith("SELECT * FROM gateway_"):
            texts.append(found.group(1).strip())

    with connection.cursor() as cursor:
        cursor.execute("LOAD 'auto_explain'")
        cursor.execute("SET auto_explain.log_min_duration = 0")
        cursor.execute("SET auto_explain.log_nested_statements = on")
        cursor.execute("SET client_min_messages = log")
    raw.add_notice_handler(collect)
    try:
        yield texts
    finally:
        raw.remove_notice_handler(collect)
        with connection.cursor() as cursor:
            cursor.execute("SET client_min_messages = notice")
            cursor.execute("SET auto_explain.log_min_duration = -1")


def pair(customer: Any, *, now: Any) -> list[str]:
    """One authorize (the one-call path) and its settle through the SQL backend, as counted."""
    backend = backends.SqlBackend()
    request_id, hold_id = f"pair-{uuid4().hex}", str(uuid4())
    with nested_statements() as texts:
        fast = backend.authorize(
            request_id=request_id,
            digest=customer.key.digest,
            key_id=str(customer.key.pk),
            user_id=str(customer.key.user_id),
            tier_min=1,
            tier_max=None,
            hold_id=hold_id,
            shape=AnswerShape("openai", None, None, None, None),
            now=now,
            expires_at=now + timedelta(seconds=600),
            model="kimi-k2-0905",
        )
        assert fast.outcome == Outcome.OK, fast
        usage = backends.Usage("kimi-k2-0905", 1, 1, "", 200)
        settled = backend.settle(request_id=request_id, commit=True, usage=usage, now=now)
        assert settled.outcome == Outcome.OK, settled
    return texts


# The statements the functions run inside one authorize + settle pair before issue 17 (main at
# 2491704, measured with this helper against that text of gateway_settle, as 12 with the two
# top-level calls): 4 in gateway_authorize, 6 in gateway_settle. A pair that does not cross
# must cost exactly this.
NESTED_STATEMENTS_PER_PAIR_BEFORE = 10


@pytest.mark.django_db
def test_a_pair_that_does_not_cross_runs_the_same_statements_and_a_crossing_one_more_insert() -> (
    None
):
    if connection.vendor != "postgresql":
        pytest.skip("the SQL functions exist on PostgreSQL only")
    customer = funded_customer(12)
    now = clock.now()
    quiet = pair(customer, now=now)  # 12 -> 11
    quiet_again = pair(customer, now=now)  # 11 -> 10
    crossing = pair(customer, now=now)  # 10 -> 9: credits.low
    assert len(quiet) == len(quiet_again) == NESTED_STATEMENTS_PER_PAIR_BEFORE, quiet
    assert not any("credits_event" in text for text in quiet + quiet_again)
    extra = [text for text in crossing if text not in quiet]
    assert len(crossing) == len(quiet) + 1
    assert len(extra) == 1 and extra[0].startswith("INSERT INTO credits_event"), extra
    assert len(low_events(customer.user.pk)) == 1
