"""Admin page reads stop after ADMIN_STATEMENT_TIMEOUT_MS (config/admin_site.py): a clear 503
page, never a 500, and nothing left behind on the connection."""

from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from accounts.models import User

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("statement_timeout is PostgreSQL's")


def statement_timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        (value,) = cursor.fetchone()
    return str(value)


def slow_view(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(2)")
    return HttpResponse("done")


def seen_timeout_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(statement_timeout())


def staff_request(method: str = "get") -> HttpRequest:
    request = getattr(RequestFactory(), method)("/admin/some/page/")
    request.user = User.objects.create_superuser(email=f"root-{method}@example.com", password="x")
    return request


def test_a_read_that_runs_too_long_is_stopped_with_a_clear_503(settings: Any) -> None:
    settings.ADMIN_STATEMENT_TIMEOUT_MS = 100
    before = statement_timeout()
    response = admin.site.admin_view(slow_view)(staff_request())
    assert response.status_code == 503
    html = response.content.decode()
    assert "took more than 0.1 seconds" in html
    assert "filter by user" in html
    assert "no-store" in response["Cache-Control"]
    # SET LOCAL ended with the page's transaction: the connection is as it was.
    assert statement_timeout() == before
    assert connection.in_atomic_block is False


def test_every_admin_read_runs_under_the_limit_and_writes_do_not(settings: Any) -> None:
    settings.ADMIN_STATEMENT_TIMEOUT_MS = 1234
    view = admin.site.admin_view(seen_timeout_view)
    assert view(staff_request()).content == b"1234ms"
    assert view(staff_request("post")).content.decode() != "1234ms"


def test_zero_turns_the_limit_off(settings: Any) -> None:
    settings.ADMIN_STATEMENT_TIMEOUT_MS = 0
    before = statement_timeout()
    view = admin.site.admin_view(seen_timeout_view)
    assert view(staff_request()).content.decode() == before
