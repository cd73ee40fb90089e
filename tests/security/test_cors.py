"""The dashboard, served from another origin, may call the user API from a browser
(CORS_ALLOWED_ORIGINS); no other origin may, and nothing but the user API answers CORS at all."""

import json
from typing import Any

import pytest
from django.test import Client, override_settings
from knox.models import AuthToken

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

DASHBOARD = "https://dashboard.example.com"


def _header_names(value: str) -> set[str]:
    return {name.strip().lower() for name in value.split(",")}


@override_settings(CORS_ALLOWED_ORIGINS=[DASHBOARD])
def test_the_dashboards_preflight_is_answered_with_credentials_and_its_headers() -> None:
    response = Client().options(
        "/api/user/keys",
        HTTP_ORIGIN=DASHBOARD,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == DASHBOARD
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= _header_names(
        response["Access-Control-Allow-Headers"]
    )
    assert "POST" in response["Access-Control-Allow-Methods"]


@override_settings(CORS_ALLOWED_ORIGINS=[DASHBOARD])
def test_the_dashboards_calls_name_it_and_expose_the_headers_it_reads() -> None:
    user = UserFactory.create(email="cora@example.com")
    client = Client()
    client.force_login(user)
    response = client.get("/api/user/credits", HTTP_ORIGIN=DASHBOARD)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == DASHBOARD
    # A browser shows a cross-origin script only the headers named here.
    assert "X-Credits-Remaining" in response
    assert _header_names(response["Access-Control-Expose-Headers"]) == {
        "retry-after",
        "x-credits-remaining",
        "x-request-id",
    }


@override_settings(CORS_ALLOWED_ORIGINS=[DASHBOARD])
def test_another_origin_gets_no_cors_answer() -> None:
    response = Client().options(
        "/api/user/keys",
        HTTP_ORIGIN="https://evil.example.net",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "Access-Control-Allow-Origin" not in response
    assert "Access-Control-Allow-Credentials" not in response


@override_settings(CORS_ALLOWED_ORIGINS=[DASHBOARD])
@pytest.mark.parametrize("path", ["/admin/", "/internal/v1/authorize", "/metrics"])
def test_only_the_user_api_answers_cors(path: str) -> None:
    response = Client().options(
        path, HTTP_ORIGIN=DASHBOARD, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in response


MALLORY = {"email": "mallory@example.com", "password": "pw-mallory"}


@pytest.mark.parametrize(
    "form",
    [
        {"data": MALLORY},  # multipart/form-data, the test client's default
        {
            "data": b"email=mallory%40example.com&password=pw-mallory",
            "content_type": "application/x-www-form-urlencoded",
        },
        {"data": json.dumps(MALLORY).encode(), "content_type": "text/plain"},
    ],
    ids=["multipart", "urlencoded", "text-plain"],
)
def test_a_cross_site_form_cannot_log_a_browser_in(form: dict[str, Any]) -> None:
    # Login CSRF: a page elsewhere makes the victim's browser submit a form that logs it into
    # the attacker's account. Login takes no CSRF token (API clients have no CSRF cookie); what
    # refuses such a form is that login reads JSON only: a form can send only these three
    # content types without a CORS preflight, and no other origin passes a preflight.
    UserFactory.create(**MALLORY)
    response = Client().post("/api/auth/login", HTTP_ORIGIN="https://evil.example.net", **form)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "sessionid" not in response.cookies
    assert not AuthToken.objects.exists()
