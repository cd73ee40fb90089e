"""The ledger's invariants are kept by PostgreSQL itself: these tests go below the ORM (raw SQL)
and show that the database refuses each bad row or statement."""

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError

from credits import clock, services
from credits.models import CreditAccount, LedgerEntry, Lot
from tests.credits.conftest import funded_user

pytestmark = pytest.mark.django_db


def _refused(sql: str, params: list[Any] | None = None) -> str:
    """Run one statement in a savepoint and return the database's error message."""
    with pytest.raises(IntegrityError) as refused, transaction.atomic(), connection.cursor() as c:
        c.execute(sql, params)
    return str(refused.value)


@pytest.fixture
def entry() -> LedgerEntry:
    user = funded_user((10, None))
    services.hold_create(user_id=user.pk, request_id="r")
    services.hold_commit(request_id="r")
    return LedgerEntry.objects.order_by("id").last()  # type: ignore[return-value]


def test_updating_a_ledger_entry_with_raw_sql_is_refused(entry: LedgerEntry) -> None:
    message = _refused("UPDATE credits_ledgerentry SET amount = -2 WHERE id = %s", [entry.pk])
    assert "append-only: UPDATE" in message
    entry.refresh_from_db()
    assert entry.amount == -1


def test_deleting_a_ledger_entry_with_raw_sql_is_refused(entry: LedgerEntry) -> None:
    message = _refused("DELETE FROM credits_ledgerentry WHERE id = %s", [entry.pk])
    assert "append-only: DELETE" in message
    assert LedgerEntry.objects.filter(pk=entry.pk).exists()


def test_deleting_a_user_with_ledger_history_is_refused(entry: LedgerEntry) -> None:
    with pytest.raises(ProtectedError), transaction.atomic():
        entry.account.user.delete()
    assert CreditAccount.objects.filter(pk=entry.account_id).exists()


def test_the_database_itself_refuses_to_delete_an_account_with_ledger_history(
    entry: LedgerEntry,
) -> None:
    # Django creates foreign keys DEFERRABLE INITIALLY DEFERRED: check them now, not at commit.
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("DELETE FROM credits_lot WHERE account_id = %s", [entry.account_id])
    assert Lot.objects.filter(account_id=entry.account_id).exists()


@pytest.fixture
def raw_connection() -> Iterator[psycopg.Connection]:
    """A connection of its own to the test database, *without* the test settings' session
    variable that lets Django's flush truncate the ledger."""
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"],
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"],
        password=db["PASSWORD"] or None,
    ) as conn:
        conn.execute("SET lock_timeout = '10s'")
        yield conn


@pytest.mark.django_db(transaction=True)
def test_truncating_the_ledger_is_refused_unless_the_session_allows_it(
    raw_connection: psycopg.Connection,
) -> None:
    funded_user((10, None))
    assert raw_connection.execute(
        "SELECT coalesce(current_setting(%s, true), '')", [settings.LEDGER_TRUNCATE_GUC]
    ).fetchone() == ("",)

    refused = pytest.raises(psycopg.errors.RestrictViolation, match="append-only: TRUNCATE")
    with refused, raw_connection.transaction():
        raw_connection.execute("TRUNCATE credits_ledgerentry CASCADE")
    assert LedgerEntry.objects.count() == 1

    # The same statement goes through for a session that sets the variable (what the test
    # settings do for Django's flush); rolled back here so the entry stays.
    with raw_connection.transaction():
        raw_connection.execute(f"SET LOCAL {settings.LEDGER_TRUNCATE_GUC} = 'on'")
        raw_connection.execute("TRUNCATE credits_ledgerentry CASCADE")
        assert raw_connection.execute("SELECT count(*) FROM credits_ledgerentry").fetchone() == (0,)
        raise psycopg.Rollback()  # leaves the transaction block quietly, rolled back
    assert LedgerEntry.objects.count() == 1


def test_the_test_settings_connection_is_the_one_that_may_truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting(%s, true)", [settings.LEDGER_TRUNCATE_GUC])
        assert cursor.fetchone() == ("on",)


# --- CHECK and UNIQUE constraints, broken from below the ORM ---------------------------------


def test_an_account_balance_can_never_be_negative() -> None:
    user = funded_user()
    message = _refused(
        "UPDATE credits_creditaccount SET balance = -1 WHERE user_id = %s", [user.pk]
    )
    assert "account_balance_not_negative" in message


