"""The HTTP side: `GET /api/user/referrals`, and invite codes through `POST /api/auth/register`."""

from typing import Any

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from accounts.models import User
from credits import services as credits_services
from referrals.models import Referral
from tests.factories import registered_user
from tests.referrals.conftest import (
    PASSWORD,
    pay,
    program,
    purchase_of,
    register,
    reverse,
    verify,
)

pytestmark = pytest.mark.django_db

URL = "/api/user/referrals"


def client_for(user: User) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def post_register(**body: Any) -> Any:
    return APIClient().post("/api/auth/register", body, format="json")


# --- GET /api/user/referrals --------------------------------------------------------------


def test_anonymous_callers_get_401() -> None:
    response = APIClient().get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@override_settings(DASHBOARD_URL="https://dash.example.com")
def test_a_new_user_sees_their_code_and_share_link_and_nothing_earned() -> None:
    ann = registered_user(email="ann@example.com")
    response = client_for(ann).get(URL)
    assert response.status_code == 200
    assert response.json() == {
        "invite_code": ann.invite_code,
        "share_url": f"https://dash.example.com/register?invite={ann.invite_code}",
        "registered": 0,
        "paid": 0,
        "credits_earned": 0,
    }


def test_the_numbers_count_invitees_payments_and_net_credits_earned() -> None:
    ann = registered_user(email="ann@example.com")
    program(max_registration_rewards_per_day=3)
    invitees = [register(f"friend{n}@example.com", invite_code=ann.invite_code) for n in range(4)]
    paid, refunded = purchase_of(invitees[0]), purchase_of(invitees[1])
    pay(paid)
    pay(refunded)
    reverse(refunded)
    pay(purchase_of(invitees[0]))  # a second payment: neither counted nor rewarded
    # Spending rewards does not un-earn them.
    credits_services.credits_adjust(
        user_id=ann.pk, amount=-300, reason="spent", idempotency_key="test:spend"
    )

    body = client_for(ann).get(URL).json()

    assert body["registered"] == 4  # the fourth was over the daily cap, but registered
    assert body["paid"] == 1  # the refunded first payment does not stand
    assert body["credits_earned"] == 3 * 50 + 500 + 500 - 500


def test_each_user_sees_only_their_own_referrals() -> None:
    ann = registered_user(email="ann@example.com")
    cy = registered_user(email="cy@example.com")
    bob = register("bob@example.com", invite_code=ann.invite_code)
    pay(purchase_of(bob))

    cy_body = client_for(cy).get(URL).json()
    bob_body = client_for(bob).get(URL).json()

    assert cy_body["invite_code"] == cy.invite_code
    assert (cy_body["registered"], cy_body["paid"], cy_body["credits_earned"]) == (0, 0, 0)
    # Bob was invited: that earns Bob nothing and shows Ann's figures nowhere on his side.
    assert bob_body["invite_code"] == bob.invite_code
    assert (bob_body["registered"], bob_body["paid"], bob_body["credits_earned"]) == (0, 0, 0)
    assert client_for(ann).get(URL).json()["credits_earned"] == 550


def test_the_token_from_login_is_accepted() -> None:
    ann = register("ann@example.com")
    login = APIClient().post(
        "/api/auth/login", {"email": "ann@example.com", "password": PASSWORD}, format="json"
    )
    assert login.status_code == 200, login.json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {login.json()['token']}")
    response = client.get(URL)
    assert response.status_code == 200
    assert response.json()["invite_code"] == ann.invite_code


def test_a_bad_token_is_401() -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert client.get(URL).status_code == 401


# --- invite codes at POST /api/auth/register ----------------------------------------------


def test_registering_with_a_lower_case_code_links_the_inviter() -> None:
    ann = registered_user(email="ann@example.com")
    response = post_register(
        email="bob@example.com", password=PASSWORD, invite_code=ann.invite_code.lower()
    )
    assert response.status_code == 201, response.json()
    bob = User.objects.get(email="bob@example.com")
    assert response.json()["user"]["invite_code"] == bob.invite_code
    assert Referral.objects.get(invitee=bob).inviter == ann
    assert client_for(ann).get(URL).json()["credits_earned"] == 0  # until bob verifies
    assert client_for(ann).get(URL).json()["registered"] == 0
    verify(bob)
    assert client_for(ann).get(URL).json()["credits_earned"] == 50
    assert client_for(ann).get(URL).json()["registered"] == 1


@pytest.mark.parametrize("extra", [{}, {"invite_code": ""}, {"invite_code": None}])
def test_registering_without_a_code_is_fine(extra: dict[str, Any]) -> None:
    response = post_register(email="bob@example.com", password=PASSWORD, **extra)
    assert response.status_code == 201, response.json()
    assert not Referral.objects.exists()


def test_an_unknown_code_is_a_400_naming_the_field_and_creates_no_user() -> None:
    response = post_register(email="bob@example.com", password=PASSWORD, invite_code="NOPE2345")
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalid_invite_code",
            "message": "This invite code does not exist.",
            "field": "invite_code",
        }
    }
    assert not User.objects.filter(email="bob@example.com").exists()


def test_ones_own_code_under_a_plus_address_is_a_400_self_referral() -> None:
    ann = registered_user(email="ann@example.com")
    response = post_register(
        email="Ann+again@Example.com", password=PASSWORD, invite_code=ann.invite_code
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("self_referral", "invite_code")
    assert User.objects.count() == 1
