"""API keys, login tokens, service tokens, passwords and Stripe secrets never appear in a log
line (message, arguments or traceback, at every level) nor in an error body, across register,
login, key creation, authorize/settle (allowed, denied, malformed), the credits endpoint with
good and bad keys, a purchase and signed/unsigned webhooks."""

import json
import logging
from typing import Any

import pytest
from django.test import Client

from accounts.service_tokens import service_token_create
from tests.mail_support import outbox_token
from tests.stripe_support import StripeRecordedServer, build_event, checkout_session, sign_payload

from .conftest import STRIPE_SECRET, WEBHOOK_SECRET

pytestmark = pytest.mark.django_db

PASSWORD = "Zebra-Quantum-Lantern-9182"


def _post(client: Client, path: str, body: Any, **extra: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(path, raw, content_type="application/json", **extra)


def test_no_secret_reaches_a_log_line_or_an_error_body(
    caplog: pytest.LogCaptureFixture, stripe: StripeRecordedServer
) -> None:
    caplog.set_level(logging.DEBUG)
    bodies: list[bytes] = []  # every answer except the two that must carry a secret
    client = Client()
    _, service_token = service_token_create(name="gateway")
    gateway = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}")

    registered = _post(
        client, "/api/auth/register", {"email": "eve@example.com", "password": PASSWORD}
    )
    assert registered.status_code == 201
    bodies.append(registered.content)
    # The signup grant follows the verification (EMAIL_VERIFICATION=required): the link's token
    # is a secret too.
    verify_token = outbox_token("eve@example.com", "accounts/email/verify_email")
    verified = _post(client, "/api/auth/verify-email", {"token": verify_token})
    assert verified.status_code == 200
    bodies.append(verified.content)
    bodies.append(_post(client, "/api/auth/verify-email", {"token": verify_token + "x"}).content)
    bodies.append(_post(client, "/api/auth/password-reset", {"email": "eve@example.com"}).content)
    bodies.append(
        _post(
            client, "/api/auth/login", {"email": "eve@example.com", "password": PASSWORD + "x"}
        ).content
    )
    bodies.append(
        _post(
            client, "/api/auth/register", {"email": "eve@example.com", "password": PASSWORD}
        ).content
    )
    login = _post(client, "/api/auth/login", {"email": "eve@example.com", "password": PASSWORD})
    assert login.status_code == 200
    token = login.json()["token"]
    user = Client(HTTP_AUTHORIZATION=f"Token {token}")
    made = _post(user, "/api/user/keys", {"name": "laptop"})
    assert made.status_code == 201
    raw_key = made.json()["key"]
    bodies.append(user.get("/api/user/keys").content)

    # The credits endpoint with the key, a mistyped key and a revoked-looking one.
    bodies.append(Client(HTTP_X_API_KEY=raw_key).get("/api/user/credits").content)
    mistyped = raw_key[:-3] + ("aaa" if raw_key[-3:] != "aaa" else "bbb")
    bodies.append(Client(HTTP_AUTHORIZATION=f"Bearer {mistyped}").get("/api/user/credits").content)

    # The hot path: allowed, replayed, conflicting, denied, malformed, settled.
    request = {"api_key": raw_key, "request_id": "req-log-1", "model": "m", "format": "openai"}
    allowed = _post(gateway, "/internal/v1/authorize", request)
    assert allowed.json()["allowed"] is True
    bodies.append(allowed.content)
    bodies.append(_post(gateway, "/internal/v1/authorize", request).content)
    bodies.append(
        _post(gateway, "/internal/v1/authorize", {**request, "api_key": mistyped}).content
    )
    bodies.append(
        _post(
            gateway, "/internal/v1/authorize", {**request, "request_id": "r2", "api_key": mistyped}
        ).content
    )
    bodies.append(_post(gateway, "/internal/v1/authorize", {**request, "format": 7}).content)
    bodies.append(
        _post(gateway, "/internal/v1/authorize", b'{"api_key": "' + raw_key.encode()).content
    )
    bodies.append(
        _post(
            Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}"), "/internal/v1/authorize", request
        ).content
    )
    bodies.append(
        _post(
            Client(HTTP_AUTHORIZATION=f"Bearer {service_token}x"), "/internal/v1/settle", {}
        ).content
    )
    settle = {"request_id": "req-log-1", "outcome": "success", "http_status": 200}
    bodies.append(_post(gateway, "/internal/v1/settle", settle).content)

    # A purchase (Stripe's secret key goes out to the recorded server) and webhooks.
    bodies.append(_post(user, "/api/purchases", {"package": "starter"}).content)
    event = build_event("checkout.session.completed", checkout_session())
    payload = json.dumps(event).encode()
    good = sign_payload(payload, WEBHOOK_SECRET)
    bodies.append(
        _post(client, "/api/webhooks/stripe", payload, HTTP_STRIPE_SIGNATURE=good).content
    )
    bodies.append(
        _post(client, "/api/webhooks/stripe", payload, HTTP_STRIPE_SIGNATURE=good + "0").content
    )
    bodies.append(_post(client, "/api/webhooks/stripe", payload).content)
    bodies.append(_post(user, "/api/auth/logout", {}).content)

    assert stripe.requests, "the purchase reached the recorded Stripe server"
    secrets = {
        "password": PASSWORD,
        "api key": raw_key,
        "api key body": raw_key[len("sk-kimi-") :],
        "mistyped key": mistyped,
        "login token": token,
        "verification token": verify_token,
        "service token": service_token,
        "stripe secret": STRIPE_SECRET,
        "webhook secret": WEBHOOK_SECRET,
    }
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s")
    logged = "\n".join(formatter.format(record) for record in caplog.records)
    assert len(caplog.records) > 0
    answered = b"\n".join(bodies).decode()
    for name, secret in secrets.items():
        assert secret not in logged, f"the {name} was logged"
        assert secret not in answered, f"the {name} is in an answer"
