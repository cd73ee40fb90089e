"""Webhook delivery against a real receiver on loopback: signatures, retries on the schedule,
timeouts, redirects, SSRF refusals, disabled endpoints and deleted accounts, races and a
broker outage."""

import itertools
from datetime import timedelta
from typing import Any

import pytest
from django.db import transaction

from accounts.services import user_delete
from config.broker import wait_published
from config.celery import app
from credits import clock
from credits.models import Event
from credits.notifications import services
from credits.notifications.models import (
    RETRY_DELAYS,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    WebhookEndpoint,
)
from credits.notifications.tasks import notifications_sweep_task
from tests.concurrency import run_together
from tests.factories import UserFactory, registered_user
from tests.mail_support import Mailbox, text_of
from tests.processes import free_port

from .conftest import Receiver, endpoint_for, record, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def sweep_after(delta: timedelta) -> None:
    clock.advance(delta)
    notifications_sweep_task.apply()


def attempts_of(event_id: str) -> list[DeliveryAttempt]:
    return list(DeliveryAttempt.objects.filter(delivery__event_id=event_id[4:]).order_by("attempt"))


def test_a_committed_event_is_posted_once_signed_with_the_endpoints_secret(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint = endpoint_for(user, receiver)

    event_id = record(user, "credits.low", {"balance": 9, "threshold": 10})

    [payload] = receiver.verified()
    assert payload["id"] == event_id
    assert payload["type"] == "credits.low"
    assert payload["data"] == {"balance": 9, "threshold": 10}
    assert receiver.received[0].headers["webhook-id"] == event_id
    delivery = Delivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert Event.objects.get(pk=event_id[4:]).dispatched_at is not None


def test_an_event_rolled_back_with_its_cause_is_never_sent(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)

    with pytest.raises(RuntimeError), transaction.atomic():
        from credits.events import event_record

        event_record(user_id=user.pk, type="credits.low", data={}, cause="rolled-back")
        raise RuntimeError("the cause fails")
    notifications_sweep_task.apply()

    assert receiver.received == []
    assert not Event.objects.exists()


def test_an_endpoint_only_gets_the_types_it_asked_for(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver, events=["payment.succeeded"])

    record(user, "credits.low")
    paid = record(user, "payment.succeeded", {"purchase_id": "p1"})

    assert [p["id"] for p in receiver.verified()] == [paid]


def test_a_receiver_down_then_up_gets_the_event_on_a_retry(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.stop()

    event_id = record(user)

    [first] = attempts_of(event_id)
    assert first.status_code is None and first.error == "connection_refused"
    assert first.next_attempt_at is not None
    # The first retry comes after about 5 s (plus up to 20 % jitter), not before.
    wait = first.next_attempt_at - first.created_at
    assert RETRY_DELAYS[0] <= wait <= RETRY_DELAYS[0] * 1.2 + timedelta(milliseconds=5)

    sweep_after(timedelta(seconds=2))  # not due yet
    assert len(attempts_of(event_id)) == 1

    receiver.start()
    sweep_after(timedelta(seconds=5))

    assert [p["id"] for p in receiver.verified()] == [event_id]
    assert [a.status_code for a in attempts_of(event_id)] == [None, 200]


def test_500s_are_retried_on_the_schedule_with_the_same_webhook_id(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.statuses = [500, 503, 500]

    event_id = record(user)
    for delay in RETRY_DELAYS[:3]:
        sweep_after(delay * 1.2 + timedelta(seconds=1))

    assert [r.headers["webhook-id"] for r in receiver.received] == [event_id] * 4
    assert [r.error for r in receiver.received] == [""] * 4  # each attempt freshly signed
    log = attempts_of(event_id)
    assert [(a.attempt, a.status_code) for a in log] == [(1, 500), (2, 503), (3, 500), (4, 200)]
    assert [a.error for a in log] == ["http_500", "http_503", "http_500", ""]
    gaps = [b.created_at - a.created_at for a, b in itertools.pairwise(log)]
    for gap, delay in zip(gaps, RETRY_DELAYS, strict=False):
        assert delay <= gap  # never sooner than the schedule


def test_after_the_last_retry_the_delivery_fails_for_good(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.statuses = [500] * 20

    event_id = record(user)
    for delay in RETRY_DELAYS:
        sweep_after(delay * 1.2 + timedelta(seconds=1))
    sweep_after(timedelta(days=1))

    assert len(receiver.received) == 1 + len(RETRY_DELAYS)
    delivery = Delivery.objects.get(event_id=event_id[4:])
    assert delivery.status == DeliveryStatus.FAILED
    assert attempts_of(event_id)[-1].next_attempt_at is None


def test_a_slow_answer_past_the_timeout_is_a_failed_attempt(
    allow_private: None, receiver: Receiver, settings: Any
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.delay = 1.5

    event_id = record(user)

    [attempt] = attempts_of(event_id)
    assert (attempt.status_code, attempt.error) == (None, "timeout")
    assert Delivery.objects.get().status == DeliveryStatus.PENDING


def test_a_receiver_trickling_its_answer_is_cut_at_the_total_timeout(
    allow_private: None, receiver: Receiver, settings: Any
) -> None:
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.trickle = 5.0  # a header line every 100 ms: no single read waits 0.5 s

    event_id = record(user)

    [attempt] = attempts_of(event_id)
    assert (attempt.status_code, attempt.error) == (None, "timeout")
    # The sender hung up mid-answer (the receiver's next write failed), not after it.
    wait_until(lambda: receiver.hung_up == 1)


def test_a_sender_that_died_mid_attempt_is_replaced_after_its_lease(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.stop()
    event_id = record(user)
    receiver.start()
    # As a worker killed after its claim leaves it: sending, attempt counted, lease running.
    Delivery.objects.update(
        status=DeliveryStatus.SENDING,
        attempts=2,
        next_attempt_at=None,
        lease_until=clock.now() + services.LEASE,
    )

    sweep_after(timedelta(seconds=10))
    assert receiver.received == []  # its lease still runs: nobody else sends

    sweep_after(services.LEASE)
    assert [p["id"] for p in receiver.verified()] == [event_id]
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED


def test_the_default_timeout_is_ten_seconds() -> None:
    from credits.notifications import outbound

    assert outbound.DEFAULT_TIMEOUT == 10


def test_a_redirect_is_not_followed(allow_private: None, receiver: Receiver) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.location = f"http://127.0.0.1:{receiver.port}/elsewhere"

    event_id = record(user)

    assert [r.path for r in receiver.received] == ["/hook"]
    [attempt] = attempts_of(event_id)
    assert (attempt.status_code, attempt.error) == (302, "http_302")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "169.254.169.254", "[::1]"])
def test_an_endpoint_on_a_non_public_address_is_refused_at_delivery_and_nothing_is_sent(
    receiver: Receiver, settings: Any, host: str
) -> None:
    user = UserFactory.create()
    # Created while private addresses were allowed (or before DNS changed to point inside).
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint_for(user, receiver, url=f"https://{host}:{receiver.port}/hook")
    settings.WEBHOOK_ALLOW_PRIVATE = False

    event_id = record(user)

    assert receiver.connections == 0
    [attempt] = attempts_of(event_id)
    assert (attempt.status_code, attempt.error) == (None, "blocked_address")


def test_plain_http_is_refused_at_delivery_without_allow_private(
    receiver: Receiver, settings: Any
) -> None:
    user = UserFactory.create()
    settings.WEBHOOK_ALLOW_PRIVATE = True
    endpoint_for(user, receiver)
    settings.WEBHOOK_ALLOW_PRIVATE = False

    event_id = record(user)

    assert receiver.connections == 0
    assert attempts_of(event_id)[0].error == "blocked_address"


def test_a_disabled_endpoint_gets_nothing(allow_private: None, receiver: Receiver) -> None:
    user = UserFactory.create()
    endpoint = endpoint_for(user, receiver)
    receiver.stop()
    pending = record(user)  # fails, a retry is pending
    receiver.start()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False)

    later = record(user)
    sweep_after(timedelta(minutes=1))

    assert receiver.received == []
    assert not Delivery.objects.filter(event_id=later[4:]).exists()
    assert attempts_of(pending)[-1].error == "endpoint_disabled"
    assert Delivery.objects.get(event_id=pending[4:]).status == DeliveryStatus.FAILED


def test_a_deleted_account_loses_its_endpoints_and_their_pending_retries(
    allow_private: None, receiver: Receiver
) -> None:
    user = registered_user()
    endpoint_for(user, receiver)
    receiver.stop()
    record(user)
    receiver.start()

    user_delete(user=user, password="correct horse battery staple")
    sweep_after(timedelta(minutes=1))

    assert receiver.received == []
    assert not WebhookEndpoint.objects.filter(user=user).exists()
    assert not Delivery.objects.filter(channel="webhook").exists()


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_owner_emailed(
    allow_private: None, receiver: Receiver, smtp: Mailbox
) -> None:
    user = registered_user()
    endpoint = endpoint_for(user, receiver)
    receiver.stop()
    record(user)

    sweep_after(timedelta(days=4, hours=23))
    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled

    record(user)  # a new event, also failing
    sweep_after(timedelta(hours=1, seconds=1))

    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert endpoint.disabled_reason and endpoint.disabled_at is not None
    subject = "Your webhook endpoint was disabled"
    wait_until(lambda: any(m["Subject"] == subject for m in smtp.to(user.email)))
    [mail] = [m for m in smtp.to(user.email) if m["Subject"] == subject]
    assert endpoint.url in text_of(mail)
    # Disabled once, mailed once, whatever later sweeps find.
    sweep_after(timedelta(days=1))
    assert len([m for m in smtp.to(user.email) if m["Subject"] == subject]) == 1


def test_a_success_resets_the_five_day_count(allow_private: None, receiver: Receiver) -> None:
    user = UserFactory.create()
    endpoint = endpoint_for(user, receiver)
    receiver.stop()
    record(user)
    sweep_after(timedelta(days=4))
    receiver.start()
    record(user)  # delivered
    receiver.stop()
    record(user)  # fails again: the count starts here

    sweep_after(timedelta(days=2))

    assert WebhookEndpoint.objects.get(pk=endpoint.pk).enabled


def test_two_dispatchers_racing_write_one_delivery_per_event_and_endpoint(
    allow_private: None, receiver: Receiver
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    second = Receiver(port=free_port())
    second.start()
    try:
        endpoint_for(user, second)
        # Written as the gateway's SQL functions write them: no after-commit kick, so only the
        # racing sweeps fan them out.
        events = [
            Event.objects.create(
                user=user, type="credits.low", data={}, cause=f"race:{i}", created_at=clock.now()
            )
            for i in range(5)
        ]

        results = run_together(8, lambda i: notifications_sweep_task())

        assert not [r for r in results if isinstance(r, BaseException)]
        assert Delivery.objects.count() == 10
        for event in events:
            assert Delivery.objects.filter(event=event).count() == 2
        ids = sorted(e.public_id for e in events)
        assert sorted(p["id"] for p in receiver.verified()) == ids
        assert sorted(p["id"] for p in second.verified()) == ids
        assert not Event.objects.filter(dispatched_at__isnull=True).exists()
    finally:
        second.stop()


@pytest.fixture
def dead_broker(settings: Any) -> Any:
    """Tasks really published, to a broker on a port nothing listens on."""

    def point_at(url: str, eager: bool) -> None:
        settings.CELERY_TASK_ALWAYS_EAGER = eager
        app.conf.task_always_eager = eager
        app.conf["broker_url"] = url
        # Celery caches its connection and producer pools: drop them so the URL takes effect.
        app._pool = None  # type: ignore[attr-defined]
        app.amqp._producer_pool = None  # type: ignore[attr-defined]

    original = (app.conf.broker_url, app.conf.task_always_eager)
    point_at(f"redis://127.0.0.1:{free_port()}/0", False)
    yield lambda: point_at(*original)
    point_at(*original)


def test_events_written_while_the_broker_is_down_are_delivered_by_the_sweep_after(
    allow_private: None, receiver: Receiver, dead_broker: Any
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)

    ids = [record(user) for _ in range(2)]  # each commits; its kick cannot be published
    assert wait_published(timeout=60)  # each publish fails after the client's retries
    assert receiver.received == []
    assert Event.objects.filter(dispatched_at__isnull=True).count() == 2

    dead_broker()  # the broker is back: beat's next sweep runs
    notifications_sweep_task.apply()

    assert sorted(p["id"] for p in receiver.verified()) == sorted(ids)
    assert Delivery.objects.filter(status=DeliveryStatus.DELIVERED).count() == 2


def test_a_test_event_goes_to_its_endpoint_only(allow_private: None, receiver: Receiver) -> None:
    user = registered_user()
    tested = endpoint_for(user, receiver, events=["credits.low"])
    other = Receiver(port=free_port())
    other.start()
    try:
        endpoint_for(user, other)

        event = services.webhook_endpoint_test(user=user, endpoint_id=str(tested.pk))

        assert [p["id"] for p in receiver.verified()] == [event.public_id]
        assert receiver.verified()[0]["type"] == "webhook.test"
        assert other.received == []
        assert not Delivery.objects.filter(channel="email").exists()
    finally:
        other.stop()


def test_resend_makes_a_failed_delivery_due_again(allow_private: None, receiver: Receiver) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.statuses = [500] * 8
    event_id = record(user)
    for delay in RETRY_DELAYS:
        sweep_after(delay * 1.2 + timedelta(seconds=1))
    delivery = Delivery.objects.get(event_id=event_id[4:])
    assert delivery.status == DeliveryStatus.FAILED

    assert services.delivery_resend(delivery_id=delivery.pk)
    notifications_sweep_task.apply()

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(receiver.received) == 9


def test_beat_sweeps_every_ten_seconds(settings: Any) -> None:
    assert settings.CELERY_BEAT_SCHEDULE["notifications-sweep"] == {
        "task": "credits.notifications.sweep",
        "schedule": 10.0,
    }


def test_an_event_that_cannot_be_fanned_out_holds_back_no_other(
    allow_private: None, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    first = Event.objects.create(
        user=user, type="credits.low", data={}, cause="poison", created_at=clock.now()
    )
    second = Event.objects.create(
        user=user, type="credits.low", data={}, cause="fine", created_at=clock.now()
    )
    real = services.event_dispatch

    def dispatch(*, event_id: Any) -> list[int]:
        if str(event_id) == str(first.pk):
            raise RuntimeError("a bad row")
        return real(event_id=event_id)

    monkeypatch.setattr(services, "event_dispatch", dispatch)
    notifications_sweep_task.apply()

    assert [p["id"] for p in receiver.verified()] == [second.public_id]
    assert Event.objects.get(pk=first.pk).dispatched_at is None
