"""Data staff edit in the admin: rate-limit tiers, packages (Enterprise ones too), the signup
amount and the referral rewards. Every form validates before anything is saved."""

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from credits.gateway.models import Tier
from credits.gateway.ratelimit import tier_for_balance, tiers_cache_clear
from credits.models import CreditAccount, CreditSettings
from credits.payments.models import Package
from referrals.models import ReferralProgram
from tests.factories import UserFactory, registered_user

pytestmark = pytest.mark.django_db

TIERS = "/admin/gateway/tier/"
PACKAGES = "/admin/payments/package/"


def tier_form(**overrides: Any) -> dict[str, Any]:
    fields = {
        "name": "whales",
        "min_balance": 100001,
        "max_balance": "",
        "requests_per_minute": 900,
        "requests_per_hour": 30000,
        "requests_per_day": 200000,
    }
    fields.update(overrides)
    return fields


def errors_of(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, response.status_code  # the form again, not a redirect
    errors: dict[str, list[str]] = response.context["adminform"].form.errors
    return errors


def test_the_seeded_tiers_are_listed(root: Client) -> None:
    html = root.get(TIERS).content.decode()
    for name in ("1-100", "101-1,000", "1,001-10,000", "10,000+"):
        assert name in html


def test_a_tier_overlapping_another_is_refused_with_the_other_named(root: Client) -> None:
    response = root.post(f"{TIERS}add/", tier_form(min_balance=500, max_balance=600))
    assert errors_of(response)["__all__"] == ["The balance range overlaps the tier 101-1,000."]
    assert "overlaps the tier 101-1,000" in response.content.decode()
    assert not Tier.objects.filter(name="whales").exists()


def test_moving_a_tier_onto_its_neighbour_is_refused(root: Client) -> None:
    middle = Tier.objects.get(name="101-1,000")
    response = root.post(
        f"{TIERS}{middle.pk}/change/",
        tier_form(name=middle.name, min_balance=50, max_balance=1000),
    )
    assert errors_of(response)["__all__"] == ["The balance range overlaps the tier 1-100."]
    middle.refresh_from_db()
    assert middle.min_balance == 101


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute", "Must be at least 1."),
        ({"requests_per_hour": -5}, "requests_per_hour", "Must be at least 1."),
        ({"requests_per_day": ""}, "requests_per_day", "This field is required."),
        ({"min_balance": 0, "max_balance": 0}, "min_balance", "Must be at least 1."),
        # Blank: the field says so, and the overlap check does not crash on the missing bound.
        ({"min_balance": ""}, "min_balance", "This field is required."),
        (
            {"min_balance": 200000, "max_balance": 150000},
            "max_balance",
            "The upper bound must not be below the lower bound.",
        ),
    ],
)
def test_tier_limits_must_be_positive_and_bounds_ordered(
    root: Client, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = root.post(f"{TIERS}add/", tier_form(**overrides))
    assert message in errors_of(response)[field]
    assert not Tier.objects.filter(name="whales").exists()


def test_a_valid_tier_change_applies_at_once_in_this_process(root: Client) -> None:
    tiers_cache_clear()
    top = Tier.objects.get(name="10,000+")
    assert tier_for_balance(50000) is not None
    assert tier_for_balance(50000).limits == (500, 15000, 100000)  # type: ignore[union-attr]

    response = root.post(
        f"{TIERS}{top.pk}/change/",
        tier_form(name="10,000+", min_balance=10001, requests_per_minute=600),
    )

    assert response.status_code == 302
    assert tier_for_balance(50000).limits == (600, 30000, 200000)  # type: ignore[union-attr]


def test_staff_without_tier_permissions_cannot_change_tiers(staff: Callable[..., Client]) -> None:
    top = Tier.objects.get(name="10,000+")
    viewer = staff("gateway.view_tier")
    assert viewer.get(TIERS).status_code == 200
    assert viewer.post(f"{TIERS}{top.pk}/change/", tier_form(name="x")).status_code == 403
    assert viewer.post(f"{TIERS}add/", tier_form()).status_code == 403
    assert staff().get(TIERS).status_code == 403
    top.refresh_from_db()
    assert top.name == "10,000+"


# --- packages --------------------------------------------------------------------------------


def package_form(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "slug": "acme",
        "name": "ACME Enterprise",
        "credits": 1000000,
        "price_amount": 150000,
        "currency": "usd",
        "validity_months": 12,
        "active": "on",
        "enterprise": "on",
        "customers": [],
    }
    fields.update(overrides)
    return {key: value for key, value in fields.items() if value is not None}


def test_staff_create_an_enterprise_package_for_a_named_customer(root: Client) -> None:
    acme = UserFactory.create(email="buyer@acme.example")
    other = UserFactory.create(email="someone@example.com")

    response = root.post(f"{PACKAGES}add/", package_form(customers=[str(acme.pk)], currency="USD"))

    assert response.status_code == 302
    package = Package.objects.get(slug="acme")
    assert (package.credits, package.price_amount, package.currency) == (1000000, 150000, "usd")
    assert list(package.customers.all()) == [acme]
    assert package in Package.objects.visible_to(acme)
    assert package not in Package.objects.visible_to(other)


def test_enterprise_customers_are_found_by_email_in_the_package_form(root: Client) -> None:
    acme = UserFactory.create(email="buyer@acme.example")
    UserFactory.create(email="someone@example.com")
    response = root.get(
        "/admin/autocomplete/",
        {
            "app_label": "payments",
            "model_name": "package",
            "field_name": "customers",
            "term": "acme",
        },
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.json()["results"]] == [str(acme.pk)]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({}, "customers", "Name at least one customer for an Enterprise package."),
        ({"enterprise": None, "credits": 0}, "__all__", "package_credits_positive"),
        ({"enterprise": None, "price_amount": 0}, "__all__", "package_price_positive"),
        ({"enterprise": None, "currency": "us1"}, "__all__", "package_currency_lower_iso"),
        ({"enterprise": None, "validity_months": 0}, "__all__", "package_validity_positive"),
        ({"enterprise": None, "credits": -1}, "credits", "greater than or equal to 0"),
    ],
)
def test_package_amounts_and_enterprise_customers_are_validated(
    root: Client, overrides: dict[str, Any], field: str, message: str
) -> None:
    response = root.post(f"{PACKAGES}add/", package_form(**overrides))
    assert any(message in error for error in errors_of(response)[field])
    assert not Package.objects.filter(slug="acme").exists()


