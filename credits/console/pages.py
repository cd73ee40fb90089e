"""The console's pages: overview, live figures, API keys, buying and the Checkout return page,
activity, and the panels other apps register. Views read through the usage, payments and
accounts selectors and write through the same services as the user API."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from accounts import serializers as account_serializers
from accounts.models import BUDGET_PERIODS, ApiKey
from accounts.services import api_key_create, api_key_revoke, api_key_rotate, api_key_update
from config.errors import ApplicationError
from config.fields import rfc3339
from credits import clock
from credits.gateway.models import UsageOutcome
from credits.gateway.ratelimit import tier_above
from credits.payments import services as payments
from credits.payments.client import payments_configured
from credits.payments.models import PurchaseStatus
from credits.usage import selectors
from credits.usage.serializers import parse_bound

from . import charts
from .common import console_user, login_required, not_found, page, today_usage, validated
from .panels import console_panel

EXPIRY_WARNING = timedelta(days=7)
MAX_DAY_BARS = 92  # a longer range is drawn as its last 92 days (the table lists them all)
MAX_HOUR_BARS = 168
ACTIVITY_PAGE = 50


# --- overview -----------------------------------------------------------------------------------


def _range(request: HttpRequest) -> tuple[datetime | None, datetime | None, str | None]:
    """`from` and `to` of the form: dates, `to` inclusive for people (the API's is exclusive)."""
    raw_from, raw_to = request.GET.get("from", ""), request.GET.get("to", "")
    if not raw_from and not raw_to:
        return None, None, None
    try:
        start = parse_bound(raw_from, name="from") if raw_from else None
        end = parse_bound(raw_to, name="to") + timedelta(days=1) if raw_to else None
    except ApplicationError as exc:
        return None, None, exc.message
    today = clock.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = end or today + timedelta(days=1)
    start = start or end - timedelta(days=30)
    if start >= end:
        return None, None, "The first day must not be after the last."
    return start, end, None


@login_required
@require_GET
def overview_page(request: HttpRequest) -> HttpResponse:
    user = console_user(request)
    now = clock.now()
    start, end, range_error = _range(request)
    report = selectors.credits_report(user=user, start=start, end=end, now=now)
    if start is None or end is None:
        days, hours = selectors.default_windows(now)
        assert days.start is not None and hours.start is not None
        first_day, day_count = days.start.date(), selectors.DEFAULT_DAYS
        first_hour, hour_count = hours.start, selectors.DEFAULT_HOURS
    else:
        last_day = (end - timedelta(microseconds=1)).date()
        day_count = min((last_day - start.date()).days + 1, MAX_DAY_BARS)
        first_day = last_day - timedelta(days=day_count - 1)
        end_hour = selectors.hour_floor(end - timedelta(microseconds=1))
        hour_count = min(
            int((end_hour - selectors.hour_floor(start)).total_seconds() // 3600) + 1, MAX_HOUR_BARS
        )
        first_hour = end_hour - timedelta(hours=hour_count - 1)
    day_chart = charts.chart(
        charts.day_slots(report.usage_by_day, first_day, day_count),
        label=lambda key: key[5:10],
        tick_every=5,
    )
    hour_chart = charts.chart(
        charts.hour_slots(report.usage_by_hour, first_hour, hour_count),
        label=lambda key: key[5:16].replace("T", " "),
        tick_every=8,
    )
    expiring = [
        lot
        for lot in report.lots
        if lot.expires_at is not None and lot.expires_at - now <= EXPIRY_WARNING
    ]
    context = {
        "user": user,
        "report": report,
        "next_tier": tier_above(report.tier) if report.tier else None,
        "expiring": expiring,
        "expiring_credits": sum(lot.remaining for lot in expiring),
        "day_chart": day_chart,
        "hour_chart": hour_chart,
        "usage_by_day": [(d, t) for d, t in report.usage_by_day],
        "range_from": request.GET.get("from", ""),
        "range_to": request.GET.get("to", ""),
        "range_error": range_error,
        "ranged": start is not None,
    }
    return page(request, "console/overview.html", context, active="overview")


@never_cache
@require_GET
def live_figures(request: HttpRequest) -> HttpResponse:
    """What an open page polls: the balance and today's usage. Polling rather than server-sent
    events: each open SSE stream would hold one of the few blocking worker threads (each one a
    database connection, README "Sizing") for as long as the tab stays open, while a poll every
    few seconds costs one short request, works through every proxy, and degrades to nothing."""
    if not request.user.is_authenticated:
        return JsonResponse(
            {"error": {"code": "not_authenticated", "message": "Log in first."}}, status=401
        )
    figures = today_usage(console_user(request), clock.now())
    return JsonResponse({**figures, "as_of": rfc3339(clock.now())})


# --- keys ---------------------------------------------------------------------------------------


def _keys_page(
    request: HttpRequest,
    *,
    secret: dict[str, Any] | None = None,
    errors: dict[str, dict[str, str]] | None = None,
    status: int = 200,
) -> HttpResponse:
    user = console_user(request)
    keys = ApiKey.objects.filter(user=user).live().order_by("-created_at")
    context = {
        "keys": account_serializers.ApiKeySerializer(keys, many=True).data,
        "periods": BUDGET_PERIODS,
        "secret": secret,
        "errors": errors or {},
        "form": request.POST if request.method == "POST" and errors else {},
        "grace_choices": [
            (0, "at once"),
            (3600, "in 1 hour"),
            (86400, "in 24 hours"),
            (604800, "in 7 days"),
        ],
    }
    return page(
        request,
        "console/keys.html",
        context,
        active="keys",
        status=status,
        no_store=secret is not None,
    )


@login_required
@require_GET
def keys_page(request: HttpRequest) -> HttpResponse:
    return _keys_page(request)


def _key_fields(post: Any, *, with_expiry: bool) -> dict[str, Any]:
    """The form's values in the shape of the API's body."""
    data: dict[str, Any] = {"name": post.get("name", "").strip()}
    budget = post.get("budget_credits", "").replace(",", "").strip()
    data["budget"] = (
        {"credits": budget, "period": post.get("budget_period", "month")} if budget else None
    )
    models = [m.strip() for m in post.get("allowed_models", "").replace("\n", ",").split(",")]
    data["allowed_models"] = [m for m in models if m] or None
    if with_expiry:
        expires = post.get("expires_on", "").strip()
        data["expires_at"] = f"{expires}T00:00:00Z" if expires else None
    return data


@login_required
@require_POST
def key_create_action(request: HttpRequest) -> HttpResponse:
    data, errors = validated(
        account_serializers.ApiKeyCreateInputSerializer, _key_fields(request.POST, with_expiry=True)
    )
    if data is None:
        return _keys_page(request, errors={"create": errors}, status=400)
    try:
        key, raw = api_key_create(
            user=console_user(request),
            name=data["name"],
            expires_at=data["expires_at"],
            budget=data.get("budget"),
            allowed_models=data.get("allowed_models"),
        )
    except ApplicationError as exc:
        return _keys_page(
            request, errors={"create": {exc.field or "form": exc.message}}, status=exc.status_code
        )
    return _keys_page(request, secret={"name": key.name, "key": raw, "what": "created"}, status=201)


@login_required
@require_POST
def key_update_action(request: HttpRequest, key_id: str) -> HttpResponse:
    data, errors = validated(
        account_serializers.ApiKeyUpdateInputSerializer,
        _key_fields(request.POST, with_expiry=False),
    )
    if data is None:
        return _keys_page(request, errors={key_id: errors}, status=400)
    try:
        key = api_key_update(user=console_user(request), key_id=key_id, **data)
    except ApplicationError as exc:
        return _keys_page(request, errors={key_id: {"form": exc.message}}, status=exc.status_code)
    messages.success(request, f"Saved the key \u201c{key.name}\u201d.")
    return redirect("/my-credits/keys")


@login_required
@require_POST
def key_rotate_action(request: HttpRequest, key_id: str) -> HttpResponse:
    data, errors = validated(
        account_serializers.ApiKeyRotateInputSerializer,
        # Absent: the API's default grace period.
        {k: v for k, v in request.POST.items() if k == "grace_seconds" and v != ""},
    )
    if data is None:
        return _keys_page(request, errors={key_id: errors}, status=400)
    try:
        key, raw = api_key_rotate(
            user=console_user(request), key_id=key_id, grace_seconds=data["grace_seconds"]
        )
    except ApplicationError as exc:
        return _keys_page(request, errors={key_id: {"form": exc.message}}, status=exc.status_code)
    secret = {
        "name": key.name,
        "key": raw,
        "what": "rotated",
        "previous_expires_at": key.previous_expires_at,
    }
    return _keys_page(request, secret=secret, status=201)


@login_required
@require_POST
def key_revoke_action(request: HttpRequest, key_id: str) -> HttpResponse:
    try:
        key = api_key_revoke(user=console_user(request), key_id=key_id)
    except ApplicationError as exc:
        return _keys_page(request, errors={key_id: {"form": exc.message}}, status=exc.status_code)
    messages.success(request, f"Revoked the key \u201c{key.name}\u201d: it no longer works.")
    return redirect("/my-credits/keys")


# --- buying -------------------------------------------------------------------------------------


@login_required
@require_GET
def buy_page(request: HttpRequest) -> HttpResponse:
    user = console_user(request)
    context = {
        "packages": payments.packages_visible(user=user),
        "purchases": payments.purchases_of(user=user)[:50],
        "configured": payments_configured(),
        # One purchase however often the form is sent (a double click, a resend): the form's
        # nonce is the purchase's Idempotency-Key, as a retrying API client would send.
        "nonce": uuid.uuid4().hex,
    }
    return page(request, "console/buy.html", context, active="buy")


@login_required
@require_POST
def buy_action(request: HttpRequest) -> HttpResponse:
    try:
        purchase = payments.purchase_create(
            user=console_user(request),
            package_slug=request.POST.get("package", ""),
            idempotency_key=request.POST.get("nonce") or None,
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("/my-credits/buy")
    return redirect(purchase.checkout_url)


def _purchase_of(request: HttpRequest, purchase_id: str) -> Any:
    """The user's own purchase with this id; another user's and an unknown id look alike."""
    try:
        parsed = uuid.UUID(purchase_id)
    except ValueError:
        return None
    return payments.purchases_of(user=console_user(request)).filter(pk=parsed).first()


@login_required
@never_cache
@require_GET
def purchase_page(request: HttpRequest, purchase_id: str) -> HttpResponse:
    """Stripe's return page (`?checkout=success|cancelled`): it waits for the webhook (the
    payment is granted by the event, never by this redirect) and then shows the new lot."""
    purchase = _purchase_of(request, purchase_id)
    if purchase is None:
        return not_found(request, "No purchase of yours has this id.", active="buy")
    if request.GET.get("format") == "json":  # what the waiting page polls
        return JsonResponse({"status": purchase.status})
    context = {
        "purchase": purchase,
        "checkout": request.GET.get("checkout", ""),
        "waiting": purchase.status == PurchaseStatus.PENDING
        and request.GET.get("checkout") == "success",
    }
    return page(request, "console/purchase.html", context, active="buy")


# --- activity -----------------------------------------------------------------------------------


@login_required
@require_GET
def activity_page(request: HttpRequest) -> HttpResponse:
    user = console_user(request)
    params = request.GET
    error = None
    start, end, error = _range(request)
    key_id = params.get("key") or None
    outcome = params.get("outcome") or None
    before = None
    if params.get("before_at") and params.get("before_id"):
        try:
            before = (datetime.fromisoformat(params["before_at"]), int(params["before_id"]))
        except ValueError:
            error = "That page link is damaged; start again from the first page."
    records: list[dict[str, Any]] = []
    if error is None:
        try:
            rows = selectors.usage_records(
                user=user, window=selectors.Window(start, end), key_id=key_id, before=before
            )
            if outcome in UsageOutcome.values:
                rows = rows.filter(outcome=outcome)
            records = list(rows[: ACTIVITY_PAGE + 1])
        except ApplicationError as exc:
            error = exc.message
    older = None
    if len(records) > ACTIVITY_PAGE:
        records = records[:ACTIVITY_PAGE]
        query = {k: v for k, v in params.items() if k not in ("before_at", "before_id")}
        query.update(before_at=records[-1]["settled_at"].isoformat(), before_id=records[-1]["id"])
        older = f"?{urlencode(query)}"
    export = {k: v for k, v in (("key", key_id),) if v}
    if start is not None:
        export["from"] = rfc3339(start)
    if end is not None:
        export["to"] = rfc3339(end)
    names = dict(ApiKey.objects.filter(user=user).values_list("id", "name"))
    for row in records:
        row["key_name"] = names.get(row["key_id"], "")
    context = {
        "records": records,
        "older": older,
        "error": error,
        "keys": ApiKey.objects.filter(user=user).order_by("name"),
        "outcomes": UsageOutcome.choices,
        "filters": {
            "from": params.get("from", ""),
            "to": params.get("to", ""),
            "key": key_id or "",
            "outcome": outcome or "",
        },
        "csv_url": "/api/user/requests.csv" + (f"?{urlencode(export)}" if export else ""),
    }
    return page(request, "console/activity.html", context, active="activity")


# --- registered panels --------------------------------------------------------------------------


@login_required
@require_GET
def panel_page(request: HttpRequest, slug: str) -> HttpResponse:
    panel = console_panel(slug)
    if panel is None:
        return not_found(request, "There is no such page in your console.", active="")
    context = {
        "panel": panel,
        "panel_template": panel.template,
        **panel.context(console_user(request)),
    }
    return page(request, "console/panel.html", context, active=slug)
