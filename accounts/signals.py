"""Signals other apps hook into. `accounts` depends on nothing else of ours; `credits` and
`referrals` react through these signals, each sent inside the transaction that made the change,
so a receiver that raises (an unknown invite code, say) undoes the whole change and what the
receivers write commits together with it."""

from django.dispatch import Signal

# Sent inside the registration transaction with `user` and `invite_code` (str, may be empty).
user_registered = Signal()

# The signup is confirmed: at the first verification of the user's address
# (EMAIL_VERIFICATION=required) or at registration (off); once per account. kwargs: `user`,
# `first_of_mailbox` (bool): True only for the first account of its mailbox ever, the only one
# that earns the signup grant and its inviter's registration reward.
signup_confirmed = Signal()

# The account is being deleted (anonymised), inside that transaction. kwargs: `user` (still
# with its email). Receivers end what the user owns in their app (credits: forfeit the balance).
user_deleted = Signal()

# An API key changed, sent inside the transaction of the change (the ledger writes its
# `key.*` notification events there: `credits.receivers`). kwargs: `key` (the ApiKey as saved).
api_key_created = Signal()
api_key_revoked = Signal()  # only by the call that revoked it (a repeated revoke sends nothing)
api_key_rotated = Signal()
