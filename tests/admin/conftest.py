"""Helpers for the admin console tests: staff personas with exactly the permissions a test
names, and the permission the adjust form checks."""

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.test import Client

from accounts.models import User
from credits.models import LedgerEntry

PASSWORD = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _plain_static_files(settings: Any) -> None:
    """With DEBUG off the settings use whitenoise's manifest storage, which needs
    `collectstatic` to have run; admin pages only need static URLs here."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def adjust_permission() -> Permission:
    """`credits.adjust_credits` (Meta.permissions of LedgerEntry). `migrate` creates it from the
    model through auth's post_migrate handler; get_or_create keeps the tests independent of
    whether a migration records it yet."""
    content_type = ContentType.objects.get_for_model(LedgerEntry)
    permission, _ = Permission.objects.get_or_create(
        content_type=content_type,
        codename="adjust_credits",
        defaults={"name": "Can adjust an account's credits"},
    )
    return permission


def permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".")
    if dotted == "credits.adjust_credits":
        return adjust_permission()
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def staff_user(email: str, *permissions: str) -> User:
    """A staff member (not a superuser) holding exactly `permissions` ("app.codename")."""
    user = User.objects.create_user(email=email, password=PASSWORD, is_staff=True)
    user.user_permissions.add(*(permission(p) for p in permissions))
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser() -> User:
    return User.objects.create_superuser(email="root@example.com", password=PASSWORD)


@pytest.fixture
def root(superuser: User) -> Client:
    """A superuser's client: every model permission (and, through is_superuser, the adjust one)."""
    return logged_in(superuser)


@pytest.fixture
def staff() -> Callable[..., Client]:
    """`staff("credits.view_ledgerentry", ...)`: a logged-in client of a staff member holding
    exactly those permissions."""
    counter = iter(range(1000))

    def make(*permissions: str) -> Client:
        return logged_in(staff_user(f"staff{next(counter)}@example.com", *permissions))

    return make


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless chromium driven by Playwright (the same launch as tests/usage).

    A context manager rather than a fixture: Playwright's sync API runs an event loop in this
    thread while the browser is open, during which Django refuses database calls, so a test
    writes its data before the `with` and checks the database after it."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
