"""The only way credits move. Views, admin actions, tasks, webhooks and commands call these.

Concurrency policy (one rule, everywhere): every operation runs in one transaction that first
locks its account row (`SELECT ... FOR UPDATE`), then touches lots and holds of that account only.
Locking the account serialises all money operations of one account, so two of them can never
both see the same available credit; accounts are always locked one at a time, so there is no lock
order to get wrong. On SQLite (the embedded default) `FOR UPDATE` is a no-op, but transactions
there begin IMMEDIATE, which takes the database's single write lock up front: the same effect.

Idempotency: every entry carries a unique idempotency key. Operations look the key up *after*
taking the account lock, so a concurrent repeat waits for the first to commit and then finds its
result; the unique index catches the one case the lock cannot (the same key used on two accounts).

Expiry: `_settle_due` runs at the start of every operation whose account has something due
(`next_event_at <= now`), so a lot past its `expires_at` is never spent even if the periodic sweep
has not run, and every expired credit gets exactly one `expire` entry (its key names the lot or the
hold it comes from).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Min, Q, QuerySet, Sum

from accounts import budgets
from accounts.models import ApiKey, User
from config.ids import uuid7

from . import clock, locks, notices
from .errors import (
    AccountFrozen,
    AccountLimitExceeded,
    HoldAlreadySettled,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    KeyBudgetExceeded,
    LedgerLimitExceeded,
    ModelNotAllowed,
)
from .models import (
    MAX_CREDITS,
    CreditAccount,
    EntryKind,
    Hold,
    HoldStatus,
    LedgerEntry,
    Lot,
    LotSource,
)
from .signals import auto_topup_requested, clawback_collected

ACCOUNT_LIMIT_MESSAGE = "This account has reached its monthly credit limit."
KEY_BUDGET_MESSAGE = "This API key has reached its budget for the period."
MODEL_NOT_ALLOWED_MESSAGE = "This API key may not use the requested model."


@dataclass(frozen=True)
class Balance:
    balance: int
    reserved: int

    @property
    def available(self) -> int:
        return self.balance - self.reserved


@dataclass(frozen=True)
class HoldResult:
    hold: Hold
    created: bool  # False when the request id had been held before (a replay)
    available: int  # available balance after the hold


@dataclass(frozen=True)
class SettleResult:
    hold: Hold
    charged: int
    available: int
    replayed: bool


# --- reads (no writes, ever) ---------------------------------------------------------------


def account_balance(*, account: CreditAccount, now: datetime | None = None) -> Balance:
    """Balance and reserved as of `now`, treating expired lots and holds as already swept."""
    now = now or clock.now()
    if account.next_event_at is None or now < account.next_event_at:
        return Balance(account.balance, account.reserved)
    balance = (
        Lot.objects.filter(account=account, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .aggregate(total=Sum("remaining"))["total"]
        or 0
    )
    live = Hold.objects.filter(account=account, status=HoldStatus.LIVE, expires_at__gt=now)
    reserved = live.aggregate(total=Sum("amount"))["total"] or 0
    # Credits held before their lot expired still belong to the balance until settled.
    balance += live.filter(lot__expires_at__lte=now).aggregate(total=Sum("amount"))["total"] or 0
    # An expired hold's credit goes back to its lot, where an owed claw-back takes it.
    owing = Lot.objects.filter(account=account, clawback_owed__gt=0).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    for lot_id, owed in owing.values_list("pk", "clawback_owed"):
        ended = Hold.objects.filter(
            lot_id=lot_id, status=HoldStatus.LIVE, expires_at__lte=now
        ).aggregate(total=Sum("amount"))["total"]
        balance -= min(owed, ended or 0)
    return Balance(balance, reserved)


def lots_spendable(*, account: CreditAccount, now: datetime | None = None) -> list[Lot]:
    """Unexpired lots with credit left, in burn-down order: soonest expiry first, never-expiring
    last, ties to the oldest grant."""
    now = now or clock.now()
    return list(
        Lot.objects.filter(account=account, remaining__gt=0)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_last=True), "id")
    )


def entry_ids_newest(
    *, account_id: Any, kind: str | None = None, before_id: int | None = None, limit: int
) -> "QuerySet[LedgerEntry, Any]":
    """The ids of an account's newest entries (of one kind, older than `before_id`), at most
    `limit`, newest first: a query that reads one index and no table row, meant as the
    `id__in=` of the query that fetches the rows (the user's ledger, the admin's user page).

    Why two steps (issue 23): asked for `account_id = A ORDER BY id DESC LIMIT n` with the
    rows' columns, the planner expects an account's entries to be spread evenly and prefers
    walking the primary key backwards, filtering; for an account whose entries are all old (a
    quiet heavy account) that walks everyone's newer entries, 24 s at 10 million. Asked for
    the ids only, `entry_account_newest` (account, id DESC) answers from the index alone, and
    the rows are then fetched by primary key: under a millisecond whatever the account.
    A kind other than `charge` reads `entry_account_kind_newest` the same way; charges, nearly
    all of an account's entries, are its entries minus the few others (that index again)."""
    entries = LedgerEntry.objects.filter(account_id=account_id)
    if before_id is not None:
        entries = entries.filter(id__lt=before_id)
    if kind == EntryKind.CHARGE:
        others = LedgerEntry.objects.filter(account_id=account_id).exclude(kind=EntryKind.CHARGE)
        entries = entries.exclude(id__in=others.values("id"))
    elif kind is not None:
        entries = entries.filter(kind=kind)
    return entries.order_by("-id").values("id")[:limit]


