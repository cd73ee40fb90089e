"""The audit log of staff writes: each admin write the contract lists is recorded with who and
the values before and after; staff read it; the database refuses to change or delete it."""

import uuid
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.db import connection, transaction
from django.db.utils import DatabaseError
from django.test import Client, TestCase

from accounts.models import ApiKey, User
from accounts.services import api_key_create
from credits import services
from credits.gateway.models import Tier
from credits.models import CreditAccount
from credits.payments.models import Package, StaffRefund
from referrals.models import ReferralProgram
from tests.factories import registered_user
from tests.payments import conftest as payments_conftest
from tests.payments.conftest import paid_with_charge
from tests.stripe_support import StripeRecordedServer

from .conftest import logged_in

pytestmark = pytest.mark.django_db

# The recorded Stripe API, for the refund and unfreeze cases.
stripe_server = payments_conftest.stripe_server
stripe_settings = payments_conftest.stripe_settings


def entries_for(obj: Any) -> list[LogEntry]:
    return list(LogEntry.objects.get_for_object(obj).order_by("id"))


def change_form_data(client: Client, url: str) -> dict[str, Any]:
    """What the admin's change form would post unchanged: its fields and its inlines'."""
    response = client.get(url)
    assert response.status_code == 200
    data: dict[str, Any] = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        forms.append(management)
        forms.extend(inline.formset.forms)
    for form in forms:
        for bound in form:
            value = bound.value()
            if value is None or value is False:
                continue
            data[bound.html_name] = value
    return data


def edit(client: Client, url: str, **changes: Any) -> None:
    data = change_form_data(client, url)
    data.update(changes)
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors


@pytest.fixture
def superuser_client(superuser: User) -> Client:
    return logged_in(superuser)


def test_an_edited_package_is_recorded_with_who_and_before_and_after(
    superuser: User, superuser_client: Client
) -> None:
    package = Package.objects.get(slug="standard")
    edit(superuser_client, f"/admin/payments/package/{package.pk}/change/", price_amount=3499)
    [entry] = entries_for(package)
    assert entry.actor == superuser
    assert entry.changes_dict["price_amount"] == ["2999", "3499"]


def test_an_edited_tier_is_recorded(superuser: User, superuser_client: Client) -> None:
    tier = Tier.objects.order_by("min_balance").first()
    assert tier is not None
    before = tier.requests_per_minute
    edit(superuser_client, f"/admin/gateway/tier/{tier.pk}/change/", requests_per_minute=before + 1)
    [entry] = entries_for(tier)
    assert entry.actor == superuser
    assert entry.changes_dict["requests_per_minute"] == [str(before), str(before + 1)]


def test_an_edited_referral_program_is_recorded(superuser: User, superuser_client: Client) -> None:
    program = ReferralProgram.objects.first()
    if program is None:
        pytest.skip("no referral program seeded")
    url = f"/admin/referrals/referralprogram/{program.pk}/change/"
    data = change_form_data(superuser_client, url)
    field = next(k for k in data if k.endswith("credits") or k.endswith("reward"))
    old = data[field]
    edit(superuser_client, url, **{field: int(old) + 5})
    [entry] = entries_for(program)
    assert entry.actor == superuser
    assert entry.changes_dict[field] == [str(old), str(int(old) + 5)]


def test_an_edited_user_is_recorded_without_their_password(
    superuser: User, superuser_client: Client
) -> None:
    alice = registered_user(email="alice@example.com")
    edit(superuser_client, f"/admin/accounts/user/{alice.pk}/change/", is_staff="on")
    [entry] = [e for e in entries_for(alice) if e.actor == superuser]
    assert entry.changes_dict["is_staff"] == ["False", "True"]
    assert "password" not in entry.changes_dict


