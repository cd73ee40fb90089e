"""Password reset does not tell whether an address has an account: the same answer, and a
timing difference measured here (README, "Enumeration timing").

Measured through the whole Django stack (middleware, DRF, PostgreSQL) on loopback, alternating
known and unknown addresses so that drift on the machine hits both alike; throttle counts are
cleared outside the timed part. Two modes: with a broker (production: the mail task is queued
to Redis after commit) and without (the embedded default: the mail is sent in-process after the
commit, here to a real SMTP server on loopback)."""

import statistics
import time
from collections.abc import Iterator

import pytest
from django.core.cache import cache
from django.test import Client

from accounts.models import OutboundEmail
from accounts.tasks import outbound_email_sweep
from config.celery import app
from tests.factories import registered_user
from tests.mail_support import Mailbox

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROUNDS = 150


def _timings(client: Client) -> tuple[list[float], list[float]]:
    known: list[float] = []
    unknown: list[float] = []
    for n in range(ROUNDS):
        for email, into in (("ann@example.com", known), (f"nobody{n}@example.com", unknown)):
            cache.clear()
            started = time.perf_counter()
            response = client.post(
                "/api/auth/password-reset", {"email": email}, content_type="application/json"
            )
            into.append((time.perf_counter() - started) * 1000)
            assert (response.status_code, response.json()) == (202, {})
    return known, unknown


def _report(mode: str, known: list[float], unknown: list[float]) -> float:
    def q(values: list[float], p: int) -> float:
        return statistics.quantiles(values, n=100)[p - 1]

    gap = statistics.median(known) - statistics.median(unknown)
    print(
        f"\n[{mode}] reset request, ms over {ROUNDS} each: "
        f"known median {statistics.median(known):.2f}"
        f" p90 {q(known, 90):.2f}; unknown median {statistics.median(unknown):.2f}"
        f" p90 {q(unknown, 90):.2f}; difference of medians {gap:+.2f}"
    )
    return gap


@pytest.fixture
def broker() -> Iterator[None]:
    """Tasks really queued to Redis (nothing consumes them here; purged afterwards)."""
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        yield
    finally:
        app.conf.task_always_eager = eager
        app.control.purge()


def test_with_a_broker_known_and_unknown_addresses_take_about_as_long(
    broker: None, smtp: Mailbox
) -> None:
    registered_user(email="ann@example.com")
    client = Client()
    _timings(client)  # warm-up: connections, template loading
    known, unknown = _timings(client)
    gap = _report("broker", known, unknown)
    # Both wrote one row and queued one task; the sender mails the known address and drops
    # the others.
    assert OutboundEmail.objects.count() == 4 * ROUNDS
    while outbound_email_sweep():
        pass
    assert len(smtp.wait_for("ann@example.com", count=2 * ROUNDS)) == 2 * ROUNDS
    assert not OutboundEmail.objects.exclude(to="ann@example.com").exists()
    # Before the work moved to the sender, an INSERT, a commit and a publish for known
    # addresses only measured +17.7 ms here.
    assert abs(gap) < 3, gap


def test_without_a_broker_the_known_path_also_sends_the_mail(smtp: Mailbox) -> None:
    registered_user(email="ann@example.com")
    client = Client()
    _timings(client)
    known, unknown = _timings(client)
    # Recorded for the README: here the send happens inside the known address's request.
    _report("no broker, SMTP on loopback", known, unknown)
    assert len(smtp.wait_for("ann@example.com", count=2 * ROUNDS)) == 2 * ROUNDS
