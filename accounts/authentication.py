"""Authentication for the three kinds of caller.

- The dashboard: login tokens (`Authorization: Token ...`, knox's, through
  `accounts.login_tokens.LoginTokenAuthentication`) and the session cookie, DRF's defaults in
  settings.
- End users' API keys (`Authorization: Bearer sk-...` or `X-API-Key`): `ApiKeyAuthentication`,
  accepted only by `GET /api/user/credits`. A service token in that header is refused.
- The gateway's service token (`Authorization: Bearer svc-...`) on `/internal/v1/`:
  `service_token_required`, which the internal API's handlers call through
  `credits.gateway.calls.with_service_token` (the hot path skips DRF's per-request machinery).
  It refuses a missing, wrong or revoked token with 401 `invalid_service_token`, and never
  accepts an end user's API key or login token.
"""

import logging

from django.db import DatabaseError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from .api_keys import api_key_from_request, api_key_resolve, bearer_credentials
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


# The WWW-Authenticate of a refusal.
SERVICE_TOKEN_CHALLENGE = 'Bearer realm="internal"'  # noqa: S105  (a header, not a secret)


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
