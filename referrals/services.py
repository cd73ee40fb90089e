"""Writes of the referral programme. The receivers call these; money moves through
`credits.services` only.

Lock order (why there is no deadlock): every path takes its locks from the invitee's side to the
inviter's side. Signup confirmation: the invitee's user row (taken by the verification) → the
invitee's credit account (the signup grant) → the referral row → the inviter's user row → the
inviter's credit account. A payment or a
reversal: the invitee's credit account (taken by the purchase's own grant or claw-back, when it
sends the signal inside its transaction) → the referral row → the inviter's credit account. An
inviter always registered before their invitee, so following invitee → inviter edges can never
come back to a row already held: the referral graph has no cycles.
"""

import logging
from datetime import datetime, time, timedelta
from uuid import UUID

from django.db import transaction

from accounts.models import User, mailbox_of
from config.errors import ApplicationError
from credits import clock
from credits import services as credits_services
from credits.models import LotSource

from .models import PaymentReward, Referral, ReferralProgram, RegistrationReward

logger = logging.getLogger(__name__)

# Longest input worth looking up; codes are 8 characters, the column allows 16.
_MAX_CODE_LENGTH = 16


def invite_code_normalize(code: str | None) -> str:
    """Invite codes are stored upper-case and matched case-insensitively; surrounding spaces
    (a pasted code) are not part of it. Empty means "no code"."""
    return (code or "").strip().upper()


def _utc_day_start(now: datetime) -> datetime:
    return datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)


def referral_register(*, invitee: User, invite_code: str | None) -> Referral | None:
    """Link a user who has just registered to the owner of `invite_code`.

    Runs inside the registration transaction: raising `ApplicationError` here undoes the whole
    registration, so an unknown code or a self-referral creates no user. Returns None when no
    code was given. The registration reward waits for the invitee's signup to be confirmed
    (`referral_reward_registration`): an address nobody verified earns nobody anything.
    """
    code = invite_code_normalize(invite_code)
    if not code:
        return None
    inviter = None
    if len(code) <= _MAX_CODE_LENGTH:
        # Deactivated users' codes stop working: an account closed for abuse earns nothing.
        inviter = User.objects.filter(invite_code=code, is_active=True).first()
    if inviter is None:
        raise ApplicationError(
            "This invite code does not exist.", code="invalid_invite_code", field="invite_code"
        )
    if inviter.pk == invitee.pk or mailbox_of(inviter.email) == mailbox_of(invitee.email):
        raise ApplicationError(
            "You cannot register with your own invite code.",
            code="self_referral",
            field="invite_code",
        )
    with transaction.atomic():
        existing = Referral.objects.filter(invitee=invitee).first()
        if existing is not None:
            return existing  # the signal was sent twice for one registration: link once
        return Referral.objects.create(
            inviter=inviter,
            invitee=invitee,
            created_at=clock.now(),
            registration_status=RegistrationReward.PENDING,
        )


def referral_reward_registration(*, invitee: User, first_of_mailbox: bool) -> Referral | None:
    """The invitee's signup is confirmed (address verified, or registered with verification
    off): reward the inviter, unless the invitee's mailbox had already earned it (one reward per
    mailbox, ever, as for the signup grant), the programme is off, or the inviter reached the
    daily cap. Once per referral. Runs inside the confirming transaction."""
    with transaction.atomic():
        referral = Referral.objects.select_for_update().filter(invitee=invitee).first()
        if referral is None or referral.registration_status != RegistrationReward.PENDING:
            return referral
        program = ReferralProgram.load()
        now = clock.now()
        # The daily cap is a read-then-write: two invitees of one inviter confirming at once
        # would both count N-1 rewards today and both grant the Nth. Locking the inviter's
        # user row makes them count one after the other. NO KEY UPDATE, not UPDATE: it must
        # not block the many inserts that merely reference the user (they take KEY SHARE).
        User.objects.select_for_update(no_key=True).filter(pk=referral.inviter_id).first()
        if not first_of_mailbox:
            status = RegistrationReward.MAILBOX_USED
        elif not program.enabled or program.registration_reward == 0:
            status = RegistrationReward.DISABLED
        elif (
            Referral.objects.filter(
                inviter_id=referral.inviter_id,
                registration_status=RegistrationReward.GRANTED,
                registration_entry__created_at__gte=_utc_day_start(now),
                registration_entry__created_at__lt=_utc_day_start(now) + timedelta(days=1),
            ).count()
            >= program.max_registration_rewards_per_day
        ):
            status = RegistrationReward.DAILY_CAP
        else:
            status = RegistrationReward.GRANTED
            # A user created outside registration (createsuperuser, say) has no account yet.
            credits_services.account_open(user_id=referral.inviter_id)
            referral.registration_entry = credits_services.credits_grant(
                user_id=referral.inviter_id,
                amount=program.registration_reward,
                source=LotSource.REFERRAL,
                idempotency_key=f"referral:registered:{referral.pk}",
                reference=f"referral:{referral.pk}",
                reason="Referral reward: an invited user registered.",
            )
        referral.registration_status = status
        referral.save(update_fields=["registration_status", "registration_entry"])
        if status in (RegistrationReward.DAILY_CAP, RegistrationReward.MAILBOX_USED):
            logger.info(
                "referral %s: no registration reward for inviter %s (%s)",
                referral.pk,
                referral.inviter_id,
                status,
            )
        return referral


