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
    """A user as registration leaves them: account opened, signup grant written."""
    from django.db import transaction

    with transaction.atomic():
        user = cast(User, UserFactory(**kwargs))
        user_registered.send(sender=User, user=user, invite_code="")
    return user
