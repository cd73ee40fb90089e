"""Staff's second factor for the admin (django-otp; the login side is config/admin_site.py).

Enrolling replaces the staff member's devices with one TOTP device (an authenticator app reads
its otpauth:// URL) and one static device holding single-use recovery codes, for a lost phone.
django-otp tries every device of the user against the code typed at login, so a recovery code
goes in the same field; it is deleted when used. TOTP verification is throttled by django-otp
(growing delays after failures) and refuses a code already used (`last_t`).
"""

from dataclasses import dataclass

from django.db import transaction
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import User

RECOVERY_CODES = 10


@dataclass(frozen=True)
class Enrolment:
    config_url: str
    recovery_codes: list[str]


def staff_two_factor_enrol(*, user: User) -> Enrolment:
    if not user.is_staff:
        raise ValueError("Only staff accounts log in to the admin.")
    with transaction.atomic(durable=True):
        TOTPDevice.objects.filter(user=user).delete()
        StaticDevice.objects.filter(user=user).delete()
        totp = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
        recovery = StaticDevice.objects.create(user=user, name="recovery codes", confirmed=True)
        codes = [StaticToken.random_token() for _ in range(RECOVERY_CODES)]
        StaticToken.objects.bulk_create(StaticToken(device=recovery, token=c) for c in codes)
    return Enrolment(config_url=totp.config_url, recovery_codes=codes)
