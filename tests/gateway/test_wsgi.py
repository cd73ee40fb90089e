"""The hot-path WSGI entry point (`credits.gateway.wsgi`) answers exactly like the full Django
application on the two internal calls, and hands every other path to it."""

import json
from io import BytesIO
from typing import Any

import pytest
from django.core import signals
from django.db import close_old_connections
from django.test import Client

from credits.gateway import wsgi as gateway_wsgi_module
from credits.gateway.wsgi import application
from credits.models import Hold
from tests.gateway.conftest import funded_customer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("backend")]


def call(path: str, body: Any, token: str, method: str = "POST", host: str = "127.0.0.1") -> Any:
    raw = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": host,
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(raw)),
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": BytesIO(raw),
        "wsgi.url_scheme": "http",
    }
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started["status"], started["headers"] = status, dict(headers)

    # As Django's test client does: the test's connection holds its transaction, so the
    # per-request connection recycling must not close it (the hot paths call it directly, the
    # rest of the application through the request signals).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    recycle = gateway_wsgi_module.recycle_connections
    gateway_wsgi_module.recycle_connections = lambda: None
    try:
        content = b"".join(application(environ, start_response))
    finally:
        gateway_wsgi_module.recycle_connections = recycle
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    return started["status"], started["headers"], content


def test_authorize_and_settle_through_the_hot_path_entry(service_token: str) -> None:
    customer = funded_customer(10)
    status, headers, content = call(
        "/internal/v1/authorize",
        {"api_key": customer.raw_key, "request_id": "req_w", "model": "m", "format": "openai"},
        service_token,
    )
    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"
    assert headers["Content-Length"] == str(len(content))
    decision = json.loads(content)
    assert decision["allowed"] is True
    assert decision["hold_id"] == str(Hold.objects.get(request_id="req_w").pk)
    status, _, content = call(
        "/internal/v1/settle", {"request_id": "req_w", "outcome": "success"}, service_token
    )
    assert (status, json.loads(content)) == (
        "200 OK",
        {"request_id": "req_w", "charged": 1, "credits_remaining": 9},
    )


def test_the_hot_path_entry_keeps_the_service_token_check_and_the_error_bodies(
    service_token: str,
) -> None:
    status, _, content = call("/internal/v1/settle", {"request_id": "x"}, "svc-wrong")
    assert status == "401 Unauthorized"
    assert json.loads(content)["error"]["code"] == "invalid_service_token"
    status, _, content = call("/internal/v1/settle", {"request_id": "x"}, service_token)
    assert status == "400 Bad Request"
    assert json.loads(content)["error"]["field"] == "outcome"


def test_the_hot_path_entry_refuses_a_host_not_allowed(service_token: str) -> None:
    status, _, content = call(
        "/internal/v1/settle",
        {"request_id": "x", "outcome": "failure"},
        service_token,
        host="evil.example",
    )
    assert status == "400 Bad Request"
    assert json.loads(content)["error"]["code"] == "bad_request"


def test_every_other_path_goes_to_the_full_django_application(service_token: str) -> None:
    status, headers, _ = call("/healthz", {}, service_token, method="GET")
    assert status.startswith(("200", "503"))
    assert "X-Frame-Options" in headers  # the middleware ran
    status, _, _ = call("/internal/v1/nothing", {}, service_token)
    assert status == "404 Not Found"


def _django_client_call(path: str, body: Any, token: str, method: str = "POST") -> Any:
    client = Client()
    response = (
        client.post(
            path,
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        if method == "POST"
        else client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")
    )
    return response.status_code, dict(response.items()), response.content


@pytest.mark.parametrize(
    ("path", "body", "method", "token_ok", "extra_header"),
    [
        ("/internal/v1/authorize", {"request_id": "r"}, "GET", True, "Allow"),
        ("/internal/v1/settle", {"request_id": "r"}, "POST", False, "WWW-Authenticate"),
        ("/internal/v1/settle", {"request_id": "nobody", "outcome": "failure"}, "POST", True, None),
        ("/internal/v1/authorize", {"request_id": "r", "format": "x"}, "POST", True, None),
        ("/internal/v1/authorize", {"request_id": "r", "api_key": 7}, "POST", True, None),
    ],
    ids=["405", "401", "404", "400-format", "400-key-type"],
)
def test_the_hot_path_entry_answers_byte_for_byte_as_the_django_view(
    service_token: str,
    path: str,
    body: Any,
    method: str,
    token_ok: bool,
    extra_header: str | None,
) -> None:
    token = service_token if token_ok else "svc-wrong"
    status, headers, content = call(path, body, token, method=method)
    django_status, django_headers, django_content = _django_client_call(path, body, token, method)
    assert int(status.split()[0]) == django_status
    assert content == django_content
    assert headers["Content-Type"] == django_headers["Content-Type"] == "application/json"
    if extra_header is not None:
        assert headers[extra_header] == django_headers[extra_header]


def test_an_allowed_decision_is_the_same_through_both_entries(service_token: str) -> None:
    customer = funded_customer(10)
    request = {"api_key": customer.raw_key, "model": "m", "format": "anthropic"}
    _, _, through_wsgi = call(
        "/internal/v1/authorize", {**request, "request_id": "a"}, service_token
    )
    _, _, through_django = _django_client_call(
        "/internal/v1/authorize", {**request, "request_id": "b"}, service_token
    )
    first, second = json.loads(through_wsgi), json.loads(through_django)
    # Everything but what differs per request (the hold, the balance after it, the counts).
    for decision in (first, second):
        decision.pop("hold_id")
        decision.pop("credits_remaining")
        decision["headers"] = sorted(decision["headers"])
    assert first == second


def test_the_hot_path_entry_recycles_database_connections_before_each_call(
    service_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recycled: list[bool] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/internal/v1/settle",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.input": BytesIO(b""),
    }
    monkeypatch.setattr(gateway_wsgi_module, "recycle_connections", lambda: recycled.append(True))
    b"".join(application(environ, lambda status, headers: None))
    assert recycled == [True]
