"""64-bit credit amounts (issue 15, item 2): balances past 2,147,483,647 work through both
database implementations, the widening runs without a long lock while writes go on, and a
grant past what the ledger can hold is refused with a clear error."""

import threading
from io import StringIO
from typing import cast
from uuid import uuid4

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.models import User
from accounts.service_tokens import clear_cache, service_token_create
from credits import services
from credits.errors import LedgerLimitExceeded
from credits.models import MAX_CREDITS, CreditAccount, LedgerEntry, LotSource
from credits.reconciliation import reconcile
from credits.widen import widen_columns
from tests.credits.conftest import funded_user
from tests.factories import UserFactory
from tests.gateway.conftest import Gateway, backend, funded_customer  # noqa: F401

INT32_MAX = 2**31 - 1


@pytest.fixture
def gateway() -> Gateway:
    clear_cache()
    return Gateway(service_token_create(name="gateway-64-bit")[1])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("backend")
def test_a_balance_past_two_billion_is_granted_held_and_charged(gateway: Gateway) -> None:
    customer = funded_customer(INT32_MAX)
    services.credits_grant(
        user_id=customer.user.pk,
        amount=1000,  # the grant that used to fail: the balance passes the 32-bit limit
        source=LotSource.PURCHASE,
        idempotency_key=f"past-int32:{uuid4()}",
    )

    answer = gateway.authorize(customer.raw_key, request_id="big-1")
    settled = gateway.settle("big-1", "success")

    assert answer["allowed"] is True
    assert answer["credits_remaining"] == INT32_MAX + 1000 - 1
    assert answer["headers"]["X-Credits-Remaining"] == str(INT32_MAX + 999)
    assert settled.status_code == 200
    assert settled.json()["credits_remaining"] == INT32_MAX + 999
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved) == (INT32_MAX + 999, 0)
    newest = LedgerEntry.objects.filter(account=account).latest("id")
    assert (newest.kind, newest.balance_after) == ("charge", INT32_MAX + 999)
    assert reconcile() == []


@pytest.mark.django_db
def test_a_grant_past_what_the_ledger_holds_is_refused_and_writes_nothing() -> None:
    user = funded_user((MAX_CREDITS - 5, None))
    before = LedgerEntry.objects.count()

    with pytest.raises(LedgerLimitExceeded) as refused:
        services.credits_grant(
            user_id=user.pk, amount=6, source=LotSource.ADJUSTMENT, idempotency_key="too-much"
        )

    assert refused.value.code == "amount_too_large" and refused.value.field == "amount"
    assert "9,223,372,036,854,775,807" in refused.value.message
    assert LedgerEntry.objects.count() == before
    services.credits_grant(
        user_id=user.pk, amount=5, source=LotSource.ADJUSTMENT, idempotency_key="just-fits"
    )
    assert CreditAccount.objects.get(pk=user.pk).balance == MAX_CREDITS
    assert reconcile() == []


@pytest.mark.django_db
def test_grant_credits_refuses_an_amount_the_ledger_cannot_hold() -> None:
    user = cast(User, UserFactory())
    with pytest.raises(CommandError, match="at most 9,223,372,036,854,775,807"):
        call_command("grant_credits", user.email, str(MAX_CREDITS + 1), reason="x")
    call_command("grant_credits", user.email, str(INT32_MAX + 1), reason="big", stdout=StringIO())
    with pytest.raises(CommandError, match="the most the ledger can hold"):
        call_command("grant_credits", user.email, str(MAX_CREDITS), reason="x")
    assert CreditAccount.objects.get(pk=user.pk).balance == INT32_MAX + 1


# --- the widening itself, on a scratch table shaped like the ledger's ---------------------------

SCRATCH = "widen_scratch"


def _shape() -> tuple[list[tuple[str, str]], list[str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype = 'c' ORDER BY 1",
            [SCRATCH],
        )
        checks = cursor.fetchall()
        cursor.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass"
            " ORDER BY 1",
            [SCRATCH],
        )
        return checks, [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_widening_keeps_rows_checks_and_indexes_while_writes_go_on() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH}")
        cursor.execute(
            f"CREATE TABLE {SCRATCH} (id bigserial PRIMARY KEY, kind text NOT NULL,"
            " amount integer NOT NULL, balance integer NOT NULL CHECK (balance >= 0),"
            " CONSTRAINT scratch_amount_not_zero CHECK (NOT (amount = 0)),"
            " CONSTRAINT scratch_balance_covers CHECK (balance >= amount OR kind = 'x'))"
        )
        cursor.execute(f"CREATE INDEX scratch_positive ON {SCRATCH} (kind, id) WHERE amount > 0")
        cursor.execute(
            f"INSERT INTO {SCRATCH} (kind, amount, balance)"
            " SELECT 'g', n, n * 2 FROM generate_series(1, 12000) n"
        )
    before = _shape()
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:  # a live service: inserts and updates while the widening runs
        try:
            with connection.cursor() as cursor:
                while not stop.is_set() and len(written) < 2000:
                    cursor.execute(
                        f"INSERT INTO {SCRATCH} (kind, amount, balance) VALUES ('w', 7, 70)"
                        " RETURNING id"
                    )
                    written.append(cursor.fetchone()[0])
                    cursor.execute(
                        f"UPDATE {SCRATCH} SET balance = balance + 1 WHERE id = %s",
                        [written[-1] % 12000 + 1],
                    )
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        widen_columns(connection, SCRATCH, "id", ["amount", "balance"])
    finally:
        stop.set()
        thread.join(timeout=60)

    try:
        assert written, "no write ran during the widening"
        assert _shape() == before  # the same CHECKs and indexes, under the same names
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = %s AND column_name IN ('amount', 'balance') ORDER BY 1",
                [SCRATCH],
            )
            assert cursor.fetchall() == [("amount", "bigint"), ("balance", "bigint")]
            cursor.execute(
                f"SELECT count(*), sum(amount), count(*) FILTER (WHERE kind = 'w') FROM {SCRATCH}"
            )
            count, total, by_writer = cursor.fetchone()
            assert (count, by_writer) == (12000 + len(written), len(written))
            assert total == 12000 * 12001 // 2 + 7 * len(written)
            cursor.execute(
                f"SELECT count(*) FROM {SCRATCH} WHERE id <= 12000 AND balance < amount * 2"
            )
            assert cursor.fetchone() == (0,)  # the writer's updates were kept, none lost
            cursor.execute(
                f"INSERT INTO {SCRATCH} (kind, amount, balance) VALUES ('g', %s, %s)",
                [INT32_MAX + 1, 2**40],
            )
            with pytest.raises(Exception, match="scratch_amount_not_zero"):
                cursor.execute(f"INSERT INTO {SCRATCH} (kind, amount, balance) VALUES ('g', 0, 1)")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {SCRATCH}")


@pytest.mark.django_db
def test_after_the_widening_the_ledger_is_append_only_again() -> None:
    user = funded_user((5, None))
    entry = LedgerEntry.objects.filter(account_id=user.pk).first()
    assert entry is not None
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL billing.allow_ledger_widen = on")
        with pytest.raises(Exception, match="append-only"):
            cursor.execute(
                "UPDATE credits_ledgerentry SET amount = amount WHERE id = %s", [entry.pk]
            )
