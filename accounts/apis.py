"""The accounts API: register, login, logout, API keys (CONTRACT.md, "Accounts and keys"), and
verification, password reset and change, address change, the user and its deletion (part 2,
"Accounts for the public").

Views only validate input, call one service and serialize the result."""

from typing import Any

from django.contrib.auth import authenticate, logout
from drf_spectacular.utils import OpenApiResponse, extend_schema
from knox.models import AuthToken
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import ApplicationError, error_responses

from . import serializers as s
from .login_sessions import (
    login_session_current,
    login_session_end,
    login_session_end_by_id,
    login_session_password_changed,
    login_session_start,
    login_sessions_live,
)
from .models import ApiKey, User
from .services import (
    api_key_create,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
    email_change_request,
    email_verification_resend,
    email_verify,
    password_change,
    password_reset_confirm,
    password_reset_request,
    user_delete,
    user_register,
)
from .throttles import (
    EmailChangeThrottle,
    LoginClientThrottle,
    LoginEmailThrottle,
    LoginThrottle,
    PasswordResetClientThrottle,
    PasswordResetEmailThrottle,
    SignupThrottle,
    VerifyResendThrottle,
)


class _AnonymousApi(APIView):
    """An endpoint for callers without a login (no credentials are read, so no CSRF either)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]


class RegisterApi(_AnonymousApi):
    @extend_schema(
        operation_id="auth_register",
        request=s.RegisterInputSerializer,
        responses={
            201: s.UserEnvelopeSerializer,
            **error_responses(
                400,
                429,
                s400="invalid_json, missing_field, invalid_email, disposable_email, email_taken, "
                "weak_password, invalid_invite_code, self_referral",
                s429="throttled: SIGNUP_LIMIT_PER_IP_PER_HOUR registrations from this client "
                "address in the last hour; see Retry-After",
            ),
        },
        tags=["accounts"],
        summary="Create an account and mail a verification link; the signup grant follows "
        "the verification (EMAIL_VERIFICATION=required) or comes at once (off).",
    )
    def post(self, request: Request) -> Response:
        # Checked here rather than through throttle_classes: only an accepted registration
        # counts (`record` below), so a mistyped form costs nobody one of their registrations.
        limit = SignupThrottle()
        if not limit.allow_request(request, self):
            self.throttled(request, limit.wait() or 1)
        data = _valid(s.RegisterInputSerializer, request)
        user = user_register(
            email=data["email"], password=data["password"], invite_code=data["invite_code"] or ""
        )
        limit.record()
        return Response({"user": s.UserSerializer(user).data}, status=status.HTTP_201_CREATED)


class LoginApi(_AnonymousApi):
    throttle_classes = [LoginThrottle, LoginEmailThrottle, LoginClientThrottle]

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
        # knox stores only a digest of the token; a browser login gets none (see
        # accounts.login_sessions).
        _, token = login_session_start(
            request=request._request, user=user, with_token=not data["session_only"]
        )
        return Response({"token": token, "user": s.UserSerializer(user).data})


class LogoutApi(APIView):
    @extend_schema(
        operation_id="auth_logout",
        request=None,
        responses={204: OpenApiResponse(description="Logged out."), **error_responses(401)},
        tags=["accounts"],
        summary="End this login: its token and its session cookie, whichever one is sent.",
    )
    def post(self, request: Request) -> Response:
        current = login_session_current(request=request._request, auth=request.auth)
        if current is not None:
            login_session_end(login_session=current)
        elif isinstance(request.auth, AuthToken):
            request.auth.delete()
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class VerifyEmailApi(_AnonymousApi):
    @extend_schema(
        operation_id="auth_verify_email",
        request=s.TokenInputSerializer,
        responses={
            200: s.UserEnvelopeSerializer,
            **error_responses(
                400, s400="invalid_json, missing_field, invalid_token, email_taken (a new address)"
            ),
        },
        tags=["accounts"],
        summary="Verify an address with the token of the mailed link (no login needed).",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.TokenInputSerializer, request)
        user = email_verify(token=data["token"])
        return Response({"user": s.UserSerializer(user).data})


class VerifyEmailResendApi(APIView):
    throttle_classes = [VerifyResendThrottle]

    @extend_schema(
        operation_id="auth_verify_email_resend",
        request=None,
        responses={
            202: OpenApiResponse(description="A new link is on its way (none if verified)."),
            **error_responses(401, 429, s429="throttled: see Retry-After"),
        },
        tags=["accounts"],
        summary="Mail a new verification link to the user's address.",
    )
    def post(self, request: Request) -> Response:
        email_verification_resend(user=_user(request))
        return Response({}, status=status.HTTP_202_ACCEPTED)


class PasswordResetApi(_AnonymousApi):
    throttle_classes = [PasswordResetClientThrottle, PasswordResetEmailThrottle]

    @extend_schema(
        operation_id="auth_password_reset",
        request=s.EmailInputSerializer,
        responses={
            202: OpenApiResponse(
                description="The same answer whether or not an account has this address."
            ),
            **error_responses(400, 429, s400="invalid_json, missing_field", s429="throttled"),
        },
        tags=["accounts"],
        summary="Mail a password reset link (valid 1 hour, usable once) if the address has an "
        "account.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.EmailInputSerializer, request)
        password_reset_request(email=data["email"])
        return Response({}, status=status.HTTP_202_ACCEPTED)


class PasswordResetConfirmApi(_AnonymousApi):
    throttle_classes = [PasswordResetClientThrottle]

    @extend_schema(
        operation_id="auth_password_reset_confirm",
        request=s.PasswordResetConfirmInputSerializer,
        responses={
            200: OpenApiResponse(description="Password set; every login token has ended."),
            **error_responses(
                400,
                429,
                s400="invalid_json, missing_field, invalid_token, weak_password",
                s429="throttled",
            ),
        },
        tags=["accounts"],
        summary="Set a new password with a reset link's token; ends every login and session.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.PasswordResetConfirmInputSerializer, request)
        password_reset_confirm(token=data["token"], password=data["password"])
        return Response({})


class PasswordChangeApi(APIView):
    @extend_schema(
        operation_id="auth_password_change",
        request=s.PasswordChangeInputSerializer,
        responses={
            204: OpenApiResponse(description="Changed; the user's other logins have ended."),
            **error_responses(
                400, 401, s400="invalid_json, missing_field, invalid_credentials, weak_password"
            ),
        },
        tags=["accounts"],
        summary="Change the password; every other login token and session of the user ends.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.PasswordChangeInputSerializer, request)
        user = password_change(
            user=_user(request),
            current_password=data["current_password"],
            new_password=data["new_password"],
            keep_token=request.auth if isinstance(request.auth, AuthToken) else None,
            keep_login=login_session_current(request=request._request, auth=request.auth),
        )
        # The hash change ends every session; this login's carries on with the new hash.
        if request.session.session_key:
            login_session_password_changed(request=request._request, user=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class UserApi(APIView):
    @extend_schema(
        operation_id="user_read",
        responses={200: s.UserDetailSerializer, **error_responses(401)},
        tags=["accounts"],
        summary="The logged-in user.",
    )
    def get(self, request: Request) -> Response:
        return Response(s.UserDetailSerializer(_user(request)).data)

    @extend_schema(
        operation_id="user_delete",
        request=s.PasswordInputSerializer,
        responses={
            204: OpenApiResponse(description="Deleted: see README, 'Deleting an account'."),
            **error_responses(400, 401, s400="invalid_json, missing_field, invalid_credentials"),
        },
        tags=["accounts"],
        summary="Delete the account: keys revoked, logins ended, personal data replaced by "
        "placeholders, unspent credits forfeited; the ledger and usage stay.",
    )
    def delete(self, request: Request) -> Response:
        data = _valid(s.PasswordInputSerializer, request)
        user_delete(user=_user(request), password=data["password"])
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EmailChangeApi(APIView):
    throttle_classes = [EmailChangeThrottle]

    @extend_schema(
        operation_id="user_email_change",
        request=s.EmailChangeInputSerializer,
        responses={
            202: OpenApiResponse(
                description="A link went to the new address, a notice to the old one."
            ),
            **error_responses(
                400,
                401,
                429,
                s400="invalid_json, missing_field, invalid_credentials, invalid_email, "
                "disposable_email, email_taken",
                s429="throttled",
            ),
        },
        tags=["accounts"],
        summary="Move to another address; it changes when the link mailed there is followed.",
    )
    def post(self, request: Request) -> Response:
        data = _valid(s.EmailChangeInputSerializer, request)
        email_change_request(user=_user(request), email=data["email"], password=data["password"])
        return Response({}, status=status.HTTP_202_ACCEPTED)


class LoginSessionsApi(APIView):
    @extend_schema(
        operation_id="user_sessions_list",
        responses={200: s.LoginSessionSerializer(many=True), **error_responses(401)},
        tags=["accounts"],
        summary="The user's live logins (tokens and browser sessions), most recent use first.",
    )
    def get(self, request: Request) -> Response:
        current = login_session_current(request=request._request, auth=request.auth)
        rows = login_sessions_live(user=_user(request))
        context = {"current_id": current.pk if current else None}
        return Response(s.LoginSessionSerializer(rows, many=True, context=context).data)


class LoginSessionDetailApi(APIView):
    @extend_schema(
        operation_id="user_sessions_end",
        request=None,
        responses={
            204: OpenApiResponse(description="Ended: its token and its cookie stop working."),
            **error_responses(401, 404, s404="session_not_found: no such login of this user"),
        },
        tags=["accounts"],
        summary="End one login (this one too: that is a logout).",
    )
    def delete(self, request: Request, session_id: str) -> Response:
        login_session_end_by_id(user=_user(request), login_session_id=session_id)
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
            budget=data.get("budget"),
            allowed_models=data.get("allowed_models"),
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

    @extend_schema(
        operation_id="user_keys_update",
        request=s.ApiKeyUpdateInputSerializer,
        responses={
            200: s.ApiKeySerializer,
            **error_responses(400, 401, 404, s404="key_not_found: no such live key of this user"),
        },
        tags=["api keys"],
        summary="Change a key's name, budget or allowed models.",
    )
    def patch(self, request: Request, key_id: str) -> Response:
        data = _valid(s.ApiKeyUpdateInputSerializer, request)
        key = api_key_update(user=_user(request), key_id=key_id, **data)
        return Response(s.ApiKeySerializer(key).data)


class ApiKeyRotateApi(APIView):
    @extend_schema(
        operation_id="user_keys_rotate",
        request=s.ApiKeyRotateInputSerializer,
        responses={
            201: s.ApiKeyRotatedSerializer,
            **error_responses(400, 401, 404, s404="key_not_found: no such live key of this user"),
        },
        tags=["api keys"],
        summary="A new secret for the same key; the previous one works until previous_expires_at.",
    )
    def post(self, request: Request, key_id: str) -> Response:
        data = _valid(s.ApiKeyRotateInputSerializer, request)
        key, raw = api_key_rotate(
            user=_user(request), key_id=key_id, grace_seconds=data["grace_seconds"]
        )
        body = s.ApiKeyRotatedSerializer(key, context={"raw_key": raw}).data
        return Response(body, status=status.HTTP_201_CREATED)


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
