"""The admin as a staff console: money as `$29.99 USD`, thousands separators, one UTC time format,
a freeze/unfreeze action with a recorded reason, and the user page's status at a glance."""

import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from accounts.models import User
from accounts.services import api_key_create
from config.money import money_format
from credits import services
from credits.models import CreditAccount, LotSource
from tests.factories import ensure_seeded_packages, registered_user
from tests.referrals.conftest import purchase_of

from .conftest import logged_in, staff_user

pytestmark = pytest.mark.django_db

UTC_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC"
FREEZE = "credits.freeze_accounts"


def page_of(client: Client, user: User) -> str:
    response = client.get(f"/admin/accounts/user/{user.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (2999, "usd", "$29.99 USD"),
        (499, "usd", "$4.99 USD"),
        (123456789, "eur", "€1,234,567.89 EUR"),
        (150000, "jpy", "¥150,000 JPY"),
        (0, "usd", "$0.00 USD"),
        (None, "usd", "-"),
    ],
)
def test_money_is_its_symbol_amount_and_currency(
    amount: int | None, currency: str, shown: str
) -> None:
    assert money_format(amount, currency) == shown


def test_packages_show_prices_as_money_and_credits_with_separators(root: Client) -> None:
    ensure_seeded_packages()
    html = root.get("/admin/payments/package/").content.decode()
    assert '<td class="field-price">$29.99 USD</td>' in html
    assert '<td class="field-price">$59.99 USD</td>' in html
    assert '<td class="field-credits">20,000</td>' in html
    assert "2999" not in html


def test_a_purchase_shows_price_paid_and_refunded_as_money(root: Client) -> None:
    purchase = purchase_of(registered_user(email="buyer@example.com"))
    listing = root.get("/admin/payments/purchase/").content.decode()
    assert '<td class="field-price">$4.99 USD</td>' in listing
    assert '<td class="field-refunded">$0.00 USD (0)</td>' in listing
    page = root.get(f"/admin/payments/purchase/{purchase.pk}/change/").content.decode()
    assert page.count("$4.99 USD") == 2  # the price and what was paid
    assert str(purchase.pk) in page
    assert 'name="price_amount"' not in page  # shown, never editable


def test_times_are_shown_in_one_utc_format_everywhere_on_the_user_page(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    api_key_create(user=alice, name="laptop")
    html = page_of(root, alice)
    assert re.search(rf'<div class="readonly">{UTC_TIME}</div>', html)  # date joined
    assert re.search(rf'<td class="field-created_at">\s*<p>{UTC_TIME}</p>', html)  # keys inline
    assert re.search(rf"<td>{UTC_TIME}</td>", html)  # the ledger panel
    assert not re.search(r"\b[ap]\.m\.", html)  # Django's default "4:02 p.m." is gone


def test_the_user_page_shows_status_keys_logins_and_verification_at_a_glance(
    root: Client,
) -> None:
    alice = registered_user(email="alice@example.com", password="a long passphrase")
    api_key_create(user=alice, name="laptop")
    api_key_create(user=alice, name="server")
    browser = Client()
    login = browser.post(
        "/api/auth/login",
        {"email": "alice@example.com", "password": "a long passphrase"},
        content_type="application/json",
        HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
    )
    assert login.status_code == 200
    html = page_of(root, alice)
    glance = html[html.index('id="at-a-glance"') : html.index('id="login-sessions"')]
    assert "<th>Account</th><td>active</td>" in glance
    assert "<th>Frozen</th><td>not frozen</td>" in glance
    # The user model's `email_verified_at` (issue 16): registered_user verifies the address.
    assert re.search(rf"alice@example\.com \(verified {UTC_TIME}\)", glance)
    assert "<th>API keys</th><td>2 live, last used never</td>" in glance
    assert "<th>Logins</th><td>1 live</td>" in glance
    sessions = html[html.index('id="login-sessions"') :]
    assert "token + browser cookie" in sessions
    assert "Firefox/130.0" in sessions

    services.account_freeze(user_id=alice.pk, reason="Dispute dp_123")
    frozen = page_of(root, alice)
    assert re.search(
        rf'<span class="glance-bad">frozen</span> since {UTC_TIME}: Dispute dp_123', frozen
    )


def test_staff_freeze_and_unfreeze_an_account_with_a_recorded_reason(
    staff: Callable[..., Client],
) -> None:
    alice = registered_user(email="alice@example.com")
    officer = staff_user("officer@example.com", "accounts.view_user", FREEZE)
    client = logged_in(officer)
    assert 'id="freeze-link">Freeze account<' in page_of(client, alice)

    # A reason is required: nothing changes without one.
    refused = client.post(f"/admin/accounts/user/{alice.pk}/freeze/", {"reason": ""})
    assert refused.status_code == 200
    assert CreditAccount.objects.get(pk=alice.pk).frozen_at is None

    done = client.post(
        f"/admin/accounts/user/{alice.pk}/freeze/", {"reason": "Card testing from one IP"}
    )
    assert done.status_code == 302
    account = CreditAccount.objects.get(pk=alice.pk)
    assert account.frozen_at is not None
    assert account.frozen_reason == "Card testing from one IP"
    assert 'id="freeze-link">Unfreeze account<' in page_of(client, alice)

    client.post(f"/admin/accounts/user/{alice.pk}/freeze/", {"reason": "Cleared by finance"})
    assert CreditAccount.objects.get(pk=alice.pk).frozen_at is None
    history = list(
        LogEntry.objects.filter(object_id=str(alice.pk))
        .order_by("id")
        .values_list("user__email", "change_message")
    )
    assert history == [
        ("officer@example.com", "Froze the account: Card testing from one IP"),
        ("officer@example.com", "Unfroze the account: Cleared by finance"),
    ]


def test_freezing_needs_its_own_permission(staff: Callable[..., Client]) -> None:
    alice = registered_user(email="alice@example.com")
    viewer = staff("accounts.view_user", "accounts.change_user")
    assert "freeze-link" not in page_of(viewer, alice)
    response = viewer.post(f"/admin/accounts/user/{alice.pk}/freeze/", {"reason": "x"})
    assert response.status_code == 403
    assert CreditAccount.objects.get(pk=alice.pk).frozen_at is None


def test_the_adjust_form_still_adjusts_through_the_shared_staff_form(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    services.credits_grant(
        user_id=alice.pk, amount=1200, source=LotSource.PURCHASE, idempotency_key="p"
    )
    form = root.get(f"/admin/accounts/user/{alice.pk}/adjust-credits/").content.decode()
    assert '<strong id="adjust-balance">1,300</strong>' in form
    assert 'name="_adjust" value="Adjust credits"' in form or 'value="Adjust credits"' in form


def test_the_glance_shows_when_the_address_was_verified_or_that_it_is_not(
    root: Client,
) -> None:
    # The user model has the moment since issue 16 (`email_verified_at`).
    alice = registered_user(email="alice@example.com")
    User.objects.filter(pk=alice.pk).update(email_verified_at=None)
    assert 'alice@example.com (<span class="glance-bad">not verified</span>)' in page_of(
        root, alice
    )
    User.objects.filter(pk=alice.pk).update(
        email_verified_at=datetime(2026, 11, 25, 7, 0, tzinfo=UTC)
    )
    assert "alice@example.com (verified 2026-11-25 07:00:00 UTC)" in page_of(root, alice)
