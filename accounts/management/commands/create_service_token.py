from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import ServiceToken
from accounts.service_tokens import service_token_create


class Command(BaseCommand):
    help = (
        "Create a service token for the API gateway and print it once (stdout: the token "
        "alone, so it can be piped into a secret store). Only its digest is stored."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("name", help="A unique name, e.g. gateway-eu-1.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        if not name or len(name) > 100:
            raise CommandError("NAME must be 1 to 100 characters.")
        if ServiceToken.objects.filter(name=name).exists():
            raise CommandError(f"A service token named {name!r} exists already; pick another.")
        token, raw = service_token_create(name=name)
        self.stderr.write(
            f"Service token {token.name!r} created. It is shown this once; store it now."
        )
        self.stdout.write(raw)
