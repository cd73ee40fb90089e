"""What notifications does when the ledger records an event or an account is deleted."""

import logging
from typing import Any
from uuid import UUID

from django.db import transaction
from django.dispatch import receiver

from accounts.models import User
from accounts.signals import user_deleted
from config.broker import publish_soon
from credits.signals import event_recorded

from .services import webhook_endpoints_remove

logger = logging.getLogger(__name__)


@receiver(event_recorded, dispatch_uid="notifications.event_recorded")
def event_kick(sender: object, event_id: UUID, **kwargs: Any) -> None:
    """Fan the event out once its transaction commits (never before: a rolled-back cause has
    no event). A lost kick (broker down, process killed) only delays it: the sweep finds every
    undispatched event. `robust`: a failure here must not fail the committed request."""
    from .tasks import event_dispatch_task  # the task module imports services, as this does

    transaction.on_commit(lambda: publish_soon(event_dispatch_task, str(event_id)), robust=True)


@receiver(user_deleted, dispatch_uid="notifications.user_deleted")
def user_endpoints_remove(sender: object, user: User, **kwargs: Any) -> None:
    """A deleted account's webhooks go with it, in the deletion's transaction: nothing more is
    sent to them, pending retries included."""
    webhook_endpoints_remove(user_id=user.pk)
