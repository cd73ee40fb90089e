"""Writes of the accounts app: registration, verification, passwords, address changes,
deletion and API keys.

Each service is one transaction. Registration sends `accounts.signals.user_registered` inside
its transaction, so what receivers write (the credit account, the referral link) commits or
rolls back together with the user: a receiver that raises `ApplicationError` (an unknown invite
code, say) leaves no user behind. The signup rewards follow `signup_confirmed`, sent by
`_signup_confirm` in the transaction that verifies the address (or registers it, with
EMAIL_VERIFICATION=off), after the mailbox has been claimed there. Mail is written to the
outbox (`accounts.mail`) in the same transactions and sent after commit.
"""

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from django.conf import settings
from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone
from knox.models import AuthToken

from config.errors import ApplicationError, NotFound, Throttled

from . import secrets
from .login_sessions import login_sessions_end_all
from .mail import email_enqueue, email_render
from .models import (
    ApiKey,
    LoginSession,
    MailboxClaim,
    OutboundEmail,
    OutboundEmailStatus,
    User,
    mailbox_digest,
    new_invite_code,
    normalize_email,
)
from .signals import (
    api_key_created,
    api_key_revoked,
    api_key_rotated,
    signup_confirmed,
    user_deleted,
    user_registered,
)
from .tokens import invalid_token, token_make, token_read

API_KEY_NAME_MAX_LENGTH = 100
# The domain of a deleted account's placeholder address: `.invalid` can never receive mail.
DELETED_DOMAIN = "deleted.invalid"


def user_create(*, user: User, invite_code: str = "") -> User:
    """Save a new user (built, its password set, by the caller: registration or the admin's add
    form) and announce it, in one transaction: the apps that react (credit account and signup
    grant, referral) write in it too, so a user never exists without them."""
    with transaction.atomic():
        user.save()
        user_registered.send(sender=User, user=user, invite_code=(invite_code or "").strip())
    return user


def _email_clean(email: str, *, field: str = "email") -> str:
    """The normalized address, or the 400 that says what is wrong with it."""
    # The form login looks up and the throttles count (see `normalize_email`), so an address
    # taken here is exactly an address that logs in to that account.
    email = normalize_email(email)
    if not email:
        raise ApplicationError("email is required.", code="missing_field", field=field)
    try:
        validate_email(email)
    except ValidationError as exc:
        raise ApplicationError(
            "email is not a valid email address.", code="invalid_email", field=field
        ) from exc
    if len(email) > User._meta.get_field("email").max_length:  # type: ignore[operator]
        raise ApplicationError("email is too long.", code="invalid_email", field=field)
    domain = email.rpartition("@")[2]
    # The list names registrable domains; a subdomain of one (x.mailinator.com) is one too.
    labels = domain.split(".")
    if any(".".join(labels[i:]) in DISPOSABLE_DOMAINS for i in range(len(labels) - 1)):
        raise ApplicationError(
            "Addresses of disposable-mail services cannot be used; use a permanent address.",
            code="disposable_email",
            field=field,
        )
    return email


def _password_check(password: str, *, user: User, field: str = "password") -> None:
    if not password:
        raise ApplicationError(f"{field} is required.", code="missing_field", field=field)
    try:
        # The validators see the user, so "too similar to the email" is caught too.
        password_validation.validate_password(password, user=user)
    except ValidationError as exc:
        raise ApplicationError(
            "password is too weak: " + " ".join(exc.messages), code="weak_password", field=field
        ) from exc


def user_register(*, email: str, password: str, invite_code: str = "") -> User:
    email = _email_clean(email)
    _password_check(password, user=User(email=email))
    if User.objects.filter(email=email).exists():
        raise _email_taken()

    try:
        with transaction.atomic(durable=True):
            user = User(email=email)
            user.set_password(password)
            user_create(user=user, invite_code=invite_code)
            if settings.EMAIL_VERIFICATION == "off":
                _signup_confirm(user)
            _verification_mail(user, email=user.email)
    except IntegrityError:
        # Two registrations of one address raced past the check above; the unique index
        # decided. Anything else that broke a constraint is a real error and propagates.
        if User.objects.filter(email=email).exists():
            raise _email_taken() from None
        raise
    return user


