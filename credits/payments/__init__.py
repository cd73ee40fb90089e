"""Credit packages and Stripe purchases: Checkout creation, webhooks, refunds and disputes.

- `client`: the one place a Stripe client is built (pinned API version, `STRIPE_API_BASE`);
- `services`: purchase creation and the webhook pipeline (record, then process);
- `handlers`: what each Stripe event type does to a purchase (called by `services` only);
- `tasks`: the Celery task that processes a stored event; `views`, `serializers`, `urls`, `admin`.

Models live in `credits.payments.models`.
"""
