from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from accounts import service_tokens
from accounts.authentication import (
    ApiKeyAuthentication,
    ServiceTokenRefused,
    service_token_required,
)
from accounts.models import ServiceToken
from accounts.services import api_key_create, api_key_revoke
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


class OwnKeyView(APIView):
    authentication_classes = [ApiKeyAuthentication]

    def get(self, request: Request) -> Response:
        return Response({"email": request.user.email})  # type: ignore[union-attr]


def _call_drf(view: Any, method: str, **headers: str) -> Response:
    request = getattr(APIRequestFactory(), method)("/internal/v1/x", {}, format="json", **headers)
    return view.as_view()(request)


def _guard(**headers: str) -> int:
    """The live guard of the internal API, on a request with these headers."""
    request = RequestFactory().post("/internal/v1/x", {}, **headers)  # type: ignore[arg-type]
    return service_token_required(request.headers.get("Authorization", ""))


def _refusal(**headers: str) -> ServiceTokenRefused:
    with pytest.raises(ServiceTokenRefused) as refused:
        _guard(**headers)
    return refused.value


def _bad_headers() -> list[dict[str, str]]:
    return [
        {},
        {"HTTP_AUTHORIZATION": "Bearer svc-not-a-token"},
        {"HTTP_AUTHORIZATION": "Token whatever"},
    ]


@pytest.fixture
def token() -> tuple[ServiceToken, str]:
    return service_tokens.service_token_create(name="gateway")


class TestTheServiceTokenGuardOfTheInternalApi:
    def test_a_live_token_is_let_through(self, token: tuple[ServiceToken, str]) -> None:
        assert _guard(HTTP_AUTHORIZATION=f"Bearer {token[1]}") == token[0].pk

    @pytest.mark.parametrize("headers", _bad_headers())
    def test_a_missing_or_wrong_token_is_401_invalid_service_token(
        self, headers: dict[str, str]
    ) -> None:
        refused = _refusal(**headers)
        assert (refused.status, refused.code) == (401, "invalid_service_token")
        assert dict(refused.headers)["WWW-Authenticate"].startswith("Bearer")

    def test_a_revoked_token_is_refused_once_the_cache_lets_go(
        self, token: tuple[ServiceToken, str]
    ) -> None:
        auth = {"HTTP_AUTHORIZATION": f"Bearer {token[1]}"}
        assert _guard(**auth) == token[0].pk
        ServiceToken.objects.filter(pk=token[0].pk).update(revoked_at=timezone.now())
        # Verified tokens are remembered for CACHE_SECONDS per process; the admin's revoke
        # action clears this process's memory, as done here.
        service_tokens.clear_cache()
        assert _refusal(**auth).status == 401

    def test_an_end_users_api_key_or_login_token_is_refused(self) -> None:
        user = UserFactory.create()
        _, raw_key = api_key_create(user=user, name="k")
        _, login_token = AuthToken.objects.create(user)
        for credential in (f"Bearer {raw_key}", f"Token {login_token}", f"Bearer {login_token}"):
            assert _refusal(HTTP_AUTHORIZATION=credential).status == 401


class TestApiKeyAuthentication:
    def test_a_users_own_key_authenticates_them_by_either_header(self) -> None:
        user = UserFactory.create()
        _, raw = api_key_create(user=user, name="k")
        for headers in ({"HTTP_AUTHORIZATION": f"Bearer {raw}"}, {"HTTP_X_API_KEY": raw}):
            response = _call_drf(OwnKeyView, "get", **headers)
            assert response.status_code == 200
            assert response.data == {"email": user.email}

    def test_a_revoked_key_is_401_on_the_next_request(self) -> None:
        user = UserFactory.create()
        key, raw = api_key_create(user=user, name="k")
        assert _call_drf(OwnKeyView, "get", HTTP_X_API_KEY=raw).status_code == 200
        api_key_revoke(user=user, key_id=key.pk)
        response = _call_drf(OwnKeyView, "get", HTTP_X_API_KEY=raw)
        assert response.status_code == 401
        assert response.data["error"]["code"] == "invalid_api_key"

    def test_a_service_token_is_refused_on_the_user_api(
        self, token: tuple[ServiceToken, str]
    ) -> None:
        response = _call_drf(OwnKeyView, "get", HTTP_AUTHORIZATION=f"Bearer {token[1]}")
        assert response.status_code == 401
        assert response.data["error"]["code"] == "service_token_not_accepted"

    def test_no_key_at_all_is_401_not_authenticated(self) -> None:
        response = _call_drf(OwnKeyView, "get")
        assert response.status_code == 401
        assert response.data["error"]["code"] == "not_authenticated"


class TestAMisdirectedCredentialIsToldWhatToSendInstead:
    """Each answer names what to send, never DRF's "credentials were not provided"."""

    def _login_token(self) -> str:
        return AuthToken.objects.create(UserFactory.create())[1]

    def test_a_login_token_sent_as_bearer_is_told_to_use_the_token_scheme(
        self, client: Client
    ) -> None:
        raw = self._login_token()
        for path in ("/api/user/keys", "/api/user/credits", "/api/user/ledger"):
            response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {raw}")
            assert response.status_code == 401, path
            error = response.json()["error"]
            assert error["code"] == "wrong_auth_scheme", path
            assert "Authorization: Token TOKEN" in error["message"]
        assert client.get("/api/user/keys", HTTP_AUTHORIZATION=f"Token {raw}").status_code == 200

    def test_an_api_key_on_a_login_token_endpoint_is_told_what_the_endpoint_takes(
        self, client: Client
    ) -> None:
        _, raw = api_key_create(user=UserFactory.create(), name="k")
        for headers in ({"HTTP_AUTHORIZATION": f"Bearer {raw}"}, {"HTTP_X_API_KEY": raw}):
            for path in ("/api/user/keys", "/api/user/ledger", "/api/user/referrals"):
                response = client.get(path, **headers)  # type: ignore[arg-type]
                assert response.status_code == 401, path
                error = response.json()["error"]
                assert error["code"] == "api_key_not_accepted", path
                assert "GET /api/user/credits" in error["message"]
                assert "Authorization: Token TOKEN" in error["message"]
            # ... and is still taken where keys are.
            assert client.get("/api/user/credits", **headers).status_code == 200  # type: ignore[arg-type]

    def test_a_service_token_on_the_user_api_is_told_it_is_for_the_internal_api(
        self, client: Client, token: tuple[ServiceToken, str]
    ) -> None:
        for path in ("/api/user/keys", "/api/user/credits"):
            response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {token[1]}")
            assert response.status_code == 401, path
            error = response.json()["error"]
            assert error["code"] == "service_token_not_accepted", path
            assert "/internal/v1/" in error["message"]

    def test_a_public_endpoint_still_answers_a_request_carrying_a_key(
        self, client: Client, token: tuple[ServiceToken, str]
    ) -> None:
        _, raw = api_key_create(user=UserFactory.create(), name="k")
        for credential in (raw, token[1], "9f" * 32):
            response = client.get("/api/packages", HTTP_AUTHORIZATION=f"Bearer {credential}")
            assert response.status_code == 200, credential

    def test_nothing_or_a_made_up_value_keeps_the_generic_answers(self, client: Client) -> None:
        assert client.get("/api/user/keys").json()["error"]["code"] == "not_authenticated"
        made_up = client.get("/api/user/keys", HTTP_AUTHORIZATION="Bearer nonsense")
        assert made_up.json()["error"]["code"] == "not_authenticated"
        assert (
            client.get("/api/user/credits", HTTP_X_API_KEY="nonsense").json()["error"]["code"]
            == "invalid_api_key"
        )
