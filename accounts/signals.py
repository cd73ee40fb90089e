"""Signals other apps hook into. `accounts` depends on nothing else of ours; `credits` and
`referrals` react to registration through this signal, inside the registration transaction,
so a receiver that raises (an unknown invite code, say) undoes the whole registration."""

from django.dispatch import Signal

# Sent inside the registration transaction with `user` and `invite_code` (str, may be empty).
user_registered = Signal()