def test_an_adjustment_is_recorded_with_the_balance_before_and_after(
    superuser: User, superuser_client: Client
) -> None:
    alice = registered_user(email="alice@example.com")  # 100 signup credits
    response = superuser_client.post(
        f"/admin/accounts/user/{alice.pk}/adjust-credits/",
        {"amount": 250, "reason": "outage", "form_id": str(uuid.uuid4())},
    )
    assert response.status_code == 302
    [entry] = entries_for(CreditAccount.objects.get(pk=alice.pk))
    assert entry.actor == superuser
    assert entry.changes_dict["balance"] == ["100", "350"]
    assert entry.changes_dict["reason"] == [None, "outage"]


def test_a_key_revocation_is_recorded(superuser: User, superuser_client: Client) -> None:
    key, _ = api_key_create(user=registered_user(), name="laptop")
    superuser_client.post(
        "/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [str(key.pk)]}
    )
    [entry] = entries_for(key)
    assert entry.actor == superuser
    revoked_at = ApiKey.objects.get(pk=key.pk).revoked_at
    assert entry.changes_dict["revoked_at"] == [None, str(revoked_at)]


def test_an_unfreeze_is_recorded(
    superuser: User, superuser_client: Client, stripe_settings: StripeRecordedServer
) -> None:
    purchase = paid_with_charge(registered_user(), stripe_settings)
    services.account_freeze(user_id=purchase.user_id, reason="dispute du_1")
    superuser_client.post(
        "/admin/payments/purchase/",
        {"action": "unfreeze_buyers", "_selected_action": [str(purchase.pk)]},
    )
    [entry] = entries_for(CreditAccount.objects.get(pk=purchase.user_id))
    assert entry.actor == superuser
    assert entry.changes_dict["frozen_reason"] == ["dispute du_1", ""]
    assert entry.changes_dict["frozen_at"][1] is None


def test_a_staff_refund_is_recorded(
    superuser: User, superuser_client: Client, stripe_settings: StripeRecordedServer
) -> None:
    purchase = paid_with_charge(registered_user(), stripe_settings)
    with TestCase.captureOnCommitCallbacks(execute=True):
        superuser_client.post(
            f"/admin/payments/purchase/{purchase.pk}/refund/",
            {"amount": 500, "reason": "goodwill", "refund_id": uuid.uuid4(), "_refund": "1"},
        )
    refund = StaffRefund.objects.get()
    created = entries_for(refund)[0]
    assert created.action == LogEntry.Action.CREATE
    assert created.actor == superuser
    assert created.changes_dict["amount"] == ["None", "500"]


def test_staff_read_the_audit_log_and_cannot_delete_it(
    superuser: User, superuser_client: Client
) -> None:
    package = Package.objects.get(slug="standard")
    edit(superuser_client, f"/admin/payments/package/{package.pk}/change/", price_amount=3499)
    [entry] = entries_for(package)
    assert superuser_client.get("/admin/auditlog/logentry/").status_code == 200
    assert superuser_client.get(f"/admin/auditlog/logentry/{entry.pk}/delete/").status_code == 403


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE auditlog_logentry SET changes = '{}'::jsonb",
        "DELETE FROM auditlog_logentry",
        "TRUNCATE auditlog_logentry",
    ],
)
def test_the_database_refuses_to_change_the_audit_log(
    superuser_client: Client, statement: str
) -> None:
    package = Package.objects.get(slug="standard")
    edit(superuser_client, f"/admin/payments/package/{package.pk}/change/", price_amount=3499)
    with connection.cursor() as cursor:
        if statement.startswith("TRUNCATE"):
            # The test settings allow TRUNCATE (Django's flush); production sessions do not.
            cursor.execute("SET LOCAL billing.allow_ledger_truncate = off")
            # Check the deferred FKs of the rows just written now: TRUNCATE refuses to run
            # while they are pending, which would hide what the trigger says.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            cursor.execute(statement)
    [entry] = entries_for(package)
    assert entry.changes_dict["price_amount"] == ["2999", "3499"]