# --- the building blocks (call inside an atomic block, with the account locked) -------------


def _existing_entry(key: str) -> LedgerEntry | None:
    return LedgerEntry.objects.filter(idempotency_key=key).first()


def _write_entry(
    account: CreditAccount,
    lot: Lot,
    *,
    kind: str,
    amount: int,
    key: str,
    now: datetime,
    reference: str = "",
    reason: str = "",
    created_by: User | None = None,
) -> LedgerEntry:
    """Append one entry; the caller has already moved `account.balance` and the lot."""
    _auto_topup_mark(account, amount, now)
    entry = LedgerEntry.objects.create(
        account=account,
        lot=lot,
        kind=kind,
        amount=amount,
        balance_after=account.balance,
        idempotency_key=key,
        reference=reference,
        reason=reason,
        created_by=created_by,
        created_at=now,
    )
    # Notifications (issue 17): `credits.low` on a crossing of the threshold, `credits.expired`
    # for an expire entry, in this transaction; nothing written otherwise. The SQL twin of
    # `credits.low` is in gateway_settle.sql.
    notices.entry_notify(account=account, lot=lot, entry=entry)
    return entry


def _auto_topup_mark(account: CreditAccount, amount: int, now: datetime) -> None:
    """Auto top-up (issue 19), kept apart from the rest of the entry: an entry taking the
    balance from at least the threshold to below it stamps the account (saved with it by
    `_save_account`) and kicks the payments app after commit. The earliest stamp stays until
    it is claimed. gateway_settle.sql does the same in its account UPDATE.

    Every kind of entry stamps, a claw-back included, as the contract says ("when a ledger
    entry takes the balance below threshold"): a refund that takes the balance below the
    threshold starts a top-up (a dispute does not: it freezes the account, and a frozen
    account is never topped up). The closing note of issue 19 questions this rule."""
    threshold = account.auto_topup_threshold
    if threshold is None:
        return
    if not account.balance < threshold <= account.balance - amount:
        return
    if account.auto_topup_requested_at is None:
        account.auto_topup_requested_at = now
    auto_topup_requested.send(sender=CreditAccount, user_id=account.pk)


def _save_account(account: CreditAccount) -> None:
    account.save(
        update_fields=[
            "balance",
            "reserved",
            "consumed",
            "next_event_at",
            "month_spent",
            "month_start",
            "auto_topup_requested_at",
        ]
    )


