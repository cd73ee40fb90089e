"""The customer's console end to end in a real headless browser (Debian's chromium through
Playwright), on PostgreSQL and Redis, against the live server:

a stranger opens an invite share link, signs up, verifies from the mail a real SMTP server
received, creates and copies a key; the gateway (this test, over HTTP with a service token)
authorizes and settles through the internal API and the open page updates without a reload;
a budget is set and enforced (403 from authorize); the key is rotated and the old secret
refused; credits are bought through the recorded-response Stripe server and the signed
webhook, the return page waits for it and shows the new lot; the activity is filtered and
exported as CSV; the monthly limit is set; the key is revoked.

Screenshots of each panel at desktop and phone width go to `artifacts/console/` (git-ignored).
Playwright's sync API runs an event loop in this thread, so every database call of the test is
made before the browser starts or after it stops; the gateway's and Stripe's calls are HTTP.
"""

import csv
import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from accounts.service_tokens import service_token_create
from credits.models import CreditAccount
from credits.payments.models import Purchase, PurchaseStatus
from credits.usage.selectors import REQUEST_FIELDS
from tests.factories import registered_user
from tests.mail_support import Mailbox, text_of
from tests.stripe_support import (
    StripeRecordedServer,
    build_event,
    charge,
    checkout_session,
    new_id,
    signed_webhook,
    stripe_server,  # noqa: F401  (a fixture)
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
EMAIL = "dana@example.com"
PASSWORD = "a long and unusual passphrase 21"
WEBHOOK_SECRET = "whsec_test_console"
ROW_IDS = "rows => rows.map(r => r.dataset.requestId)"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


def _call(url: str, body: dict[str, Any] | bytes, headers: dict[str, str]) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 (the live server on loopback)
        url, data=data, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class Gateway:
    """The API gateway's two calls, over HTTP with a service token."""

    def __init__(self, base: str, token: str) -> None:
        self.base, self.headers = base, {"Authorization": f"Bearer {token}"}

    def authorize(self, key: str, request_id: str) -> tuple[int, str | None]:
        """The decision: the status the gateway answers its client, and the error code."""
        body = {
            "api_key": key,
            "request_id": request_id,
            "model": "kimi-k2-0905",
            "format": "openai",
        }
        status, decision = _call(f"{self.base}/internal/v1/authorize", body, self.headers)
        assert status == 200, decision
        if decision["allowed"]:
            return 200, None
        return decision["status"], decision["error"]["error"]["code"]

    def settle(self, request_id: str, *, success: bool = True) -> tuple[int, Any]:
        body: dict[str, Any] = {"request_id": request_id, "model": "kimi-k2-0905"}
        if success:
            body.update(
                outcome="success",
                http_status=200,
                usage={"prompt_tokens": 1200, "completion_tokens": 3400},
            )
        else:
            body.update(outcome="failure", http_status=502, reason="upstream_error")
        return _call(f"{self.base}/internal/v1/settle", body, self.headers)


def _shots(page: Any, name: str) -> None:
    """The panel at desktop and phone width; at phone width nothing may scroll sideways."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    page.set_viewport_size(DESKTOP)
    assert overflow <= PHONE["width"], f"{name} scrolls sideways at 375 px ({overflow} px)"


def _unlabelled(page: Any) -> list[str]:
    """Form controls a screen reader could not name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
             .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label'))
             .map(c => c.outerHTML)"""
    )


def _pay(base: str, server: StripeRecordedServer) -> str:
    """Stripe's side of a paid Checkout: the signed `checkout.session.completed` and
    `charge.succeeded` deliveries for the one session the service created. Returns its
    purchase id."""
    (session,) = server.sessions.values()
    purchase_id = session["client_reference_id"]
    intent = new_id("pi")
    paid = checkout_session(
        id=session["id"],
        client_reference_id=purchase_id,
        metadata={"purchase_id": purchase_id},
        amount_total=session["amount_total"],
        currency=session["currency"],
        payment_status="paid",
        status="complete",
        payment_intent=intent,
    )
    receipt = charge(
        id=new_id("ch"),
        amount=session["amount_total"],
        amount_refunded=0,
        currency=session["currency"],
        payment_intent=intent,
        metadata={"purchase_id": purchase_id},
        receipt_url="https://pay.stripe.com/receipts/test_console",
    )
    for event in (
        build_event("checkout.session.completed", paid),
        build_event("charge.succeeded", receipt),
    ):
        body, signature = signed_webhook(event, WEBHOOK_SECRET)
        status, _ = _call(f"{base}/api/webhooks/stripe", body, {"Stripe-Signature": signature})
        assert status == 200
    return str(purchase_id)


def _live(page: Any, name: str) -> str:
    return str(page.inner_text(f"#live [data-live={name}]"))


def _in_thread(function: Callable[[], Any]) -> Any:
    """Run database reads outside the browser's event loop (Django refuses them there)."""

    def run() -> Any:
        try:
            return function()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


@pytest.fixture
def ann() -> User:
    """The inviter (made before the browser starts)."""
    return registered_user(email="ann@example.com")


@pytest.fixture
def service_token() -> str:
    return service_token_create(name="gateway-console-test")[1]


def test_a_customer_signs_up_with_an_invite_then_uses_every_panel(
    ann: User,
    service_token: str,
    live_server: LiveServer,
    smtp: Mailbox,
    settings: Any,
    stripe_server: StripeRecordedServer,  # noqa: F811
    browser: Any,
) -> None:
    base = live_server.url
    settings.DASHBOARD_URL = base  # every link the service sends opens this service's pages
    settings.STRIPE_SECRET_KEY = "sk_test_console"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = stripe_server.api_base + "/"
    gateway = Gateway(base, service_token)

    context = browser.new_context(
        viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"]
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Stripe's hosted Checkout page is on the internet: a stand-in answers for it.
    page.route(
        "https://checkout.stripe.com/**",
        lambda route: route.fulfill(
            status=200, content_type="text/html", body="<h1>Stripe Checkout (test stand-in)</h1>"
        ),
    )

    # 1. The invite share link: the code is filled in.
    page.goto(f"{base}/register?invite={ann.invite_code}")
    assert page.input_value("#register-invite") == ann.invite_code
    assert _unlabelled(page) == []
    _shots(page, "signup")
    page.fill("#register-email", EMAIL)
    page.fill("#register-password", PASSWORD)
    page.click("#register button[type=submit]")
    page.wait_for_selector("#unverified", timeout=15000)
    assert page.inner_text("#credits-remaining") == "0"

    # 2. Verify from the captured mail: the signup grant arrives.
    line = next(
        line for line in text_of(smtp.wait_for(EMAIL)[0]).splitlines() if "/verify-email?" in line
    )
    assert line.strip().startswith(f"{base}/verify-email?token=")
    page.goto(line.strip())
    assert page.inner_text("#result") == "Your email address is verified."
    page.goto(f"{base}/my-credits")
    assert page.inner_text("#credits-remaining") == "100"
    assert page.query_selector("#unverified") is None
    assert page.inner_text("#tier-name") == "1-100"
    assert "101 credits or more reaches 101-1,000" in page.inner_text("#tier-next")

    # 3. Keys: create one; the secret is shown once and copied.
    page.goto(f"{base}/my-credits/keys")
    assert _unlabelled(page) == []
    page.fill("#key-name", "laptop")
    page.click("#create-key button[type=submit]")
    secret = page.input_value("#new-secret")
    assert secret.startswith("sk-kimi-")
    page.click("#copy-secret")
    page.wait_for_selector("#new-secret-status:has-text('Copied')", timeout=5000)
    assert page.evaluate("navigator.clipboard.readText()") == secret
    _shots(page, "keys-new-secret")
    page.goto(f"{base}/my-credits/keys")
    assert page.query_selector("#new-secret") is None  # shown once only
    assert secret not in page.content()

    # 4. Live: the gateway authorizes and settles; the open page updates without a reload.
    page.goto(f"{base}/my-credits")
    page.evaluate("window.notReloaded = true")
    assert gateway.authorize(secret, "req-1")[0] == 200
    assert gateway.settle("req-1") == (
        200,
        {"request_id": "req-1", "charged": 1, "credits_remaining": 99},
    )
    assert gateway.authorize(secret, "req-2")[0] == 200
    assert gateway.settle("req-2", success=False)[0] == 200
    page.wait_for_function(
        "document.getElementById('credits-remaining').textContent === '99'"
        " && document.querySelector('#live [data-live=today_requests]').textContent === '2'",
        timeout=20000,
    )
    assert page.evaluate("window.notReloaded") is True
    assert _live(page, "today_credits") == "1"
    page.reload()
    assert page.inner_text("#average-tokens") == "4,600.0"
    day_bars = page.eval_on_selector_all(
        "#chart-days g.bar", "bars => bars.map(b => [+b.dataset.requests, +b.dataset.credits])"
    )
    assert len(day_bars) == 30 and day_bars[-1] == [2, 1]
    _shots(page, "overview")

    # 5. A budget of 1 credit a day on the key: spent already, so authorize refuses.
    page.goto(f"{base}/my-credits/keys")
    manage = "section[data-manage='laptop']"
    page.fill(f"{manage} input[name=budget_credits]", "1")
    page.select_option(f"{manage} select[name=budget_period]", "day")
    page.click(f"{manage} button:has-text('Save')")
    page.wait_for_selector(".messages:has-text('Saved the key')", timeout=15000)
    assert page.inner_text("#keys tbody tr td.budget") == "1 per day"
    assert page.inner_text("#keys tbody tr td.spent") == "1 of 1"
    assert gateway.authorize(secret, "req-3") == (403, "key_budget_exceeded")

    # 6. Rotate at once: a new secret, the old one refused.
    page.select_option(f"{manage} select[name=grace_seconds]", "0")
    page.click(f"{manage} button:has-text('Rotate the secret')")
    rotated = page.input_value("#new-secret")
    assert rotated.startswith("sk-kimi-") and rotated != secret
    assert gateway.authorize(secret, "req-4")[0] == 401
    # The same key: its budget and what it spent came along.
    assert gateway.authorize(rotated, "req-5") == (403, "key_budget_exceeded")

    # 7. Buy Standard through Checkout; the return page waits for the webhook, then the lot.
    page.goto(f"{base}/my-credits/buy")
    assert page.inner_text("#package-standard ~ .price") == "$29.99"
    _shots(page, "buy")
    page.click("button:has-text('Buy Standard')")
    page.wait_for_selector("text=Stripe Checkout (test stand-in)", timeout=15000)
    (session,) = stripe_server.sessions.values()
    assert session["success_url"].startswith(f"{base}/purchases/")
    page.goto(session["success_url"])
    assert "waiting for its confirmation" in page.inner_text("#purchase-state")
    purchase_id = _pay(base, stripe_server)
    page.wait_for_selector("#purchase-lot", timeout=20000)
    assert page.inner_text("#purchase-state") == "Paid: 5,000 credits are in your account."
    assert "5,000 granted, 5,000 left" in page.inner_text("#purchase-lot")
    _shots(page, "purchase-paid")
    page.goto(session["cancel_url"])
    assert page.url.endswith(f"/purchases/{purchase_id}?checkout=cancelled")
    page.goto(f"{base}/my-credits/buy")
    row = page.inner_text("#purchases tbody tr")
    assert "Standard" in row and "5,000" in row and "$29.99" in row
    assert page.get_attribute("#purchases a:has-text('Receipt')", "href") == (
        "https://pay.stripe.com/receipts/test_console"
    )
    page.goto(f"{base}/my-credits")
    assert page.inner_text("#credits-remaining") == "5,099"
    assert page.inner_text("#tier-name") == "1,001-10,000"

    # 8. Activity: both settled requests, a filter, and the CSV export.
    page.goto(f"{base}/my-credits/activity")
    ids = page.eval_on_selector_all("#requests tbody tr", ROW_IDS)
    assert ids == ["req-2", "req-1"]
    assert "upstream_error" in page.inner_text("#requests tr[data-request-id='req-2']")
    page.select_option("#f-outcome", "failure")
    page.click("#activity-filters button[type=submit]")
    ids = page.eval_on_selector_all("#requests tbody tr", ROW_IDS)
    assert ids == ["req-2"]
    _shots(page, "activity")
    with page.expect_download() as download:
        page.click("#csv-export")
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows[0] == list(REQUEST_FIELDS)
    by_id = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert set(by_id) == {"req-1", "req-2"}
    assert (by_id["req-1"]["outcome"], by_id["req-1"]["charged"]) == ("success", "1")
    assert (by_id["req-2"]["outcome"], by_id["req-2"]["charged"]) == ("failure", "0")
    assert by_id["req-1"]["prompt_tokens"] == "1200"

    # 9. Invite: the user's own code and share link, copied.
    page.goto(f"{base}/my-credits/invite")
    share = page.input_value("#share-url")
    assert share == f"{base}/register?invite={page.inner_text('#invite-code')}"
    page.click("button[data-copy=share-url]")
    page.wait_for_selector("#share-url-status:has-text('Copied')", timeout=5000)
    assert page.inner_text("#invite-earned") == "0"
    _shots(page, "invite")

    # 10. Account: the monthly limit.
    page.goto(f"{base}/my-credits/account")
    assert _unlabelled(page) == []
    page.fill("#monthly-limit", "2,000")
    page.click("#limit-form button[type=submit]")
    page.wait_for_selector(".messages:has-text('Monthly limit set to 2,000 credits.')")
    assert page.input_value("#monthly-limit") == "2,000"
    _shots(page, "account")

    # 11. Revoke: the key is gone from the list and refused.
    page.goto(f"{base}/my-credits/keys")
    page.click(f"{manage} button:has-text('Revoke')")
    page.wait_for_selector(".messages:has-text('Revoked the key')")
    assert page.query_selector("section[data-manage='laptop']") is None
    assert gateway.authorize(rotated, "req-6")[0] == 401

    # Keyboard: the first Tab reaches the skip link, which leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"

    page.click("#logout")
    page.wait_for_selector("form#login")
    assert errors == []
    context.close()

    # 12. Without JavaScript: the same forms work and the pages read the same (no copy button).
    plain = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    page = plain.new_page()
    page.goto(f"{base}/my-credits/keys")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    assert page.url == f"{base}/my-credits/keys"
    page.fill("#key-name", "no-script")
    page.click("#create-key button[type=submit]")
    assert page.input_value("#new-secret").startswith("sk-kimi-")
    assert not page.is_visible("#copy-secret")
    page.goto(f"{base}/my-credits")
    assert page.inner_text("#credits-remaining") == "5,099"
    assert len(page.query_selector_all("#chart-days g.bar")) == 30
    plain.close()

    def stored() -> tuple[Any, ...]:
        dana = User.objects.get(email=EMAIL)
        purchase = Purchase.objects.get(pk=purchase_id)
        return (
            purchase.user_id == dana.pk,
            purchase.status,
            CreditAccount.objects.get(pk=ann.pk).balance,
            CreditAccount.objects.get(pk=dana.pk).monthly_credit_limit,
        )

    # Dana's purchase, paid; Ann's invite rewards on top of her signup grant: 50 when Dana
    # verified, 500 for Dana's first payment.
    assert _in_thread(stored) == (True, PurchaseStatus.PAID, 100 + 50 + 500, 2000)
