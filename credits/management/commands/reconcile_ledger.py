from typing import Any

from django.core.management.base import BaseCommand, CommandError

from credits.reconciliation import reconcile


class Command(BaseCommand):
    help = (
        "Recompute every balance, lot and reserved amount from the ledger entries and live holds; "
        "exit non-zero, listing the accounts, if anything disagrees."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        found = reconcile()
        if found:
            for discrepancy in found:
                self.stderr.write(str(discrepancy))
            accounts = sorted({str(d.user_id) for d in found})
            raise CommandError(
                f"{len(found)} discrepancies in {len(accounts)} accounts: {', '.join(accounts)}"
            )
        self.stdout.write(self.style.SUCCESS("ledger reconciles: no discrepancies"))
