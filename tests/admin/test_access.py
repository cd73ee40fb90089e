"""Only staff reach the console, and each staff member sees only the models they hold a
permission for."""

from collections.abc import Callable

import pytest
from django.test import Client

from tests.factories import registered_user

from .conftest import logged_in

pytestmark = pytest.mark.django_db

PAGES = [
    "/admin/",
    "/admin/accounts/user/",
    "/admin/credits/ledgerentry/",
    "/admin/gateway/tier/",
    "/admin/payments/purchase/",
    "/admin/referrals/referral/",
]


@pytest.mark.parametrize("url", PAGES)
def test_anonymous_visitors_and_customers_are_sent_to_the_login_page(url: str) -> None:
    customer = registered_user(email="customer@example.com")
    for client in (Client(), logged_in(customer)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_staff_see_only_the_models_they_may_view(staff: Callable[..., Client]) -> None:
    support = staff("accounts.view_user", "credits.view_ledgerentry")
    index = support.get("/admin/").content.decode()
    assert 'href="/admin/accounts/user/"' in index
    assert 'href="/admin/credits/ledgerentry/"' in index
    assert 'href="/admin/gateway/tier/"' not in index
    assert 'href="/admin/payments/purchase/"' not in index
    assert support.get("/admin/gateway/tier/").status_code == 403
    assert support.get("/admin/payments/purchase/").status_code == 403
    assert support.get("/admin/accounts/user/").status_code == 200
