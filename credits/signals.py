"""Signals the ledger sends, so that apps built on it (payments) can react without the ledger
importing them. Each is sent inside the transaction that made the change."""

from django.dispatch import Signal

# Credit a claw-back was owed was taken from a lot when the hold on it ended, in the transaction
# of the release. kwargs: `lot`, `amount`. Sent on the rare path only (never by the SQL fast
# path, which hands any lot that owes a claw-back to the services).
clawback_collected = Signal()

# An event was written to the outbox (`credits.events.event_record`), inside the causing
# transaction. kwargs: `event_id`. The notifications app uses it to kick its dispatcher once the
# transaction commits; events written by the hot path's SQL functions send no signal (the
# gateway kicks, and the dispatcher's beat sweep picks up anything missed).
event_recorded = Signal()

# An entry took the balance of an account with auto top-up on from at least its threshold to
# below it; the account row is stamped (`auto_topup_requested_at`) in the same transaction.
# kwargs: `user_id`. The payments app claims the stamp once the transaction commits. Sent from
# Python paths inside the transaction, and by the gateway after `gateway_settle` reported the
# crossing (already committed); a lost kick is picked up by the payments beat sweep.
auto_topup_requested = Signal()
