"""Signals the payments app sends about purchases, so that apps built on it (referrals) can
react without payments importing them. Each is sent inside the transaction that made the change,
so a receiver's writes commit or roll back with it. Receivers must be idempotent: a webhook
may be processed more than once.
"""

from django.dispatch import Signal

# A purchase was paid and its credits granted, for the first time. kwargs: `purchase`.
purchase_paid = Signal()

# A purchase was refunded in full, or disputed. kwargs: `purchase`, `cause` ("refund"|"dispute").
purchase_reversed = Signal()
