import csv
import json
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from credits.payments.finance import CREDIT_FIELDS, MONEY_FIELDS, finance_month


class Command(BaseCommand):
    help = (
        "Deferred revenue, cash in, refunds, recognised revenue and breakage of one UTC month, "
        "per currency (minor units), and promotional credits; exit non-zero if "
        "opening + cash_in - refunds - recognized - breakage != closing in any currency."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--month", required=True, help="YYYY-MM (UTC).")
        parser.add_argument("--format", choices=["json", "csv"], default="json")

    def handle(self, *args: Any, **options: Any) -> None:
        month = options["month"]
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
            raise CommandError(f"--month must be YYYY-MM; got {month!r}.")
        report = finance_month(month=month)
        if options["format"] == "json":
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            writer = csv.writer(self.stdout, lineterminator="\n")
            writer.writerow(["month", "currency", *MONEY_FIELDS, *CREDIT_FIELDS])
            for currency, row in sorted(report.as_dict()["currencies"].items()):
                fields = [*MONEY_FIELDS, *CREDIT_FIELDS]
                writer.writerow([month, currency, *(row[name] for name in fields)])
        broken = report.broken()
        if broken:
            gaps = ", ".join(f"{currency}: off by {gap}" for currency, gap in broken.items())
            raise CommandError(f"the identity does not hold for {month}: {gaps}")
