"""Row locks of the ledger: one helper per row kind, each taken inside the caller's transaction.

**Lock order.** An operation takes the row locks it needs in this order and never the other way
round, so two operations can never wait for each other in a cycle:

1. the row of the cause, outside the ledger, when there is one: the purchase a Stripe event is
   about (`credits.payments.handlers._locked_purchase`), the referral being rewarded or reversed
   (`referrals.services`), the user whose key is created (`accounts.services`);
2. the account (`account_lock`). Every money operation starts here, one account at a time;
3. its holds (`hold_lock`, `holds_due_lock`);
4. its lots (`lot_lock`, `lots_due_lock`, `lots_spendable_lock`; several in burn-down order);
5. the API key of a hold, whose spend counters change with it (`key_lock`);
6. the usage bucket, written last by the trigger on usage records.

The gateway's SQL functions (`credits/gateway/sql/`) lock in the same order: the account, then
the hold, then the lot, then the key, then (through the trigger) the bucket. Outside money
operations a key row is locked alone (rename, budget, rotation, revoke), so it never waits for
an account while holding the key.
"""

from datetime import datetime
from uuid import UUID

from django.db.models import F, Q, QuerySet

from accounts.models import ApiKey

from .models import CreditAccount, Hold, HoldStatus, Lot


def account_lock(user_id: UUID) -> CreditAccount:
    return CreditAccount.objects.select_for_update().get(pk=user_id)


def hold_lock(*, request_id: str) -> Hold:
    return Hold.objects.select_for_update().get(request_id=request_id)


def holds_due_lock(account: CreditAccount, now: datetime) -> QuerySet[Hold]:
    """The account's live holds that have expired, soonest first."""
    return (
        Hold.objects.select_for_update()
        .filter(account=account, status=HoldStatus.LIVE, expires_at__lte=now)
        .order_by("expires_at")
    )


def lot_lock(lot_id: int, *, account: CreditAccount | None = None) -> Lot:
    """One lot; with `account`, only if it is that account's (else `Lot.DoesNotExist`)."""
    lots = Lot.objects.select_for_update()
    if account is not None:
        lots = lots.filter(account=account)
    return lots.get(pk=lot_id)


def lots_due_lock(account: CreditAccount, now: datetime) -> QuerySet[Lot]:
    """The account's lots past their expiry whose expiry is not written yet, soonest first."""
    return (
        Lot.objects.select_for_update()
        .filter(account=account, expired_at__isnull=True, expires_at__lte=now)
        .order_by("expires_at", "id")
    )


def lots_spendable_lock(account: CreditAccount, now: datetime) -> QuerySet[Lot]:
    """The account's lots with unheld credit, in burn-down order (soonest expiry first, never
    expiring last, ties to the oldest grant)."""
    return (
        Lot.objects.select_for_update()
        .filter(account=account, remaining__gt=F("reserved"))
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by(F("expires_at").asc(nulls_last=True), "id")
    )


def key_lock(key_id: UUID) -> ApiKey:
    """The API key of a hold, after its account (and lots): its spend counters."""
    return ApiKey.objects.select_for_update().get(pk=key_id)
