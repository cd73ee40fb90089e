"""Signed single-purpose tokens for the links we mail (django.core.signing, no table).

A token carries the user's id and the address it was sent to, signed with SECRET_KEY under a
salt naming its purpose, so a verification token is no reset token and the reverse. It is valid
only while the address it names is still the user's (or the one they asked to move to): a
token for a changed address is void. A reset token also carries a fingerprint of the password
hash (as Django's PasswordResetTokenGenerator does), so any password change, the reset itself
included, voids every reset token issued before it: "usable once" without storing anything.
"""

import uuid
from dataclasses import dataclass
from typing import Literal

from django.core import signing
from django.utils.crypto import constant_time_compare, salted_hmac

from config.errors import ApplicationError

from .models import User

Purpose = Literal["verify_email", "password_reset"]

MAX_AGE = {"verify_email": 48 * 3600, "password_reset": 3600}


@dataclass(frozen=True)
class TokenClaims:
    user: User
    email: str


def _password_fingerprint(user: User) -> str:
    return salted_hmac("accounts.tokens.password", user.password or "").hexdigest()[:20]


def token_make(*, purpose: Purpose, user: User, email: str) -> str:
    payload = {"u": str(user.pk), "e": email}
    if purpose == "password_reset":
        payload["p"] = _password_fingerprint(user)
    return signing.dumps(payload, salt=f"accounts.tokens.{purpose}")


def token_read(*, purpose: Purpose, token: str) -> TokenClaims:
    """The user and address a token names, or `invalid_token` (400) for a token that is
    tampered, expired, of another purpose, for an address the user no longer has or is no
    longer moving to, or (reset) issued before the password last changed."""
    try:
        payload = signing.loads(
            str(token or ""), salt=f"accounts.tokens.{purpose}", max_age=MAX_AGE[purpose]
        )
        user = User.objects.filter(pk=uuid.UUID(str(payload["u"])), is_active=True).first()
        email = str(payload["e"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise invalid_token() from None
    if user is None or email not in {user.email, user.pending_email}:
        raise invalid_token()
    if purpose == "password_reset" and not constant_time_compare(
        str(payload.get("p", "")), _password_fingerprint(user)
    ):
        raise invalid_token()
    return TokenClaims(user=user, email=email)


def invalid_token() -> ApplicationError:
    return ApplicationError(
        "This link is invalid or has expired; ask for a new one.",
        code="invalid_token",
        field="token",
    )