def test_reserved_credits_can_never_exceed_the_balance() -> None:
    user = funded_user((3, None))
    message = _refused(
        "UPDATE credits_creditaccount SET reserved = balance + 1 WHERE user_id = %s", [user.pk]
    )
    assert "account_reserved_within_balance" in message
    message = _refused(
        "UPDATE credits_creditaccount SET reserved = -1, balance = 0 WHERE user_id = %s",
        [user.pk],
    )
    assert "account_reserved_not_negative" in message


def test_a_lot_never_holds_more_than_it_was_granted_nor_less_than_nothing() -> None:
    user = funded_user((3, None))
    lot = Lot.objects.get(account_id=user.pk)
    assert "lot_remaining_within_granted" in _refused(
        "UPDATE credits_lot SET remaining = granted + 1 WHERE id = %s", [lot.pk]
    )
    # Negative: the positive-integer column's own check refuses it first.
    assert "credits_lot_remaining_check" in _refused(
        "UPDATE credits_lot SET remaining = -1, reserved = 0 WHERE id = %s", [lot.pk]
    )
    assert "lot_reserved_within_remaining" in _refused(
        "UPDATE credits_lot SET reserved = remaining + 1 WHERE id = %s", [lot.pk]
    )


def test_a_lot_never_reserves_less_than_nothing_nor_is_granted_nothing() -> None:
    user = funded_user((3, None))
    lot = Lot.objects.get(account_id=user.pk)
    assert "lot_reserved_within_remaining" in _refused(
        "UPDATE credits_lot SET reserved = -1 WHERE id = %s", [lot.pk]
    )
    assert "lot_granted_positive" in _refused(
        "UPDATE credits_lot SET granted = 0, remaining = 0 WHERE id = %s", [lot.pk]
    )


def _insert_entry(
    account_id: object, lot_id: int, *, kind: str, amount: int, key: str, balance_after: int = 0
) -> str:
    return _refused(
        """INSERT INTO credits_ledgerentry
           (account_id, lot_id, kind, amount, balance_after, idempotency_key, reference, reason,
            created_at)
           VALUES (%s, %s, %s, %s, %s, %s, '', '', now())""",
        [account_id, lot_id, kind, amount, balance_after, key],
    )


def test_an_entry_of_zero_credits_or_of_the_wrong_sign_is_refused() -> None:
    user = funded_user((3, None))
    lot = Lot.objects.get(account_id=user.pk)
    assert "entry_amount_not_zero" in _insert_entry(
        user.pk, lot.pk, kind="adjust", amount=0, key="zero"
    )
    assert "entry_amount_sign_matches_kind" in _insert_entry(
        user.pk, lot.pk, kind="charge", amount=1, key="positive-charge"
    )
    assert "entry_amount_sign_matches_kind" in _insert_entry(
        user.pk, lot.pk, kind="grant", amount=-1, key="negative-grant"
    )
    assert "entry_balance_not_negative" in _insert_entry(
        user.pk, lot.pk, kind="charge", amount=-1, key="below-zero", balance_after=-1
    )


def test_an_idempotency_key_is_written_once() -> None:
    user = funded_user((3, None))
    first = LedgerEntry.objects.get(account_id=user.pk)
    message = _insert_entry(
        user.pk, first.lot_id, kind="grant", amount=3, key=first.idempotency_key, balance_after=6
    )
    assert "idempotency_key" in message
    assert LedgerEntry.objects.count() == 1


def test_a_hold_lives_no_longer_than_its_ttl_and_charges_at_most_its_amount() -> None:
    user = funded_user((3, None))
    hold = services.hold_create(user_id=user.pk, request_id="r", ttl=timedelta(seconds=5)).hold
    assert hold.expires_at == hold.created_at + timedelta(seconds=5)
    assert "hold_charged_within_amount" in _refused(
        "UPDATE credits_hold SET charged = amount + 1 WHERE id = %s", [hold.pk]
    )
    assert clock.now() < hold.expires_at


def test_a_hold_reserves_at_least_one_credit_and_never_charges_less_than_nothing() -> None:
    user = funded_user((3, None))
    hold = services.hold_create(user_id=user.pk, request_id="r").hold
    assert "hold_charged_within_amount" in _refused(
        "UPDATE credits_hold SET charged = -1 WHERE id = %s", [hold.pk]
    )
    assert "hold_amount_positive" in _refused(
        "UPDATE credits_hold SET amount = 0, charged = 0 WHERE id = %s", [hold.pk]
    )
