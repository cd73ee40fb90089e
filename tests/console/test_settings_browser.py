"""The console's settings panels end to end in Debian's chromium, on PostgreSQL and Redis,
against the live server:

a customer logs in, sets the low-balance threshold (a wrong value first, refused by its field)
and turns one email off; adds a webhook endpoint pointing at a real receiver on loopback
(`WEBHOOK_ALLOW_PRIVATE`, as in development), copies its secret shown once, sends a test event
and sees it in the delivery log once the dispatcher has POSTed it, signed, to the receiver;
saves a card through Stripe's setup-mode Checkout (the stand-in for Stripe's hosted page, the
recorded-response Stripe server and the signed `checkout.session.completed`), comes back to the
page Stripe returns to, and turns auto top-up on with the keyboard alone.

Screenshots of each panel at 1280 px and 375 px go to `artifacts/console/` (git-ignored); at
375 px nothing may scroll sideways. As in test_console_browser.py, the test's own database
reads are made outside the browser's event loop.
"""

from typing import Any

import pytest
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from credits.models import CreditAccount
from credits.notifications.services import notification_settings
from credits.payments.models import AutoTopup
from tests.console.test_console_browser import DESKTOP, _call, _in_thread, _shots, _unlabelled
from tests.factories import registered_user
from tests.notifications.conftest import Receiver, receiver  # noqa: F401  (a fixture)
from tests.stripe_support import StripeRecordedServer, build_event, signed_webhook
from tests.stripe_support import stripe_server as stripe_server  # (a fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PASSWORD = "correct horse battery staple"  # the factory's
WEBHOOK_SECRET = "whsec_test_console_settings"
STAND_IN = "<h1>Stripe Checkout (test stand-in)</h1>"


@pytest.fixture
def erin() -> User:
    return registered_user(email="erin@example.com")


def _reload_until(page: Any, selector: str, tries: int = 40) -> None:
    """The log is server-rendered: reload until the row is there (the dispatcher runs after
    the test event's transaction commits, on the server's side)."""
    for _ in range(tries):
        if page.query_selector(selector) is not None:
            return
        page.wait_for_timeout(250)
        page.reload()
    raise AssertionError(f"{selector} never appeared")


