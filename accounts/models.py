"""Users, their API keys and the gateway's service tokens.

- `User` logs in with an email, unique case-insensitively: stored as `normalize_email` gives
  it, under a unique index, and looked up by exact match on that same value. It is deactivated
  rather than deleted once the ledger mentions it.
- `ApiKey` is an end user's key for the model API. Only its SHA-256 digest is stored (see
  `accounts.secrets`); the full key is shown once, at creation. A revoked key keeps its row so
  that usage and ledger history still name it.
- `ServiceToken` authenticates the API gateway on `/internal/v1/`, stored the same way.
- `MailboxClaim` is the "one signup grant per mailbox, ever" rule: one row per canonical mailbox
  (see `mailbox_of`), claimed in the transaction that confirms a signup, under a UNIQUE
  constraint, so concurrent signups of one mailbox under different spellings get one grant. It
  names no user and holds only a digest of the mailbox, so it survives the account's deletion
  without keeping the address.
- `OutboundEmail` is the mail outbox: a row written in the transaction that causes the mail,
  sent after commit by `accounts.tasks`, claimed with a conditional update so one sender sends
  it; its bodies are erased once sent (a reset link is a secret).
"""

import hashlib
import secrets
import unicodedata
import uuid
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

# Invite codes avoid look-alike characters (0/O, 1/I/L, 5/S, 2/Z, 8/B, U/V): read aloud or
# typed from a screenshot, they still come out right. 8 of 24 symbols: about 1.1e11 codes.
INVITE_CODE_ALPHABET = "34679ACDEFGHJKMNPQRTWXY"
INVITE_CODE_LENGTH = 8


def new_invite_code() -> str:

    return "".join(secrets.choice(INVITE_CODE_ALPHABET) for _ in range(INVITE_CODE_LENGTH))


def normalize_email(email: str | None) -> str:
    """The one form of an email address: what is stored, what registration checks, what login
    looks up (by exact match) and what the login throttles count. Nothing compares addresses
    any other way (no `iexact`: PostgreSQL's UPPER() equates more than this does).

    NFKC, then Python's `lower()`. NFKC because Django's admin login form applies it to what is
    typed (`UsernameField`), so the API must too, or one address would be two accounts. So:
    U+017F (long s) is `s` and U+212A (Kelvin sign) is `k`: one account with the ASCII address
    for every operation. U+0131 (dotless i), U+00DF (sharp s) and U+0130 (I with dot) are left
    as they are: "al\u0131ce@" is another address (and account) than "alice@" for every
    operation (U+0130 lower-cases to `i` plus a combining dot, which registration refuses)."""
    return unicodedata.normalize("NFKC", email or "").strip().lower()


GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def mailbox_of(email: str) -> str:
    """The mailbox an address delivers to (CONTRACT.md part 2): the normalized address with any
    `+tag` dropped from the local part, and for Gmail the dots dropped and the domain
    `gmail.com` (`A.B+x@GoogleMail.com` -> `ab@gmail.com`)."""
    local, at, domain = normalize_email(email).rpartition("@")
    if not at:
        return normalize_email(email)
    local = local.split("+", 1)[0]
    if domain in GMAIL_DOMAINS:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def mailbox_digest(email: str) -> str:
    return hashlib.sha256(mailbox_of(email).encode("utf-8", "surrogatepass")).hexdigest()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    @classmethod
    def normalize_email(cls, email: str | None) -> str:
        return normalize_email(email)

    def get_by_natural_key(self, username: str | None) -> "User":
        # Used by ModelBackend, so by the API login and the admin login alike. Exact match on
        # the unique column: at most one row can ever match.
        return self.get(email=normalize_email(username))

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> "User":
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> "User":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Stored normalized (see `normalize_email`, applied on every save), so the plain unique
    # index is uniqueness of the normalized address.
    email = models.EmailField(max_length=254, unique=True)
    # Shown to the user to share; stored upper-case, matched case-insensitively (upper-cased
    # input). It lives here, not in `referrals`, because every user has one from registration.
    invite_code = models.CharField(max_length=16, unique=True, default=new_invite_code)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    # Set by the first verification of the current address (a change of address sets it again
    # when the new one is verified). Null: not verified.
    email_verified_at = models.DateTimeField(null=True, blank=True)
    # When the signup was confirmed (rewards settled): at the first verification when
    # EMAIL_VERIFICATION=required, at registration when it is off. Once per account.
    signup_confirmed_at = models.DateTimeField(null=True, blank=True)
    # An address the user asked to move to, waiting for its verification.
    pending_email = models.EmailField(max_length=254, blank=True, default="")
    # Set when the account was deleted (anonymised); its rows are kept for the ledger.
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    def __str__(self) -> str:
        return self.email

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    def clean(self) -> None:
        super().clean()
        self.email = normalize_email(self.email)

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Whatever path writes the row (registration, admin, shell), it is stored normalized.
        self.email = normalize_email(self.email)
        super().save(*args, **kwargs)


