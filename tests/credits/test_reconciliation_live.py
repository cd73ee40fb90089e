"""Reconciling against a live service (issue 15, item 7): `reconcile()` reads one snapshot and
locks no row, so it never waits for a money operation and no money operation waits for it, on
an account of any size."""

import threading
import time
from typing import Any

import pytest
from django.db import connection

from credits import reconciliation, services
from credits.models import CreditAccount, LedgerEntry
from credits.reconciliation import reconcile
from tests.concurrency import locked_elsewhere
from tests.credits.conftest import funded_user

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="needs real concurrency"),
]


def test_reconcile_does_not_wait_for_a_money_operation_in_progress() -> None:
    user = funded_user((10, None))
    with locked_elsewhere(CreditAccount.objects.filter(pk=user.pk), at_most=5):
        started = time.monotonic()
        found = reconcile()
        elapsed = time.monotonic() - started

    assert found == []
    assert elapsed < 2.5, f"reconcile waited {elapsed:.1f} s for the account lock"


def test_money_operations_do_not_wait_for_a_reconcile_in_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user = funded_user((10, None))
    services.hold_create(user_id=user.pk, request_id="before")
    paused, resume = threading.Event(), threading.Event()
    read_entries = reconciliation._entries

    def entries_then_pause(user_ids: Any) -> Any:
        found = read_entries(user_ids)
        paused.set()
        resume.wait(timeout=10)
        return found

    monkeypatch.setattr(reconciliation, "_entries", entries_then_pause)
    results: list[Any] = []

    def run_reconcile() -> None:
        try:
            results.append(reconcile())
        finally:
            connection.close()

    thread = threading.Thread(target=run_reconcile)
    thread.start()
    try:
        assert paused.wait(timeout=10)
        # Mid-reconcile: settle the old hold and make and charge a new one on the same account.
        started = time.monotonic()
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '2s'")
        services.hold_commit(request_id="before")
        services.hold_create(user_id=user.pk, request_id="during")
        services.hold_commit(request_id="during")
        elapsed = time.monotonic() - started
    finally:
        resume.set()
        thread.join(timeout=30)

    assert elapsed < 1.5, f"money operations waited {elapsed:.1f} s for reconcile"
    assert results == [[]]  # its snapshot predates them, and is consistent
    assert LedgerEntry.objects.filter(account_id=user.pk, kind="charge").count() == 2
    assert reconcile() == []


def test_reconcile_still_finds_every_discrepancy_of_one_snapshot() -> None:
    honest = funded_user((10, None))
    user = funded_user((10, None), (5, None))
    services.hold_create(user_id=user.pk, request_id="h1")
    services.hold_commit(request_id="h1")
    services.hold_create(user_id=user.pk, request_id="h2")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE credits_creditaccount SET balance = balance + 5, consumed = 0 "
            "WHERE user_id = %s",
            [user.pk],
        )
        cursor.execute("UPDATE credits_hold SET charged = 0 WHERE request_id = 'h1'")

    found = {(d.user_id, d.what.split(" of ")[0], d.cached, d.computed) for d in reconcile()}

    assert found == {
        (user.pk, "balance", 19, 14),
        (user.pk, "consumed", 0, 1),
        (user.pk, "charged", 0, 1),
    }
    assert all(d.user_id != honest.pk for d in reconcile())