def _signup_confirm(user: User) -> None:
    """Claim the user's mailbox and send `signup_confirmed`, once per account, inside the
    caller's transaction (which holds the user's row lock or has just created the row).

    The claim is an INSERT under the mailbox's UNIQUE constraint: of concurrent signups of one
    mailbox (any spelling), the first insert wins; the others wait for it to commit and then
    fail the constraint, so exactly one gets `first_of_mailbox`. A savepoint keeps that failure
    from spoiling the caller's transaction."""
    try:
        with transaction.atomic():
            MailboxClaim.objects.create(mailbox_digest=mailbox_digest(user.email))
        first = True
    except IntegrityError:
        first = False
    user.signup_confirmed_at = timezone.now()
    user.save(update_fields=["signup_confirmed_at"])
    signup_confirmed.send(sender=User, user=user, first_of_mailbox=first)


def _verification_mail(user: User, *, email: str) -> None:
    token = token_make(purpose="verify_email", user=user, email=email)
    email_enqueue(
        to=email,
        template="accounts/email/verify_email",
        context={"link": f"{settings.DASHBOARD_URL}/verify-email?token={token}", "email": email},
    )


def email_verify(*, token: str) -> User:
    """Verify the address a token was sent to: the user's own (first verification confirms the
    signup) or the one they asked to move to (the address changes). Verifying again changes
    nothing and succeeds."""
    claims = token_read(purpose="verify_email", token=token)
    with transaction.atomic(durable=True):
        # The row lock orders concurrent verifications of one account: the first confirms, the
        # others find it done.
        user = User.objects.select_for_update().get(pk=claims.user.pk)
        if claims.email == user.pending_email and claims.email != user.email:
            old = user.email
            user.email, user.pending_email = claims.email, ""
            user.email_verified_at = timezone.now()
            try:
                with transaction.atomic():
                    user.save(update_fields=["email", "pending_email", "email_verified_at"])
            except IntegrityError:
                # Another account took the address since the request (the unique index).
                raise _email_taken() from None
            email_enqueue(
                to=old,
                template="accounts/email/email_changed",
                context={"old": old, "new": user.email},
            )
        elif claims.email != user.email:
            raise invalid_token()  # superseded while we waited for the lock
        _mark_verified(user)
    return user


def email_mark_verified(*, user: User) -> User:
    """Staff (the admin's "verify email", a user added in the admin): the current address is
    verified as if its link had been followed. In the caller's transaction, if any (the admin
    runs in one)."""
    with transaction.atomic():
        user = User.objects.select_for_update().get(pk=user.pk)
        _mark_verified(user)
    return user


def _mark_verified(user: User) -> None:
    """On a locked user row: the address is verified; the first verification confirms the
    signup (its rewards)."""
    if user.email_verified_at is None:
        user.email_verified_at = timezone.now()
        user.save(update_fields=["email_verified_at"])
    if user.signup_confirmed_at is None:
        _signup_confirm(user)


def email_verification_resend(*, user: User) -> None:
    """Send a fresh verification link to the user's address (nothing if already verified)."""
    with transaction.atomic(durable=True):
        if not User.objects.filter(pk=user.pk, email_verified_at__isnull=True).exists():
            return
        _verification_mail(user, email=user.email)


def email_change_request(*, user: User, email: str, password: str) -> None:
    """Ask to move to `email`: a link to the new address, a notice to the old one. The address
    changes only when the link is followed (`email_verify`)."""
    _password_confirm(user, password, field="password")
    email = _email_clean(email)
    if User.objects.filter(email=email).exclude(pk=user.pk).exists():
        raise _email_taken()
    if email == user.email:
        raise ApplicationError(
            "This is already your address.", code="invalid_request", field="email"
        )
    with transaction.atomic(durable=True):
        user = User.objects.select_for_update().get(pk=user.pk)
        user.pending_email = email
        user.save(update_fields=["pending_email"])
        _verification_mail(user, email=email)
        email_enqueue(
            to=user.email,
            template="accounts/email/email_change_requested",
            context={"old": user.email, "new": email},
        )


