"""Real races on real PostgreSQL: threads released together by a barrier."""

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import override_settings

from accounts.models import ApiKey, User
from accounts.services import api_key_create, user_register
from config.errors import ApplicationError
from credits.models import CreditAccount
from tests.concurrency import run_together
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs real concurrency"),
]

THREADS = 20  # each holds a connection (tests/concurrency.py checks they are free)


def _race(work: Callable[[int], Any]) -> list[Any]:
    return list(run_together(THREADS, work))


def test_concurrent_registrations_of_one_address_create_one_user_and_refuse_the_rest() -> None:
    results = _race(
        lambda i: user_register(
            email="Race@Example.com" if i % 2 else "race@example.com",
            password="a-long and unusual passphrase 42",
        )
    )
    users = [r for r in results if isinstance(r, User)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(users) == 1
    assert len(refused) == THREADS - 1
    assert {r.code for r in refused} == {"email_taken"}
    assert User.objects.count() == 1
    assert CreditAccount.objects.get().balance == 0  # the grant waits for the verification


@override_settings(MAX_KEYS_PER_USER=5)
def test_concurrent_key_creations_never_exceed_the_cap() -> None:
    user = UserFactory.create()
    results = _race(lambda i: api_key_create(user=user, name=f"k{i}"))
    created = [r for r in results if isinstance(r, tuple)]
    refused = [r for r in results if isinstance(r, ApplicationError)]
    assert len(created) == 5
    assert len(refused) == THREADS - 5
    assert {r.code for r in refused} == {"too_many_keys"}
    assert ApiKey.objects.filter(user=user).live().count() == 5
