"""Staff see referrals and edit the programme in the admin console."""

from typing import Any

import pytest
from django.test import Client

from accounts.models import User
from referrals.models import Referral, ReferralProgram
from tests.factories import registered_user
from tests.referrals.conftest import pay, purchase_of, register, reverse

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _plain_static_files(settings: Any) -> None:
    """With DEBUG off the settings use whitenoise's manifest storage, which needs
    `collectstatic` to have run; admin pages only need static URLs here."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def staff_client() -> Client:
    admin = User.objects.create_superuser(email="root@example.com", password="x")
    client = Client()
    client.force_login(admin)
    return client


def test_staff_change_the_rewards_cap_and_switch(staff_client: Client) -> None:
    ReferralProgram.load()
    url = "/admin/referrals/referralprogram/1/change/"
    assert staff_client.get(url).status_code == 200

    response = staff_client.post(
        url,
        {
            "registration_reward": "60",
            "payment_reward": "450",
            "max_registration_rewards_per_day": "5",
            # "enabled" left out: an unchecked box switches the programme off
        },
    )

    assert response.status_code == 302
    row = ReferralProgram.objects.get(pk=1)
    assert (row.enabled, row.registration_reward, row.payment_reward) == (False, 60, 450)
    assert row.max_registration_rewards_per_day == 5


def test_the_programme_row_cannot_be_added_twice_or_deleted(staff_client: Client) -> None:
    ReferralProgram.load()
    assert staff_client.get("/admin/referrals/referralprogram/add/").status_code == 403
    assert staff_client.get("/admin/referrals/referralprogram/1/delete/").status_code == 403


def test_staff_see_referrals_with_their_rewards_read_only(staff_client: Client) -> None:
    ann = registered_user(email="ann@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    purchase = purchase_of(bob)
    pay(purchase)
    reverse(purchase)
    referral = Referral.objects.get(invitee=bob)

    listing = staff_client.get("/admin/referrals/referral/")
    detail = staff_client.get(f"/admin/referrals/referral/{referral.pk}/change/")

    assert listing.status_code == 200
    page = listing.content.decode()
    assert "ann@example.com" in page and "bob@example.com" in page
    assert "-500" not in page and ">500<" in page  # the clawback is shown as a positive 500
    assert detail.status_code == 200
    assert str(purchase.pk) in detail.content.decode()
    assert b'name="inviter"' not in detail.content  # read-only: no form fields
    assert staff_client.get("/admin/referrals/referral/add/").status_code == 403


def test_staff_find_referrals_by_email_or_code(staff_client: Client) -> None:
    ann = registered_user(email="ann@example.com")
    register("bob@example.com", invite_code=ann.invite_code)
    found = staff_client.get("/admin/referrals/referral/", {"q": ann.invite_code})
    assert "bob@example.com" in found.content.decode()
    missed = staff_client.get("/admin/referrals/referral/", {"q": "nobody@example.com"})
    assert "bob@example.com" not in missed.content.decode()