def account_month_spent(*, account: CreditAccount, now: datetime) -> int:
    """Credits charged to the account in the UTC calendar month holding `now`."""
    month = budgets.period_start(budgets.MONTH, now)
    return budgets.counted(account.month_spent, account.month_start, month)


def account_limit_exceeded(*, account: CreditAccount, now: datetime, amount: int = 1) -> bool:
    """True when charging `amount` more, on top of the month's charges and what live holds
    (`reserved`) may still charge, would pass the account's monthly limit."""
    if account.monthly_credit_limit is None:
        return False
    spent = account_month_spent(account=account, now=now)
    return spent + account.reserved + amount > account.monthly_credit_limit


def _key_held_add(hold: Hold, amount: int) -> None:
    """A key's live holds change with its hold (under the account lock, key locked last)."""
    if hold.api_key_id is not None:
        key = locks.key_lock(hold.api_key_id)
        key.held += amount
        key.save(update_fields=["held"])


def _recompute_next_event(account: CreditAccount) -> None:
    lot_next = (
        Lot.objects.filter(account=account, remaining__gt=F("reserved"), expired_at__isnull=True)
        .exclude(expires_at__isnull=True)
        .aggregate(at=Min("expires_at"))["at"]
    )
    hold_next = Hold.objects.filter(account=account, status=HoldStatus.LIVE).aggregate(
        at=Min("expires_at")
    )["at"]
    candidates = [at for at in (lot_next, hold_next) if at is not None]
    account.next_event_at = min(candidates) if candidates else None


def _release_hold(account: CreditAccount, hold: Hold, *, status: str, now: datetime) -> None:
    """Return a hold's credit to its lot. If the lot has expired meanwhile, the credit expires
    now, with its own entry (the lot's sweep left it alone because it was held)."""
    lot = locks.lot_lock(hold.lot_id)
    lot.reserved -= hold.amount
    account.reserved -= hold.amount
    if lot.expires_at is not None and lot.expires_at <= now:
        lot.remaining -= hold.amount
        account.balance -= hold.amount
        # An owed claw-back has nothing to take from an expired credit: its debt ends with it.
        lot.clawback_owed = min(lot.clawback_owed, lot.reserved)
        _write_entry(
            account,
            lot,
            kind=EntryKind.EXPIRE,
            amount=-hold.amount,
            key=f"expire:hold:{hold.pk}",
            now=now,
            reference=f"request:{hold.request_id}",
        )
        # Not marking the lot expired here: if it has not been swept yet, its unheld credit
        # still needs its `expire:lot` entry, which `_settle_due` writes only for unmarked lots.
        if account.next_event_at is None or lot.expires_at < account.next_event_at:
            account.next_event_at = lot.expires_at
    elif lot.expires_at is not None and (
        account.next_event_at is None or lot.expires_at < account.next_event_at
    ):
        # The credit is unheld again in a lot that will expire: a recomputation made while the
        # lot was fully held skipped it, so its expiry must be due again.
        account.next_event_at = lot.expires_at
    if lot.clawback_owed > 0 and (lot.expires_at is None or lot.expires_at > now):
        _collect_owed(account, lot, hold, now)
    lot.save(update_fields=["reserved", "remaining", "clawback_owed"])
    _key_held_add(hold, -hold.amount)
    hold.status = status
    hold.settled_at = now
    hold.save(update_fields=["status", "settled_at"])


def _collect_owed(account: CreditAccount, lot: Lot, hold: Hold, now: datetime) -> None:
    """The released credit of a lot that owes a claw-back is taken back at once, with its own
    `clawback` entry (the claim that made the debt named the purchase or reward)."""
    take = min(lot.clawback_owed, hold.amount)
    lot.clawback_owed -= take
    lot.remaining -= take
    account.balance -= take
    _write_entry(
        account,
        lot,
        kind=EntryKind.CLAWBACK,
        amount=-take,
        key=f"clawback:hold:{hold.pk}",
        now=now,
        reference=f"request:{hold.request_id}",
        reason="Claw-back owed on this lot, taken when the hold ended.",
    )
    clawback_collected.send(sender=Lot, lot=lot, amount=take)


