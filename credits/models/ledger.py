"""The credit ledger.

Design, in one paragraph: every credit enters an account as a **lot** (one per grant) and
leaves it through **ledger entries** that name the lot they touch. Entries are append-only
(a database trigger refuses UPDATE, DELETE and TRUNCATE) and each carries a unique
idempotency key, so a retried operation finds its first result instead of writing twice.
`CreditAccount.balance`, `.reserved` and each lot's `remaining`/`reserved` are caches of what
the entries and live holds say; `python manage.py reconcile_ledger` recomputes them. A **hold**
reserves credit of one lot for one gateway request; it is not an entry: committing it writes
a `charge`, releasing it writes nothing (unless its lot expired meanwhile: then the released
credit gets its `expire` entry).

Invariants kept by the database itself (named CHECK constraints): balance and reserved never
negative, reserved never above balance, a lot's `0 <= reserved <= remaining <= granted`, entry
amounts signed by kind. Foreign keys from entries are PROTECT: an account with history is
deactivated, never deleted. All writes go through `credits.services`.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q

# Every credit amount of the ledger (balances, lots, entries) is a signed 64-bit integer: the
# most credits an account can hold. A grant past it is refused (`LedgerLimitExceeded`).
MAX_CREDITS = 2**63 - 1


class CreditSettings(models.Model):
    """Amounts staff can change without a deploy. One row (pk=1)."""

    signup_credits = models.PositiveIntegerField(default=100)

    class Meta:
        verbose_name = verbose_name_plural = "credit settings"

    def __str__(self) -> str:
        return "Credit settings"

    @classmethod
    def load(cls) -> "CreditSettings":
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class CreditAccount(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        primary_key=True,
        related_name="credit_account",
    )
    # 64-bit, as every credit amount of the ledger (`credits.models.MAX_CREDITS`).
    balance = models.BigIntegerField(default=0)
    reserved = models.BigIntegerField(default=0)
    consumed = models.BigIntegerField(default=0, help_text="Credits charged, all time.")
    # The earliest instant at which a lot with unspent credit or a live hold expires. Until
    # then the cached balance and reserved are exact; from then on the next money operation
    # (or the sweep) writes the expiry first. Keeps the hot path to one row read.
    next_event_at = models.DateTimeField(null=True, blank=True, db_index=True)
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_reason = models.CharField(max_length=200, blank=True)
    # The account monthly limit (issue 18): charges per UTC calendar month. `month_spent`
    # counts the charges of the month starting at `month_start` (0 in a later month); live
    # holds are `reserved`, so the check reads this one locked row, no SUM.
    monthly_credit_limit = models.BigIntegerField(null=True, blank=True)
    month_spent = models.BigIntegerField(default=0)
    month_start = models.DateTimeField(null=True, blank=True)
    # `credits.low` (contract part 2): an entry that takes the balance from at least this to
    # below it writes the event; NULL turns the notice off. A column of the account row, so the
    # hot path's settle compares it with the balance it already holds locked: no extra read.
    low_balance_threshold = models.BigIntegerField(null=True, blank=True, default=10)
    # Auto top-up (issue 19): the payments app keeps the threshold here while auto top-up is on
    # (NULL: off). An entry (not a claw-back) taking the balance from at least it to below it
    # stamps `auto_topup_requested_at` in the same write (Python and gateway_settle.sql alike);
    # the payments app claims the stamp after commit and starts at most one top-up.
    auto_topup_threshold = models.BigIntegerField(null=True, blank=True)
    auto_topup_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(auto_topup_threshold__isnull=True) | Q(auto_topup_threshold__gte=1),
                name="account_auto_topup_threshold_valid",
            ),
            models.CheckConstraint(
                condition=Q(low_balance_threshold__isnull=True) | Q(low_balance_threshold__gte=0),
                name="account_low_balance_threshold_valid",
            ),
            models.CheckConstraint(
                condition=Q(month_spent__gte=0)
                & (Q(monthly_credit_limit__isnull=True) | Q(monthly_credit_limit__gte=0)),
                name="account_monthly_limit_valid",
            ),
            models.CheckConstraint(
                condition=Q(balance__gte=0), name="account_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="account_reserved_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(reserved__lte=F("balance")), name="account_reserved_within_balance"
            ),
            models.CheckConstraint(
                condition=Q(consumed__gte=0), name="account_consumed_not_negative"
            ),
        ]
        indexes = [
            # The auto top-up sweep reads the few stamped accounts, never the whole table.
            models.Index(
                fields=["auto_topup_requested_at"],
                name="account_auto_topup_requested",
                condition=Q(auto_topup_requested_at__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return f"credits of {self.user}"


class LotSource(models.TextChoices):
    SIGNUP = "signup"
    PURCHASE = "purchase"
    REFERRAL = "referral"
    ADJUSTMENT = "adjustment"


class Lot(models.Model):
    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="lots")
    source = models.CharField(max_length=16, choices=LotSource.choices)
    package = models.CharField(max_length=64, blank=True, help_text="Package slug, if bought.")
    # `granted` and `reserved` are plain integers: their named CHECKs below bound them (a
    # PositiveIntegerField would add a second, implied CHECK that every write re-evaluates).
    # `remaining` keeps its column CHECK (`remaining >= 0`), which the named one leaves out.
    granted = models.BigIntegerField()
    remaining = models.PositiveBigIntegerField()
    reserved = models.BigIntegerField(default=0)
    expires_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(
        null=True, blank=True, help_text="When the expiry was written."
    )
    created_at = models.DateTimeField()
    # When this lot's next `credits.expiring` notice falls due (7 days, then 24 hours before
    # `expires_at`); NULL once there is none to come. The beat reads only the due ones through
    # the partial index `lot_expiry_notice_due`, never the lots at large (`credits.notices`).
    expiry_notice_at = models.DateTimeField(null=True, blank=True)
    # Claw-backs (refunds, disputes, reversed rewards) claim credits of one lot. What is unspent
    # and unheld is taken at once; what live holds cover is *owed*, taken as each hold is
    # released or expires (a committed hold's credit is spent, so its share of the debt becomes
    # uncollectable); what was already spent is *uncollectable* from the start. `claimed` is the
    # total ever claimed, so a claim is stated as "up to N" and a repeated claim adds nothing.
    clawback_claimed = models.BigIntegerField(default=0)
    clawback_owed = models.BigIntegerField(
        default=0, help_text="Claimed credits still held by live holds, taken when they end."
    )
    clawback_uncollectable = models.BigIntegerField(
        default=0, help_text="Claimed credits that were spent before they could be taken back."
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(granted__gt=0), name="lot_granted_positive"),
            # Owed credits are always held ones, so releasing the holds can always pay the debt.
            models.CheckConstraint(
                condition=Q(clawback_owed__gte=0)
                & Q(clawback_owed__lte=F("reserved"))
                & Q(clawback_uncollectable__gte=0)
                & Q(clawback_claimed__lte=F("granted"))
                & Q(clawback_claimed__gte=F("clawback_owed") + F("clawback_uncollectable")),
                name="lot_what_is_owed_is_held",
            ),
            models.CheckConstraint(
                condition=Q(remaining__lte=F("granted")), name="lot_remaining_within_granted"
            ),
            models.CheckConstraint(
                condition=Q(reserved__gte=0) & Q(reserved__lte=F("remaining")),
                name="lot_reserved_within_remaining",
            ),
        ]
        indexes = [
            # Burn-down: the lots that can still be spent, soonest expiry first.
            models.Index(
                fields=["account", "expires_at", "id"],
                name="lot_spendable",
                condition=Q(remaining__gt=0),
            ),
            models.Index(
                fields=["expiry_notice_at"],
                name="lot_expiry_notice_due",
                condition=Q(expiry_notice_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"lot {self.pk} ({self.source}, {self.remaining}/{self.granted})"


class EntryKind(models.TextChoices):
    GRANT = "grant"
    CHARGE = "charge"
    EXPIRE = "expire"
    ADJUST = "adjust"
    CLAWBACK = "clawback"


class LedgerEntry(models.Model):
    """One movement of credits. Append-only: never updated, never deleted."""

    # No index of its own: `entry_account_newest` (account, -id) serves every lookup by account.
    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="entries", db_index=False
    )
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=200)  # unique: see Meta.constraints
    reference = models.CharField(max_length=200, blank=True)  # indexed but for charges: Meta
    reason = models.TextField(blank=True)
    # Staff who wrote an adjustment; NULL on every other entry. Indexed only where set
    # (`entry_created_by`): the hot path's charges then add no entry to that index.
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "ledger entries"
        # Checked by the admin's credit adjustment and freeze forms (credits/admin.py).
        permissions = [
            ("adjust_credits", "Can adjust an account's credits"),
            ("freeze_accounts", "Can freeze and unfreeze an account"),
        ]
        constraints = [
            # One index both keeps the key unique and serves the prefix lookup of a split
            # adjustment's keys (`key`, `key/2`, ...: `credits_adjust`); `unique=True` would
            # build two (the unique one and a `_like` one for LIKE), each written per entry.
            models.UniqueConstraint(
                fields=["idempotency_key"],
                name="entry_unique_idempotency_key",
                opclasses=["varchar_pattern_ops"],
            ),
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_not_zero"),
            models.CheckConstraint(
                condition=Q(balance_after__gte=0), name="entry_balance_not_negative"
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind=EntryKind.GRANT, amount__gt=0)
                    | Q(
                        kind__in=[EntryKind.CHARGE, EntryKind.EXPIRE, EntryKind.CLAWBACK],
                        amount__lt=0,
                    )
                    | Q(kind=EntryKind.ADJUST)
                ),
                name="entry_amount_sign_matches_kind",
            ),
        ]
        indexes = [
            models.Index(fields=["account", "-id"], name="entry_account_newest"),
            # The admin dashboard sums today's entries by kind.
            models.Index(fields=["kind", "created_at"], name="entry_kind_created"),
            # What a staff member wrote (a user's deletion would look here, were it allowed).
            models.Index(
                fields=["created_by"],
                name="entry_created_by",
                condition=Q(created_by__isnull=False),
            ),
            # The admin's exact search by reference (credits.admin.entry_search), for every
            # kind but charges: they are millions, one per settled request, and are found
            # through their hold's unique request id instead, so the hot path writes no entry
            # here (issue 23: a full index on `reference` cost one entry per charge).
            models.Index(
                fields=["reference"],
                name="entry_reference_not_charge",
                condition=~Q(kind=EntryKind.CHARGE),
            ),
            # A list of one kind, newest first: the admin's kind filter, and the user's ledger
            # of one kind (`GET /api/user/ledger?kind=`), for every kind but charges, which
            # are nearly every row, so the newest of them are the newest rows. Partial like
            # the one above: the hot path's charges write nothing to either (issue 23; a
            # grant's page at 10 million entries was a 7-second walk of the primary key).
            models.Index(
                fields=["kind", "-id"],
                name="entry_kind_newest",
                condition=~Q(kind=EntryKind.CHARGE),
            ),
            models.Index(
                fields=["account", "kind", "-id"],
                name="entry_account_kind_newest",
                condition=~Q(kind=EntryKind.CHARGE),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} ({self.idempotency_key})"


class HoldStatus(models.TextChoices):
    LIVE = "live"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


class Hold(models.Model):
    """Credit reserved for one gateway request until it is committed, released or expires."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: every query of an account's holds asks for its live ones, which
    # `hold_live_account` serves; accounts are never deleted (issue 23: two index entries per
    # pair, the hold's insert and its settle's update, which is not HOT).
    account = models.ForeignKey(
        CreditAccount, on_delete=models.PROTECT, related_name="holds", db_index=False
    )
    # Holds are never looked up by lot or by key, and neither lots nor keys are ever deleted
    # (PROTECT, and the admin revokes keys): an index on either would only be written, twice
    # per request (the authorize's insert, the settle's update).
    lot = models.ForeignKey(Lot, on_delete=models.PROTECT, related_name="holds", db_index=False)
    request_id = models.CharField(max_length=128)  # unique: see Meta.constraints
    # Plain integers: the named CHECKs below bound them.
    amount = models.SmallIntegerField(default=1)
    status = models.CharField(max_length=16, choices=HoldStatus.choices, default=HoldStatus.LIVE)
    charged = models.SmallIntegerField(default=0)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    settled_at = models.DateTimeField(null=True, blank=True)
    api_key = models.ForeignKey(
        "accounts.ApiKey",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    # What authorize answered, replayed as it was when the gateway retries the request id
    # (CONTRACT.md, "Retries"). Since issue 23 not stored but rebuilt, byte for byte, from the
    # hold's own columns and the `answer_*` values below
    # (`credits.gateway.decisions.allowed_answer`): about 40 bytes a hold instead of a 600-byte
    # JSON answer. `decision` is the stored answer of holds written before; it is read as it is
    # (never migrated: rewriting every old hold to save space would first write as much WAL and
    # dead rows as it saves, for rows whose replay is rare), and new holds leave it NULL, which
    # costs nothing in the row. Columns in the order of their alignment (8, 4, 2 bytes, then
    # the text): no padding between them.
    decision = models.JSONField(null=True, blank=True)
    # The credits remaining after this hold (the answer's `credits_remaining`).
    answer_available = models.BigIntegerField(null=True, blank=True)
    # The available balance the first settle answered (its replay answers it again).
    settled_available = models.BigIntegerField(null=True, blank=True)
    # The window the answer's rate-limit headers describe: its limit and remaining requests,
    # and its index in `credits.gateway.ratelimit.WINDOWS` (0 minute, 1 hour, 2 day; NULL: the
    # account had no tier, so the answer had no rate-limit headers).
    answer_limit = models.IntegerField(null=True, blank=True)
    answer_remaining = models.IntegerField(null=True, blank=True)
    answer_window = models.SmallIntegerField(null=True, blank=True)
    # The requested format: its index in `credits.gateway.decisions.FORMATS` (0 openai,
    # 1 anthropic); NULL on a hold the gateway did not make (and on the ones with `decision`).
    answer_format = models.SmallIntegerField(null=True, blank=True)
    # The tier's name as it was (staff may rename a tier later; the replay must not change);
    # empty: no tier (a tier's name is never empty).
    answer_tier = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        constraints = [
            # A UniqueConstraint rather than `unique=True`, which would add a `_like` index
            # nobody reads. The gateway functions' `ON CONFLICT (request_id)` infer it.
            models.UniqueConstraint(fields=["request_id"], name="hold_unique_request_id"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(charged__gte=0) & Q(charged__lte=F("amount")),
                name="hold_charged_within_amount",
            ),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"], name="hold_live_expiry", condition=Q(status="live")
            ),
            models.Index(fields=["account"], name="hold_live_account", condition=Q(status="live")),
        ]

    def __str__(self) -> str:
        return f"hold {self.request_id} ({self.status})"