def password_reset_request(*, email: str) -> None:
    """Queue a reset link for `email`. The request does the same work whether or not an account
    has the address (one outbox row, one commit, one task queued): the lookup, the token and the
    message are made by the sender (`password_reset_message`), which drops the row for an
    unknown address. So neither the answer nor its timing tells who has an account."""
    email = normalize_email(email)
    with transaction.atomic(durable=True):
        email_enqueue(
            to=email[:254],
            template="accounts/email/password_reset",
            prepare="accounts.services.password_reset_message",
        )


def password_reset_message(to: str) -> tuple[str, str, str] | None:
    """The reset message for the active account with address `to`, made at send time (so the
    link's hour starts when it is sent); None when no active account has it."""
    user = User.objects.filter(email=to, is_active=True).first()
    if user is None:
        return None
    token = token_make(purpose="password_reset", user=user, email=user.email)
    return email_render(
        template="accounts/email/password_reset",
        context={"link": f"{settings.DASHBOARD_URL}/reset-password?token={token}"},
    )


def password_reset_confirm(*, token: str, password: str) -> User:
    """Set a new password from a reset link. Ends every login, token and cookie (sessions would
    end anyway, the password hash changed), so that none is listed any more; API keys keep
    working. The link is void afterwards, like every
    reset link issued before."""
    user = token_read(purpose="password_reset", token=token).user
    _password_check(password, user=user)
    with transaction.atomic(durable=True):
        User.objects.select_for_update().filter(pk=user.pk).first()
        # Read again under the lock: of two confirmations of one link, the second sees the
        # first's password and finds its link void.
        user = token_read(purpose="password_reset", token=token).user
        user.set_password(password)
        user.save(update_fields=["password"])
        login_sessions_end_all(user=user)
    return user


def password_change(
    *,
    user: User,
    current_password: str,
    new_password: str,
    keep_token: AuthToken | None,
    keep_login: LoginSession | None = None,
) -> User:
    """Change a password knowing the current one. Every other login ends, token and cookie
    (`accounts.login_sessions`); the caller's own (`keep_login`, `keep_token`) carries on, its
    session with the new hash (the view's `login_session_password_changed`)."""
    _password_confirm(user, current_password, field="current_password")
    _password_check(new_password, user=user, field="new_password")
    with transaction.atomic(durable=True):
        user = User.objects.select_for_update().get(pk=user.pk)
        user.set_password(new_password)
        user.save(update_fields=["password"])
        login_sessions_end_all(user=user, keep=keep_login, keep_token=keep_token)
    return user


def _password_confirm(user: User, password: str, *, field: str) -> None:
    if not password or not user.check_password(password):
        raise ApplicationError(
            "The password is incorrect.", code="invalid_credentials", field=field
        )


def user_delete(*, user: User, password: str) -> None:
    """The user's own deletion of their account (`DELETE /api/user`)."""
    _password_confirm(user, password, field="password")
    user_anonymise(user=user)


def user_deactivate(*, user: User) -> None:
    """Staff: the account can no longer log in; its logins end. Reversible (is_active)."""
    with transaction.atomic(durable=True):
        User.objects.filter(pk=user.pk).update(is_active=False)
        login_sessions_end_all(user=user)


def user_anonymise(*, user: User) -> None:
    """Delete an account as far as the books allow: keys revoked, logins ended (tokens,
    cookies' sessions and their rows), the balance forfeited (receivers of `user_deleted`),
    every personal field replaced by a placeholder, mail to the address erased. The row stays:
    the ledger, usage and purchases name it. The mailbox's claim stays too (it names no one),
    so the address can register again, without a second signup grant."""
    with transaction.atomic(durable=True):
        user = User.objects.select_for_update().get(pk=user.pk)
        if user.deleted_at is not None:
            return
        now = timezone.now()
        ApiKey.objects.filter(user=user, revoked_at__isnull=True).update(revoked_at=now)
        login_sessions_end_all(user=user)
        user_deleted.send(sender=User, user=user)
        addresses = [a for a in (user.email, user.pending_email) if a]
        OutboundEmail.objects.filter(to__in=addresses).exclude(
            status=OutboundEmailStatus.SENT
        ).delete()
        OutboundEmail.objects.filter(to__in=addresses).update(
            to=f"deleted@{DELETED_DOMAIN}", subject="(erased)", body_text="", body_html=""
        )
        user.email = f"deleted-{user.pk.hex}@{DELETED_DOMAIN}"
        user.pending_email = ""
        user.invite_code = new_invite_code()
        user.set_unusable_password()
        user.is_active = user.is_staff = user.is_superuser = False
        user.last_login = None
        user.deleted_at = now
        user.save()
        user.groups.clear()
        user.user_permissions.clear()


