"""Factories and named personas for tests."""

from typing import Any, cast

import factory

from accounts.models import User
from accounts.signals import user_registered


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@example.com")
    password = factory.django.Password("correct horse battery staple")


def registered_user(**kwargs: Any) -> User:
    """A user as registration and verification leave them: account opened, address verified,
    signup grant written (through the service staff use to verify an address)."""
    from django.db import transaction

    from accounts.services import email_mark_verified

    with transaction.atomic():
        user = cast(User, UserFactory(**kwargs))
        user_registered.send(sender=User, user=user, invite_code="")
        return email_mark_verified(user=user)


def ensure_documented_tiers() -> None:
    """Put back the documented tiers exactly as migration 0002 seeds them (a transactional
    test's flush removes the seed), and drop any cached copy."""
    import importlib

    from credits.gateway.models import Tier
    from credits.gateway.ratelimit import tiers_cache_clear

    seed = importlib.import_module("credits.migrations.0002_ledger_append_only_and_seed")
    for name, low, high, per_minute, per_hour, per_day in seed.TIERS:
        Tier.objects.update_or_create(
            name=name,
            defaults={
                "min_balance": low,
                "max_balance": high,
                "requests_per_minute": per_minute,
                "requests_per_hour": per_hour,
                "requests_per_day": per_day,
            },
        )
    tiers_cache_clear()


def ensure_seeded_packages() -> None:
    """Put back the packages exactly as migration 0004 seeds them (a transactional test's
    flush removes the seed)."""
    import importlib

    from credits.payments.models import Package

    seed = importlib.import_module("credits.migrations.0004_payments")
    for slug, name, credits, price, months in seed.SEED:
        Package.objects.get_or_create(
            slug=slug,
            defaults={
                "name": name,
                "credits": credits,
                "price_amount": price,
                "currency": "usd",
                "validity_months": months,
            },
        )
