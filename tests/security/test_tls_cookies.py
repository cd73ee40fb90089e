"""Behind the TLS load balancer (it sends `X-Forwarded-Proto: https`, which
SECURE_PROXY_SSL_HEADER trusts) every cookie is `Secure` and HSTS is sent, whatever
SECURE_SSL_REDIRECT says; over plain HTTP (local development) neither, so logging in on
http://localhost keeps working."""

import pytest
from django.test import Client, override_settings

from .conftest import Person

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


@override_settings(SECURE_SSL_REDIRECT=False)
def test_cookies_are_secure_and_hsts_is_sent_behind_the_tls_load_balancer(alice: Person) -> None:
    browser = Client()
    login = browser.post(
        "/api/auth/login",
        {"email": alice.user.email, "password": PASSWORD},
        content_type="application/json",
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert login.status_code == 200
    assert login.cookies["sessionid"]["secure"] is True
    assert login.cookies["sessionid"]["httponly"] is True
    assert login.headers["Strict-Transport-Security"].startswith("max-age=31536000")

    page = Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert page.cookies["csrftoken"]["secure"] is True
    assert "Strict-Transport-Security" in page.headers


@override_settings(SECURE_SSL_REDIRECT=False)
def test_cookies_stay_usable_over_plain_http_in_development(alice: Person) -> None:
    browser = Client()
    login = browser.post(
        "/api/auth/login",
        {"email": alice.user.email, "password": PASSWORD},
        content_type="application/json",
    )
    assert login.status_code == 200
    assert not login.cookies["sessionid"]["secure"]
    assert "Strict-Transport-Security" not in login.headers
