"""The admin console in a real headless browser: a staff member logs in, finds a user, adjusts
their credits with a reason, and sees the new entry and balance."""

from pathlib import Path

import pytest
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from accounts.services import api_key_create
from credits import services
from credits.models import CreditAccount, EntryKind, LedgerEntry, LotSource
from tests.factories import ensure_seeded_packages, registered_user
from tests.referrals.conftest import purchase_of

from .conftest import PASSWORD, chromium, staff_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REASON = "Compensation for the outage INC-7"


def test_staff_adjust_a_users_credits_in_the_browser(live_server: LiveServer) -> None:
    registered_user(email="alice@example.com")  # 100 signup credits
    registered_user(email="bob@example.com")
    staff_user(
        "support@example.com",
        "accounts.view_user",
        "accounts.view_apikey",
        "credits.view_ledgerentry",
        "credits.adjust_credits",
    )
    errors: list[str] = []

    with chromium() as browser:
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "support@example.com")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#credits-today")

        page.click("a[href='/admin/accounts/user/']")
        page.fill("#searchbar", "alice")
        page.press("#searchbar", "Enter")
        page.wait_for_selector("#result_list")
        found = page.eval_on_selector_all("#result_list tbody th a", "as => as.map(a => a.text)")
        assert found == ["alice@example.com"]
        page.click("#result_list tbody th a")
        assert page.inner_text("#credits-balance") == "100"

        page.click("#adjust-credits-link")
        page.fill("#id_amount", "250")
        page.fill("#id_reason", REASON)
        page.click("input[name=_adjust]")

        page.wait_for_selector("ul.messagelist li.success")
        assert "alice@example.com by +250" in page.inner_text("ul.messagelist")
        assert page.inner_text("#credits-balance") == "350"
        assert page.inner_text("#credits-available") == "350"
        newest = page.eval_on_selector_all(
            "#recent-entries tbody tr:first-child td", "cells => cells.map(c => c.textContent)"
        )
        assert newest[1:] == [
            "adjust",
            "+250",
            "350",
            "adjustment",
            "adjustment",
            REASON,
            "support@example.com",
        ]

        # A refused removal is explained on the form and changes nothing.
        page.click("#adjust-credits-link")
        page.fill("#id_amount", "-1000")
        page.fill("#id_reason", "too much")
        page.click("input[name=_adjust]")
        page.wait_for_selector(".field-amount .errorlist")
        assert page.inner_text(".field-amount .errorlist") == (
            "Cannot remove 1000 credits: only 350 are available."
        )

    assert errors == []
    alice = User.objects.get(email="alice@example.com")
    assert CreditAccount.objects.get(pk=alice.pk).balance == 350
    entry = LedgerEntry.objects.get(account_id=alice.pk, kind=EntryKind.ADJUST)
    assert (entry.amount, entry.reason, entry.created_by.email) == (  # type: ignore[union-attr]
        250,
        REASON,
        "support@example.com",
    )


WIDE_SCREEN = {"width": 1400, "height": 900}
# What a row of each page can hold at its longest: an address of 55 characters, a purchase
# reason, a frozen account's reason, a login from a browser with a long user agent.
LONG_EMAIL = "a-rather-long-customer-address@some-company-example.com"
CLIPPED = """() => {
    const clipped = [];
    for (const el of document.querySelectorAll("#content *")) {
        const style = getComputedStyle(el);
        const scrolls = ["auto", "scroll", "hidden", "clip"].includes(style.overflowX);
        // Icon buttons hide their label off-screen on purpose: not a clipped column.
        if (el.tagName === "BUTTON") continue;
        if ((scrolls || el.tagName === "INPUT") && el.scrollWidth > el.clientWidth + 1) {
            const what = `${el.tagName}#${el.id}.${el.className}`;
            clipped.push(`${what}: ${el.scrollWidth} > ${el.clientWidth}`);
        }
    }
    if (document.documentElement.scrollWidth > window.innerWidth) {
        clipped.push(`page: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
    }
    return clipped;
}"""


def test_no_admin_page_clips_a_column_on_a_1400_px_screen(
    live_server: LiveServer, tmp_path: Path
) -> None:
    customer = registered_user(email=LONG_EMAIL)
    api_key_create(user=customer, name="production server key")
    services.credits_grant(
        user_id=customer.pk,
        amount=12_500,
        source=LotSource.PURCHASE,
        idempotency_key="purchase:wide",
        package="standard",
        reference="purchase:1",
        reason="Stripe Checkout purchase of the Standard package, session cs_test_a1b2c3d4e5f6",
    )
    services.hold_create(user_id=customer.pk, request_id="req_with_a_long_gateway_identifier_1")
    services.account_freeze(user_id=customer.pk, reason="Dispute dp_1234 opened on ch_5678")
    purchase_of(customer)
    ensure_seeded_packages()
    User.objects.create_superuser(email="root@example.com", password=PASSWORD)
    pages = {
        "user": f"/admin/accounts/user/{customer.pk}/change/",
        "users": "/admin/accounts/user/",
        "ledger": "/admin/credits/ledgerentry/",
        "packages": "/admin/payments/package/",
        "purchases": "/admin/payments/purchase/",
        "keys": "/admin/accounts/apikey/",
    }
    clipped: dict[str, list[str]] = {}

    with chromium() as browser:
        page = browser.new_page(viewport=WIDE_SCREEN)
        page.goto(f"{live_server.url}/admin/")
        page.fill("#id_username", "root@example.com")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#credits-today")
        for name, path in pages.items():
            page.goto(live_server.url + path)
            page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
            clipped[name] = page.evaluate(CLIPPED)
        row = page.goto(live_server.url + "/admin/credits/ledgerentry/")
        assert row is not None and row.ok
        cells = page.eval_on_selector_all(
            "#result_list tbody tr:first-child td", "cells => cells.map(c => c.textContent)"
        )

    assert clipped == {name: [] for name in pages}, f"screenshots in {tmp_path}"
    assert "+12,500" in cells
