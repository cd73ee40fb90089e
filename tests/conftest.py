from collections.abc import Iterator

import pytest

from credits import clock
from tests.mail_support import smtp  # noqa: F401  (a fixture for every test)


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


@pytest.fixture(autouse=True)
def _close_redis_breaker() -> Iterator[None]:
    """The Redis circuit breaker is per process: a test that met a dead or hung Redis must not
    leave it open for the next one."""
    from config.redis import breaker

    breaker.reset()
    yield
    breaker.reset()
