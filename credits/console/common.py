"""What every console page shares: the login gate, the layout's context (navigation, the live
strip), the API's throttles applied to a form post, and the API's input serializers used to
validate a form (the same rules, the same messages)."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework.parsers import FormParser
from rest_framework.request import Request

from accounts.models import User
from credits import clock
from credits.usage import selectors

from .panels import console_panels

# The console's own pages, in the navigation's order (registered panels follow `activity`).
NAVIGATION = [
    ("overview", "Overview", "/my-credits"),
    ("keys", "API keys", "/my-credits/keys"),
    ("buy", "Buy credits", "/my-credits/buy"),
    ("activity", "Activity", "/my-credits/activity"),
    ("notifications", "Notifications", "/my-credits/notifications"),
    ("auto-topup", "Auto top-up", "/my-credits/auto-topup"),
]
ACCOUNT_NAV = ("account", "Account", "/my-credits/account")

# How often an open page asks for the live figures (data-poll-ms on <body>).
LIVE_POLL_SECONDS = 5


def console_user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


def login_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous visitors go to the login page, which brings them back here."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect(f"/login?{urlencode({'next': request.get_full_path()})}")
        return view(request, *args, **kwargs)

    return wrapper


def today_usage(user: User, now: datetime) -> dict[str, int]:
    """Today's (UTC) requests and credits: the live strip's figures."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    report = selectors.credits_report(
        user=user, start=today, end=today + timedelta(days=1), now=now
    )
    requests = sum(totals.requests for _, totals in report.usage_by_day)
    credits = sum(totals.credits for _, totals in report.usage_by_day)
    return {
        "credits_remaining": report.credits_remaining,
        "credits_reserved": report.credits_reserved,
        "today_requests": requests,
        "today_credits": credits,
    }


def page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    active: str,
    status: int = 200,
    no_store: bool = False,
) -> HttpResponse:
    """A console page inside the layout: navigation, the live strip, the messages. `no_store`:
    the answer carries a secret shown this once, which no cache may keep a copy of."""
    user = console_user(request)
    now = clock.now()
    navigation = [
        *NAVIGATION,
        *((p.slug, p.title, f"/my-credits/{p.slug}") for p in console_panels()),
        ACCOUNT_NAV,
    ]
    context = {
        "navigation": navigation,
        "active": active,
        "live": today_usage(user, now),
        "now": now,
        "poll_ms": LIVE_POLL_SECONDS * 1000,
        **context,
    }
    response = render(request, template, context, status=status)
    if no_store:
        response["Cache-Control"] = "no-store"
    return response


def form_request(request: HttpRequest) -> Request:
    """The form post as DRF sees a request, for the API's throttles (they read `data`, and the
    per-user ones `user`)."""
    drf_request = Request(request, parsers=[FormParser()])
    # The session's user, set rather than authenticated: without authenticators DRF would make
    # the request anonymous (and write that back onto the Django request).
    drf_request.user = request.user
    return drf_request


def throttled(request: HttpRequest, throttle_classes: list[type[Any]]) -> int | None:
    """Seconds to wait if one of the API's throttles refuses this form post, else None: a form
    is counted exactly as the API endpoint it stands for, in the same counters."""
    drf_request = form_request(request)
    for throttle_class in throttle_classes:
        throttle = throttle_class()
        if not throttle.allow_request(drf_request, None):
            return int(throttle.wait() or 1)
    return None


def throttled_message(wait: int) -> str:
    return f"Too many attempts; try again in {wait} seconds."


def serializer_errors(errors: Any) -> dict[str, str]:
    """DRF's errors as one message per field (the first), `form` for non-field errors."""
    flat: dict[str, str] = {}
    for field, messages in dict(errors).items():
        message = messages
        while isinstance(message, list | dict):
            if isinstance(message, dict):
                message = next(iter(message.values()), "")
            else:
                message = message[0] if message else ""
        flat["form" if field == "non_field_errors" else field] = str(message)
    return flat


def validated(
    serializer_class: type[Any], data: dict[str, Any]
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The API's own input serializer applied to a form's values."""
    serializer = serializer_class(data=data)
    if serializer.is_valid():
        return dict(serializer.validated_data), {}
    return None, serializer_errors(serializer.errors)


def not_found(request: HttpRequest, message: str, *, active: str) -> HttpResponse:
    """A 404 inside the console's layout (the site's own 404 handler answers JSON, for the API)."""
    return page(request, "console/not_found.html", {"message": message}, active=active, status=404)
