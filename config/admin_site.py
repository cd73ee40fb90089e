"""The admin site: Django's, with two-factor login (django-otp) when `ADMIN_REQUIRE_2FA` is on.

On (the default with DEBUG off), a staff member logs in with password and a one-time code from
their TOTP device or one of their single-use recovery codes (django-otp tries each of the user's
devices), and a session that was not verified by a device is treated as not staff: every admin
page sends it back to the login. Off (local development, and the test suite's default: its
admin tests log in with `force_login`), it is Django's admin login. Devices are enrolled with
`python manage.py staff_2fa_enrol --email ...` (README, "Staff and the admin").

Installed as the default site through `config.admin_apps.BillingAdminConfig` (in INSTALLED_APPS
in place of `django.contrib.admin`), so every app keeps registering on `django.contrib.admin.site`.

**A statement timeout for every page read** (issue 23): each admin view answering a GET or HEAD
runs in one transaction that starts with `SET LOCAL statement_timeout` (the setting
`ADMIN_STATEMENT_TIMEOUT_MS`, 3 s by default; PostgreSQL only), and is rendered inside it. A
statement that runs longer is cancelled by PostgreSQL and the page answers 503 with a plain
message saying what to narrow, never a 500. `SET LOCAL` ends with the transaction, so nothing is
left on a pooled connection (PgBouncer in transaction mode hands it to others). Writes (POST)
are not wrapped: the services they call run their own durable transactions, which cannot nest.
"""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.db import OperationalError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import SimpleTemplateResponse
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite

# PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout` (query_canceled).
QUERY_CANCELED = "57014"
READS = ("GET", "HEAD")


def statement_timeout_ms() -> int:
    return int(getattr(settings, "ADMIN_STATEMENT_TIMEOUT_MS", 0) or 0)


def _cancelled(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == QUERY_CANCELED


def timeout_response(*, site_header: str, path: str, limit_ms: int) -> HttpResponse:
    """The page a cancelled read answers: rendered without the request (no context processor
    may touch the database: the transaction is aborted), 503, not cached."""
    html = render_to_string(
        "admin/statement_timeout.html",
        {
            "site_header": site_header,
            "title": "This page took too long",
            "path": path,
            "limit_seconds": f"{limit_ms / 1000:g}",
        },
    )
    response = HttpResponse(html, status=503)
    response["Cache-Control"] = "no-store"
    return response


def time_limited(view: Callable[..., HttpResponse], *, site_header: str) -> Callable[..., Any]:
    """`view`, with its GET and HEAD answered inside one transaction whose statements stop
    after `ADMIN_STATEMENT_TIMEOUT_MS` (module docstring). The response is rendered inside it:
    a TemplateResponse runs its list's queries while rendering."""

    @wraps(view)
    def inner(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limit_ms = statement_timeout_ms()
        if request.method not in READS or limit_ms <= 0 or connection.vendor != "postgresql":
            return view(request, *args, **kwargs)
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(f"SET LOCAL statement_timeout = {limit_ms:d}")
                response = view(request, *args, **kwargs)
                if isinstance(response, SimpleTemplateResponse):
                    response.render()
                return response
        except OperationalError as exc:
            if not _cancelled(exc):
                raise
            return timeout_response(site_header=site_header, path=request.path, limit_ms=limit_ms)

    return inner


def two_factor_required() -> bool:
    return bool(getattr(settings, "ADMIN_REQUIRE_2FA", True))


class BillingAdminSite(OTPAdminSite):
    # Read per request, not at import: the setting decides, and tests can switch it.
    @property
    def login_form(self) -> Any:
        return OTPAdminAuthenticationForm if two_factor_required() else AdminAuthenticationForm

    @property
    def login_template(self) -> Any:
        return "otp/admin111/login.html" if two_factor_required() else None

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)

    def has_permission(self, request: HttpRequest) -> bool:
        if two_factor_required():
            return super().has_permission(request)
        return AdminSite.has_permission(self, request)

    def admin_view(self, view: Callable[..., Any], cacheable: bool = False) -> Callable[..., Any]:
        # Every admin page (the index, lists, forms, the apps' own views) comes through here.
        limited = time_limited(view, site_header=str(self.site_header))
        return super().admin_view(limited, cacheable)


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """A page staff read and never write: rows that services, Stripe or the customer's own
    actions write (events, deliveries, auto top-up settings, the finance figures)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
