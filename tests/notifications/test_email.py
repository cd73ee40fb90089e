"""The email channel: one message per event through the mail outbox and a real SMTP server,
to verified addresses only, per the user's choice of types, with each type's own subject."""

import pytest

from accounts.models import User
from credits.notifications import services
from credits.notifications.models import Delivery
from tests.factories import UserFactory, registered_user
from tests.mail_support import Mailbox, text_of

from .conftest import record, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_verified_user_is_mailed_once_per_event_in_plain_text(smtp: Mailbox) -> None:
    user = registered_user()

    event_id = record(user, "credits.low", {"balance": 7, "threshold": 10})
    record(user, "payment.succeeded", {"credits": 5000, "package": "standard"})

    wait_until(lambda: len(smtp.to(user.email)) == 2)
    low, paid = smtp.to(user.email)
    assert low["Subject"] == "Your credit balance is running low"
    assert "7 credits" in text_of(low) and "threshold of 10" in text_of(low)
    assert event_id in text_of(low)
    assert paid["Subject"] == "Payment received: your credits are ready"
    assert "5,000 credits" in text_of(paid)
    # Sweeps later find nothing more to send.
    from credits.notifications.tasks import notifications_sweep_task

    notifications_sweep_task.apply()
    assert Delivery.objects.filter(channel="email").count() == 2


def test_every_type_has_its_own_subject() -> None:
    assert set(services.SUBJECTS) == set(services.EMAIL_TYPES)
    assert len(set(services.SUBJECTS.values())) == len(services.SUBJECTS)


def test_an_unverified_address_is_never_mailed(smtp: Mailbox) -> None:
    user = UserFactory.create()
    assert not User.objects.get(pk=user.pk).email_verified

    record(user, "credits.low")

    assert smtp.to(user.email) == []
    assert not Delivery.objects.filter(channel="email").exists()


def test_a_type_turned_off_is_not_mailed_and_others_still_are(smtp: Mailbox) -> None:
    user = registered_user()
    services.notification_settings_update(user_id=user.pk, email={"credits.low": False})

    record(user, "credits.low")
    record(user, "key.created", {"key": {"id": "k", "name": "ci", "prefix": "sk-abc"}})

    wait_until(lambda: len(smtp.to(user.email)) == 1)
    [mail] = smtp.to(user.email)
    assert mail["Subject"] == "A new API key was created"
    assert '"ci"' in text_of(mail)


def test_a_deleted_account_is_not_mailed(smtp: Mailbox) -> None:
    from accounts.services import user_delete

    user = registered_user()
    address = user.email
    user_delete(user=user, password="correct horse battery staple")
    user.refresh_from_db()

    record(user, "credits.expired", {"amount": 5, "lot": {"source": "signup"}})

    assert not Delivery.objects.filter(channel="email").exists()
    assert not [m for m in smtp.to(address) if "expired" in str(m["Subject"])]
