"""Stripe edge cases (issue 15, item 12): a signature dated in the future, events larger than
the site-wide body bound, and the long tail of refunds and disputes that failed past Celery's
retries."""

import json
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.test import Client, override_settings

from credits import clock
from credits.payments import services
from credits.payments.models import PurchaseStatus, StripeEvent, StripeEventStatus
from credits.payments.tasks import stripe_events_requeue_failed_task
from credits.reconciliation import reconcile
from tests.factories import registered_user
from tests.stripe_support import build_event, dispute, event_payload, sign_payload

from .conftest import WEBHOOK_SECRET, WEBHOOK_URL, balance, buy, completion_event, deliver

pytestmark = pytest.mark.django_db


def test_a_signature_dated_more_than_300_seconds_ahead_is_refused(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")

    response = deliver(completion_event(purchase), timestamp=int(time.time()) + 400)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert StripeEvent.objects.count() == 0
    assert balance(user) == 100


def test_a_signature_a_little_ahead_is_accepted_as_clock_skew(stripe_settings: Any) -> None:
    purchase = buy(registered_user(), "starter")

    response = deliver(completion_event(purchase), timestamp=int(time.time()) + 60)

    assert response.status_code == 200


def _padded_completion(purchase: Any, size: int) -> bytes:
    event = completion_event(purchase)
    # Stripe's objects are large in real life (line items, customer details, metadata).
    event["data"]["object"]["line_items_snapshot"] = ["x" * 1000] * (size // 1006)
    return event_payload(event)


def test_an_event_larger_than_the_site_wide_body_bound_is_accepted(stripe_settings: Any) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    body = _padded_completion(purchase, 600_000)
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE < len(body) < settings.STRIPE_WEBHOOK_MAX_BYTES

    response = Client().post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(body, WEBHOOK_SECRET),
    )

    assert response.status_code == 200, response.content[:300]
    assert StripeEvent.objects.get(event_id=json.loads(body)["id"]).status in (
        StripeEventStatus.PENDING,
        StripeEventStatus.PROCESSED,
    )


@override_settings(STRIPE_WEBHOOK_MAX_BYTES=300_000)
def test_an_event_over_the_webhook_bound_is_a_413_with_nothing_stored(
    stripe_settings: Any,
) -> None:
    purchase = buy(registered_user(), "standard")
    body = _padded_completion(purchase, 400_000)

    response = Client().post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_payload(body, WEBHOOK_SECRET),
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert StripeEvent.objects.count() == 0


def test_a_dispute_that_failed_past_its_retries_is_applied_by_the_long_tail_and_alerts_staff(
    stripe_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user = registered_user()
    purchase = buy(user, "standard")
    disputed = build_event(
        "charge.dispute.created", dispute(amount=2999, payment_intent="pi_known_much_later")
    )
    assert deliver(disputed).status_code == 200
    assert StripeEvent.objects.get(event_id=disputed["id"]).status == StripeEventStatus.FAILED

    stripe_events_requeue_failed_task.apply()  # Celery's own retries may still be running
    assert StripeEvent.objects.get(event_id=disputed["id"]).attempts == 1

    # Two hours later, past every Celery retry, the payment finally becomes known.
    clock.advance(timedelta(hours=2))
    deliver(completion_event(purchase, payment_intent="pi_known_much_later"))
    assert balance(user) == 5100
    with caplog.at_level(logging.ERROR, logger="credits.payments.alerts"):
        stripe_events_requeue_failed_task.apply()

    stored = StripeEvent.objects.get(event_id=disputed["id"])
    assert stored.status == StripeEventStatus.PROCESSED
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.DISPUTED
    assert balance(user) == 100
    assert reconcile() == []
    alerts = [r for r in caplog.records if r.name == "credits.payments.alerts"]
    assert len(alerts) == 1 and disputed["id"] in alerts[0].getMessage()


def test_the_long_tail_gives_up_after_30_days_naming_the_event_once(
    stripe_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    disputed = build_event(
        "charge.dispute.created", dispute(amount=2999, payment_intent="pi_never_known")
    )
    deliver(disputed)

    clock.advance(services.LONG_TAIL_FOR + timedelta(minutes=30))
    with caplog.at_level(logging.ERROR, logger="credits.payments.alerts"):
        assert services.stripe_events_requeue_failed() == []
    clock.advance(timedelta(hours=1))
    with caplog.at_level(logging.ERROR, logger="credits.payments.alerts"):
        assert services.stripe_events_requeue_failed() == []

    stored = StripeEvent.objects.get(event_id=disputed["id"])
    assert (stored.status, stored.attempts) == (StripeEventStatus.FAILED, 1)
    given_up = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(given_up) == 1 and disputed["id"] in given_up[0].getMessage()
