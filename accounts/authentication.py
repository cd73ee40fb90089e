"""Authentication for the three kinds of caller.

- The dashboard: login tokens (`Authorization: Token ...`, knox's, through
  `accounts.login_tokens.LoginTokenAuthentication`) and the session cookie, DRF's defaults in
  settings.
- End users' API keys (`Authorization: Bearer sk-...` or `X-API-Key`): `ApiKeyAuthentication`,
  accepted only by `GET /api/user/credits`. A service token in that header is refused.
- The gateway's service token (`Authorization: Bearer svc-...`) on `/internal/v1/`:
  `ServiceTokenAuthentication` + `IsServiceToken` for DRF views, or `require_service_token`
  for plain Django views (the authorize/settle hot path skips DRF's per-request machinery).
  Both answer 401 `invalid_service_token` for a missing, wrong or revoked token, and neither
  accepts an end user's API key or login token.

Usage on a plain view::

    @require_service_token
    def authorize(request: HttpRequest) -> JsonResponse:
        request.service_token_id  # the verified token's id
"""

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from config.errors import error_response

from .api_keys import api_key_from_request, api_key_resolve
from .login_tokens import credential_misdirected
from .models import ApiKey, User
from .service_tokens import service_token_verify

logger = logging.getLogger(__name__)

INVALID_SERVICE_TOKEN_MESSAGE = "A valid service token is required (Authorization: Bearer TOKEN)."  # noqa: S105  (a message, not a secret)


class ApiKeyAuthentication(BaseAuthentication):
    """An end user's own API key. `request.user` is the key's user, `request.auth` the key."""

    def authenticate(self, request: Request) -> tuple[User, ApiKey] | None:
        raw = api_key_from_request(request._request)
        if raw is None:
            return None  # no key: let the next class (knox, session) try
        misdirected = credential_misdirected(raw, api_key_accepted=True)
        if misdirected is not None:
            code, message = misdirected
            raise exceptions.AuthenticationFailed(message, code=code)
        key = api_key_resolve(raw)
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ServicePrincipal:
    """`request.user` on internal DRF views: the gateway, not a person."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_anonymous = False
    pk = None

    def __init__(self, token_id: int) -> None:
        self.token_id = token_id

    def __str__(self) -> str:
        return f"service token {self.token_id}"


# The WWW-Authenticate of a refusal.
SERVICE_TOKEN_CHALLENGE = 'Bearer realm="internal"'  # noqa: S105  (a header, not a secret)


def bearer_credentials(authorization: str) -> str:
    """What follows `Bearer ` in an Authorization header's value, or "" for another scheme."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def _bearer(request: HttpRequest) -> str:
    return bearer_credentials(request.headers.get("Authorization", ""))


class ServiceTokenAuthentication(BaseAuthentication):
    """The gateway's service token; refuses a request without one (rather than passing it on
    to another class), so an internal view can never fall back to a user credential."""

    def authenticate(self, request: Request) -> tuple[ServicePrincipal, int]:
        token_id = service_token_verify(_bearer(request._request))
        if token_id is None:
            raise exceptions.AuthenticationFailed(
                INVALID_SERVICE_TOKEN_MESSAGE, code="invalid_service_token"
            )
        return ServicePrincipal(token_id), token_id

    def authenticate_header(self, request: Request) -> str:
        return SERVICE_TOKEN_CHALLENGE


class IsServiceToken(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ServicePrincipal)


class ServiceTokenRefused(Exception):
    """Why a plain internal call is refused before it runs: its error's status, code, message
    and extra headers (rendered by whichever adapter serves the call)."""

    def __init__(
        self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def service_token_required(authorization: str) -> int:
    """The id of the live service token an Authorization header's value carries. Raises
    `ServiceTokenRefused`: 401 `invalid_service_token` for a missing, wrong or revoked token, 503
    `unavailable` when the database cannot be reached."""
    try:
        token_id = service_token_verify(bearer_credentials(authorization))
    except DatabaseError as exc:
        logger.exception("service token check: database unreachable")
        raise ServiceTokenRefused(503, "unavailable", "The database cannot be reached.") from exc
    if token_id is None:
        raise ServiceTokenRefused(
            401,
            "invalid_service_token",
            INVALID_SERVICE_TOKEN_MESSAGE,
            (("WWW-Authenticate", SERVICE_TOKEN_CHALLENGE),),
        )
    return token_id


def require_service_token(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """Guard a plain Django view of `/internal/v1/` with `service_token_required`; sets
    `request.service_token_id`. The view is CSRF-exempt: the gateway sends no cookies, so there
    is no session to forge."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            token_id = service_token_required(request.headers.get("Authorization", ""))
        except ServiceTokenRefused as refused:
            response = error_response(refused.status, refused.code, refused.message)
            for name, value in refused.headers:
                response[name] = value
            return response
        request.service_token_id = token_id  # type: ignore[attr-defined]
        return view(request, *args, **kwargs)

    return csrf_exempt(wrapper)
