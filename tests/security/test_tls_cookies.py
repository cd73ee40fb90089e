"""Behind the TLS load balancer (it sends `X-Forwarded-Proto: https`, which
SECURE_PROXY_SSL_HEADER trusts) every cookie is `Secure` and HSTS is sent, whatever
SECURE_SSL_REDIRECT says; over plain HTTP (local development) neither, so logging in on
http://localhost keeps working."""

from typing import Any

import pytest
from django.test import Client, override_settings

from .conftest import Person

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"


def _login(person: Person, **headers: str) -> Any:
    response = Client().post(
        "/api/auth/login",
        {"email": person.user.email, "password": PASSWORD},
        content_type="application/json",
        **headers,  # type: ignore[arg-type]
    )
    assert response.status_code == 200
    return response


@override_settings(SECURE_SSL_REDIRECT=False)
def test_cookies_are_secure_and_hsts_is_sent_behind_the_tls_load_balancer(alice: Person) -> None:
    login = _login(alice, HTTP_X_FORWARDED_PROTO="https")
    assert login.cookies["sessionid"]["secure"] is True
    assert login.cookies["sessionid"]["httponly"] is True
    assert login.headers["Strict-Transport-Security"].startswith("max-age=31536000")

    page = Client().get("/admin/login/", HTTP_X_FORWARDED_PROTO="https")
    assert page.cookies["csrftoken"]["secure"] is True
    assert "Strict-Transport-Security" in page.headers


@override_settings(SECURE_SSL_REDIRECT=False)
def test_cookies_stay_usable_over_plain_http_in_development(alice: Person) -> None:
    login = _login(alice)
    assert not login.cookies["sessionid"]["secure"]
    assert "Strict-Transport-Security" not in login.headers
