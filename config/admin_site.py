"""The admin site: Django's, with two-factor login (django-otp) when `ADMIN_REQUIRE_2FA` is on.

On (the default with DEBUG off), a staff member logs in with password and a one-time code from
their TOTP device or one of their single-use recovery codes (django-otp tries each of the user's
devices), and a session that was not verified by a device is treated as not staff: every admin
page sends it back to the login. Off (local development, and the test suite's default: its
admin tests log in with `force_login`), it is Django's admin login. Devices are enrolled with
`python manage.py staff_2fa_enrol --email ...` (README, "Staff and the admin").

Installed as the default site through `config.admin_apps.BillingAdminConfig` (in INSTALLED_APPS
in place of `django.contrib.admin`), so every app keeps registering on `django.contrib.admin.site`.
"""

from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.sites import AdminSite
from django.http import HttpRequest
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite


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


class ReadOnlyModelAdmin(admin.ModelAdmin):
    """A page staff read and never write: rows that services, Stripe or the customer's own
    actions write (events, deliveries, auto top-up settings, the finance figures)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