def _settle_due(account: CreditAccount, now: datetime) -> None:
    """Write what has come due on a locked account: release expired holds, expire lots."""
    if account.next_event_at is None or now < account.next_event_at:
        return
    for hold in locks.holds_due_lock(account, now):
        _release_hold(account, hold, status=HoldStatus.EXPIRED, now=now)
    for lot in locks.lots_due_lock(account, now):
        unheld = lot.remaining - lot.reserved
        if unheld > 0:
            lot.remaining -= unheld
            account.balance -= unheld
            _write_entry(
                account,
                lot,
                kind=EntryKind.EXPIRE,
                amount=-unheld,
                key=f"expire:lot:{lot.pk}",
                now=now,
            )
        lot.expired_at = now
        lot.save(update_fields=["remaining", "expired_at"])
    _recompute_next_event(account)
    _save_account(account)


def _open(user_id: UUID, now: datetime) -> CreditAccount:
    account = locks.account_lock(user_id)
    _settle_due(account, now)
    return account


def _check_replay(entry: LedgerEntry, *, amount: int, account: CreditAccount) -> LedgerEntry:
    if entry.account_id != account.pk or entry.amount != amount:
        raise _unique_key_guard(entry.idempotency_key)
    return entry


def _unique_key_guard(key: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"The idempotency key {key!r} was already used for a different operation; "
        "nothing was written."
    )


# --- operations ------------------------------------------------------------------------------


def account_open(*, user_id: UUID) -> CreditAccount:
    """Create the credit account of a new user (idempotent)."""
    account, _ = CreditAccount.objects.get_or_create(user_id=user_id)
    return account


def credits_grant(
    *,
    user_id: UUID,
    amount: int,
    source: str,
    idempotency_key: str,
    expires_at: datetime | None = None,
    package: str = "",
    reference: str = "",
    reason: str = "",
    created_by: User | None = None,
    kind: str = EntryKind.GRANT,
) -> LedgerEntry:
    """Add a lot of `amount` credits and its entry. Repeating the key returns the first entry."""
    if amount <= 0:
        raise ValueError("a grant must be positive")
    now = clock.now()
    try:
        with transaction.atomic():
            account = _open(user_id, now)
            existing = _existing_entry(idempotency_key)
            if existing is not None:
                return _check_replay(existing, amount=amount, account=account)
            if amount > MAX_CREDITS - account.balance:
                raise LedgerLimitExceeded(
                    f"Cannot grant {amount} credits: the balance would pass {MAX_CREDITS:,}, "
                    "the most the ledger can hold.",
                    field="amount",
                )
            lot = Lot.objects.create(
                account=account,
                source=source,
                package=package,
                granted=amount,
                remaining=amount,
                expires_at=expires_at,
                created_at=now,
                expiry_notice_at=notices.lot_expiry_notice_first(expires_at),
            )
            if expires_at is not None and expires_at <= now:
                # Granted already expired (a late webhook, say): it is recorded and expires at once.
                account.next_event_at = now
            elif expires_at is not None and (
                account.next_event_at is None or expires_at < account.next_event_at
            ):
                account.next_event_at = expires_at
            account.balance += amount
            entry = _write_entry(
                account,
                lot,
                kind=kind,
                amount=amount,
                key=idempotency_key,
                now=now,
                reference=reference,
                reason=reason,
                created_by=created_by,
            )
            _save_account(account)
            _settle_due(account, now)
            return entry
    except IntegrityError as exc:
        if _existing_entry(idempotency_key) is not None:
            raise _unique_key_guard(idempotency_key) from exc
        raise


