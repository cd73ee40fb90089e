"""Writes of the accounts app: registration and API keys.

Each service is one transaction. Registration sends `accounts.signals.user_registered` inside
its transaction, so what receivers write (the credit account and signup grant, the referral)
commits or rolls back together with the user: a receiver that raises `ApplicationError` (an
unknown invite code, say) leaves no user behind.
"""

import math
import uuid
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from config.errors import ApplicationError, NotFound, Throttled

from . import secrets
from .models import ApiKey, User, normalize_email
from .signals import user_registered

API_KEY_NAME_MAX_LENGTH = 100


def user_register(*, email: str, password: str, invite_code: str = "") -> User:
    # The form login looks up and the throttles count (see `normalize_email`), so an address
    # taken here is exactly an address that logs in to that account.
    email = normalize_email(email)
    if not email:
        raise ApplicationError("email is required.", code="missing_field", field="email")
    if not password:
        raise ApplicationError("password is required.", code="missing_field", field="password")
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ApplicationError(
            "email is not a valid email address.", code="invalid_email", field="email"
        ) from exc
    if len(email) > User._meta.get_field("email").max_length:  # type: ignore[operator]
        raise ApplicationError("email is too long.", code="invalid_email", field="email")
    try:
        # The validators see the would-be user, so "too similar to the email" is caught too.
        password_validation.validate_password(password, user=User(email=email))
    except ValidationError as exc:
        raise ApplicationError(
            "password is too weak: " + " ".join(exc.messages),
            code="weak_password",
            field="password",
        ) from exc
    if User.objects.filter(email=email).exists():
        raise _email_taken()

    try:
        with transaction.atomic(durable=True):
            user = User.objects.create_user(email=email, password=password)
            user_registered.send(sender=User, user=user, invite_code=(invite_code or "").strip())
    except IntegrityError:
        # Two registrations of one address raced past the check above; the unique index
        # decided. Anything else that broke a constraint is a real error and propagates.
        if User.objects.filter(email=email).exists():
            raise _email_taken() from None
        raise
    return user


def _email_taken() -> ApplicationError:
    return ApplicationError(
        "An account with this email already exists.", code="email_taken", field="email"
    )


def api_key_create(
    *, user: User, name: str, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the full secret, which is never stored or shown again."""
    name = (name or "").strip()
    if not name:
        raise ApplicationError("name is required.", code="missing_field", field="name")
    if len(name) > API_KEY_NAME_MAX_LENGTH:
        raise ApplicationError(
            f"name must be at most {API_KEY_NAME_MAX_LENGTH} characters.",
            code="invalid_request",
            field="name",
        )
    now = timezone.now()
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            expires_at = expires_at.replace(tzinfo=UTC)
        if expires_at <= now:
            raise ApplicationError(
                "expires_at must be in the future.", code="invalid_request", field="expires_at"
            )

    raw = secrets.new_secret(settings.API_KEY_PREFIX)
    with transaction.atomic():
        # Lock the user row so that two concurrent creations cannot both see MAX-1 live keys
        # and both insert (a count is not a constraint).
        User.objects.select_for_update().filter(pk=user.pk).first()
        live = ApiKey.objects.filter(user=user).live().count()
        if live >= settings.MAX_KEYS_PER_USER:
            raise ApplicationError(
                f"You already have {live} live API keys, the most allowed "
                f"({settings.MAX_KEYS_PER_USER}). Revoke one first.",
                code="too_many_keys",
            )
        _key_creation_check(user, now)
        key = ApiKey.objects.create(
            user=user,
            name=name,
            prefix=secrets.display_prefix(raw, settings.API_KEY_PREFIX),
            digest=secrets.digest(raw),
            created_at=now,
            expires_at=expires_at,
        )
    return key, raw


KEY_CREATION_WINDOW = timedelta(hours=1)


def _key_creation_check(user: User, now: datetime) -> None:
    """At most KEY_CREATIONS_PER_HOUR keys made in any rolling hour, revoked ones included.

    Rate limits are counted per key: without this, revoking a key and making a new one on each
    429 gave a fresh set of windows every time, multiplying the tier's limits by the number of
    keys made. Counted under the caller's lock on the user row, so concurrent creations cannot
    both see one slot left."""
    limit = settings.KEY_CREATIONS_PER_HOUR
    if limit <= 0:
        return
    made = list(
        ApiKey.objects.filter(user=user, created_at__gt=now - KEY_CREATION_WINDOW)
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(made) >= limit:
        # The slot frees when the oldest of the last `limit` keys leaves the window.
        frees_at = made[-1] + KEY_CREATION_WINDOW
        raise Throttled(
            f"At most {limit} API keys can be created per hour; try again later.",
            retry_after=math.ceil((frees_at - now).total_seconds()),
        )


def api_key_revoke(*, user: User, key_id: uuid.UUID | str) -> ApiKey:
    """Revoke one of `user`'s keys. Revoking a revoked (or expired) key changes nothing and
    succeeds; a key of another user, or none at all, is `NotFound`: the two are told apart
    by nobody."""
    try:
        key_uuid = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(str(key_id))
    except ValueError:
        raise _key_not_found() from None
    key = ApiKey.objects.filter(user=user, pk=key_uuid).first()
    if key is None:
        raise _key_not_found()
    if key.revoked_at is None:
        # Conditional: a concurrent revoke keeps the first timestamp.
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        key.refresh_from_db(fields=["revoked_at"])
    return key


def _key_not_found() -> NotFound:
    return NotFound("No such API key.", code="key_not_found")
