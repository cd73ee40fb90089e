"""When Redis or the database cannot be reached (real unreachable addresses, no mocks)."""

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from config.redis import get_redis
from credits.gateway import ratelimit
from credits.models import CreditAccount, EntryKind, LedgerEntry
from credits.reconciliation import reconcile
from tests.gateway.conftest import Gateway, funded_customer, start_of_next

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def redis_down() -> Iterator[None]:
    get_redis.cache_clear()
    with override_settings(REDIS_URL=CLOSED_PORT_REDIS):
        yield
    get_redis.cache_clear()


@pytest.mark.django_db
@pytest.mark.usefixtures("backend")
def test_without_redis_rate_limits_fail_open_and_credits_stay_exact(
    gateway: Gateway, redis_down: None
) -> None:
    start_of_next("minute")
    customer = funded_customer(25)
    failures = ratelimit.REDIS_FAILURES
    decisions = [gateway.authorize(customer.raw_key) for _ in range(30)]
    # Far past the 20/min of the tier: the limiter failed open...
    assert [d["allowed"] for d in decisions] == [True] * 25 + [False] * 5
    # ...but the credits bound exactly: 25 holds, then 403 for credit.
    assert {d["status"] for d in decisions[25:]} == {403}
    assert failures + 25 <= ratelimit.REDIS_FAILURES
    for decision in decisions[:25]:
        request_id = f"{decision['hold_id']}"
        from credits.models import Hold

        assert gateway.settle(Hold.objects.get(pk=request_id).request_id).status_code == 200
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved) == (0, 0)
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 25
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_without_the_database_the_internal_api_answers_503_quickly(service_token: str) -> None:
    customer = funded_customer(5)
    result: dict[str, Any] = {}

    def call_with_database_away() -> None:
        # This thread's own connection points at a closed port: a database that is down.
        connection = connections["default"]
        connection.close()
        connection.settings_dict = {**connection.settings_dict, "PORT": "1"}
        gateway = Gateway(service_token)
        started = time.monotonic()
        try:
            for path, body in (
                (
                    "authorize",
                    {
                        "api_key": customer.raw_key,
                        "request_id": "req_db_down",
                        "model": "m",
                        "format": "openai",
                    },
                ),
                ("settle", {"request_id": "req_db_down", "outcome": "failure"}),
            ):
                response = gateway.post(path, body)
                result[path] = (response.status_code, response.json())
        finally:
            result["seconds"] = time.monotonic() - started
            connection.close()

    # The service token was verified (and cached) with the database up; then it goes away.
    up = Gateway(service_token).post("settle", {"request_id": "none", "outcome": "failure"})
    assert up.status_code == 404
    thread = threading.Thread(target=call_with_database_away)
    thread.start()
    thread.join()
    expected = {"error": {"code": "unavailable", "message": "The database cannot be reached."}}
    assert result["authorize"] == (503, expected)
    assert result["settle"] == (503, expected)
    assert result["seconds"] < 2.0


@pytest.mark.django_db(transaction=True)
def test_the_hot_paths_reused_cursor_follows_the_connection_django_reopens() -> None:
    # `backends._rows` keeps one psycopg cursor per thread (issue 23): a connection the server
    # dropped is a 503 once, as before, and after Django's recycling the next call runs on the
    # new connection, never on the dead cursor.
    import psycopg
    from django.db import OperationalError, close_old_connections, connection

    from credits.gateway import backends

    if connection.vendor != "postgresql":
        pytest.skip("the SQL backend's cursor is PostgreSQL's")
    pid = backends._rows("SELECT pg_backend_pid()", [])[0][0]
    assert backends._rows("SELECT pg_backend_pid()", [])[0][0] == pid  # the same cursor, reused
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("prepare_threshold", None)
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    with pytest.raises(OperationalError):
        backends._rows("SELECT 1", [])
    close_old_connections()  # what the WSGI entry does before every call
    assert backends._rows("SELECT 1", []) == [(1,)]
    assert backends._rows("SELECT pg_backend_pid()", [])[0][0] != pid
