"""Writing to the event outbox (`credits.models.Event`): the one function every cause calls.

The rule that makes notifications exactly-once per cause: an event is inserted in the causing
transaction, keyed by a unique `cause`, with `ON CONFLICT DO NOTHING`. A cause that commits has
its event; a cause rolled back has none; a cause seen twice (a duplicated Stripe event, two beats
racing on the same expiring lot) writes one row.
"""

import uuid
from datetime import datetime
from uuid import UUID

from django.db import connection, transaction

from . import clock
from .models import Event, EventType
from .signals import event_recorded


class OutsideTransaction(RuntimeError):
    """An event written outside a transaction could be published for a change that never
    commits; the outbox refuses it."""


def event_record(
    *,
    user_id: UUID,
    type: EventType | str,
    data: dict,
    cause: str,
    at: datetime | None = None,
) -> bool:
    """Write the event for `cause` unless it exists; True if this call wrote it.

    Must run inside the causing transaction (`transaction.atomic`)."""
    if not connection.in_atomic_block:
        raise OutsideTransaction(f"event {cause!r} written outside a transaction")
    event_id = uuid.uuid4()
    with transaction.atomic():  # a savepoint: a conflict must not poison the caller's transaction
        created = Event.objects.bulk_create(
            [
                Event(
                    id=event_id,
                    user_id=user_id,
                    type=str(type),
                    data=data,
                    cause=cause,
                    created_at=at or clock.now(),
                )
            ],
            ignore_conflicts=True,
        )
    # bulk_create with ignore_conflicts cannot say whether the row went in: ask by id.
    written = bool(created) and Event.objects.filter(id=event_id).exists()
    if written:
        event_recorded.send(sender=Event, event_id=event_id)
    return written
