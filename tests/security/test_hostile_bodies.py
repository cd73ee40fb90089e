"""Oversized and malformed bodies get a 4xx in our JSON error shape, never a 500 and never a
partial write, on the plain Django views of the hot path (through Django's handler and
through the hot-path WSGI entry point) and on the DRF views of the user API."""

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from django.conf import settings
from django.core import signals
from django.db import close_old_connections
from django.test import Client

from accounts.models import ApiKey, User
from credits.gateway import wsgi as gateway_wsgi_module
from credits.gateway.wsgi import application as gateway_wsgi
from credits.models import Hold

from .conftest import Person

pytestmark = pytest.mark.django_db

MALFORMED = [
    b"",
    b"{",
    b"not json",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b"\xff\xfe\x00garbage",
    b'{"request_id": {"nested": true}}',
    b'{"request_id": "' + b"x" * 5000 + b'"}',
]


def _oversized(limit: int | None = None) -> bytes:
    filler = "x" * ((limit or settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + 1024)
    return json.dumps(
        {"name": filler, "api_key": filler, "request_id": "r", "format": "openai"}
    ).encode()


def _error_shape(status: int, body: bytes) -> dict[str, Any]:
    assert 400 <= status < 500, (status, body[:200])
    parsed = json.loads(body)
    assert set(parsed) == {"error"}
    assert {"code", "message"} <= set(parsed["error"])
    return parsed["error"]


def _wsgi_post(path: str, body: bytes, token: str) -> tuple[int, bytes]:
    """POST straight to the hot-path WSGI entry point, as granian/gunicorn would."""
    captured: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> Callable[..., Any]:
        captured["status"] = status
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "HTTP_HOST": "localhost",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
    }
    # As Django's test client does: the test's connection holds its transaction, so the
    # per-request connection recycling must not close it (the hot paths call it directly, the
    # rest of the application through the request signals).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    recycle = gateway_wsgi_module.recycle_connections
    gateway_wsgi_module.recycle_connections = lambda: None
    try:
        chunks: Iterable[bytes] = gateway_wsgi(environ, start_response)
        content = b"".join(chunks)
    finally:
        gateway_wsgi_module.recycle_connections = recycle
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return int(captured["status"].split()[0]), content


@pytest.mark.parametrize("path", ["/internal/v1/authorize", "/internal/v1/settle"])
@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_bodies_on_the_internal_api_are_a_400(
    service_token: str, path: str, body: bytes
) -> None:
    response = Client().post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {service_token}"
    )
    error = _error_shape(response.status_code, response.content)
    assert error["code"] == "invalid_request"
    status, raw = _wsgi_post(path, body, service_token)
    assert _error_shape(status, raw)["code"] == "invalid_request"
    assert not Hold.objects.exists()


@pytest.mark.parametrize("path", ["/internal/v1/authorize", "/internal/v1/settle"])
def test_an_oversized_body_on_the_internal_api_is_a_4xx(
    alice: Person, service_token: str, path: str
) -> None:
    response = Client().post(
        path,
        _oversized(),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {service_token}",
    )
    _error_shape(response.status_code, response.content)
    status, raw = _wsgi_post(path, _oversized(), service_token)
    _error_shape(status, raw)
    assert not Hold.objects.exists()


@pytest.mark.parametrize(
    "path", ["/api/auth/register", "/api/auth/login", "/api/user/keys", "/api/purchases"]
)
@pytest.mark.parametrize("body", MALFORMED[:7], ids=range(7))
def test_malformed_bodies_on_the_user_api_are_a_400(alice: Person, path: str, body: bytes) -> None:
    users, keys = User.objects.count(), ApiKey.objects.count()
    response = alice.client().post(path, body, content_type="application/json")
    _error_shape(response.status_code, response.content)
    assert (User.objects.count(), ApiKey.objects.count()) == (users, keys)


@pytest.mark.parametrize(
    "path",
    [
        "/api/auth/register",
        "/api/auth/login",
        "/api/user/keys",
        "/api/purchases",
        "/api/webhooks/stripe",
    ],
)
def test_an_oversized_body_on_the_user_api_is_a_4xx(alice: Person, path: str) -> None:
    users, keys = User.objects.count(), ApiKey.objects.count()
    # Stripe's events have their own, larger, bound (credits/payments/views.py).
    limit = settings.STRIPE_WEBHOOK_MAX_BYTES if path == "/api/webhooks/stripe" else None
    response = alice.client().post(path, _oversized(limit), content_type="application/json")
    _error_shape(response.status_code, response.content)
    assert (User.objects.count(), ApiKey.objects.count()) == (users, keys)


def test_a_body_that_is_not_json_is_refused_by_media_type(alice: Person) -> None:
    response = alice.client().post(
        "/api/user/keys", b"name=x", content_type="application/x-www-form-urlencoded"
    )
    assert _error_shape(response.status_code, response.content)
    assert response.status_code == 415


# JSON nested deeper than Python's parser recurses (a RecursionError, once a 500), well inside
# the body size limit: arrays, objects, and nesting under a real field.
NESTED = [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    b'{"request_id": "r", "api_key": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
]


@pytest.mark.parametrize("path", ["/internal/v1/authorize", "/internal/v1/settle"])
@pytest.mark.parametrize("body", NESTED, ids=range(len(NESTED)))
def test_deeply_nested_json_on_the_internal_api_is_a_400(
    service_token: str, path: str, body: bytes
) -> None:
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = Client().post(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {service_token}"
    )
    assert response.status_code == 400
    assert _error_shape(response.status_code, response.content)["code"] == "invalid_request"
    status, raw = _wsgi_post(path, body, service_token)
    assert status == 400
    assert _error_shape(status, raw)["code"] == "invalid_request"
    assert not Hold.objects.exists()


@pytest.mark.parametrize(
    "path", ["/api/auth/register", "/api/auth/login", "/api/user/keys", "/api/purchases"]
)
@pytest.mark.parametrize("body", NESTED, ids=range(len(NESTED)))
def test_deeply_nested_json_on_the_user_api_is_a_400(alice: Person, path: str, body: bytes) -> None:
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    users, keys = User.objects.count(), ApiKey.objects.count()
    response = alice.client().post(path, body, content_type="application/json")
    assert response.status_code == 400
    assert _error_shape(response.status_code, response.content)["code"] == "invalid_request"
    assert (User.objects.count(), ApiKey.objects.count()) == (users, keys)
