"""Schema fuzzing: schemathesis generates requests for every operation of `/api/schema/` (the
user API, the internal API, the Stripe webhook) and sends them to the WSGI application in
process, with valid credentials for each operation: a knox token on the user API, a service
token on `/internal/v1/`, a correct `Stripe-Signature` over the exact bytes on the webhook.

Every answer must be a non-5xx with a documented status code and content type, and match the
documented schema of its status code. Bounded: MAX_EXAMPLES per operation, derandomized so CI
is stable.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.test import override_settings
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.service_tokens import service_token_create
from accounts.services import api_key_create
from config.wsgi import application
from tests.factories import ensure_seeded_packages, registered_user
from tests.stripe_support import StripeRecordedServer, sign_payload

MAX_EXAMPLES = 25
WEBHOOK_SECRET = "whsec_test_schemathesis"
WEBHOOK_PATH = "/api/webhooks/stripe"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass(frozen=True)
class Credentials:
    knox_token: str
    service_token: str


@pytest.fixture
def credentials() -> Iterator[Credentials]:
    """A registered user with a login token and an API key, a service token, the seeded
    packages (a transactional test flushes them), and Stripe aimed at a local recorded server
    (without credentials `POST /api/purchases` is a deliberate 503)."""
    from knox.models import AuthToken

    ensure_seeded_packages()
    user = registered_user()
    api_key_create(user=user, name="fuzz")
    _, knox_token = AuthToken.objects.create(user=user)
    _, service_token = service_token_create(name="fuzz")
    with (
        StripeRecordedServer() as stripe_server,
        override_settings(
            STRIPE_SECRET_KEY="sk_test_schemathesis",
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            STRIPE_API_BASE=stripe_server.api_base + "/",
        ),
    ):
        yield Credentials(knox_token=knox_token, service_token=service_token)


def _raw(body: Any) -> bytes:
    if isinstance(body, NotSet):
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _uses(case: Any, scheme: str) -> bool:
    security = case.operation.definition.raw.get("security") or []
    return any(scheme in requirement for requirement in security)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_without_5xx_and_as_documented(
    case: Any, credentials: Credentials
) -> None:
    if case.path == WEBHOOK_PATH:
        # Signed over the exact bytes sent, as Stripe does; the body is the generated one.
        payload = _raw(case.body)
        headers = {
            "Stripe-Signature": sign_payload(payload, WEBHOOK_SECRET),
            "Content-Type": "application/json",
        }
        response = case.call(headers=headers, data=payload)
        case.validate_response(response, checks=CHECKS)
        return
    if _uses(case, "serviceToken"):
        headers = {"Authorization": f"Bearer {credentials.service_token}"}
    elif _uses(case, "knoxApiToken"):
        headers = {"Authorization": f"Token {credentials.knox_token}"}
    else:
        headers = {}
    case.call_and_validate(headers=headers, checks=CHECKS)


def test_the_fuzzed_schema_covers_the_user_internal_and_webhook_operations() -> None:
    operations = {
        (result.ok().method.upper(), result.ok().path)
        for result in schema.get_all_operations()
        if isinstance(result, Ok)
    }
    assert {
        ("POST", "/internal/v1/authorize"),
        ("POST", "/internal/v1/settle"),
        ("POST", "/internal/v1/settle/batch"),
        ("POST", WEBHOOK_PATH),
        ("GET", "/api/user/credits"),
        ("POST", "/api/user/keys"),
        ("DELETE", "/api/user/keys/{key_id}"),
        ("GET", "/api/user/ledger"),
        ("POST", "/api/purchases"),
        ("GET", "/api/user/referrals"),
        ("POST", "/api/auth/verify-email"),
        ("POST", "/api/auth/password-reset"),
        ("POST", "/api/auth/password-reset/confirm"),
        ("POST", "/api/auth/password"),
        ("GET", "/api/user"),
        ("DELETE", "/api/user"),
        ("POST", "/api/user/email"),
    } <= operations
