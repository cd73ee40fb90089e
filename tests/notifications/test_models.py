"""The delivery invariants live in PostgreSQL: one delivery per (event, endpoint), one email
per event, and a webhook row always names its endpoint (an email row never does). Each is
tried from below the ORM."""

from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from credits import clock
from credits.models import Event
from credits.notifications import services
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

INSERT = (
    "INSERT INTO notifications_delivery (event_id, channel, endpoint_id, status, attempts,"
    " last_error, created_at, next_attempt_at) VALUES (%s, %s, %s, 'pending', 0, '', now(), now())"
)


def _fixture() -> tuple[Event, str]:
    user = UserFactory.create()
    endpoint, _ = services.webhook_endpoint_create(
        user=user, url="http://127.0.0.1:9/hook", events=None
    )
    event = Event.objects.create(
        user=user, type="credits.low", data={}, cause="c", created_at=clock.now()
    )
    return event, str(endpoint.pk)


def _insert(*params: Any) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(INSERT, params)


def test_a_second_delivery_of_an_event_to_an_endpoint_is_refused(allow_private: None) -> None:
    event, endpoint_id = _fixture()
    _insert(event.pk, "webhook", endpoint_id)
    with pytest.raises(IntegrityError, match="delivery_event_endpoint_unique"):
        _insert(event.pk, "webhook", endpoint_id)


def test_a_second_email_of_an_event_is_refused(allow_private: None) -> None:
    event, _ = _fixture()
    _insert(event.pk, "email", None)
    with pytest.raises(IntegrityError, match="delivery_event_email_unique"):
        _insert(event.pk, "email", None)


@pytest.mark.parametrize(("channel", "with_endpoint"), [("webhook", False), ("email", True)])
def test_the_channel_and_the_endpoint_agree(
    allow_private: None, channel: str, with_endpoint: bool
) -> None:
    event, endpoint_id = _fixture()
    with pytest.raises(IntegrityError, match="delivery_channel_endpoint"):
        _insert(event.pk, channel, endpoint_id if with_endpoint else None)
