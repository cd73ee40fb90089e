from datetime import timedelta

import pytest
from django.test import RequestFactory, override_settings
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries

from accounts import secrets
from accounts.api_keys import (
    LAST_USED_RESOLUTION,
    api_key_from_request,
    api_key_is_well_formed,
    api_key_resolve,
)
from accounts.models import ApiKey, User
from accounts.service_tokens import service_token_create
from accounts.services import api_key_create, api_key_revoke
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def user() -> User:
    return UserFactory.create()


@pytest.fixture
def key_and_raw(user: User) -> tuple[ApiKey, str]:
    return api_key_create(user=user, name="laptop")


def test_a_live_key_resolves_to_itself_with_its_user_in_one_query(
    key_and_raw: tuple[ApiKey, str], django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    key, raw = key_and_raw
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    with django_assert_num_queries(1):
        resolved = api_key_resolve(raw)
        assert resolved is not None
        assert resolved.user.email == key.user.email  # loaded with the key: no extra query
    assert resolved.pk == key.pk


def test_revocation_takes_effect_on_the_very_next_resolve(
    user: User, key_and_raw: tuple[ApiKey, str]
) -> None:
    key, raw = key_and_raw
    assert api_key_resolve(raw) is not None
    api_key_revoke(user=user, key_id=key.pk)
    assert api_key_resolve(raw) is None


def test_a_key_stops_resolving_the_moment_it_expires(user: User) -> None:
    expires_at = timezone.now() + timedelta(hours=1)
    _, raw = api_key_create(user=user, name="temp", expires_at=expires_at)
    assert api_key_resolve(raw, now=expires_at - timedelta(seconds=1)) is not None
    assert api_key_resolve(raw, now=expires_at) is None
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert api_key_resolve(raw) is None


def test_a_deactivated_users_key_does_not_resolve(
    user: User, key_and_raw: tuple[ApiKey, str]
) -> None:
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert api_key_resolve(key_and_raw[1]) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda raw: raw[:-1] + ("A" if raw[-1] != "A" else "B"),  # last checksum character
        lambda raw: raw[:12] + ("x" if raw[12] != "x" else "y") + raw[13:],  # a body character
        lambda raw: raw[:-1],  # too short
        lambda raw: raw + "0",  # too long
        lambda raw: "",
        lambda raw: "sk-kimi-" + "0" * 49,
    ],
)
def test_a_malformed_key_is_refused_without_touching_the_database(
    key_and_raw: tuple[ApiKey, str],
    mangle: object,
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    bad = mangle(key_and_raw[1])  # type: ignore[operator]
    with django_assert_num_queries(0):
        assert api_key_resolve(bad) is None


def test_a_well_formed_but_unknown_key_costs_one_query(
    django_assert_num_queries: DjangoAssertNumQueries,
) -> None:
    raw = secrets.new_secret("sk-kimi-")
    with django_assert_num_queries(1):
        assert api_key_resolve(raw) is None


def test_a_service_token_is_not_an_api_key() -> None:
    _, raw = service_token_create(name="gateway")
    assert api_key_resolve(raw) is None


def test_keys_issued_under_an_earlier_prefix_keep_working(user: User) -> None:
    with override_settings(API_KEY_PREFIX="sk-old-"):
        key, raw = api_key_create(user=user, name="old")
    resolved = api_key_resolve(raw)
    assert resolved is not None and resolved.pk == key.pk
    assert not api_key_is_well_formed(raw.replace("sk-old-", "sk-new-"))


def test_last_used_is_written_at_most_once_a_minute(
    key_and_raw: tuple[ApiKey, str], django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    key, raw = key_and_raw
    now = timezone.now()
    with django_assert_num_queries(2):  # the lookup, and the first "last used" write
        api_key_resolve(raw, now=now)
    key.refresh_from_db()
    assert key.last_used_at == now
    with django_assert_num_queries(1):  # within the minute: the lookup only
        api_key_resolve(raw, now=now + LAST_USED_RESOLUTION - timedelta(seconds=1))
    key.refresh_from_db()
    assert key.last_used_at == now
    later = now + LAST_USED_RESOLUTION
    with django_assert_num_queries(2):
        api_key_resolve(raw, now=later)
    key.refresh_from_db()
    assert key.last_used_at == later


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"HTTP_AUTHORIZATION": "Bearer sk-kimi-abc"}, "sk-kimi-abc"),
        ({"HTTP_AUTHORIZATION": "bearer  sk-kimi-abc "}, "sk-kimi-abc"),
        ({"HTTP_X_API_KEY": "sk-kimi-xyz"}, "sk-kimi-xyz"),
        ({"HTTP_AUTHORIZATION": "Bearer sk-a", "HTTP_X_API_KEY": "sk-b"}, "sk-a"),
        ({"HTTP_AUTHORIZATION": "Token abc"}, None),
        ({"HTTP_AUTHORIZATION": "Bearer "}, None),
        ({}, None),
    ],
)
def test_the_key_is_read_from_bearer_or_x_api_key(
    headers: dict[str, str], expected: str | None
) -> None:
    request = RequestFactory().get("/", **headers)  # type: ignore[arg-type]
    assert api_key_from_request(request) == expected