def credits_adjust(
    *,
    user_id: UUID,
    amount: int,
    reason: str,
    idempotency_key: str,
    created_by: User | None = None,
    expires_at: datetime | None = None,
) -> list[LedgerEntry]:
    """A staff adjustment. Positive: a new `adjustment` lot. Negative: taken from available
    credit in burn-down order, refused (writing nothing) if it exceeds the available balance."""
    if not reason.strip():
        raise ValueError("an adjustment needs a reason")
    if amount > 0:
        return [
            credits_grant(
                user_id=user_id,
                amount=amount,
                source=LotSource.ADJUSTMENT,
                kind=EntryKind.ADJUST,
                idempotency_key=idempotency_key,
                expires_at=expires_at,
                reason=reason,
                created_by=created_by,
                reference="adjustment",
            )
        ]
    if amount == 0:
        raise ValueError("an adjustment cannot be zero")
    now = clock.now()
    with transaction.atomic():
        account = _open(user_id, now)
        existing = list(
            LedgerEntry.objects.filter(
                Q(idempotency_key=idempotency_key)
                | Q(idempotency_key__startswith=f"{idempotency_key}/")
            ).order_by("id")
        )
        if existing:
            if sum(e.amount for e in existing) != amount or existing[0].account_id != account.pk:
                raise _unique_key_guard(idempotency_key)
            return existing
        wanted = -amount
        if wanted > account.balance - account.reserved:
            raise InsufficientCredits(
                f"Cannot remove {wanted} credits: only "
                f"{account.balance - account.reserved} are available.",
                field="amount",
            )
        entries: list[LedgerEntry] = []
        for lot in locks.lots_spendable_lock(account, now):
            take = min(wanted, lot.remaining - lot.reserved)
            lot.remaining -= take
            lot.save(update_fields=["remaining"])
            account.balance -= take
            key = idempotency_key if not entries else f"{idempotency_key}/{len(entries) + 1}"
            entries.append(
                _write_entry(
                    account,
                    lot,
                    kind=EntryKind.ADJUST,
                    amount=-take,
                    key=key,
                    now=now,
                    reference="adjustment",
                    reason=reason,
                    created_by=created_by,
                )
            )
            wanted -= take
            if wanted == 0:
                break
        if wanted:
            # The cached available balance promised more than the lots hold: refuse (the
            # transaction rolls back) rather than write a partial adjustment.
            raise InsufficientCredits(
                f"Cannot remove {-amount} credits: only {-amount - wanted} are available.",
                field="amount",
            )
        _save_account(account)
        return entries


@dataclass(frozen=True)
class ClawbackResult:
    """What one claim did: `entry` took unspent, unheld credit now (None: nothing to take);
    `owed` credits wait for live holds to end; `uncollectable` were spent already."""

    entry: LedgerEntry | None
    owed: int
    uncollectable: int


@dataclass(frozen=True)
class ClawbackSplit:
    """What a claim up to a total would add, and how: taken now, owed (held), uncollectable."""

    claim: int
    take: int
    owed: int
    uncollectable: int

    def __iter__(self) -> Iterator[int]:
        return iter((self.claim, self.take, self.owed, self.uncollectable))


def clawback_split(*, lot: Lot, claim_up_to: int, now: datetime) -> ClawbackSplit:
    """The rule of `credits_claw_back`, without writing: the claim is a total (capped at what
    the lot granted), so only what it adds to the lot's claims counts. Also the admin's refund
    preview, so that what staff are shown is what the claw-back will do."""
    claim = min(claim_up_to, lot.granted) - lot.clawback_claimed
    if claim <= 0:
        return ClawbackSplit(0, 0, 0, 0)
    if lot.expires_at is not None and lot.expires_at <= now:
        # Expired credit is already gone (its expire entry says so); a live hold's credit
        # on it still expires when the hold ends. Nothing is taken, nothing is owed.
        take, owed = 0, 0
    else:
        take = min(claim, lot.remaining - lot.reserved)
        owed = min(claim - take, lot.reserved - lot.clawback_owed)
    return ClawbackSplit(claim, take, owed, claim - take - owed)


