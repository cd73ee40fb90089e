from collections.abc import Iterator

import pytest
from django.core.cache import cache

from accounts import service_tokens


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Login throttle counts live in the shared cache and verified service tokens in a
    process cache: neither may carry over from one test (or test run) to the next."""
    cache.clear()
    service_tokens.clear_cache()
    yield
    service_tokens.clear_cache()


# Debian's chromium through Playwright, for the page tests (tests/accounts/test_pages_browser.py).
from tests.usage.test_my_credits_page import browser  # noqa: E402, F401
