"""Two users with everything a user can own (keys, ledger entries, a purchase, an invitee),
a gateway service token, and Stripe aimed at the local recorded-response server."""

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.core.cache import cache
from django.test import Client, override_settings
from knox.models import AuthToken

from accounts import service_tokens
from accounts.models import ApiKey, User
from accounts.service_tokens import service_token_create
from accounts.services import api_key_create
from tests.factories import ensure_seeded_packages, registered_user
from tests.stripe_support import StripeRecordedServer

WEBHOOK_SECRET = "whsec_test_security_0123456789"
STRIPE_SECRET = "sk_test_security_0123456789abcdef"


@dataclass
class Person:
    user: User
    token: str  # knox login token
    key: ApiKey
    raw_key: str

    def client(self) -> Client:
        return Client(HTTP_AUTHORIZATION=f"Token {self.token}")


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Login throttle counts live in the shared cache and verified service tokens in a
    process cache: neither may carry over from one test to the next."""
    cache.clear()
    service_tokens.clear_cache()
    yield
    service_tokens.clear_cache()


@pytest.fixture
def packages(db: None) -> None:
    """Transactional tests flush the seeded packages: put them back."""
    ensure_seeded_packages()


@pytest.fixture
def stripe(packages: None) -> Iterator[StripeRecordedServer]:
    with (
        StripeRecordedServer() as server,
        override_settings(
            STRIPE_SECRET_KEY=STRIPE_SECRET,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE=server.api_base + "/",
        ),
    ):
        yield server


def make_person(email: str) -> Person:
    user = registered_user(email=email)
    key, raw = api_key_create(user=user, name="main")
    _, token = AuthToken.objects.create(user=user)
    return Person(user=user, token=token, key=key, raw_key=raw)


@pytest.fixture
def alice(db: None) -> Person:
    return make_person("alice@example.com")


@pytest.fixture
def mallory(db: None) -> Person:
    return make_person("mallory@example.com")


@pytest.fixture
def service_token(db: None) -> str:
    return service_token_create(name="gateway")[1]