def credits_claw_back(
    *,
    user_id: UUID,
    lot_id: int,
    claim_up_to: int,
    idempotency_key: str,
    reference: str = "",
    reason: str = "",
) -> ClawbackResult:
    """Claim back credits of one lot (refunds, disputes, reversed rewards) until the lot's
    claims total `claim_up_to` (capped at what it granted). Stated as a total, a claim is
    idempotent: repeating it, or a smaller one, claims nothing more.

    What the claim adds is taken from the lot's unspent, unheld credits now; what live holds
    cover is owed and taken as each hold is released or expires (a committed hold's credit is
    spent); the rest was spent already and is recorded as uncollectable, for staff to see.
    Never below zero."""
    if claim_up_to <= 0:
        raise ValueError("a claw-back claim must be positive")
    now = clock.now()
    with transaction.atomic():
        account = _open(user_id, now)
        lot = locks.lot_lock(lot_id, account=account)
        claim, take, owed, uncollectable = clawback_split(lot=lot, claim_up_to=claim_up_to, now=now)
        if claim <= 0:
            return ClawbackResult(_existing_entry(idempotency_key), 0, 0)
        lot.remaining -= take
        lot.clawback_claimed += claim
        lot.clawback_owed += owed
        lot.clawback_uncollectable += uncollectable
        lot.save(
            update_fields=[
                "remaining",
                "clawback_claimed",
                "clawback_owed",
                "clawback_uncollectable",
            ]
        )
        entry = None
        if take > 0:
            account.balance -= take
            entry = _write_entry(
                account,
                lot,
                kind=EntryKind.CLAWBACK,
                amount=-take,
                key=idempotency_key,
                now=now,
                reference=reference,
                reason=reason,
            )
            _recompute_next_event(account)
            _save_account(account)
        return ClawbackResult(entry, owed, uncollectable)


def hold_create(
    *,
    user_id: UUID,
    request_id: str,
    amount: int = 1,
    api_key_id: UUID | None = None,
    ttl: timedelta | None = None,
    model: str | None = None,
    now: datetime | None = None,
) -> HoldResult:
    """Reserve `amount` credits of one lot for a request. A request id held before returns that
    hold unchanged (whatever became of it); nothing is reserved twice.

    Checks in the contract's order: frozen, available credit, the account's monthly limit, the
    key's budget, the key's allowed models. A limit counts the period's charges plus live holds
    (both kept on rows locked here), so concurrent holds can never take it past its limit.

    `now`: the instant of the gateway's answer, which the hold keeps as its `created_at` (a
    replay rebuilds the answer from it); the clock's by default."""
    now = now or clock.now()
    ttl = ttl if ttl is not None else timedelta(seconds=settings.HOLD_TTL_SECONDS)
    with transaction.atomic():
        account = _open(user_id, now)
        existing = Hold.objects.filter(request_id=request_id).first()
        if existing is not None:
            if existing.account_id != account.pk or existing.api_key_id != api_key_id:
                raise IdempotencyConflict(
                    "This request id belongs to another request.", code="request_id_conflict"
                )
            return HoldResult(existing, created=False, available=account.balance - account.reserved)
        if account.frozen_at is not None:
            raise AccountFrozen("This account is frozen; contact support.")
        if account.balance - account.reserved < amount:
            raise InsufficientCredits("Not enough available credits for this request.")
        if account_limit_exceeded(account=account, now=now, amount=amount):
            raise AccountLimitExceeded(ACCOUNT_LIMIT_MESSAGE)
        # Read, not locked: its counters change only under this account's lock, held here.
        key = ApiKey.objects.get(pk=api_key_id) if api_key_id is not None else None
        if key is not None and budgets.key_budget_exceeded(key, now, amount):
            raise KeyBudgetExceeded(KEY_BUDGET_MESSAGE)
        if key is not None and not budgets.model_allowed(key, model):
            raise ModelNotAllowed(MODEL_NOT_ALLOWED_MESSAGE)
        lot = next(
            iter(
                locks.lots_spendable_lock(account, now).filter(
                    remaining__gte=F("reserved") + amount
                )
            ),
            None,
        )
        if lot is None:
            raise InsufficientCredits("Not enough available credits in one lot for this request.")
        lot.reserved += amount
        lot.save(update_fields=["reserved"])
        hold = Hold.objects.create(
            # Time-ordered (config/ids.py), as the SQL path's: the retention walks the key.
            id=uuid7(now),
            account=account,
            lot=lot,
            request_id=request_id,
            amount=amount,
            created_at=now,
            expires_at=now + ttl,
            api_key_id=api_key_id,
        )
        account.reserved += amount
        if account.next_event_at is None or hold.expires_at < account.next_event_at:
            account.next_event_at = hold.expires_at
        _save_account(account)
        _key_held_add(hold, amount)
        return HoldResult(hold, created=True, available=account.balance - account.reserved)


