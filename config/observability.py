"""Logs that carry the request id, and counters a Prometheus scraper reads at `/metrics`.

Request ids. `request_id` (a context variable) is the gateway's `request_id` on the hot path
(set by the internal views as soon as the body is parsed) and, on every other request, the
caller's `X-Request-ID` header or a fresh one (`RequestIdMiddleware`). `RequestIdFilter`, on
the console handler (settings.LOGGING), copies it onto every record that handler writes, so a
support question ("why was req_123 charged?") greps to every line of that request, whichever
module logged it. Lines are `key=value` (cheap to write, easy to grep and to parse).

Counters (prometheus_client):

- `billing_authorizations_total{decision}`: allowed, replay, bad_key, frozen, no_credit,
  rate_limited, conflict, invalid, unavailable;
- `billing_settles_total{outcome}`: charged, not_charged (a failure, or a late success without
  an available credit), conflict, not_found, invalid, unavailable (answers: a retried settle
  that replays its first answer is counted again under that answer);
- `billing_webhook_events_total{type,result}`: rejected (bad signature or body), received,
  duplicate, then the processing status (processed, ignored, failed);
- `billing_notification_deliveries_total{channel,outcome}`: webhook attempts (delivered, retry,
  failed) and messages handed to the mail outbox (email, queued);
- `billing_events_dispatched_total`: outbox events fanned out to their channels;
- `billing_task_failures_total{task}` and `billing_task_retries_total{task}` (Celery signals).

Several worker processes: with `PROMETHEUS_MULTIPROC_DIR` set (an empty directory, emptied at
each deploy, the same for every worker of a host), prometheus_client writes each process's
values to memory-mapped files there and `/metrics` adds them up; without it the counters are
per process (right for the embedded single-process default, wrong behind several workers).

`/metrics` is guarded: a service token (`Authorization: Bearer ...`, the scraper gets its own
from `create_service_token`, revocable like the gateway's) or a staff session. Not an IP
allow-list: behind the load balancer every request comes from its address, and
X-Forwarded-For is whatever the client wrote.
"""

import logging
import os
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from http import HTTPStatus
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    generate_latest,
    multiprocess,
)

request_id: ContextVar[str] = ContextVar("request_id", default="-")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def bind_request_id(value: str) -> None:
    """The id every log line of this request carries from now on (a hostile value is
    replaced: it would otherwise forge `key=value` pairs or lines in the log)."""
    request_id.set(value if _SAFE_ID.match(value) else "unprintable")


class RequestIdFilter(logging.Filter):
    """Copies the request id onto the record. django.request writes its 4xx/5xx line after the
    middleware has returned (the context variable is reset by then), so a record that carries
    its request takes the id from it (`RequestIdMiddleware` sets `request.request_id`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        bound = getattr(getattr(record, "request", None), "request_id", None)
        record.request_id = bound if isinstance(bound, str) else request_id.get()
        return True


class OneLinePer4xxFilter(logging.Filter):
    """runserver's access line of a 4xx repeats the line django.request wrote for it (a
    gateway 4xx: `log_gateway_4xx`); one line per 4xx is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "django.server":
            return True
        status = getattr(record, "status_code", 0)
        return not (isinstance(status, int) and 400 <= status < 500)


_request_logger = logging.getLogger("django.request")


def log_gateway_4xx(status: int, path: str, code: str) -> None:
    """The one log line of an internal API call answered 4xx, in django.request's words, with
    the gateway's request id (the caller's view marks its response logged, so Django does not
    write a second one)."""
    _request_logger.warning("%s: %s (%s)", HTTPStatus(status).phrase, path, code)


