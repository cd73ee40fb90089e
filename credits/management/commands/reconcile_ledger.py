from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from credits.reconciliation import reconcile
from credits.reconciliation_incremental import ReconcileBusy, reconcile_incremental


class Command(BaseCommand):
    help = (
        "Recompute every balance, lot and reserved amount from the ledger entries and live holds; "
        "exit non-zero, listing the accounts, if anything disagrees. With --incremental, only "
        "the entries since each account's checkpoint (and the holds they touch), moving the "
        "checkpoints of the accounts that agree."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--incremental",
            action="store_true",
            help="read only the entries after each account's checkpoint (the nightly run)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        summary = ""
        if options["incremental"]:
            try:
                run = reconcile_incremental()
            except ReconcileBusy as exc:
                raise CommandError(str(exc)) from exc
            found, summary = run.found, f" ({run.summary()})"
        else:
            found = reconcile()
        if found:
            for discrepancy in found:
                self.stderr.write(str(discrepancy))
            accounts = sorted({str(d.user_id) for d in found})
            raise CommandError(
                f"{len(found)} discrepancies in {len(accounts)} accounts: {', '.join(accounts)}"
                + summary
            )
        self.stdout.write(self.style.SUCCESS(f"ledger reconciles: no discrepancies{summary}"))
