"""The user page names who invited the user and links to the referrals they made (added by
referrals/admin.py on top of the credits user page: referrals may depend on credits, never the
reverse)."""

import pytest
from django.test import Client

from accounts.services import user_register
from tests.factories import registered_user

pytestmark = pytest.mark.django_db


def test_the_user_page_shows_the_invite_code_and_links_to_the_inviter(root: Client) -> None:
    inviter = registered_user(email="inviter@example.com")
    invitee = user_register(
        email="invitee@example.com", password="x" * 12, invite_code=inviter.invite_code.lower()
    )

    html = root.get(f"/admin/accounts/user/{invitee.pk}/change/").content.decode()

    assert invitee.invite_code in html
    assert f'<a href="/admin/accounts/user/{inviter.pk}/change/">inviter@example.com</a>' in html
    assert 'id="credits-balance"' in html  # still the credits page underneath


def test_the_inviters_page_links_to_the_referrals_they_made(root: Client) -> None:
    inviter = registered_user(email="inviter@example.com")
    for n in range(2):
        user_register(
            email=f"friend{n}@example.com", password="x" * 12, invite_code=inviter.invite_code
        )

    html = root.get(f"/admin/accounts/user/{inviter.pk}/change/").content.decode()

    link = f"/admin/referrals/referral/?inviter={inviter.pk}"
    assert f'<a href="{link}">2 referrals</a>' in html
    assert "invited by" in html.lower() and "\u2013" in html  # nobody invited the inviter
    listing = root.get(link)
    assert {r.invitee.email for r in listing.context["cl"].result_list} == {
        "friend0@example.com",
        "friend1@example.com",
    }
