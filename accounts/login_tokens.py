"""Login tokens (`Authorization: Token ...`): knox's, with the header checked first; and the
401 that redirects a credential sent where it does not belong.

Its own module, importing nothing that imports `config.errors`: DRF imports the default
authentication classes while `config.errors` (which `accounts.authentication` uses) is still
being imported.
"""

import re
from typing import Any

from django.utils import timezone
from knox.auth import TokenAuthentication
from knox.settings import knox_settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from . import secrets
from .api_keys import api_key_from_request, api_key_is_well_formed
from .models import LoginSession
from .service_tokens import TOKEN_PREFIX as SERVICE_TOKEN_PREFIX

# What knox issues: hex characters (and an optional printable TOKEN_PREFIX). Anything else in the
# header is refused before knox decodes it (a byte that is not UTF-8 was a 500) or queries it (a
# NUL was a 500 from PostgreSQL).
_LOGIN_TOKEN = re.compile(rb"[\x21-\x7e]{1,256}")


class LoginTokenAuthentication(TokenAuthentication):
    """knox's token authentication, answering 401 for a token it could never have issued."""

    def authenticate_credentials(self, token: bytes) -> tuple[Any, Any]:
        if not _LOGIN_TOKEN.fullmatch(token):
            raise exceptions.AuthenticationFailed("Invalid token.")
        user, auth_token = super().authenticate_credentials(token)
        return user, auth_token

    def renew_token(self, auth_token: Any) -> None:
        """knox's sliding expiry (AUTO_REFRESH), with the token's login row kept in step: both
        are written only when knox writes (the expiry moved by more than a minute)."""
        before = auth_token.expiry
        super().renew_token(auth_token)
        if (auth_token.expiry - before).total_seconds() > knox_settings.MIN_REFRESH_INTERVAL:
            LoginSession.objects.filter(auth_token=auth_token).update(
                last_used_at=timezone.now(), expires_at=auth_token.expiry
            )


# What the user API takes, for the messages that redirect a misdirected credential.
_LOGIN_CREDENTIALS = (
    "a login token as `Authorization: Token TOKEN` (from POST /api/auth/login) or the session "
    "cookie"
)
# What knox issues (AUTH_TOKEN_CHARACTER_LENGTH 64, no TOKEN_PREFIX): told apart from API keys
# and service tokens by shape alone, without a database lookup.
_KNOX_TOKEN = re.compile(r"[0-9a-f]{64}")


def credential_misdirected(raw: str, *, api_key_accepted: bool) -> tuple[str, str] | None:
    """(code, message) for a credential sent where it does not belong, saying what to send
    instead: a login token sent as `Bearer`, a service token on the user API, an API key on an
    endpoint that takes only login tokens (`api_key_accepted` False). None for anything else
    (a mistyped or made-up value keeps its generic answer)."""
    if secrets.is_well_formed(raw, SERVICE_TOKEN_PREFIX):
        return (
            "service_token_not_accepted",
            "A service token authenticates the gateway on /internal/v1/ only; the user API "
            f"takes {_LOGIN_CREDENTIALS}.",
        )
    if _KNOX_TOKEN.fullmatch(raw):
        return (
            "wrong_auth_scheme",
            "This looks like a login token: send it as `Authorization: Token TOKEN`, not "
            "`Bearer` (Bearer and X-API-Key carry API keys).",
        )
    if not api_key_accepted and api_key_is_well_formed(raw):
        return (
            "api_key_not_accepted",
            "An API key authenticates the model API and GET /api/user/credits only; this "
            f"endpoint takes {_LOGIN_CREDENTIALS}.",
        )
    return None


class MisdirectedCredentialAuthentication(BaseAuthentication):
    """Last of the user API's classes: a request whose `Bearer` or `X-API-Key` credential no
    earlier class took is noted (`request.credential_hint`), and if the view then refuses it as
    unauthenticated, `config.errors` answers with what to send instead rather than DRF's
    "credentials were not provided" (which reads as if the header had been lost). It never
    refuses by itself: a public endpoint (packages, the schema) still answers such a request."""

    def authenticate(self, request: Request) -> None:
        raw = api_key_from_request(request._request)
        if raw is not None:
            misdirected = credential_misdirected(raw, api_key_accepted=False)
            if misdirected is not None:
                request._request.credential_hint = misdirected  # type: ignore[attr-defined]
        return None

    def authenticate_header(self, request: Request) -> str:
        return "Token"