def test_a_customer_sets_notifications_a_webhook_and_auto_top_up(
    erin: User,
    live_server: LiveServer,
    settings: Any,
    stripe_server: StripeRecordedServer,
    receiver: Receiver,  # noqa: F811
    browser: Any,
) -> None:
    base = live_server.url
    settings.DASHBOARD_URL = base
    settings.STRIPE_SECRET_KEY = "sk_test_console"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_server.api_base + "/"
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback, over http

    context = browser.new_context(
        viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.route(
        "https://checkout.stripe.com/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=STAND_IN),
    )

    page.goto(f"{base}/my-credits/notifications")
    page.fill("#login-email", erin.email)
    page.fill("#login-password", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#notification-settings")
    assert page.url == f"{base}/my-credits/notifications"
    assert page.get_attribute("nav a[aria-current=page]", "href") == "/my-credits/notifications"
    assert _unlabelled(page) == []

    # 1. The threshold: a wrong value is refused by its field, then 2,500 is saved.
    page.fill("#low-balance-threshold", "-1")
    page.press("#low-balance-threshold", "Enter")
    page.wait_for_selector("#threshold-error")
    assert page.get_attribute("#low-balance-threshold", "aria-invalid") == "true"
    assert "threshold-error" in (
        page.get_attribute("#low-balance-threshold", "aria-describedby") or ""
    )
    page.fill("#low-balance-threshold", "2,500")
    page.uncheck("input[name=email][value='key.created']")
    page.click("#notification-settings button[type=submit]")
    page.wait_for_selector(".messages:has-text('below 2,500 credits')")
    assert page.input_value("#low-balance-threshold") == "2,500"
    assert not page.is_checked("input[name=email][value='key.created']")
    assert page.is_checked("input[name=email][value='credits.low']")

    # 2. A webhook endpoint at the receiver: the secret is shown once and copied.
    page.fill("#webhook-url", receiver.url)
    page.click("#webhook-form button[type=submit]")
    secret = page.input_value("#webhook-secret")
    assert secret.startswith("whsec_")
    page.click("#copy-webhook-secret")
    page.wait_for_selector("#webhook-secret-status:has-text('Copied')", timeout=5000)
    assert page.evaluate("navigator.clipboard.readText()") == secret
    receiver.secrets.append(secret)  # the customer's receiver verifies with it
    _shots(page, "notifications-new-secret")
    page.goto(f"{base}/my-credits/notifications")
    assert page.query_selector("#webhook-secret") is None and secret not in page.content()
    row = page.inner_text("#webhooks li")
    assert receiver.url in row and "all" in row and "enabled" in row and " UTC" in row
    _shots(page, "notifications")

    # 3. A test event: the dispatcher posts it, signed; the delivery log shows the attempt.
    page.click(f"#webhooks a:has-text('{receiver.url}')")
    page.wait_for_selector("#deliveries")
    page.click("#send-test")
    page.wait_for_selector(".messages:has-text('Test event evt_')")
    event_id = page.inner_text(".messages").split("Test event ")[1].split(" ")[0]
    _reload_until(page, f"#deliveries tr[data-event-id='{event_id}']")
    logged = page.inner_text(f"#deliveries tr[data-event-id='{event_id}']")
    assert "webhook.test" in logged and "200" in logged and " UTC" in logged
    (payload,) = receiver.verified()
    assert (payload["id"], payload["type"], payload["data"]) == (event_id, "webhook.test", {})
    _shots(page, "webhook-log")

    # 4. A card through Stripe's setup-mode Checkout, then back on the page Stripe returns to.
    page.click("nav a:has-text('Auto top-up')")
    page.wait_for_selector("#card-add")
    assert _unlabelled(page) == []
    _shots(page, "auto-topup-no-card")
    page.click("#card-add button")
    page.wait_for_selector("text=Stripe Checkout (test stand-in)", timeout=15000)
    (session,) = stripe_server.sessions.values()
    assert session["mode"] == "setup"
    assert session["success_url"] == f"{base}/settings/auto-topup?setup=success"
    completed = stripe_server.complete_setup(session["id"], brand="visa", last4="4242")
    body, signature = signed_webhook(
        build_event("checkout.session.completed", completed), WEBHOOK_SECRET
    )
    status, _ = _call(f"{base}/api/webhooks/stripe", body, {"Stripe-Signature": signature})
    assert status == 200
    page.goto(session["success_url"])
    page.wait_for_selector("#card-details:has-text('4242')", timeout=20000)
    assert page.url.endswith("/my-credits/auto-topup?setup=success")
    assert page.inner_text("#card-details") == "Visa ending in 4242, expires 12/2030"

    # 5. Auto top-up on, with the keyboard alone: tick, type, choose, Enter.
    page.focus("#topup-enabled")
    page.keyboard.press("Space")
    assert page.is_checked("#topup-enabled")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "topup-threshold"
    page.keyboard.type("1,000")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "topup-package"
    page.select_option("#topup-package", "starter")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "topup-limit"
    page.keyboard.type("50")
    page.keyboard.press("Enter")
    page.wait_for_selector(".messages:has-text('Auto top-up is on')")
    status_text = page.inner_text("#auto-topup-status")
    assert "below 1,000 credits, Starter ($4.99) is bought, at most $50.00 a month" in status_text
    assert page.input_value("#topup-limit") == "$50.00"
    _shots(page, "auto-topup")
    assert errors == []
    context.close()

    # 6. Without JavaScript the same forms work: add and delete an endpoint (the secret is
    # shown, there is no copy button), remove the card, which turns auto top-up off.
    plain = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = plain.new_page()
    page.goto(f"{base}/my-credits/notifications")
    page.fill("#login-email", erin.email)
    page.fill("#login-password", PASSWORD)
    page.click("#login button[type=submit]")
    page.fill("#webhook-url", receiver.url + "/plain")
    page.check("input[name=events][value='credits.low']")
    page.click("#webhook-form button[type=submit]")
    assert page.input_value("#webhook-secret").startswith("whsec_")
    assert not page.is_visible("#copy-webhook-secret")
    plain_row = f"#webhooks li:has-text('{receiver.url}/plain')"
    assert "credits.low" in page.inner_text(plain_row)
    page.click(f"{plain_row} button:has-text('Delete')")
    page.wait_for_selector(".messages:has-text('Deleted the endpoint')")
    assert page.query_selector(plain_row) is None
    assert len(page.query_selector_all("#webhooks li")) == 1
    page.goto(f"{base}/my-credits/auto-topup")
    page.click("#card-remove button")
    page.wait_for_selector(".messages:has-text('Card removed')")
    assert page.query_selector("#card-add") is not None
    assert "Off: turned off because the saved card was removed." in page.inner_text(
        "#auto-topup-status"
    )
    plain.close()

    def stored() -> tuple[Any, ...]:
        config = AutoTopup.objects.get(user=erin)
        prefs = notification_settings(user_id=erin.pk)
        return (
            prefs["low_balance_threshold"],
            prefs["email"]["key.created"],
            (config.enabled, config.threshold, config.package_id, config.monthly_limit),
            CreditAccount.objects.get(pk=erin.pk).auto_topup_threshold,
        )

    threshold, key_mail, config, ledger_threshold = _in_thread(stored)
    assert (threshold, key_mail) == (2500, False)
    # Saved on with 1,000 and $50.00, then off with the card removed (the rest kept).
    assert config[:2] == (False, 1000) and config[3] == 5000
    assert ledger_threshold is None