def test_a_public_package_names_no_customers(root: Client) -> None:
    buyer = UserFactory.create(email="buyer@acme.example")
    response = root.post(
        f"{PACKAGES}add/", package_form(enterprise=None, customers=[str(buyer.pk)])
    )
    assert errors_of(response)["customers"] == [
        "Only Enterprise packages are limited to customers."
    ]


def test_a_package_price_change_is_saved(root: Client) -> None:
    standard = Package.objects.get(slug="standard")
    response = root.post(
        f"{PACKAGES}{standard.pk}/change/",
        package_form(
            slug="standard",
            name="Standard",
            credits=5000,
            price_amount=2499,
            validity_months=1,
            enterprise=None,
        ),
    )
    assert response.status_code == 302
    standard.refresh_from_db()
    assert standard.price_amount == 2499


# --- credit settings and referral rewards ----------------------------------------------------


def test_the_signup_amount_is_edited_on_its_one_row(root: Client) -> None:
    response = root.get("/admin/credits/creditsettings/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/credits/creditsettings/1/change/"
    assert root.get("/admin/credits/creditsettings/add/").status_code == 403
    assert root.get("/admin/credits/creditsettings/1/delete/").status_code == 403

    response = root.post("/admin/credits/creditsettings/1/change/", {"signup_credits": "250"})

    assert response.status_code == 302
    assert CreditSettings.load().signup_credits == 250
    newcomer = registered_user(email="newcomer@example.com")
    assert CreditAccount.objects.get(pk=newcomer.pk).balance == 250


def test_a_negative_signup_amount_is_refused(root: Client) -> None:
    response = root.post("/admin/credits/creditsettings/1/change/", {"signup_credits": "-1"})
    assert "signup_credits" in errors_of(response)
    assert CreditSettings.load().signup_credits == 100


def test_staff_without_the_settings_permission_are_refused(staff: Callable[..., Client]) -> None:
    assert staff().get("/admin/credits/creditsettings/").status_code == 403


def test_staff_change_the_referral_reward_amounts(root: Client) -> None:
    ReferralProgram.load()
    url = "/admin/referrals/referralprogram/1/change/"
    form = {
        "enabled": "on",
        "registration_reward": "75",
        "payment_reward": "600",
        "max_registration_rewards_per_day": "20",
    }
    assert root.post(url, form).status_code == 302
    program = ReferralProgram.load()
    assert (program.registration_reward, program.payment_reward) == (75, 600)

    response = root.post(url, {**form, "payment_reward": "-10"})
    assert "payment_reward" in errors_of(response)
    assert ReferralProgram.load().payment_reward == 600
