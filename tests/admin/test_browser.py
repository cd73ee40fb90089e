"""The admin console in a real headless browser: a staff member logs in, finds a user, adjusts
their credits with a reason, and sees the new entry and balance."""

import pytest
from pytest_django.live_server_helper import LiveServer

from accounts.models import User
from credits.models import CreditAccount, EntryKind, LedgerEntry
from tests.factories import registered_user

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
