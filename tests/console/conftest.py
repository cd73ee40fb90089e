"""Helpers for the console's tests: the documented tiers and packages put back after a
transactional test's flush, fresh throttle and limiter counters, and Debian's chromium."""

from collections.abc import Iterator

import pytest
from django.core.cache import cache

from accounts import service_tokens
from credits import clock
from credits.gateway.ratelimit import tiers_cache_clear
from tests.factories import ensure_documented_tiers, ensure_seeded_packages

# `clock_at` (tests/usage/conftest.py) replaces `clock.now`; every test here starts and ends
# with the real one.
_REAL_NOW = clock.now


@pytest.fixture(autouse=True)
def _fresh_state(request: pytest.FixtureRequest) -> Iterator[None]:
    marker = request.node.get_closest_marker("django_db")
    if marker is not None:
        transactional = marker.kwargs.get("transaction", False)
        request.getfixturevalue("transactional_db" if transactional else "db")
        ensure_documented_tiers()
        ensure_seeded_packages()
    tiers_cache_clear()
    service_tokens.clear_cache()
    cache.clear()
    yield
    clock.now = _REAL_NOW
    tiers_cache_clear()
    service_tokens.clear_cache()
    cache.clear()


# Debian's chromium through Playwright (tests/usage/test_my_credits_page.py).
from tests.usage.test_my_credits_page import browser  # noqa: E402, F401
