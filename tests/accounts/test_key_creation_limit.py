"""Rate limits are counted per key, so revoking a key and making a new one on every 429 would
multiply a tier's limits; keys made per account per rolling hour are limited
(KEY_CREATIONS_PER_HOUR, revoked keys included), and the per-key limits stay as documented."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.utils import timezone
from knox.models import AuthToken

from accounts.models import ApiKey
from accounts.services import api_key_create
from config.errors import Throttled
from tests.concurrency import run_together
from tests.factories import UserFactory


def _client(user: object) -> Client:
    _token, raw = AuthToken.objects.create(user=user)
    return Client(HTTP_AUTHORIZATION=f"Token {raw}")


@pytest.mark.django_db
def test_revoke_and_recreate_stops_at_the_hourly_key_creation_limit() -> None:
    user = UserFactory.create()
    client = _client(user)
    for n in range(10):
        made = client.post("/api/user/keys", {"name": f"k{n}"}, content_type="application/json")
        assert made.status_code == 201
        assert client.delete(f"/api/user/keys/{made.json()['id']}").status_code == 204

    refused = client.post("/api/user/keys", {"name": "k10"}, content_type="application/json")

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "throttled"
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3600
    assert ApiKey.objects.filter(user=user).count() == 10


@pytest.mark.django_db
def test_a_slot_frees_when_the_oldest_key_leaves_the_hour() -> None:
    user = UserFactory.create()
    for n in range(10):
        api_key_create(user=user, name=f"k{n}")
    with pytest.raises(Throttled):
        api_key_create(user=user, name="too many")
    # Move the first key 61 minutes into the past (as if an hour had gone by for it).
    oldest = ApiKey.objects.filter(user=user).order_by("created_at").first()
    assert oldest is not None
    ApiKey.objects.filter(pk=oldest.pk).update(created_at=timezone.now() - timedelta(minutes=61))

    api_key_create(user=user, name="one more")
    with pytest.raises(Throttled):
        api_key_create(user=user, name="and no more")


@pytest.mark.django_db
@override_settings(KEY_CREATIONS_PER_HOUR=3)
def test_the_limit_is_a_setting_and_counts_one_account_only() -> None:
    alice, bob = UserFactory.create(), UserFactory.create()
    for n in range(3):
        api_key_create(user=alice, name=f"a{n}")
    with pytest.raises(Throttled):
        api_key_create(user=alice, name="a3")
    api_key_create(user=bob, name="b0")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs real concurrency")
@override_settings(KEY_CREATIONS_PER_HOUR=4, MAX_KEYS_PER_USER=25)
def test_concurrent_creations_never_exceed_the_hourly_limit() -> None:
    user = UserFactory.create()
    results = run_together(16, lambda i: api_key_create(user=user, name=f"k{i}"))
    assert sum(isinstance(r, tuple) for r in results) == 4
    assert sum(isinstance(r, Throttled) for r in results) == 12
    assert ApiKey.objects.filter(user=user).count() == 4