def _charge_available(account: CreditAccount, hold: Hold, now: datetime) -> int:
    """A success settled after its hold expired: charge from available credit if there is any,
    and only within the account's monthly limit and the key's budget (a late success never
    passes a limit)."""
    if account_limit_exceeded(account=account, now=now, amount=hold.amount):
        return 0
    if hold.api_key_id is not None and budgets.key_budget_exceeded(
        locks.key_lock(hold.api_key_id), now, hold.amount
    ):
        return 0
    lot = next(
        iter(
            locks.lots_spendable_lock(account, now).filter(
                remaining__gte=F("reserved") + hold.amount
            )
        ),
        None,
    )
    if lot is None:
        return 0
    _charge(account, lot, hold, now, held=False)
    return hold.amount


def _charge(account: CreditAccount, lot: Lot, hold: Hold, now: datetime, *, held: bool) -> None:
    """Charge a hold's amount from `lot` with its one `charge` entry; `held` when the credit was
    still reserved on that lot (a live hold), so the reservation ends with it."""
    lot.remaining -= hold.amount
    account.balance -= hold.amount
    account.consumed += hold.amount
    if held:
        lot.reserved -= hold.amount
        account.reserved -= hold.amount
        # A claw-back owed on this lot can no longer count on this credit: it is spent.
        # (gateway_settle's commit does the same in SQL.)
        spent_owed = max(lot.clawback_owed - lot.reserved, 0)
        lot.clawback_owed -= spent_owed
        lot.clawback_uncollectable += spent_owed
    lot.save(update_fields=["remaining", "reserved", "clawback_owed", "clawback_uncollectable"])
    account.month_spent = account_month_spent(account=account, now=now) + hold.amount
    account.month_start = budgets.period_start(budgets.MONTH, now)
    if hold.api_key_id is not None:
        key = locks.key_lock(hold.api_key_id)
        fields = budgets.key_charge(key, now, hold.amount)
        if held:
            key.held -= hold.amount
            fields.append("held")
        key.save(update_fields=fields)
    _write_entry(
        account,
        lot,
        kind=EntryKind.CHARGE,
        amount=-hold.amount,
        key=f"charge:{hold.pk}",
        now=now,
        reference=f"request:{hold.request_id}",
    )


def hold_commit(*, request_id: str) -> SettleResult:
    """Charge a held request: exactly the held amount, from the lot it was held on (even if that
    lot has expired since). After the hold expired, charge from available credit if any."""
    return _settle(request_id, commit=True)


def hold_release(*, request_id: str) -> SettleResult:
    """Release a held request: nothing is charged."""
    return _settle(request_id, commit=False)