BUDGET_PERIODS = ("day", "month", "total")


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def live(self) -> "ApiKeyQuerySet":
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: `apikey_user_live` (user, revoked_at) serves lookups by user.
    user = models.ForeignKey(
        User, on_delete=models.PROTECT, related_name="api_keys", db_index=False
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(
        max_length=32, help_text="The start of the key, shown to tell keys apart."
    )
    digest = models.CharField(max_length=64, editable=False)  # unique: see Meta.constraints
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Spend controls (issue 18, CONTRACT.md part 2). The counters live on the key row so that
    # the hot path checks a budget without a SUM over usage: they are changed only under the
    # lock of the key's credit account (`credits.services`, `credits/gateway/sql/`), which
    # every hold, charge and release of the key already takes, so they are exact under any
    # concurrency. A counter belongs to the period that starts at its `*_start` (UTC); in a
    # later period it reads as 0 (`accounts.budgets`). All three are kept whatever the budget,
    # so that a budget set or changed later counts what was already spent.
    budget_credits = models.BigIntegerField(null=True, blank=True)
    budget_period = models.CharField(
        max_length=5, blank=True, default="", choices=[(p, p) for p in BUDGET_PERIODS]
    )
    allowed_models = models.JSONField(null=True, blank=True)
    held = models.BigIntegerField(default=0, help_text="Credits held by live holds of this key.")
    spent_day = models.BigIntegerField(default=0)
    spent_day_start = models.DateTimeField(null=True, blank=True)
    spent_month = models.BigIntegerField(default=0)
    spent_month_start = models.DateTimeField(null=True, blank=True)
    spent_total = models.BigIntegerField(default=0)
    # Rotation: the secret before the last rotation, accepted until `previous_expires_at`.
    # NULL, not "", when there is none: the unique constraint allows many NULLs.
    previous_digest = models.CharField(  # noqa: DJ001
        max_length=64, null=True, blank=True, editable=False
    )
    previous_expires_at = models.DateTimeField(null=True, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ("-created_at",)
        indexes = [
            models.Index(fields=["user", "revoked_at"], name="apikey_user_live"),
            # The beat's `key.expiring` (credits.notices): live keys that expire, by expiry.
            models.Index(
                fields=["expires_at"],
                name="apikey_expiry",
                condition=models.Q(expires_at__isnull=False, revoked_at__isnull=True),
            ),
        ]
        # Not `unique=True`, which would add a `_like` index nobody reads (keys are looked up
        # by their whole digest).
        constraints = [
            models.UniqueConstraint(fields=["digest"], name="apikey_unique_digest"),
            models.UniqueConstraint(fields=["previous_digest"], name="apikey_unique_previous"),
            models.CheckConstraint(
                condition=models.Q(held__gte=0)
                & models.Q(spent_day__gte=0)
                & models.Q(spent_month__gte=0)
                & models.Q(spent_total__gte=0)
                & (models.Q(budget_credits__isnull=True) | models.Q(budget_credits__gte=0))
                & (
                    models.Q(budget_credits__isnull=True, budget_period="")
                    | models.Q(budget_credits__isnull=False, budget_period__in=BUDGET_PERIODS)
                ),
                name="apikey_budget_valid",
            ),
        ]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_live(self) -> bool:
        return self.revoked_at is None and (
            self.expires_at is None or self.expires_at > timezone.now()
        )


class ServiceToken(models.Model):
    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=32)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name


class MailboxClaim(models.Model):
    """A mailbox whose signup rewards (the signup grant, the inviter's registration reward) were
    paid. Never deleted; see the module docstring."""

    mailbox_digest = models.CharField(max_length=64)  # unique: see Meta.constraints
    claimed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["mailbox_digest"], name="mailboxclaim_unique_mailbox")
        ]

    def __str__(self) -> str:
        return f"mailbox {self.mailbox_digest[:12]}…"


class OutboundEmailStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed", "failed for good"


class OutboundEmail(models.Model):
    """One message to one address. Generic: whoever causes a mail renders it (`accounts.mail`)
    and writes it here in their transaction."""

    to = models.EmailField(max_length=254)
    subject = models.CharField(max_length=255)
    body_text = models.TextField(blank=True, default="")
    body_html = models.TextField(blank=True, default="")
    # The template it was rendered from, for staff and tests (`accounts/email/verify_email`).
    template = models.CharField(max_length=100, blank=True, default="")
    # A function (dotted path) that writes the message at send time, or decides it is not to
    # be sent (the row is then deleted): for mail whose request must not depend on whether an
    # account exists (password reset). Empty: the bodies are already rendered.
    prepare = models.CharField(max_length=100, blank=True, default="")
    status = models.CharField(
        max_length=16, choices=OutboundEmailStatus.choices, default=OutboundEmailStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # A sender's claim on a row it is sending: past this, a crashed sender's row is claimable.
    lease_until = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            # The sweep reads the rows still to send, by due time; sent rows are most rows.
            models.Index(
                fields=["next_attempt_at"],
                name="outboundemail_due",
                condition=models.Q(status__in=["pending", "sending"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=OutboundEmailStatus.values),
                name="outboundemail_status_valid",
            ),
        ]
        verbose_name = "outbound email"

    def __str__(self) -> str:
        return f"{self.template or self.subject} to {self.to} ({self.status})"


class LoginSession(models.Model):
    """One login, as the user sees it in `GET /api/user/sessions`: the login token it issued
    (knox's row; None for a browser login, which gets no token), the Django session its cookie
    names ("" when none, or once it was replaced), or both when an API login set the cookie
    too. Ending it ends both halves; a logout by either half ends the other as well.

    `last_used_at` and `expires_at` slide: knox renews a token's expiry on use (AUTO_REFRESH),
    `accounts.login_sessions.LoginSessionMiddleware` renews a cookie's; either writes at most
    once a minute per login."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="login_sessions")
    # CASCADE: knox deletes an expired token when it meets it; its login goes with it.
    auth_token = models.OneToOneField(
        settings.KNOX_TOKEN_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    session_key = models.CharField(max_length=40, blank=True, db_index=True)
    user_agent = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["user", "expires_at"], name="loginsession_user_live")]

    def __str__(self) -> str:
        return f"login of {self.user_id} at {self.created_at:%Y-%m-%d %H:%M:%S} UTC"
