"""The account pages in a real headless browser: a stranger signs up on `/register`, opens
the verification link from the mail a real SMTP server received, forgets the password, resets
it through the mailed link's page, and logs in. Playwright's sync API runs an event loop in this
thread, so the test makes no database call of its own (Django refuses them there)."""

from typing import Any

import pytest
from pytest_django.live_server_helper import LiveServer

from tests.mail_support import Mailbox, text_of

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

EMAIL = "stranger@example.com"
PASSWORD = "a-long and unusual passphrase 42"
NEW_PASSWORD = "another long passphrase 77"


def _link(message: Any, path: str) -> str:
    line = next(line for line in text_of(message).splitlines() if f"{path}?token=" in line)
    return line.strip()


def test_register_verify_forget_reset_and_log_in_in_the_browser(
    live_server: LiveServer, browser: Any, smtp: Mailbox, settings: Any
) -> None:
    settings.DASHBOARD_URL = live_server.url  # the links open this service's own pages
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{live_server.url}/register")
    page.fill("#register input[name=email]", EMAIL)
    page.fill("#register input[name=password]", PASSWORD)
    page.click("#register button[type=submit]")
    page.wait_for_selector(".messages:has-text('We mailed a link')", timeout=15000)
    assert page.is_visible("#unverified")  # logged in, not verified yet

    verify = _link(smtp.wait_for(EMAIL)[0], "/verify-email")
    assert verify.startswith(f"{live_server.url}/verify-email?token=")
    page.goto(verify)
    page.wait_for_selector("#result:has-text('Your email address is verified.')", timeout=15000)

    page.goto(f"{live_server.url}/forgot-password")
    page.fill("#forgot input[name=email]", EMAIL)
    page.click("#forgot button[type=submit]")
    page.wait_for_selector("#result:has-text('reset link is on its way')", timeout=15000)
    reset = _link(smtp.wait_for(EMAIL, count=2)[1], "/reset-password")
    page.goto(reset)
    page.fill("input[name=password]", NEW_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#result:has-text('Your password is set')", timeout=15000)
    # The link works once.
    page.goto(reset)
    page.fill("input[name=password]", "yet another passphrase 99")
    page.click("button[type=submit]")
    page.wait_for_selector("#result.error", timeout=15000)
    assert "invalid or has expired" in page.inner_text("#result")

    # The reset ended every login: the console asks for the new password.
    page.goto(f"{live_server.url}/my-credits")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", NEW_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#report:not([hidden])", timeout=15000)
    assert page.inner_text("#credits-remaining") == "100"  # the signup grant, once verified
    assert page.query_selector("#unverified") is None
    page.goto(f"{live_server.url}/my-credits/account")
    assert page.inner_text("#verified") == "verified"
    assert errors == []