def _settle(request_id: str, *, commit: bool) -> SettleResult:
    now = clock.now()
    user_id = (
        Hold.objects.filter(request_id=request_id).values_list("account_id", flat=True).first()
    )
    if user_id is None:
        raise HoldNotFound("No authorized request has this request id.", code="request_not_found")
    with transaction.atomic():
        account = locks.account_lock(user_id)
        hold = locks.hold_lock(request_id=request_id)
        wanted = HoldStatus.COMMITTED if commit else HoldStatus.RELEASED
        if hold.status in (HoldStatus.COMMITTED, HoldStatus.RELEASED):
            if hold.status != wanted:
                raise HoldAlreadySettled(f"This request was already settled as {hold.status}.")
            # A replay changes nothing (CONTRACT.md), not even what has come due meanwhile:
            # the SQL function's replay writes nothing either (the differential test found the
            # services writing the due expiries here). The available balance is read as of now.
            available = account_balance(account=account, now=now).available
            return SettleResult(hold, hold.charged, available, replayed=True)
        if hold.status == HoldStatus.LIVE and hold.expires_at > now:
            if commit:
                lot = locks.lot_lock(hold.lot_id)
                _charge(account, lot, hold, now, held=True)
                hold.charged = hold.amount
                hold.status = HoldStatus.COMMITTED
                hold.settled_at = now
                hold.save(update_fields=["charged", "status", "settled_at"])
            else:
                _release_hold(account, hold, status=HoldStatus.RELEASED, now=now)
            _settle_due(account, now)
            _save_account(account)
            return SettleResult(
                hold, hold.charged, account.balance - account.reserved, replayed=False
            )
        # The hold has expired (swept already or due now): its credit went back to the lot.
        _settle_due(account, now)
        hold.refresh_from_db()
        if commit:
            hold.charged = _charge_available(account, hold, now)
        hold.status = wanted
        hold.settled_at = now
        hold.save(update_fields=["charged", "status", "settled_at"])
        _save_account(account)
        return SettleResult(hold, hold.charged, account.balance - account.reserved, replayed=False)


def account_settle_due(*, user_id: UUID) -> None:
    """Write whatever has come due on one account (the sweep calls this)."""
    with transaction.atomic(durable=True):
        _open(user_id, clock.now())


def accounts_sweep(*, limit: int = 500) -> int:
    """Settle every account with something due, one transaction per account. Safe to run
    concurrently with itself and with any operation: each account is handled under its lock,
    and a second sweep finds nothing left to do."""
    now = clock.now()
    due = list(
        CreditAccount.objects.filter(next_event_at__lte=now)
        .order_by("next_event_at")
        .values_list("pk", flat=True)[:limit]
    )
    for user_id in due:
        account_settle_due(user_id=user_id)
    return len(due)


def account_freeze(*, user_id: UUID, reason: str) -> bool:
    """Freeze the account unless it is frozen already; True if this call froze it."""
    with transaction.atomic():
        account = locks.account_lock(user_id)
        if account.frozen_at is not None:
            return False
        account.frozen_at = clock.now()
        account.frozen_reason = reason
        account.save(update_fields=["frozen_at", "frozen_reason"])
        return True


def account_unfreeze(*, user_id: UUID) -> None:
    CreditAccount.objects.filter(pk=user_id).update(frozen_at=None, frozen_reason="")


def account_limit_set(*, user_id: UUID, monthly_credit_limit: int | None) -> CreditAccount:
    """Set (or with None, remove) the account's monthly credit limit. A limit below what the
    month has charged plus what is held denies the next request; nothing is taken back."""
    account_open(user_id=user_id)
    with transaction.atomic():
        account = _open(user_id, clock.now())
        account.monthly_credit_limit = monthly_credit_limit
        account.save(update_fields=["monthly_credit_limit"])
        return account


def auto_topup_threshold_set(*, user_id: UUID, threshold: int | None) -> None:
    """Set (or with None, turn off) the balance below which an entry stamps the account for an
    auto top-up (the payments app's configuration keeps it in step). Like `credits.low`, the
    stamp is for the crossing: a balance already below a new threshold stamps nothing. Turning
    it off drops a stamp not yet claimed. Call inside the caller's transaction."""
    account_open(user_id=user_id)
    with transaction.atomic():
        account = locks.account_lock(user_id)
        account.auto_topup_threshold = threshold
        if threshold is None:
            account.auto_topup_requested_at = None
        account.save(update_fields=["auto_topup_threshold", "auto_topup_requested_at"])


def low_balance_threshold_set(*, user_id: UUID, threshold: int | None) -> CreditAccount:
    """Set (or with None, turn off) the balance below which `credits.low` fires. Takes effect at
    the next entry: a balance already below a raised threshold fires nothing until it has been
    back at or above it (the notice is for the crossing, not the state)."""
    account_open(user_id=user_id)
    with transaction.atomic():
        account = _open(user_id, clock.now())
        account.low_balance_threshold = threshold
        account.save(update_fields=["low_balance_threshold"])
        return account
