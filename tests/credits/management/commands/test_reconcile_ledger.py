import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection

from credits import services
from tests.credits.conftest import funded_user
from tests.processes import database_url

ROOT = Path(settings.BASE_DIR)


def _tamper(sql: str, *params: UUID) -> None:
    # Cached figures live in ordinary rows (only entries are append-only): a bad deploy or a
    # hand-edit could change them like this.
    with connection.cursor() as cursor:
        cursor.execute(sql, list(params))


@pytest.mark.django_db
def test_reconcile_ledger_is_quiet_and_succeeds_when_the_ledger_agrees(
    capsys: pytest.CaptureFixture[str],
) -> None:
    user = funded_user((10, None))
    services.hold_create(user_id=user.pk, request_id="r1")
    services.hold_commit(request_id="r1")
    services.hold_create(user_id=user.pk, request_id="r2")

    call_command("reconcile_ledger")

    assert "no discrepancies" in capsys.readouterr().out


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("UPDATE credits_creditaccount SET balance = balance + 5 WHERE user_id = %s", "balance"),
        ("UPDATE credits_creditaccount SET reserved = 0 WHERE user_id = %s", "reserved"),
        ("UPDATE credits_creditaccount SET consumed = 7 WHERE user_id = %s", "consumed"),
        ("UPDATE credits_lot SET remaining = remaining - 1 WHERE account_id = %s", "remaining"),
        ("UPDATE credits_hold SET charged = 1 WHERE account_id = %s", "charged of hold r2"),
    ],
)
def test_reconcile_ledger_fails_listing_the_account_whose_cached_figure_was_tampered_with(
    sql: str, what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = funded_user((10, None))
    user = funded_user((10, None))
    services.hold_create(user_id=user.pk, request_id="r2")

    _tamper(sql, user.pk)
    with pytest.raises(CommandError) as failed:
        call_command("reconcile_ledger")

    assert str(user.pk) in str(failed.value) and str(honest.pk) not in str(failed.value)
    assert "in 1 accounts" in str(failed.value)
    err = capsys.readouterr().err
    assert f"{user.pk}: {what}" in err


@pytest.mark.django_db(transaction=True)
def test_reconcile_ledger_exits_non_zero_from_the_command_line() -> None:
    user = funded_user((10, None))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "test-only",
        "DATABASE_URL": database_url(),
    }
    command = [sys.executable, "manage.py", "reconcile_ledger"]

    clean = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr

    _tamper("UPDATE credits_creditaccount SET balance = 3 WHERE user_id = %s", user.pk)
    dirty = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert dirty.returncode != 0
    assert f"{user.pk}: balance is 3, the ledger says 10" in dirty.stderr


@pytest.mark.django_db
def test_reconcile_ledger_incremental_succeeds_then_fails_listing_the_tampered_account(
    capsys: pytest.CaptureFixture[str],
) -> None:
    honest = funded_user((10, None))
    user = funded_user((10, None))
    services.hold_create(user_id=user.pk, request_id="r1")
    services.hold_commit(request_id="r1")

    call_command("reconcile_ledger", "--incremental")
    out = capsys.readouterr().out
    assert "no discrepancies" in out and "3 entries read since the checkpoints" in out

    services.hold_create(user_id=user.pk, request_id="r2")
    services.hold_commit(request_id="r2")
    _tamper("UPDATE credits_creditaccount SET consumed = 7 WHERE user_id = %s", user.pk)
    with pytest.raises(CommandError) as failed:
        call_command("reconcile_ledger", "--incremental")

    assert str(user.pk) in str(failed.value) and str(honest.pk) not in str(failed.value)
    assert "1 discrepancies in 1 accounts" in str(failed.value)
    assert f"{user.pk}: consumed is 7, the ledger says 2" in capsys.readouterr().err


@pytest.mark.django_db(transaction=True)
def test_reconcile_ledger_incremental_exits_non_zero_from_the_command_line() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite runs the full reconciliation for --incremental")
    user = funded_user((10, None))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": "test-only",
        "DATABASE_URL": database_url(),
    }
    command = [sys.executable, "manage.py", "reconcile_ledger", "--incremental"]

    clean = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert "1 checkpoints advanced" in clean.stdout

    _tamper("UPDATE credits_creditaccount SET balance = 3 WHERE user_id = %s", user.pk)
    dirty = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert dirty.returncode != 0
    assert f"{user.pk}: balance is 3, the ledger says 10" in dirty.stderr
