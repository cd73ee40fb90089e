"""Every PostgreSQL session of the service is bounded (issue 15, item 3): a statement, a lock
wait and a transaction left idle all end on their own, so a burst cannot leave connections and
row locks held for minutes."""

import time

import pytest
from django.db import OperationalError, connection, transaction

from credits.models import CreditAccount
from tests.concurrency import locked_elsewhere
from tests.credits.conftest import funded_user

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL settings")


def _show(name: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SHOW {name}")
        (value,) = cursor.fetchone()
    return str(value)


@pytest.mark.django_db
def test_sessions_carry_the_statement_lock_and_idle_transaction_bounds() -> None:
    assert _show("statement_timeout") == "30s"
    assert _show("lock_timeout") == "5s"
    assert _show("idle_in_transaction_session_timeout") == "1min"


@pytest.mark.django_db(transaction=True)
def test_a_lock_wait_ends_at_the_lock_timeout_instead_of_waiting_for_the_holder() -> None:
    user = funded_user((10, None))
    with locked_elsewhere(CreditAccount.objects.filter(pk=user.pk), at_most=20):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic():
            CreditAccount.objects.select_for_update().get(pk=user.pk)
        waited = time.monotonic() - started
    assert 4.0 < waited < 8.0, waited
