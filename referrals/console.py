"""The invite panel of the customer's console (`/my-credits/invite`), registered into the
console from `ReferralsConfig.ready`: the console imports nothing of `referrals`."""

from dataclasses import asdict
from typing import Any

from accounts.models import User
from credits.console.panels import ConsolePanel, console_panel_register

from .models import ReferralProgram
from .selectors import referral_summary


def invite_context(user: User) -> dict[str, Any]:
    program = ReferralProgram.objects.first()
    return {"summary": asdict(referral_summary(user=user)), "program": program}


def invite_panel_register() -> None:
    console_panel_register(
        ConsolePanel(
            slug="invite",
            title="Invite",
            template="referrals/console_invite.html",
            context=invite_context,
        )
    )
