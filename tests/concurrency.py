"""Real races for tests: threads released together by a barrier, each on its own connection.

PostgreSQL's connections are shared by everyone using the server (100 on CI; on a shared
development machine other checkouts' suites hold some). A race that cannot get its connections
fails with a confusing "too many clients" deep in one thread, so each helper first checks that
the server has enough free and skips with a message that says so when it has not.
"""

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from django.db import connection, transaction
from django.db.models import QuerySet

# Connections kept free for the test's own connection, Celery or live-server threads, and others.
CONNECTION_MARGIN = 5

T = TypeVar("T")


def free_connections() -> int | None:
    """How many more connections PostgreSQL would accept now (None on another database)."""
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


def connections_required(count: int) -> None:
    """Skip the test, saying why, unless PostgreSQL has `count` connections free (plus a
    margin): on a server shared with other test runs, a skip instead of a confusing failure."""
    free = free_connections()
    if free is not None and free < count + CONNECTION_MARGIN:
        pytest.skip(
            f"this race needs {count} PostgreSQL connections (+{CONNECTION_MARGIN} spare) and "
            f"the server has {free} free: other clients hold the rest. Run it when the server "
            "is quieter, or raise max_connections."
        )


def run_together(threads: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run work(0..threads-1) in as many threads, all released at once; return each result or
    the exception it raised. Each thread closes its own database connection when done. Skips
    the test when PostgreSQL has not `threads` connections free (`connections_required`);
    keep `threads` at 20 or fewer (the machine and the server are shared)."""
    connections_required(threads)
    barrier = threading.Barrier(threads)
    results: list[T | BaseException] = [RuntimeError("did not run")] * threads

    def runner(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = work(i)
        except BaseException as exc:
            results[i] = exc
        finally:
            connection.close()

    pool = [threading.Thread(target=runner, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in pool), "a thread is stuck"
    return results


@contextlib.contextmanager
def locked_elsewhere(queryset: QuerySet[Any], *, at_most: float) -> Iterator[None]:
    """Another connection holds `SELECT ... FOR UPDATE` on `queryset`'s rows, as a money
    operation does while it runs, until the block ends (or `at_most` seconds have passed)."""
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                list(queryset.select_for_update())
                locked.set()
                release.wait(timeout=at_most)
        finally:
            connection.close()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(timeout=10), "the lock was not taken"
        yield
    finally:
        release.set()
        holder.join(timeout=30)
