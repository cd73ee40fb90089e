from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from accounts.models import User
from accounts.two_factor import staff_two_factor_enrol


class Command(BaseCommand):
    help = (
        "Enrol a staff member for the admin's two-factor login: print the otpauth:// URL for "
        "their authenticator app and their single-use recovery codes, once. Replaces any "
        "devices they had."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("email", help="The staff member's email.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = User.objects.filter(email__iexact=options["email"].strip()).first()
        if user is None or not user.is_staff:
            raise CommandError("No staff account has that email.")
        enrolment = staff_two_factor_enrol(user=user)
        self.stderr.write("Shown this once: add the URL to an authenticator app, keep the codes.")
        self.stdout.write(enrolment.config_url)
        for code in enrolment.recovery_codes:
            self.stdout.write(code)
