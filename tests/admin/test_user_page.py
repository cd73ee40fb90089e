"""The user page: credits (read-only), live lots, recent entries and API keys, never a digest."""

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from accounts.models import ApiKey, User
from accounts.services import api_key_create
from credits import clock, services
from credits.models import CreditAccount, LotSource
from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def page_of(client: Client, user_id: object) -> str:
    response = client.get(f"/admin/accounts/user/{user_id}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_staff_find_a_user_by_email_and_open_their_page(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    registered_user(email="bob@example.com")
    listing = root.get("/admin/accounts/user/", {"q": "ALICE@example"}).content.decode()
    assert f"/admin/accounts/user/{alice.pk}/change/" in listing
    assert "bob@example.com" not in listing


def test_the_user_page_shows_balance_reserved_available_and_live_lots(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    expiry = clock.now() + timedelta(days=30)
    services.credits_grant(
        user_id=alice.pk,
        amount=5000,
        source=LotSource.PURCHASE,
        package="standard",
        expires_at=expiry,
        idempotency_key="test:alice-standard",
    )
    services.credits_grant(
        user_id=alice.pk,
        amount=7,
        source=LotSource.PURCHASE,
        expires_at=clock.now() + timedelta(minutes=1),
        idempotency_key="test:alice-short",
    )
    # The hold takes its credit from the lot that expires first: the 7-credit one, which then
    # expires (not yet swept). Its 6 unheld credits leave the balance; the held one stays.
    services.hold_create(user_id=alice.pk, request_id="req-1")
    clock.advance(timedelta(minutes=2))

    html = page_of(root, alice.pk)
    assert '<td id="credits-balance">5,101</td>' in html
    assert '<td id="credits-reserved">1</td>' in html
    assert '<td id="credits-available">5,100</td>' in html
    assert expiry.strftime("%Y-%m-%d %H:%M:%S UTC") in html
    assert "<td>standard</td>" in html
    assert "<td>signup</td>" in html
    assert "<td>7</td>" not in html  # the expired lot is not live
    assert 'name="balance"' not in html  # money is shown, never an input


def test_the_user_page_lists_recent_entries_and_links_to_all_of_them(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    services.credits_adjust(
        user_id=alice.pk, amount=-30, reason="goodwill <b>reversal</b>", idempotency_key="t:1"
    )
    html = page_of(root, alice.pk)
    recent = html.split('id="recent-entries"', 1)[1].split("</table>", 1)[0]
    assert recent.index("<td>-30</td>") < recent.index("<td>+100</td>")  # newest first
    assert "goodwill &lt;b&gt;reversal&lt;/b&gt;" in recent  # escaped, not rendered
    assert f"/admin/credits/ledgerentry/?account={alice.pk}" in html


def test_api_keys_show_inline_without_digest_and_cannot_be_added_there(root: Client) -> None:
    alice = registered_user(email="alice@example.com")
    key, secret = api_key_create(user=alice, name="laptop")
    html = page_of(root, alice.pk)
    assert "laptop" in html and key.prefix in html
    assert key.digest not in html
    assert secret not in html
    assert "api_keys-TOTAL_FORMS" in html
    assert 'name="api_keys-0-name"' not in html  # read-only: no inputs for the key
    assert 'name="api_keys-MAX_NUM_FORMS" value="0"' in html  # no empty form to add one


def test_a_staff_member_without_the_adjust_permission_sees_no_adjust_button(
    staff: Callable[..., Client],
) -> None:
    alice = registered_user(email="alice@example.com")
    viewer = staff("accounts.view_user", "accounts.view_apikey")
    html = page_of(viewer, alice.pk)
    assert "credits-balance" in html
    assert "adjust-credits" not in html


def test_a_staff_member_with_the_adjust_permission_sees_the_button(
    staff: Callable[..., Client],
) -> None:
    alice = registered_user(email="alice@example.com")
    adjuster = staff("accounts.view_user", "credits.adjust_credits")
    html = page_of(adjuster, alice.pk)
    assert f'href="/admin/accounts/user/{alice.pk}/adjust-credits/"' in html


def test_the_keys_inline_follows_the_key_view_permission(staff: Callable[..., Client]) -> None:
    alice = registered_user(email="alice@example.com")
    api_key_create(user=alice, name="laptop")
    assert "laptop" not in page_of(staff("accounts.view_user"), alice.pk)
    assert "laptop" in page_of(staff("accounts.view_user", "accounts.view_apikey"), alice.pk)
    assert ApiKey.objects.count() == 1


def test_the_user_list_shows_each_balance_without_a_query_per_user(root: Client) -> None:
    for n in range(3):
        registered_user(email=f"user{n}@example.com")
    with CaptureQueriesContext(connection) as few:
        listing = root.get("/admin/accounts/user/")
    for n in range(3, 20):
        registered_user(email=f"user{n}@example.com")
    with CaptureQueriesContext(connection) as many:
        root.get("/admin/accounts/user/")
    assert len(many) == len(few)
    assert '<td class="field-balance">100</td>' in listing.content.decode()
    # root (createsuperuser's way, no registration): an account of its own, empty.
    assert '<td class="field-balance">0</td>' in listing.content.decode()


def test_a_malformed_user_id_is_answered_as_no_such_user(
    staff: Callable[..., Client],
) -> None:
    adjuster = staff("accounts.view_user", "credits.adjust_credits")
    response = adjuster.get("/admin/accounts/user/not-a-uuid/change/")
    assert response.status_code == 302  # the admin's "doesn't exist" redirect, not a 500
    # Not a UUID: the adjust URL does not match; the admin's catch-all redirects, no 500.
    assert adjuster.get("/admin/accounts/user/not-a-uuid/adjust-credits/").status_code == 302


def test_a_user_without_a_credit_account_has_no_adjust_button(
    root: Client, superuser: User
) -> None:
    # Every user gets one now (credits/receivers.py); a row from before that may still lack it.
    CreditAccount.objects.filter(pk=superuser.pk).delete()
    html = page_of(root, superuser.pk)
    assert "No credit account." in html
    assert "adjust-credits" not in html
    assert root.get(f"/admin/accounts/user/{superuser.pk}/adjust-credits/").status_code == 404
