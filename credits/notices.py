"""The ledger's notification events (contract part 2, "Notifications"): what each cause writes to
the outbox (`credits.events.event_record`), always inside the causing transaction.

- `credits.low` and `credits.expired`: `entry_notify`, called by `services._write_entry`, the one
  place every entry is written from Python. `credits/gateway/sql/gateway_settle.sql` writes the
  same `credits.low` row for its charge (same cause, same data; the differential test compares
  them), so the hot path needs no second round trip.
- `credits.expiring` and `key.expiring`: `notices_sweep`, the beat task's work.
- `key.created`, `key.revoked`, `key.rotated`: `key_notify`, from `credits.receivers` (the
  signals of `accounts`, which imports nothing of ours).
- `payment.*` and `account.frozen`: written by `credits.payments.handlers`.

Causes (the unique idempotency key of each event) are derived from what caused it, so a cause
seen twice (a redelivered webhook, two beats) writes one row: `credits.low:<entry's key>`,
`credits.expired:<entry's key>`, `credits.expiring:<lot>:<168|24>`, `key.<change>:<key>[...]`.
"""

import hashlib
from datetime import datetime, timedelta

from django.db import transaction

from accounts.models import ApiKey
from config.fields import rfc3339

from . import clock
from .events import event_record
from .models import CreditAccount, EntryKind, Event, EventType, LedgerEntry, Lot

CAUSE_MAX = 200  # Event.cause's length

# `credits.expiring`: the notices before a lot expires, earliest first (hours before expiry).
EXPIRING_WITHIN_HOURS = (168, 24)
KEY_EXPIRING_WITHIN = timedelta(days=7)


def cause_for(prefix: str, key: str) -> str:
    """`<prefix>:<key>`; a key too long for the column is replaced by its SHA-256 (the keys
    the SQL functions write, `charge:<uuid>`, always fit, so both twins derive the same)."""
    cause = f"{prefix}:{key}"
    if len(cause) <= CAUSE_MAX:
        return cause
    return f"{prefix}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def lot_data(lot: Lot) -> dict:
    return {
        "id": lot.pk,
        "source": lot.source,
        "package": lot.package,
        "remaining": lot.remaining,
        "expires_at": rfc3339(lot.expires_at),
    }


def key_data(key: ApiKey) -> dict:
    return {"id": str(key.pk), "name": key.name, "prefix": key.prefix}


# --- entries: credits.low, credits.expired -----------------------------------------------------


def entry_notify(*, account: CreditAccount, lot: Lot, entry: LedgerEntry) -> None:
    """The events an entry causes, in its transaction. `credits.low` fires on the crossing only
    (the balance before the entry at or above the threshold, after it below), so it is armed
    again by whatever brings the balance back up; holds write no entry and never fire it. No
    statement at all for an entry that crosses nothing and expires nothing."""
    threshold = account.low_balance_threshold
    before = entry.balance_after - entry.amount
    if threshold is not None and before >= threshold > entry.balance_after:
        event_record(
            user_id=account.pk,
            type=EventType.CREDITS_LOW,
            data={"balance": entry.balance_after, "threshold": threshold},
            cause=cause_for(EventType.CREDITS_LOW.value, entry.idempotency_key),
            at=entry.created_at,
        )
    if entry.kind == EntryKind.EXPIRE:
        event_record(
            user_id=account.pk,
            type=EventType.CREDITS_EXPIRED,
            data={"lot": lot_data(lot), "amount": -entry.amount},
            cause=cause_for(EventType.CREDITS_EXPIRED.value, entry.idempotency_key),
            at=entry.created_at,
        )


# --- keys: key.created, key.revoked, key.rotated ------------------------------------------------


def key_notify(*, key: ApiKey, type: EventType, cause: str) -> None:
    """One key change's event, in the transaction of the change (the receivers call this)."""
    event_record(user_id=key.user_id, type=type, data={"key": key_data(key)}, cause=cause)


# --- the beat: credits.expiring, key.expiring ---------------------------------------------------


def lot_expiry_notice_first(expires_at: datetime | None) -> datetime | None:
    """When a new lot's first expiry notice falls due (`Lot.expiry_notice_at`)."""
    if expires_at is None:
        return None
    return expires_at - timedelta(hours=EXPIRING_WITHIN_HOURS[0])


def _lot_notice(lot: Lot, now: datetime) -> datetime | None:
    """Write the notice a due lot needs now, if any; return when its next one falls due."""
    if lot.expires_at is None or lot.expires_at <= now or lot.expired_at is not None:
        return None  # expired already: `credits.expired` says so
    if lot.remaining == 0:
        return None  # spent to zero: nothing will expire (a lot's remaining never grows)
    left = lot.expires_at - now
    # The tightest window the lot is in: a lot first seen inside 24 hours gets only that one.
    within = min(h for h in EXPIRING_WITHIN_HOURS if left <= timedelta(hours=h))
    event_record(
        user_id=lot.account_id,
        type=EventType.CREDITS_EXPIRING,
        data={"lot": lot_data(lot), "within_hours": within},
        cause=f"{EventType.CREDITS_EXPIRING.value}:{lot.pk}:{within}",
        at=now,
    )
    later = [h for h in EXPIRING_WITHIN_HOURS if h < within]
    return lot.expires_at - timedelta(hours=max(later)) if later else None


def lots_expiry_notify(*, limit: int = 100) -> int:
    """One batch of lots whose expiry notice is due: write each notice and move the lot to its
    next stage, in one transaction. The partial index on `expiry_notice_at` holds only lots with
    a notice to come, and this reads only those due now: no scan of the lots.

    Two beats racing: `SKIP LOCKED` hands each lot to one of them, a lot is re-checked against
    its new stage when its lock is released, and the cause is unique anyway. Locks lots only
    (never an account), and skips a lot a money operation holds: it is seen a minute later."""
    now = clock.now()
    with transaction.atomic():
        lots = list(
            Lot.objects.select_for_update(skip_locked=True)
            .filter(expiry_notice_at__lte=now)
            .order_by("expiry_notice_at")[:limit]
        )
        for lot in lots:
            lot.expiry_notice_at = _lot_notice(lot, now)
        Lot.objects.bulk_update(lots, ["expiry_notice_at"])
    return len(lots)


def keys_expiry_notify() -> int:
    """`key.expiring` for live keys that expire within 7 days, once per key and expiry. Reads
    the keys in that window (index `apikey_expiry`) and the causes already written; two beats
    racing write one row per cause."""
    now = clock.now()
    keys = list(
        ApiKey.objects.filter(
            revoked_at__isnull=True,
            expires_at__gt=now,
            expires_at__lte=now + KEY_EXPIRING_WITHIN,
        )
    )
    causes = {
        key.pk: f"{EventType.KEY_EXPIRING.value}:{key.pk}:{rfc3339(key.expires_at)}" for key in keys
    }
    seen = set(Event.objects.filter(cause__in=causes.values()).values_list("cause", flat=True))
    written = 0
    for key in keys:
        if causes[key.pk] in seen:
            continue
        with transaction.atomic():
            written += event_record(
                user_id=key.user_id,
                type=EventType.KEY_EXPIRING,
                data={"key": key_data(key), "expires_at": rfc3339(key.expires_at)},
                cause=causes[key.pk],
                at=now,
            )
    return written


def notices_sweep(*, limit: int = 100) -> int:
    """The beat's work: every due lot notice (in batches), then the keys. Returns events
    written or lots handled."""
    total = 0
    while True:
        done = lots_expiry_notify(limit=limit)
        total += done
        if done < limit:
            break
    return total + keys_expiry_notify()
