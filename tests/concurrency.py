"""Real races for tests: threads released together by a barrier, each on its own connection."""

import threading
from collections.abc import Callable
from typing import TypeVar

from django.db import connection

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
