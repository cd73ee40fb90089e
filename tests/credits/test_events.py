"""The event outbox: one row per cause, written only inside the causing transaction."""

import pytest
from django.db import IntegrityError, connection, transaction

from credits.events import OutsideTransaction, event_record
from credits.models import Event, EventType
from tests.concurrency import run_together
from tests.factories import UserFactory


@pytest.mark.django_db
def test_an_event_is_written_once_per_cause() -> None:
    user = UserFactory.create()
    with transaction.atomic():
        first = event_record(user_id=user.pk, type=EventType.KEY_CREATED, data={"a": 1}, cause="c1")
        again = event_record(user_id=user.pk, type=EventType.KEY_CREATED, data={"a": 2}, cause="c1")
    assert (first, again) == (True, False)
    event = Event.objects.get()
    assert event.data == {"a": 1}
    assert event.payload()["id"] == f"evt_{event.id.hex}"
    assert event.payload()["created_at"].endswith("Z")


@pytest.mark.django_db(transaction=True)  # no test-wide atomic block around it
def test_an_event_outside_a_transaction_is_refused() -> None:
    user = UserFactory.create()
    with pytest.raises(OutsideTransaction):
        event_record(user_id=user.pk, type=EventType.KEY_CREATED, data={}, cause="c2")
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_an_event_rolled_back_with_its_cause_is_gone() -> None:
    user = UserFactory.create()
    with pytest.raises(RuntimeError), transaction.atomic():
        event_record(user_id=user.pk, type=EventType.KEY_CREATED, data={}, cause="c3")
        raise RuntimeError("the cause fails")
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_the_database_refuses_a_second_row_for_a_cause() -> None:
    user = UserFactory.create()
    with transaction.atomic():
        event_record(user_id=user.pk, type=EventType.KEY_CREATED, data={}, cause="c4")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO credits_event (id, user_id, type, data, cause, created_at)"
            " VALUES (%s, %s, 'key.created', '{}', 'c4', now())",
            ["00000000-0000-0000-0000-000000000001", user.pk],
        )


@pytest.mark.django_db(transaction=True)
def test_racing_writers_of_one_cause_write_one_event() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("a race needs PostgreSQL")
    user = UserFactory.create()

    def write(_: int) -> bool:
        with transaction.atomic():
            return event_record(
                user_id=user.pk, type=EventType.CREDITS_EXPIRING, data={}, cause="race"
            )

    results = run_together(10, write)
    assert [r for r in results if r is not False] == [True]
    assert Event.objects.filter(cause="race").count() == 1
