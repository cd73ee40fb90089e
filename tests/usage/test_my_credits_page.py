"""`/my-credits` in a real headless browser: Debian's chromium driven by Playwright.

The browser logs in through the page's own form (which posts to `/api/auth/login` and keeps the
session cookie), then the page loads `/api/user/credits` and draws its charts as inline SVG.
Playwright's sync API runs an event loop in this thread, so every database call of the test is
made before the browser starts or after it stops.
"""

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import sync_playwright
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from credits import services
from credits.models import LotSource
from tests.factories import registered_user

from .conftest import clock_at, new_key, settle, utc

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"  # the factory's

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def erin() -> User:
    """Signup lot (100) and a Standard lot (5,000, expires 2026-12-25T07:00:00Z); three
    requests: two successes and a failure, across two days and two hours."""
    clock_at(utc("2026-11-20T08:00:00"))
    user = registered_user(email="erin@example.com")
    services.credits_grant(
        user_id=user.pk,
        amount=5000,
        source=LotSource.PURCHASE,
        package="standard",
        expires_at=utc("2026-12-25T07:00:00"),
        idempotency_key="test:erin-standard",
    )
    key, _ = new_key(user)
    settle(user, key, "e1", at=utc("2026-11-24T23:59:59"), prompt_tokens=100, completion_tokens=200)
    settle(user, key, "e2", at=utc("2026-11-25T09:15:00"), prompt_tokens=10, completion_tokens=20)
    settle(user, key, "e3", at=utc("2026-11-25T09:20:00"), success=False)
    clock_at(utc("2026-11-25T10:10:00"))
    return user


def _log_in(page: Any, live_server: LiveServer, password: str = PASSWORD) -> None:
    page.goto(f"{live_server.url}/my-credits")
    page.fill("input[name=email]", "erin@example.com")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_a_logged_in_user_sees_balance_lots_and_usage_charts(
    erin: User, live_server: LiveServer, browser: Any
) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    _log_in(page, live_server)
    page.wait_for_selector("#report:not([hidden])", timeout=15000)

    assert page.inner_text("#credits-remaining") == "5,098"
    assert page.inner_text("#credits-reserved") == "0"
    assert page.inner_text("#credits-consumed") == "2"
    assert page.inner_text("#tier-name") == "1,001-10,000"
    assert page.inner_text("#average-tokens") == "165.0"  # (300 + 30) / 2
    rows = page.eval_on_selector_all(
        "#lots tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert rows == [
        ["purchase", "standard", "5,000", "4,998", "2026-12-25 07:00:00 UTC"],
        ["signup", "\u2013", "100", "100", "never"],
    ]

    # One bar per day of the 30 and per hour of the 48, empty ones included.
    day_bars = page.eval_on_selector_all(
        "#chart-days g.bar",
        "bars => bars.map(b => [b.dataset.key, +b.dataset.requests, +b.dataset.credits])",
    )
    assert len(day_bars) == 30
    assert day_bars[0][0] == "2026-10-27" and day_bars[-1][0] == "2026-11-25"
    assert [bar for bar in day_bars if bar[1]] == [["2026-11-24", 1, 1], ["2026-11-25", 2, 1]]
    hour_bars = page.eval_on_selector_all(
        "#chart-hours g.bar",
        "bars => bars.map(b => [b.dataset.key, +b.dataset.requests, +b.dataset.credits])",
    )
    assert len(hour_bars) == 48
    assert hour_bars[-1][0] == "2026-11-25T10:00:00Z"
    assert [bar for bar in hour_bars if bar[1]] == [
        ["2026-11-24T23:00:00Z", 1, 1],
        ["2026-11-25T09:00:00Z", 2, 1],
    ]
    # Bars are drawn to scale: the 2-request bar is twice as tall as the 1-request one.
    heights = page.eval_on_selector_all(
        "#chart-days g.bar rect.requests", "rects => rects.map(r => +r.getAttribute('height'))"
    )
    assert heights[-1] == pytest.approx(2 * heights[-2]) and heights[-1] > 0
    assert page.text_content("#chart-days g.bar:last-of-type title") == (
        "2026-11-25: 2 requests, 1 credits, 30 tokens"
    )
    assert errors == []


def test_an_anonymous_visitor_gets_the_login_form_and_a_wrong_password_is_explained(
    erin: User, live_server: LiveServer, browser: Any
) -> None:
    page = browser.new_page()
    _log_in(page, live_server, password="wrong password")
    page.wait_for_selector("#login-error:not([hidden])", timeout=15000)
    assert page.inner_text("#login-error") == "Email or password is incorrect."
    assert page.query_selector("#report") is None


def test_logging_out_returns_to_the_login_form(
    erin: User, live_server: LiveServer, browser: Any
) -> None:
    page = browser.new_page()
    _log_in(page, live_server)
    page.wait_for_selector("#report:not([hidden])", timeout=15000)
    page.click("#logout")
    page.wait_for_selector("form#login", timeout=15000)
    assert page.evaluate("fetch('/api/user/credits').then(r => r.status)") == 401
