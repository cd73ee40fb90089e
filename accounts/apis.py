"""The accounts API: register, login, logout and API keys (CONTRACT.md, "Accounts and keys").

Views only validate input, call one service and serialize the result."""

from typing import Any

from django.contrib.auth import authenticate, login, logout
from drf_spectacular.utils import OpenApiResponse, extend_schema
from knox.models import AuthToken
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError, error_responses

from . import serializers as s
from .models import ApiKey, User
from .services import api_key_create, api_key_revoke, user_register
from .throttles import LoginEmailThrottle, LoginThrottle


class RegisterApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_register",
        request=s.RegisterInputSerializer,
        responses={
            201: s.UserEnvelopeSerializer,
            **error_responses(
                400,
                s400="invalid_json, missing_field, invalid_email, email_taken, weak_password, "
                "invalid_invite_code, self_referral",
            ),
        },
        tags=["accounts"],
        summary="Create an account; it starts with the signup grant.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.RegisterInputSerializer, request)
        user = user_register(
            email=data["email"], password=data["password"], invite_code=data["invite_code"] or ""
        )
        return Response({"user": s.UserSerializer(user).data}, status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginThrottle, LoginEmailThrottle]

    @extend_schema(
        operation_id="auth_login",
        request=s.LoginInputSerializer,
        responses={
            200: s.LoginOutputSerializer,
            **error_responses(
                400,
                429,
                s400="invalid_json, missing_field, invalid_credentials",
                s429="throttled: too many login attempts; see Retry-After",
            ),
        },
        tags=["accounts"],
        summary="Log in: a new token (one per login) and a session cookie.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.LoginInputSerializer, request)
        user = authenticate(
            request._request, username=data["email"].strip(), password=data["password"]
        )
        if user is None:  # unknown email, wrong password and inactive user look alike
            raise ApplicationError("Email or password is incorrect.", code="invalid_credentials")
        _, token = AuthToken.objects.create(user)  # knox stores only a digest of `token`
        login(request._request, user)
        return Response({"token": token, "user": s.UserSerializer(user).data})


class LogoutApi(APIView):
    @extend_schema(
        operation_id="auth_logout",
        request=None,
        responses={204: OpenApiResponse(description="Logged out."), **error_responses(401)},
        tags=["accounts"],
        summary="End this login: its token and the session.",
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, AuthToken):
            request.auth.delete()
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeysApi(APIView):
    @extend_schema(
        operation_id="user_keys_list",
        responses={200: s.ApiKeySerializer(many=True), **error_responses(401)},
        tags=["api keys"],
        summary="The user's live API keys, newest first.",
    )
    def get(self, request: Request) -> Response:
        keys = ApiKey.objects.filter(user=_user(request)).live().order_by("-created_at")
        return Response(s.ApiKeySerializer(keys, many=True).data)

    @extend_schema(
        operation_id="user_keys_create",
        request=s.ApiKeyCreateInputSerializer,
        responses={
            201: s.ApiKeyCreatedSerializer,
            **error_responses(
                400,
                401,
                429,
                s400="invalid_json, missing_field, invalid_request (name too long, "
                "expires_at not in the future), too_many_keys",
                s429="throttled: KEY_CREATIONS_PER_HOUR keys were made in the last hour; "
                "see Retry-After",
            ),
        },
        tags=["api keys"],
        summary="Create an API key; the full key is in this response only.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.ApiKeyCreateInputSerializer, request)
        key, raw = api_key_create(
            user=_user(request),
            name=data["name"],
            expires_at=data["expires_at"],
        )
        body = s.ApiKeyCreatedSerializer(key, context={"raw_key": raw}).data
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyDetailApi(APIView):
    @extend_schema(
        operation_id="user_keys_revoke",
        request=None,
        responses={
            204: OpenApiResponse(description="Revoked (also when it already was)."),
            **error_responses(401, 404, s404="key_not_found: no such key of this user"),
        },
        tags=["api keys"],
        summary="Revoke an API key; the next request with it is refused.",
    )
    def delete(self, request: Request, key_id: str) -> Response:
        api_key_revoke(user=_user(request), key_id=key_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _valid(serializer_class: type[Any], request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise ApplicationError("The body must be a JSON object.", code="invalid_json")
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _user(request: Request) -> User:
    """The logged-in user of a view that requires one (IsAuthenticated, the default)."""
    assert isinstance(request.user, User)
    return request.user