class RequestIdMiddleware:
    """Off the hot path: `X-Request-ID` from the caller (or a new id) on every log line of the
    request, and echoed in the response so a client can quote it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        value = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        # Read by RequestIdFilter for django.request's lines, written after this returns.
        request.request_id = value  # type: ignore[attr-defined]
        token = request_id.set(value)
        try:
            response = self.get_response(request)
        finally:
            request_id.reset(token)
        response.setdefault("X-Request-ID", value)
        return response


# --- counters --------------------------------------------------------------------------------

AUTHORIZATIONS = Counter("billing_authorizations", "Authorize calls by decision.", ["decision"])
SETTLES = Counter("billing_settles", "Settle calls by outcome.", ["outcome"])
WEBHOOK_EVENTS = Counter(
    "billing_webhook_events", "Stripe webhook events by type and result.", ["type", "result"]
)
NOTIFICATION_DELIVERIES = Counter(
    "billing_notification_deliveries",
    "Notification deliveries by channel and outcome.",
    ["channel", "outcome"],
)
EVENTS_DISPATCHED = Counter("billing_events_dispatched", "Outbox events fanned out.")
TASK_FAILURES = Counter("billing_task_failures", "Celery tasks that failed for good.", ["task"])
TASK_RETRIES = Counter("billing_task_retries", "Celery task retries.", ["task"])

# The hot path's children, bound once: `.labels()` costs a dict lookup and a lock per call.
_DECISIONS = (
    "allowed",
    "replay",
    "bad_key",
    "frozen",
    "no_credit",
    "rate_limited",
    "conflict",
    "invalid",
    "unavailable",
    "error",
)
_OUTCOMES = ("charged", "not_charged", "conflict", "not_found", "invalid", "unavailable", "error")
_AUTHORIZED = {name: AUTHORIZATIONS.labels(name) for name in _DECISIONS}
_SETTLED = {name: SETTLES.labels(name) for name in _OUTCOMES}


def count_authorization(decision: str) -> None:
    child = _AUTHORIZED.get(decision)
    (child or AUTHORIZATIONS.labels(decision)).inc()


def count_settle(outcome: str) -> None:
    child = _SETTLED.get(outcome)
    (child or SETTLES.labels(outcome)).inc()


def count_webhook_event(*, event_type: str, result: str) -> None:
    # Stripe's event types are a bounded set; anything else would grow the series without end.
    safe_type = event_type if re.match(r"^[a-z_.]{1,64}$", event_type) else "other"
    WEBHOOK_EVENTS.labels(safe_type, result).inc()


def count_notification_delivery(channel: str, outcome: str) -> None:
    NOTIFICATION_DELIVERIES.labels(channel, outcome).inc()


def count_event_dispatched() -> None:
    EVENTS_DISPATCHED.inc()


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or "unknown")


def _on_task_failure(sender: Any = None, **kwargs: Any) -> None:
    TASK_FAILURES.labels(_task_name(sender)).inc()


def _on_task_retry(sender: Any = None, **kwargs: Any) -> None:
    TASK_RETRIES.labels(_task_name(sender)).inc()


def connect_task_signals() -> None:
    """Called where the tasks are defined, so the worker process counts its failures."""
    from celery.signals import task_failure, task_retry

    task_failure.connect(_on_task_failure, dispatch_uid="billing.task_failure")
    task_retry.connect(_on_task_retry, dispatch_uid="billing.task_retry")


# --- the scrape endpoint -------------------------------------------------------------------


def metrics_text() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


def metrics_view(request: HttpRequest) -> HttpResponse:
    """`GET /metrics`: Prometheus text format, for a service token or a staff session."""
    from accounts.service_tokens import service_token_verify
    from config.errors import error_response

    if request.method != "GET":
        response = error_response(405, "method_not_allowed", "Use GET.")
        response["Allow"] = "GET"
        return response
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    try:
        token_ok = scheme.lower() == "bearer" and service_token_verify(credentials.strip())
    except DatabaseError:
        # A connection that died with a database restart: the scraper tries again next time.
        return error_response(503, "unavailable", "The database cannot be reached.")
    user = getattr(request, "user", None)
    staff_ok = bool(user is not None and user.is_authenticated and user.is_staff)
    if not (token_ok or staff_ok):
        response = error_response(
            401, "invalid_service_token", "A service token or a staff login is required."
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)


# Every process that configures logging from settings imports this module (the filter above),
# Celery workers included: their task failures are counted without further wiring.
connect_task_signals()