def _email_taken() -> ApplicationError:
    return ApplicationError(
        "An account with this email already exists.", code="email_taken", field="email"
    )


def api_key_create(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    budget: dict[str, Any] | None = None,
    allowed_models: list[str] | None = None,
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
            budget_credits=budget["credits"] if budget else None,
            budget_period=budget["period"] if budget else "",
            allowed_models=allowed_models,
        )
        api_key_created.send(sender=ApiKey, key=key)
    return key, raw


def _own_key_lock(user: User, key_id: uuid.UUID | str) -> ApiKey:
    """One of `user`'s live keys, locked alone (never with an account: credits.locks)."""
    try:
        key_uuid = key_id if isinstance(key_id, uuid.UUID) else uuid.UUID(str(key_id))
    except ValueError:
        raise _key_not_found() from None
    key = ApiKey.objects.select_for_update().filter(user=user, pk=key_uuid).live().first()
    if key is None:
        raise _key_not_found()
    return key


_UNSET: Any = object()


def api_key_update(
    *,
    user: User,
    key_id: uuid.UUID | str,
    name: str | None = None,
    budget: dict[str, Any] | None = _UNSET,
    allowed_models: list[str] | None = _UNSET,
) -> ApiKey:
    """Change a key's name, budget or allowed models (only what is passed). The spend counters
    are kept for every period whatever the budget, so a new budget counts what was already
    spent in its period; one lowered below `spent` denies the next request."""
    with transaction.atomic():
        key = _own_key_lock(user, key_id)
        if name is not None:
            name = name.strip()
            if not name:
                raise ApplicationError(
                    "name must not be empty.", code="invalid_request", field="name"
                )
            key.name = name
        if budget is not _UNSET:
            key.budget_credits = budget["credits"] if budget else None
            key.budget_period = budget["period"] if budget else ""
        if allowed_models is not _UNSET:
            key.allowed_models = allowed_models
        key.save(update_fields=["name", "budget_credits", "budget_period", "allowed_models"])
    return key


def api_key_rotate(
    *, user: User, key_id: uuid.UUID | str, grace_seconds: int, now: datetime | None = None
) -> tuple[ApiKey, str]:
    """A new secret for the same key (id, name, budget, counters, usage stay). The current
    secret becomes the previous one, accepted until now + `grace_seconds`; a secret that was
    previous already is dropped, so it stops working at once. The key row is locked, so two
    concurrent rotations are one after the other."""
    raw = secrets.new_secret(settings.API_KEY_PREFIX)
    now = now or timezone.now()  # the gateway's clock in tests that move it
    with transaction.atomic():
        key = _own_key_lock(user, key_id)
        key.previous_digest = key.digest
        key.previous_expires_at = now + timedelta(seconds=grace_seconds)
        key.digest = secrets.digest(raw)
        key.prefix = secrets.display_prefix(raw, settings.API_KEY_PREFIX)
        key.rotated_at = now
        key.save(
            update_fields=[
                "previous_digest",
                "previous_expires_at",
                "digest",
                "prefix",
                "rotated_at",
            ]
        )
        api_key_rotated.send(sender=ApiKey, key=key)
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
        with transaction.atomic():
            # Conditional: a concurrent revoke keeps the first timestamp, and only the call
            # that revoked announces it.
            revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            )
            key.refresh_from_db(fields=["revoked_at"])
            if revoked:
                api_key_revoked.send(sender=ApiKey, key=key)
    return key


def _key_not_found() -> NotFound:
    return NotFound("No such API key.", code="key_not_found")
