"""The Stripe client, built per call from settings (never the library's module globals, which
are process-wide and leak between threads and tests)."""

from typing import Final

import stripe
from django.conf import settings

from config.errors import ApplicationError

# Pinned, and sent explicitly: stripe-python's default moves with its minor releases. Webhook
# endpoints must be created with the same version so events arrive in the shape we parse.
STRIPE_API_VERSION: Final[str] = "2025-08-27.basil"


class PaymentsUnavailable(ApplicationError):
    status_code = 503
    code = "payments_unavailable"


class PaymentProviderError(ApplicationError):
    status_code = 502
    code = "payment_provider_error"


def payments_configured() -> bool:
    """Both credentials are needed: without the webhook secret no payment could ever complete."""
    return bool(settings.STRIPE_SECRET_KEY and settings.STRIPE_WEBHOOK_SECRET)


def stripe_client() -> stripe.StripeClient:
    if not payments_configured():
        raise PaymentsUnavailable("Payments are not available: Stripe is not configured.")
    base = settings.STRIPE_API_BASE.rstrip("/")
    return stripe.StripeClient(
        api_key=settings.STRIPE_SECRET_KEY,
        stripe_version=STRIPE_API_VERSION,
        # stripe 12 drops an empty "api" entry and would request "None/v1/...": pass it only
        # when set.
        base_addresses={"api": base} if base else {},
        max_network_retries=2,
    )
