import uuid
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from accounts.models import User
from credits import clock, services
from credits.errors import LedgerLimitExceeded
from credits.models import MAX_CREDITS


class Command(BaseCommand):
    help = "Grant AMOUNT credits to EMAIL as a staff adjustment (an `adjust` entry, a new lot)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email")
        parser.add_argument("amount", type=int)
        parser.add_argument("--reason", required=True)
        parser.add_argument("--expires-at", help="ISO 8601; a naive value is UTC")
        parser.add_argument("--by", help="email of the staff member granting")

    def handle(self, *args: Any, **options: Any) -> None:
        amount: int = options["amount"]
        if amount <= 0:
            raise CommandError("AMOUNT must be a positive number of credits.")
        if amount > MAX_CREDITS:
            raise CommandError(f"AMOUNT must be at most {MAX_CREDITS:,} credits.")
        reason: str = options["reason"].strip()
        if not reason:
            raise CommandError("--reason must not be empty.")
        user = _user(options["email"])
        staff = _user(options["by"]) if options["by"] else None
        if staff is not None and not staff.is_staff:
            # The entry names who granted: only a staff member may be recorded there.
            raise CommandError(f"--by {staff.email} is not a staff member.")
        expires_at = _expiry(options["expires_at"]) if options["expires_at"] else None
        # Users made outside registration (createsuperuser, the admin) have no account yet.
        services.account_open(user_id=user.pk)
        try:
            entries = services.credits_adjust(
                user_id=user.pk,
                amount=amount,
                reason=reason,
                created_by=staff,
                expires_at=expires_at,
                idempotency_key=f"adjust:cli:{uuid.uuid4()}",
            )
        except LedgerLimitExceeded as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"granted {amount} credits to {user.email}; balance now {entries[-1].balance_after}"
        )


def _user(email: str) -> User:
    try:
        return User.objects.get_by_natural_key(email)  # the address as login finds it
    except User.DoesNotExist as exc:
        raise CommandError(f"No user with the email {email!r}.") from exc


def _expiry(value: str) -> datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"--expires-at {value!r} is not an ISO 8601 date and time.")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if parsed <= clock.now():
        raise CommandError("--expires-at is in the past.")
    return parsed
