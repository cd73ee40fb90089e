"""The referral programme.

Design, in one paragraph: every user has an invite code (`accounts.User.invite_code`). Whoever
registers with a code becomes an **invitee** linked to its **inviter** by one `Referral` row
(unique per invitee, written in the registration transaction). A referral can earn the inviter
two rewards, each a ledger grant on a `referral` lot whose entry `reference` is
`referral:<referral id>` and whose idempotency key names the referral and the event
(`referral:registered:<id>`, `referral:paid:<id>`), so each is granted at most once whatever
the number or order of events. The row records what became of each reward and why (granted,
programme switched off, daily cap reached, reversed), and which purchase earned the payment
reward, so that only a full refund or dispute of *that* purchase claws it back. A reversed
reward is final: it is never earned again. Amounts, the daily cap and the on/off switch live
in `ReferralProgram` (one row, pk=1), which staff edit in the admin.

Invariants kept by the database (named CHECK constraints): nobody invites themselves, a status
is one of its choices, a granted or reversed reward names its ledger entry, a reward that
followed a payment names the purchase, and the programme row is the only one. All writes go
through `referrals.services`; money moves only through `credits.services`.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ReferralProgram(models.Model):
    """The programme's knobs. One row (pk=1), seeded by a migration, edited in the admin."""

    enabled = models.BooleanField(
        default=True,
        help_text=(
            "Off: invite codes are still checked and link new users to their inviter, but no "
            "reward is granted."
        ),
    )
    registration_reward = models.PositiveIntegerField(
        default=50, help_text="Credits to the inviter when someone registers with their code."
    )
    payment_reward = models.PositiveIntegerField(
        default=500, help_text="Credits to the inviter when an invitee first pays."
    )
    max_registration_rewards_per_day = models.PositiveIntegerField(
        default=20,
        help_text=(
            "Registration rewards per inviter per UTC day. Registrations beyond it still link "
            "the invitee, without a reward."
        ),
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = verbose_name_plural = "referral programme"
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="referral_program_singleton"),
        ]

    def __str__(self) -> str:
        return "Referral programme"

    @classmethod
    def load(cls) -> "ReferralProgram":
        # The migration seeds the row; get_or_create covers a database flushed since (tests).
        obj, _ = cls.objects.get_or_create(pk=1)
        return obj


class RegistrationReward(models.TextChoices):
    PENDING = "pending", "invitee's signup not confirmed yet"
    GRANTED = "granted"
    DISABLED = "disabled", "programme off or reward 0"
    DAILY_CAP = "daily_cap", "inviter's daily cap reached"
    MAILBOX_USED = "mailbox_used", "invitee's mailbox had already earned its rewards"


class PaymentReward(models.TextChoices):
    PENDING = "pending", "no payment yet"
    GRANTED = "granted"
    DISABLED = "disabled", "programme off or reward 0 at the first payment"
    REVERSED = "reversed", "first payment refunded or disputed"


class Referral(models.Model):
    """One invitee linked to their inviter. Never deleted: the ledger names it."""

    inviter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referrals_made"
    )
    invitee = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="referred_by"
    )
    created_at = models.DateTimeField()

    registration_status = models.CharField(max_length=16, choices=RegistrationReward.choices)
    registration_entry = models.ForeignKey(
        "credits.LedgerEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    payment_status = models.CharField(
        max_length=16, choices=PaymentReward.choices, default=PaymentReward.PENDING
    )
    # The purchase that was the invitee's first payment (its primary key as text: this app
    # only ever sees `purchase.pk`). Only a reversal of this purchase claws the reward back.
    paid_purchase = models.CharField(max_length=64, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    payment_entry = models.ForeignKey(
        "credits.LedgerEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversal_cause = models.CharField(max_length=16, blank=True)
    # None when the reward had already been spent in full: nothing was left to take.
    clawback_entry = models.ForeignKey(
        "credits.LedgerEntry",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [
            # The daily cap and the inviter's statistics read the inviter's referrals by date.
            models.Index(fields=["inviter", "created_at"], name="referral_inviter_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(inviter=models.F("invitee")), name="referral_not_self"
            ),
            models.CheckConstraint(
                condition=Q(registration_status__in=RegistrationReward.values),
                name="referral_registration_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(payment_status__in=PaymentReward.values),
                name="referral_payment_status_valid",
            ),
            models.CheckConstraint(
                condition=(
                    Q(registration_status=RegistrationReward.GRANTED)
                    & Q(registration_entry__isnull=False)
                )
                | (
                    ~Q(registration_status=RegistrationReward.GRANTED)
                    & Q(registration_entry__isnull=True)
                ),
                name="referral_registration_entry_iff_granted",
            ),
            models.CheckConstraint(
                condition=Q(payment_status=PaymentReward.PENDING)
                | (~Q(paid_purchase="") & Q(paid_at__isnull=False)),
                name="referral_payment_names_purchase",
            ),
            models.CheckConstraint(
                condition=(
                    Q(payment_status__in=[PaymentReward.GRANTED, PaymentReward.REVERSED])
                    & Q(payment_entry__isnull=False)
                )
                | (
                    ~Q(payment_status__in=[PaymentReward.GRANTED, PaymentReward.REVERSED])
                    & Q(payment_entry__isnull=True)
                ),
                name="referral_payment_entry_iff_earned",
            ),
            models.CheckConstraint(
                condition=~Q(payment_status=PaymentReward.REVERSED) | Q(reversed_at__isnull=False),
                name="referral_reversed_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invitee} invited by {self.inviter}"