def referral_reward_payment(*, invitee_id: UUID, purchase_id: object) -> Referral | None:
    """The invitee's purchase `purchase_id` was paid. If it is their first payment, grant the
    inviter the payment reward (once, whatever the number and order of payment events) and
    remember the purchase that earned it. Returns the referral, or None for a user nobody
    invited."""
    with transaction.atomic():
        # Two first payments of one invitee at once: the row lock makes the second wait and
        # then see the first's result. The idempotency key would also stop a second grant,
        # but only the lock keeps `paid_purchase` naming the purchase that really earned it.
        referral = Referral.objects.select_for_update().filter(invitee_id=invitee_id).first()
        if referral is None or referral.payment_status != PaymentReward.PENDING:
            return referral
        program = ReferralProgram.load()
        referral.paid_purchase = str(purchase_id)
        referral.paid_at = clock.now()
        if not program.enabled or program.payment_reward == 0:
            # The reward belongs to the first payment; made while the programme is off, it
            # earns nothing, and later payments are not first payments.
            referral.payment_status = PaymentReward.DISABLED
        else:
            credits_services.account_open(user_id=referral.inviter_id)
            referral.payment_entry = credits_services.credits_grant(
                user_id=referral.inviter_id,
                amount=program.payment_reward,
                source=LotSource.REFERRAL,
                idempotency_key=f"referral:paid:{referral.pk}",
                reference=f"referral:{referral.pk}",
                reason="Referral reward: an invited user made their first payment.",
            )
            referral.payment_status = PaymentReward.GRANTED
        referral.save(update_fields=["paid_purchase", "paid_at", "payment_status", "payment_entry"])
        return referral


def referral_reverse_payment(
    *, invitee_id: UUID, purchase_id: object, cause: str
) -> Referral | None:
    """The invitee's purchase `purchase_id` was refunded in full or disputed. If it is the
    payment that earned the inviter's payment reward, take the reward back as far as it is
    unspent and mark it reversed: it is never earned again. Other purchases change nothing."""
    with transaction.atomic():
        referral = Referral.objects.select_for_update().filter(invitee_id=invitee_id).first()
        if referral is None:
            return None
        if referral.payment_status == PaymentReward.PENDING:
            # A reversal before any payment we heard of: nothing was earned, nothing to undo.
            logger.warning(
                "referral %s: purchase %s reversed (%s) before any recorded payment",
                referral.pk,
                purchase_id,
                cause,
            )
            return referral
        if referral.paid_purchase != str(purchase_id) or referral.reversed_at is not None:
            return referral  # not the first payment, or already reversed (a repeated event)
        referral.reversed_at = clock.now()
        referral.reversal_cause = cause[:16]
        if referral.payment_status == PaymentReward.GRANTED:
            entry = referral.payment_entry
            assert entry is not None  # guaranteed by referral_payment_entry_iff_earned
            # Takes what is unspent and unheld now (None when the inviter spent or holds it
            # all); held credits are taken as their holds end, and show on the lot.
            referral.clawback_entry = credits_services.credits_claw_back(
                user_id=referral.inviter_id,
                lot_id=entry.lot_id,
                claim_up_to=entry.amount,
                idempotency_key=f"referral:reversed:{referral.pk}",
                reference=f"referral:{referral.pk}",
                reason=f"Referral reward reversed: the invited user's first payment ({cause}).",
            ).entry
            referral.payment_status = PaymentReward.REVERSED
        referral.save(
            update_fields=["reversed_at", "reversal_cause", "payment_status", "clawback_entry"]
        )
        return referral
