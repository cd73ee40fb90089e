"""Reads of the referral programme (no writes, ever)."""

from dataclasses import dataclass

from django.conf import settings
from django.db.models import Sum

from accounts.models import User
from credits.models import EntryKind, LedgerEntry, LotSource

from .models import PaymentReward, Referral, RegistrationReward


@dataclass(frozen=True)
class ReferralSummary:
    invite_code: str
    share_url: str
    registered: int
    paid: int
    credits_earned: int


def referral_share_url(*, invite_code: str) -> str:
    return f"{settings.DASHBOARD_URL}/register?invite={invite_code}"


def referral_summary(*, user: User) -> ReferralSummary:
    """What `user` has earned by inviting others.

    - `registered`: users who registered with the code and confirmed their signup (verified
      their address; rewarded or not: over the daily cap or with the programme off they still
      count as invited);
    - `paid`: of those, the ones whose first payment stands (not fully refunded or disputed);
    - `credits_earned`: referral rewards granted minus those clawed back, from the ledger itself
      (what the user has spent of them since is still earned).
    """
    referrals = Referral.objects.filter(inviter=user)
    paid = (
        referrals.exclude(payment_status=PaymentReward.PENDING)
        .filter(reversed_at__isnull=True)
        .count()
    )
    earned = LedgerEntry.objects.filter(
        account_id=user.pk,
        lot__source=LotSource.REFERRAL,
        kind__in=[EntryKind.GRANT, EntryKind.CLAWBACK],
    ).aggregate(total=Sum("amount"))["total"]
    return ReferralSummary(
        invite_code=user.invite_code,
        share_url=referral_share_url(invite_code=user.invite_code),
        registered=referrals.exclude(registration_status=RegistrationReward.PENDING).count(),
        paid=paid,
        credits_earned=earned or 0,
    )
