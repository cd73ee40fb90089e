"""Checkpoints of the incremental reconciliation (`credits.reconciliation_incremental`).

A checkpoint says: every entry of this account up to `entry_id` was verified (its running
`balance_after` included), and at that entry the ledger's sums were `balance` and `consumed`;
each lot of the account with entries up to there has its `remaining` at that same entry in a
`ReconcileLotCheckpoint`. The nightly run starts each account from here and reads only the
entries after it. Written only by that run, never by a money operation.

No foreign-key constraints to the accounts and lots: adding one takes a SHARE ROW EXCLUSIVE lock
on the referenced table (the hot path's account rows), and accounts and lots are never deleted
(PROTECT everywhere else).
"""

from django.db import models

from .ledger import CreditAccount, Lot


class ReconcileCheckpoint(models.Model):
    account = models.OneToOneField(
        CreditAccount,
        on_delete=models.DO_NOTHING,
        primary_key=True,
        db_constraint=False,
        related_name="+",
    )
    entry_id = models.BigIntegerField(help_text="The account's last verified entry.")
    balance = models.BigIntegerField(help_text="The sum of its entries up to `entry_id`.")
    consumed = models.BigIntegerField(help_text="Its charges up to `entry_id`, as a positive sum.")
    verified_at = models.DateTimeField()
    # The last run found a discrepancy on the account: the next reads it from `entry_id` on its
    # own. The others were all verified through that run's horizon, so the next run reads
    # their entries in one range of the newest ids (`reconciliation_incremental`).
    stuck = models.BooleanField(default=False)

    def __str__(self) -> str:
        return f"checkpoint of {self.account_id} at entry {self.entry_id}"


class ReconcileLotCheckpoint(models.Model):
    """A lot's remaining at its account's checkpoint (absent: no entry of it up to there)."""

    lot = models.OneToOneField(
        Lot,
        on_delete=models.DO_NOTHING,
        primary_key=True,
        db_constraint=False,
        related_name="+",
    )
    remaining = models.BigIntegerField()

    def __str__(self) -> str:
        return f"checkpoint of lot {self.lot_id}: {self.remaining}"
