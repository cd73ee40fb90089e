from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services import api_key_create, api_key_revoke, email_verify, user_register
from accounts.signals import user_registered
from config.errors import ApplicationError
from credits.models import CreditAccount
from tests.factories import UserFactory
from tests.mail_support import outbox_token

pytestmark = pytest.mark.django_db

STRONG = "a-long and unusual passphrase 42"


def test_registration_creates_the_user_and_verification_the_signup_grant() -> None:
    user = user_register(email="  Alice@Example.COM ", password=STRONG)
    assert user.email == "alice@example.com"
    assert user.check_password(STRONG)
    assert CreditAccount.objects.get(pk=user.pk).balance == 0
    email_verify(token=outbox_token("alice@example.com", "accounts/email/verify_email"))
    assert CreditAccount.objects.get(pk=user.pk).balance == 100


@override_settings(EMAIL_VERIFICATION="off")
def test_with_verification_off_registration_creates_the_user_with_the_signup_grant() -> None:
    user = user_register(email="  Alice@Example.COM ", password=STRONG)
    assert CreditAccount.objects.get(pk=user.pk).balance == 100


def test_registration_sends_the_invite_code_to_receivers() -> None:
    seen: list[tuple[Any, str]] = []

    def receiver(sender: object, user: User, invite_code: str, **kwargs: Any) -> None:
        seen.append((user.pk, invite_code))

    inviter = UserFactory.create()
    user_registered.connect(receiver, dispatch_uid="test.seen")
    try:
        user = user_register(
            email="bob@example.com", password=STRONG, invite_code=f" {inviter.invite_code} "
        )
    finally:
        user_registered.disconnect(dispatch_uid="test.seen")
    assert seen == [(user.pk, inviter.invite_code)]


@pytest.fixture
def refusing_receiver() -> Iterator[None]:
    def refuse(sender: object, user: User, invite_code: str, **kwargs: Any) -> None:
        if invite_code:
            raise ApplicationError("No such invite code.", code="invalid_invite_code")

    user_registered.connect(refuse, dispatch_uid="test.refuse")
    yield
    user_registered.disconnect(dispatch_uid="test.refuse")


@pytest.mark.usefixtures("refusing_receiver")
def test_a_receiver_that_refuses_undoes_the_whole_registration() -> None:
    with pytest.raises(ApplicationError) as info:
        user_register(email="carol@example.com", password=STRONG, invite_code="NOPE")
    assert info.value.code == "invalid_invite_code"
    assert not User.objects.filter(email="carol@example.com").exists()
    assert CreditAccount.objects.count() == 0


def test_an_email_registered_in_another_case_is_taken() -> None:
    user_register(email="dave@example.com", password=STRONG)
    with pytest.raises(ApplicationError) as info:
        user_register(email="DAVE@Example.com", password=STRONG)
    assert (info.value.code, info.value.field) == ("email_taken", "email")
    assert User.objects.count() == 1


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short1", "too short"),
        ("password123", "too common"),
        ("48201937465", "entirely numeric"),
        ("erin@example.com", "too similar"),
    ],
)
def test_a_weak_password_is_refused_naming_the_problem(password: str, problem: str) -> None:
    with pytest.raises(ApplicationError) as info:
        user_register(email="erin@example.com", password=password)
    assert (info.value.code, info.value.field) == ("weak_password", "password")
    assert problem in info.value.message
    assert User.objects.count() == 0


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", "x" * 250 + "@e.co"])
def test_a_malformed_email_is_refused(email: str) -> None:
    with pytest.raises(ApplicationError) as info:
        user_register(email=email, password=STRONG)
    assert (info.value.code, info.value.field) == ("invalid_email", "email")
    assert User.objects.count() == 0


def test_a_key_is_created_with_the_configured_prefix_and_stored_as_a_digest() -> None:
    user = UserFactory.create()
    key, raw = api_key_create(user=user, name=" laptop ")
    assert raw.startswith("sk-kimi-")
    assert key.name == "laptop"
    assert raw.startswith(key.prefix) and len(key.prefix) < len(raw)
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw not in {stored.digest, stored.prefix, stored.name}
    assert len(stored.digest) == 64


@override_settings(API_KEY_PREFIX="sk-test-")
def test_the_prefix_comes_from_settings() -> None:
    _, raw = api_key_create(user=UserFactory.create(), name="ci")
    assert raw.startswith("sk-test-")


@override_settings(MAX_KEYS_PER_USER=2)
def test_a_user_cannot_hold_more_live_keys_than_the_cap() -> None:
    user = UserFactory.create()
    first, _ = api_key_create(user=user, name="one")
    api_key_create(user=user, name="two")
    with pytest.raises(ApplicationError) as info:
        api_key_create(user=user, name="three")
    assert info.value.code == "too_many_keys"
    # A revoked key no longer counts, and another user's keys never did.
    api_key_create(user=UserFactory.create(), name="other")
    api_key_revoke(user=user, key_id=first.pk)
    api_key_create(user=user, name="three")
    assert ApiKey.objects.filter(user=user).live().count() == 2


@override_settings(MAX_KEYS_PER_USER=1)
def test_an_expired_key_does_not_count_against_the_cap() -> None:
    user = UserFactory.create()
    key, _ = api_key_create(user=user, name="one")
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    api_key_create(user=user, name="two")


def test_a_key_cannot_expire_in_the_past() -> None:
    with pytest.raises(ApplicationError) as info:
        api_key_create(
            user=UserFactory.create(), name="old", expires_at=timezone.now() - timedelta(minutes=1)
        )
    assert (info.value.code, info.value.field) == ("invalid_request", "expires_at")
    assert ApiKey.objects.count() == 0


@pytest.mark.parametrize(
    ("name", "code"),
    [("", "missing_field"), ("   ", "missing_field"), ("n" * 101, "invalid_request")],
)
def test_a_key_needs_a_name_of_at_most_100_characters(name: str, code: str) -> None:
    with pytest.raises(ApplicationError) as info:
        api_key_create(user=UserFactory.create(), name=name)
    assert (info.value.code, info.value.field) == (code, "name")


def test_revoking_twice_keeps_the_first_revocation_time() -> None:
    user = UserFactory.create()
    key, _ = api_key_create(user=user, name="k")
    first = api_key_revoke(user=user, key_id=key.pk).revoked_at
    assert first is not None
    assert api_key_revoke(user=user, key_id=str(key.pk)).revoked_at == first


@pytest.mark.parametrize("key_id", ["not-a-uuid", "00000000-0000-0000-0000-000000000000"])
def test_revoking_an_unknown_key_is_not_found(key_id: str) -> None:
    with pytest.raises(ApplicationError) as info:
        api_key_revoke(user=UserFactory.create(), key_id=key_id)
    assert info.value.status_code == 404


def test_another_users_key_is_not_found_and_stays_live() -> None:
    owner, intruder = UserFactory.create(), UserFactory.create()
    key, _ = api_key_create(user=owner, name="k")
    with pytest.raises(ApplicationError) as info:
        api_key_revoke(user=intruder, key_id=key.pk)
    assert info.value.status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None
