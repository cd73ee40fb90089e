"""The race helpers' connection check: a race that needs more connections than PostgreSQL has
free is skipped with a message saying so, not failed with "too many clients"."""

import pytest

from tests import concurrency

pytestmark = pytest.mark.django_db


def test_the_free_connections_are_counted_on_the_server() -> None:
    free = concurrency.free_connections()
    assert free is not None
    assert 0 < free < 10_000


def test_a_race_needing_more_connections_than_are_free_is_skipped_saying_why() -> None:
    free = concurrency.free_connections()
    assert free is not None
    with pytest.raises(pytest.skip.Exception) as skipped:
        concurrency.run_together(free + 1, lambda i: i)
    message = str(skipped.value)
    assert f"needs {free + 1} PostgreSQL connections" in message
    assert "free: other clients hold the rest" in message


def test_a_race_within_the_free_connections_runs() -> None:
    assert concurrency.run_together(3, lambda i: i * 2) == [0, 2, 4]
