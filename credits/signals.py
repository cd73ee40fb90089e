"""Signals the ledger sends, so that apps built on it (payments) can react without the ledger
importing them. Each is sent inside the transaction that made the change."""

from django.dispatch import Signal

# Credit a claw-back was owed was taken from a lot when the hold on it ended, in the transaction
# of the release. kwargs: `lot`, `amount`. Sent on the rare path only (never by the SQL fast
# path, which hands any lot that owes a claw-back to the services).
clawback_collected = Signal()
