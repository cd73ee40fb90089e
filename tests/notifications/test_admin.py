"""Notifications in the admin: events, deliveries and endpoints are readable (never a secret),
"resend" queues a delivery again and is audited; the counters reach /metrics."""

from datetime import timedelta
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.test import Client

from accounts.models import User
from credits import clock
from credits.notifications.models import Delivery, DeliveryStatus, WebhookEndpoint
from credits.notifications.secrets import secret_decrypt
from tests.admin.conftest import PASSWORD, logged_in, staff_user
from tests.factories import UserFactory

from .conftest import Receiver, endpoint_for, record

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _plain_static_files(settings: Any) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def root() -> Client:
    return logged_in(User.objects.create_superuser(email="root@example.com", password=PASSWORD))


def test_staff_read_events_deliveries_and_endpoints_but_never_a_secret(
    allow_private: None, receiver: Receiver, root: Client
) -> None:
    user = UserFactory.create()
    endpoint = endpoint_for(user, receiver)
    event_id = record(user)
    secret = secret_decrypt(WebhookEndpoint.objects.get(pk=endpoint.pk).secret_encrypted)
    delivery = Delivery.objects.get()

    pages = [
        "/admin/credits/event/",
        f"/admin/credits/event/{event_id[4:]}/change/",
        "/admin/notifications/delivery/",
        f"/admin/notifications/delivery/{delivery.pk}/change/",
        "/admin/notifications/webhookendpoint/",
        f"/admin/notifications/webhookendpoint/{endpoint.pk}/change/",
    ]
    for page in pages:
        response = root.get(page)
        assert response.status_code == 200, page
        text = response.content.decode()
        assert secret not in text and secret[6:] not in text
        assert endpoint.secret_encrypted not in text


def test_resend_queues_a_failed_delivery_again_and_is_audited(
    allow_private: None, receiver: Receiver, root: Client
) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.stop()
    record(user)
    Delivery.objects.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    receiver.start()
    delivery = Delivery.objects.get()

    response = root.post(
        "/admin/notifications/delivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
    )

    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert len(receiver.verified()) == 1
    [entry] = LogEntry.objects.get_for_object(delivery)
    assert entry.actor is not None and entry.actor.email == "root@example.com"
    assert entry.changes_dict["status"] == ["failed", "pending"]


def test_resend_needs_the_change_permission(allow_private: None, receiver: Receiver) -> None:
    user = UserFactory.create()
    endpoint_for(user, receiver)
    receiver.stop()
    record(user)
    viewer = logged_in(staff_user("viewer@example.com", "notifications.view_delivery"))
    delivery = Delivery.objects.get()

    viewer.post(
        "/admin/notifications/delivery/",
        {"action": "resend", "_selected_action": [delivery.pk]},
    )
    clock.advance(timedelta(seconds=1))

    assert Delivery.objects.get().attempts == 1
    assert not LogEntry.objects.get_for_object(delivery).exists()


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}" if want else f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_deliveries_and_dispatched_events_are_counted_in_metrics(
    allow_private: None, receiver: Receiver, root: Client
) -> None:
    def scrape() -> str:
        return root.get("/metrics").content.decode()

    user = UserFactory.create()
    endpoint_for(user, receiver)
    before = scrape()
    receiver.statuses = [500]

    record(user)  # a 500, then a retry
    clock.advance(timedelta(seconds=7))
    from credits.notifications.tasks import notifications_sweep_task

    notifications_sweep_task.apply()

    after = scrape()
    for outcome in ("retry", "delivered"):
        labels = {"channel": "webhook", "outcome": outcome}
        name = "billing_notification_deliveries_total"
        assert _sample(after, name, **labels) == _sample(before, name, **labels) + 1
    name = "billing_events_dispatched_total"
    assert _sample(after, name) == _sample(before, name) + 1
