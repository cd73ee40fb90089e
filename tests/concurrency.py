"""Real races for tests: threads released together by a barrier, each on its own connection."""

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import connection, transaction
from django.db.models import QuerySet

T = TypeVar("T")


def run_together(threads: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run work(0..threads-1) in as many threads, all released at once; return each result or
    the exception it raised. Each thread closes its own database connection when done, so a
    test stays within its connection budget (keep `threads` under 50: CI allows 100)."""
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
