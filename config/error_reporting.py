"""Optional error reporting to Sentry (`SENTRY_DSN`), through sentry-sdk's Django and Celery
integrations, with every credential kept out of what is sent.

Two layers, because one missed field would leak a key to a third party:

1. What the SDK collects is cut down at the source (`data_collection`): no user identity, no
   cookies, no request bodies (login passwords, Stripe payloads), no stack-frame variables (a
   raw key sits in a local variable of the code that checks it), no SQL parameters; headers
   only through the SDK's denylist, to which `Authorization` and `X-API-Key` belong.
2. `scrub_event` (`before_send`) then walks the whole event and replaces anything that looks
   like one of our credentials wherever it appears (an exception message, a log line's text,
   a breadcrumb): API keys and service tokens by their shape and checksum, knox login tokens
   and Stripe secrets by their shape, and the value of any key named like a secret.

Imports nothing of ours at module level: settings.py calls `error_reporting_init` while
Django is still being set up.
"""

import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

# Values of mapping keys containing one of these (case-insensitive) are replaced whole.
_SECRET_KEY_NAMES = re.compile(
    r"authorization|api[-_]?key|password|passwd|secret|token|cookie|session|signature|dsn",
    re.IGNORECASE,
)
# Our credentials and Stripe's, wherever they appear inside a string: API keys and service
# tokens (a prefix, then the 49-character base62 secret: `accounts.secrets`), knox login tokens
# (64 hex), Stripe keys and webhook secrets, and whatever follows `Bearer`/`Token`.
_SECRET_TEXT = re.compile(
    r"(?<![0-9A-Za-z])[0-9A-Za-z_.\-]{0,24}[0-9A-Za-z]{49}(?![0-9A-Za-z])"
    r"|(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])"
    r"|(?:sk|rk|pk)_(?:live|test)_[0-9A-Za-z]+"
    r"|whsec_[0-9A-Za-z]+"
    r"|(?i:bearer|token)\s+[0-9A-Za-z_.\-]{16,}"
)
FILTERED = "[Filtered]"


def scrub_text(text: str) -> str:
    return _SECRET_TEXT.sub(FILTERED, text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            key: FILTERED
            if isinstance(key, str) and _SECRET_KEY_NAMES.search(key) and value_ is not None
            else _scrub(value_)
            for key, value_ in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def scrub_event(event: "Event", hint: "Hint | None" = None) -> "Event":
    """`before_send`: the event with every credential replaced, tagged with the request id
    (the one the log lines carry, so a report and its log lines find each other)."""
    from config.observability import request_id

    scrubbed: Event = _scrub(event)
    scrubbed.setdefault("tags", {})["request_id"] = request_id.get()
    return scrubbed


def error_reporting_init(*, dsn: str, environment: str, transport: Any = None) -> None:
    """Start sentry-sdk (`transport`: a test's capture instead of the network)."""
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        # ERROR log lines are reported too (a handled failure is often only logged), INFO and
        # up ride along as breadcrumbs of the next report (both pass `scrub_event`). No copy of
        # every log line as "Sentry logs" (`level=None`): the logs go to the log collector, and
        # that product's records would bypass `before_send`.
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(),
            LoggingIntegration(
                level=None, event_level=logging.ERROR, breadcrumb_level=logging.INFO
            ),
        ],
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_headers": {"request": {"mode": "denylist", "terms": ["x-api-key"]}},
            "http_bodies": [],
            "url_query_params": {"mode": "denylist"},
            "stack_frame_variables": False,
            "database_query_data": False,
        },
        before_send=scrub_event,
        # Errors only: tracing would send every request's spans (and costs CPU on the hot path).
        traces_sample_rate=0.0,
        **options,
    )
