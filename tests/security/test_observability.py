"""`/metrics` serves Prometheus text to a service token or a staff login only, its counters
move with authorize, settle and webhook traffic, and log lines carry the request id."""

import json
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from config import observability
from tests.stripe_support import StripeRecordedServer, build_event, checkout_session, sign_payload

from .conftest import WEBHOOK_SECRET, Person

pytestmark = pytest.mark.django_db


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _scrape(service_token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}").get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return _samples(response.content.decode())


def test_metrics_refuse_anonymous_users_and_user_credentials(alice: Person) -> None:
    assert Client().get("/metrics").status_code == 401
    assert alice.client().get("/metrics").status_code == 401
    assert Client(HTTP_AUTHORIZATION=f"Bearer {alice.raw_key}").get("/metrics").status_code == 401
    logged_in = Client()
    logged_in.force_login(alice.user)
    assert logged_in.get("/metrics").status_code == 401


def test_metrics_are_served_to_a_staff_login(alice: Person) -> None:
    alice.user.is_staff = True
    alice.user.save()
    staff = Client()
    staff.force_login(alice.user)
    response = staff.get("/metrics")
    assert response.status_code == 200
    assert b"billing_authorizations_total" in response.content


def test_authorize_and_settle_move_their_counters(alice: Person, service_token: str) -> None:
    gateway = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}")
    before = _scrape(service_token)

    def post(path: str, body: Mapping[str, object]) -> None:
        gateway.post(path, json.dumps(body), content_type="application/json")

    ok = {"api_key": alice.raw_key, "request_id": "m-1", "model": "m", "format": "openai"}
    post("/internal/v1/authorize", ok)
    post("/internal/v1/authorize", ok)  # replay
    post("/internal/v1/authorize", {**ok, "request_id": "m-2", "api_key": "sk-kimi-nope"})
    post("/internal/v1/authorize", {**ok, "format": "xml"})
    post("/internal/v1/settle", {"request_id": "m-1", "outcome": "success", "http_status": 200})
    post("/internal/v1/settle", {"request_id": "m-1", "outcome": "success", "http_status": 200})
    post("/internal/v1/settle", {"request_id": "nope", "outcome": "failure"})
    post("/internal/v1/settle", {"request_id": "m-1", "outcome": "failure"})  # 409
    post("/internal/v1/settle", {"request_id": "m-1", "outcome": "maybe"})
    after = _scrape(service_token)

    def moved(name: str, label: str, value: str) -> float:
        key = (name, ((label, value),))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("billing_authorizations_total", "decision", "allowed") == 1
    assert moved("billing_authorizations_total", "decision", "replay") == 1
    assert moved("billing_authorizations_total", "decision", "bad_key") == 1
    assert moved("billing_authorizations_total", "decision", "invalid") == 1
    # The retried settle replays its answer (charged: 1) and is counted under it again.
    assert moved("billing_settles_total", "outcome", "charged") == 2
    assert moved("billing_settles_total", "outcome", "not_found") == 1
    assert moved("billing_settles_total", "outcome", "conflict") == 1
    assert moved("billing_settles_total", "outcome", "invalid") == 1


def test_webhook_events_are_counted_by_type_and_result(
    service_token: str,
    stripe: StripeRecordedServer,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before = _scrape(service_token)
    payload = json.dumps(build_event("checkout.session.completed", checkout_session())).encode()
    client = Client()
    for signature in (sign_payload(payload, WEBHOOK_SECRET), "t=1,v1=00"):
        with django_capture_on_commit_callbacks(execute=True):
            client.post(
                "/api/webhooks/stripe",
                payload,
                content_type="application/json",
                HTTP_STRIPE_SIGNATURE=signature,
            )
    after = _scrape(service_token)

    def moved(event_type: str, result: str) -> float:
        key = ("billing_webhook_events_total", (("result", result), ("type", event_type)))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("checkout.session.completed", "received") == 1
    assert moved("unverified", "rejected") == 1
    # Processed eagerly in tests: the processing result is counted too.
    processed = sum(
        moved("checkout.session.completed", result) for result in ("processed", "ignored", "failed")
    )
    assert processed == 1


def test_a_failed_task_is_counted(service_token: str) -> None:
    from celery import shared_task

    @shared_task(name="tests.security.always_fails")
    def always_fails() -> None:
        raise RuntimeError("boom")

    before = _scrape(service_token)
    # As a worker runs it (an eager `throw=True` re-raises before Celery's failure signal).
    assert always_fails.apply(throw=False).failed()
    after = _scrape(service_token)
    key = ("billing_task_failures_total", (("task", "tests.security.always_fails"),))
    assert after.get(key, 0.0) - before.get(key, 0.0) == 1


def test_every_log_line_of_a_hot_path_call_carries_its_request_id(
    alice: Person, service_token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from credits.gateway import backends

    class Unreachable:
        def settle(self, **kwargs: object) -> None:
            raise OperationalError("connection refused")

    lines: list[str] = []
    log_format = settings.LOGGING["formatters"]["plain"]["format"]  # type: ignore[index]
    formatter = logging.Formatter(log_format)
    request_ids = observability.RequestIdFilter()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.addFilter(request_ids)
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(backends, "get_backend", lambda: Unreachable())
    try:
        answer = Client(HTTP_AUTHORIZATION=f"Bearer {service_token}").post(
            "/internal/v1/settle",
            json.dumps({"request_id": "req-trace-1", "outcome": "success"}),
            content_type="application/json",
        )
    finally:
        root.removeHandler(handler)
    assert answer.status_code == 503
    hot = [line for line in lines if "logger=credits.gateway" in line]
    assert hot, lines
    assert all("request_id=req-trace-1" in line for line in hot), hot
    # After the request the id is gone: the next request's lines cannot inherit it.
    assert observability.request_id.get() == "-"


def test_a_hostile_request_id_cannot_forge_log_fields() -> None:
    observability.bind_request_id('x" level=CRITICAL\nforged')
    assert observability.request_id.get() == "unprintable"
    observability.bind_request_id("req_123:abc-9.z")
    assert observability.request_id.get() == "req_123:abc-9.z"
    observability.request_id.set("-")


def test_user_api_answers_echo_a_request_id(alice: Person) -> None:
    given = alice.client().get("/api/user/keys", HTTP_X_REQUEST_ID="dash-42")
    assert given["X-Request-ID"] == "dash-42"
    fresh = alice.client().get("/api/user/keys", HTTP_X_REQUEST_ID="bad id\n")
    assert fresh["X-Request-ID"] != "bad id\n"
    assert len(fresh["X-Request-ID"]) == 32
