"""Auto top-up and the saved card: the card (or "Add a card", which starts the setup-mode
Checkout), removing it, and the auto top-up form. The form is validated by the payments API's
own serializer and saved through the same service as `PUT /api/user/auto-topup`.

The monthly limit is shown as money (`$100.00`) and entered in the package's currency's major
unit (`100`, `99.50`, `$1,000`): people think in dollars, the API takes minor units, and the
conversion is exact (Decimal, the currency's own exponent from Babel), never a float."""

from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlencode

from babel.numbers import get_currency_precision
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from config.errors import ApplicationError
from credits.payments import autotopup
from credits.payments import services as payments
from credits.payments.client import payments_configured
from credits.payments.models import Package
from credits.payments.serializers import AutoTopupInputSerializer

from .common import console_user, login_required, page, validated
from .templatetags.console import money as format_money

# While Stripe's return says the card was saved but the webhook (and the card fetch after it)
# has not landed yet, the page reloads itself this often (a <meta refresh>: works without JS).
SETUP_WAIT_SECONDS = 2
# ... for about a minute; then it stops and says so (a lost webhook must not spin a tab forever).
SETUP_WAIT_TRIES = 30


def minor_units(text: str, currency: str) -> int:
    """`"$1,000.5"` in USD -> 100050. ValueError for what is not an amount of that currency
    (more decimals than the currency has, a sign, letters)."""
    cleaned = text.replace(",", "").replace("$", "").strip()
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(text) from None
    # Past 10**18 is no price (the API's limit is a bigint): refused before any big arithmetic.
    if not amount.is_finite() or amount < 0 or amount.adjusted() > 18:
        raise ValueError(text)
    minor = amount.scaleb(get_currency_precision(currency.upper()))
    if minor != minor.to_integral_value():
        raise ValueError(text)
    return int(minor)


def _auto_topup_page(
    request: HttpRequest, *, errors: dict[str, str] | None = None, status: int = 200
) -> HttpResponse:
    user = console_user(request)
    card = autotopup.payment_method_of(user=user)
    config = autotopup.auto_topup_of(user=user)
    setup = request.GET.get("setup", "")
    raw_try = request.GET.get("try", "")
    tries = int(raw_try) if raw_try.isdigit() and len(raw_try) < 4 else 0
    unconfirmed = setup == "success" and card is None
    context = {
        "card": card,
        "config": config,
        # A saved limit is in its package's currency (a configuration may lack a package).
        "currency": config.package.currency if config.package else "usd",
        "packages": payments.packages_visible(user=user),
        "configured": payments_configured(),
        "setup": setup,
        "waiting": unconfirmed and tries < SETUP_WAIT_TRIES,
        "gave_up": unconfirmed and tries >= SETUP_WAIT_TRIES,
        "wait_seconds": SETUP_WAIT_SECONDS,
        "next_try": f"?{urlencode({'setup': 'success', 'try': tries + 1})}",
        "errors": errors or {},
        "form": request.POST if request.method == "POST" and errors else None,
    }
    return page(request, "console/auto_topup.html", context, active="auto-topup", status=status)


@login_required
@never_cache
@require_GET
def auto_topup_page(request: HttpRequest) -> HttpResponse:
    return _auto_topup_page(request)


@require_GET
def setup_return(request: HttpRequest) -> HttpResponse:
    """Stripe's return from the setup-mode Checkout (`{DASHBOARD_URL}/settings/auto-topup`,
    the address `payment_method_setup_start` gives Stripe) opens the console's page."""
    setup = request.GET.get("setup", "")
    query = f"?{urlencode({'setup': setup})}" if setup in ("success", "cancelled") else ""
    return redirect(f"/my-credits/auto-topup{query}")


@login_required
@require_POST
def card_add_action(request: HttpRequest) -> HttpResponse:
    """Off to Stripe's page in setup mode; the card is stored by its webhook, not by the return."""
    try:
        url = autotopup.payment_method_setup_start(user=console_user(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("/my-credits/auto-topup")
    return redirect(url)


@login_required
@require_POST
def card_remove_action(request: HttpRequest) -> HttpResponse:
    autotopup.payment_method_remove(user=console_user(request))
    messages.success(request, "Card removed; auto top-up is off.")
    return redirect("/my-credits/auto-topup")


@login_required
@require_POST
def auto_topup_action(request: HttpRequest) -> HttpResponse:
    user = console_user(request)
    post = request.POST
    slug = post.get("package", "")
    package = Package.objects.visible_to(user).filter(slug=slug).first()
    body: dict[str, Any] = {
        "enabled": post.get("enabled") == "on",
        "threshold": post.get("threshold", "").replace(",", "").strip(),
        "package": slug,
        "monthly_limit": None,
    }
    raw_limit = post.get("monthly_limit", "").strip()
    errors: dict[str, str] = {}
    if raw_limit:
        try:
            # An unknown package is the service's error; its amount is read as dollars meanwhile.
            body["monthly_limit"] = minor_units(raw_limit, package.currency if package else "usd")
        except ValueError:
            errors["monthly_limit"] = "Enter an amount such as 100 or 99.50."
        else:
            if package is not None and body["monthly_limit"] < package.price_amount:
                # The service refuses it too, in minor units; say it in money here.
                price = format_money(package.price_amount, package.currency)
                errors["monthly_limit"] = f"At least the package's price, {price}."
    data, invalid = validated(AutoTopupInputSerializer, body)
    errors = {**invalid, **errors}
    if data is None or errors:
        return _auto_topup_page(request, errors=errors, status=400)
    try:
        config = autotopup.auto_topup_set(
            user=user,
            enabled=data["enabled"],
            threshold=data["threshold"],
            package_slug=data["package"],
            monthly_limit=data["monthly_limit"],
        )
    except ApplicationError as exc:
        message = exc.message
        if isinstance(exc, autotopup.PaymentMethodRequired):
            message = "Save a card first: “Add a card” above."  # the API's names an endpoint
        return _auto_topup_page(
            request, errors={exc.field or "form": message}, status=exc.status_code
        )
    messages.success(
        request,
        f"Auto top-up is on: below {config.threshold:,} credits, "
        f"{package.name if package else slug} is bought."
        if config.enabled and config.threshold is not None
        else "Auto top-up settings saved; it is off.",
    )
    return redirect("/my-credits/auto-topup")
