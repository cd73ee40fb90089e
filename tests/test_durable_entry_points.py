"""The entry points of money-moving work open their own durable transaction
(`transaction.atomic(durable=True)`): called inside someone else's transaction they refuse at
once, instead of committing as part of a transaction that may still roll back.

Reconciliation is not one of them: it writes nothing and reads one snapshot, the caller's when it
runs inside a transaction (the property tests call it inside theirs)."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast
from uuid import uuid4

import pytest
from django.db import transaction

from accounts.models import User
from credits import clock, services
from credits.gateway import backends
from credits.gateway.decisions import AnswerShape
from credits.payments import services as payments
from tests.factories import UserFactory

ENTRY_POINTS: dict[str, Callable[[Any], object]] = {
    "sweep of one account": lambda user: services.account_settle_due(user_id=user.pk),
    "gateway hold (services)": lambda user: backends.ServicesBackend().hold(
        request_id=f"req-{uuid4()}",
        key_id=str(uuid4()),
        user_id=str(user.pk),
        hold_id=str(uuid4()),
        shape=AnswerShape("openai", None, None, None, None),
        now=clock.now(),
        expires_at=clock.now() + timedelta(minutes=1),
    ),
    "gateway settle (services)": lambda user: backends.ServicesBackend().settle(
        request_id="req-unknown",
        commit=True,
        usage=backends.Usage("m", 0, 0, "", 200),
        now=clock.now(),
    ),
    "Stripe event processing": lambda user: payments.stripe_event_process(event_id="evt_none"),
    "Stripe event recording": lambda user: payments.stripe_event_record(event={"id": "evt_x"}),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_an_entry_point_refuses_to_run_inside_another_transaction(name: str) -> None:
    user = cast(User, UserFactory())
    services.account_open(user_id=user.pk)
    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        ENTRY_POINTS[name](user)
