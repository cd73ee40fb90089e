from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command

from credits import clock
from credits.models import CreditAccount, EntryKind, LedgerEntry, Lot, LotSource
from tests.credits.conftest import assert_ledger_consistent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _grant(*args: object) -> str:
    from io import StringIO

    out = StringIO()
    call_command("grant_credits", *args, stdout=out)
    return out.getvalue()


def test_grant_credits_writes_an_adjust_entry_and_an_adjustment_lot_recording_the_staff() -> None:
    staff = UserFactory.create(email="ops@example.com", is_staff=True)
    user = UserFactory.create(email="ada@example.com")

    out = _grant("ADA@example.com", "250", "--reason", "outage credit", "--by", "ops@example.com")

    entry = LedgerEntry.objects.get(account_id=user.pk)
    assert (entry.kind, entry.amount, entry.reason, entry.created_by) == (
        EntryKind.ADJUST,
        250,
        "outage credit",
        staff,
    )
    assert (entry.lot.source, entry.lot.granted, entry.lot.expires_at) == (
        LotSource.ADJUSTMENT,
        250,
        None,
    )
    assert "granted 250 credits to ada@example.com; balance now 250" in out
    assert_ledger_consistent(user.pk)


def test_a_naive_expiry_is_read_as_utc() -> None:
    user = UserFactory.create()
    when = (clock.now() + timedelta(days=3)).astimezone(UTC).replace(microsecond=0, tzinfo=None)

    _grant(user.email, "5", "--reason", "trial", "--expires-at", when.isoformat())

    lot = Lot.objects.get(account_id=user.pk)
    assert lot.expires_at == when.replace(tzinfo=UTC)


def test_an_expiry_with_an_offset_keeps_its_instant() -> None:
    user = UserFactory.create()
    _grant(user.email, "5", "--reason", "trial", "--expires-at", "2099-01-01T12:00:00+05:30")
    assert Lot.objects.get(account_id=user.pk).expires_at == datetime(2099, 1, 1, 6, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["0", "--reason", "x"], "AMOUNT must be a positive"),
        (["-5", "--reason", "x"], "AMOUNT must be a positive"),
        (["5", "--reason", "  "], "--reason must not be empty"),
        (["5", "--reason", "x", "--expires-at", "2020-01-01T00:00:00"], "in the past"),
        (["5", "--reason", "x", "--expires-at", "next tuesday"], "not an ISO 8601"),
        (["5", "--reason", "x", "--by", "nobody@example.com"], "No user with the email"),
        (["5", "--reason", "x", "--by", "plain@example.com"], "is not a staff member"),
    ],
)
def test_bad_grants_are_refused_writing_nothing(args: list[str], complaint: str) -> None:
    user = UserFactory.create()
    UserFactory.create(email="plain@example.com")

    with pytest.raises(CommandError, match=complaint):
        _grant(user.email, *args)

    assert not LedgerEntry.objects.exists()
    assert not CreditAccount.objects.filter(pk=user.pk, balance__gt=0).exists()


def test_an_expiry_a_moment_ago_by_the_ledger_clock_is_refused() -> None:
    user = UserFactory.create()
    clock.advance(timedelta(days=10))
    soon_by_the_wall = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    with pytest.raises(CommandError, match="in the past"):
        _grant(user.email, "5", "--reason", "x", "--expires-at", soon_by_the_wall)


def test_an_unknown_email_is_refused() -> None:
    with pytest.raises(CommandError, match="No user with the email"):
        _grant("ghost@example.com", "5", "--reason", "x")
