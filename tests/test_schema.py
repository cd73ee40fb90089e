import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

ACCOUNTS_PATHS = {
    "/api/auth/register": {"post"},
    "/api/auth/login": {"post"},
    "/api/auth/logout": {"post"},
    "/api/user/keys": {"get", "post"},
    "/api/user/keys/{key_id}": {"delete"},
    "/api/auth/verify-email": {"post"},
    "/api/auth/verify-email/resend": {"post"},
    "/api/auth/password-reset": {"post"},
    "/api/auth/password-reset/confirm": {"post"},
    "/api/auth/password": {"post"},
    "/api/user": {"get", "delete"},
    "/api/user/email": {"post"},
}


def test_the_schema_is_served_as_json_to_anonymous_callers(client: Client) -> None:
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].split(";")[0] == "application/json"
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    for path, methods in ACCOUNTS_PATHS.items():
        assert methods <= set(schema["paths"][path]), path


def test_the_schema_documents_requests_responses_and_errors_of_the_accounts_api(
    client: Client,
) -> None:
    schema = client.get("/api/schema/").json()
    register = schema["paths"]["/api/auth/register"]["post"]
    assert "requestBody" in register
    assert {"201", "400"} <= set(register["responses"])
    login = schema["paths"]["/api/auth/login"]["post"]
    assert {"200", "400", "429"} <= set(login["responses"])
    create_key = schema["paths"]["/api/user/keys"]["post"]
    assert {"201", "400", "401"} <= set(create_key["responses"])
    assert {"204", "401", "404"} <= set(
        schema["paths"]["/api/user/keys/{key_id}"]["delete"]["responses"]
    )
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert "error" in error["properties"]
    created = schema["components"]["schemas"]["ApiKeyCreated"]["properties"]
    assert {"id", "name", "prefix", "key", "created_at", "expires_at"} <= set(created)


def test_the_docs_page_renders_for_anonymous_callers(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()


def test_static_files_are_served_by_whitenoise_with_debug_off(
    client: Client, settings: object
) -> None:
    assert not settings.DEBUG  # type: ignore[attr-defined]
    page = client.get("/admin/login/")
    assert page.status_code == 200
    css = re.search(r'href="(/static/admin/css/[^"]+\.css)"', page.content.decode())
    assert css, "the admin login page links a stylesheet"
    response = client.get(css.group(1))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")
    body = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert len(body) > 100
    docs_asset = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css")
    assert docs_asset.status_code == 200
