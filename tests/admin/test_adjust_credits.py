"""The staff credit adjustment: through credits.services.credits_adjust, once per form, never
below the available balance, and only for staff holding `credits.adjust_credits`."""

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from accounts.models import User
from credits import clock, services
from credits.models import CreditAccount, EntryKind, LedgerEntry, LotSource
from tests.factories import registered_user

from .conftest import adjust_permission, logged_in

pytestmark = pytest.mark.django_db


def adjust_url(user: User) -> str:
    return f"/admin/accounts/user/{user.pk}/adjust-credits/"


def post(client: Client, user: User, **fields: Any) -> Any:
    data = {"form_id": str(uuid.uuid4()), "reason": "", **fields}
    return client.post(adjust_url(user), data)


def balance(user: User) -> int:
    return CreditAccount.objects.get(pk=user.pk).balance


@pytest.fixture
def alice() -> User:
    return registered_user(email="alice@example.com")  # 100 signup credits


def test_a_positive_adjustment_writes_an_adjust_entry_by_the_staff_member(
    root: Client, superuser: User, alice: User
) -> None:
    response = post(root, alice, amount="50", reason="  support ticket 42  ")

    assert response.status_code == 302
    assert response["Location"] == f"/admin/accounts/user/{alice.pk}/change/"
    entry = LedgerEntry.objects.get(reference="adjustment")
    assert (entry.kind, entry.amount, entry.balance_after) == (EntryKind.ADJUST, 50, 150)
    assert (entry.reason, entry.created_by) == ("support ticket 42", superuser)
    assert entry.lot.source == LotSource.ADJUSTMENT and entry.lot.expires_at is None
    assert entry.idempotency_key.startswith("admin-adjust:")
    assert balance(alice) == 150
    log = LogEntry.objects.get(object_id=str(alice.pk))
    assert log.user == superuser and "+50: support ticket 42" in log.get_change_message()
    page = root.get(response["Location"]).content.decode()
    assert "Adjusted the credits of alice@example.com by +50." in page


def test_a_positive_adjustment_can_carry_an_expiry(root: Client, alice: User) -> None:
    expiry = (clock.now() + timedelta(days=10)).replace(second=0, microsecond=0)
    response = post(
        root,
        alice,
        amount="25",
        reason="trial extension",
        expires_at_0=expiry.strftime("%Y-%m-%d"),
        expires_at_1=expiry.strftime("%H:%M:%S"),
    )
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(reference="adjustment")
    assert entry.lot.expires_at == expiry
    assert entry.lot.expires_at.tzinfo is not None


def test_a_negative_adjustment_takes_available_credit(root: Client, alice: User) -> None:
    response = post(root, alice, amount="-40", reason="duplicate signup")
    assert response.status_code == 302
    entry = LedgerEntry.objects.get(reference="adjustment")
    assert (entry.amount, entry.balance_after) == (-40, 60)
    assert balance(alice) == 60


def test_a_negative_adjustment_larger_than_available_is_refused_and_writes_nothing(
    root: Client, alice: User
) -> None:
    services.hold_create(user_id=alice.pk, request_id="req-in-flight")  # 1 of 100 reserved
    entries_before = LedgerEntry.objects.count()

    response = post(root, alice, amount="-100", reason="fraud")

    assert response.status_code == 200
    form = response.context["form"]
    assert form.errors["amount"] == ["Cannot remove 100 credits: only 99 are available."]
    assert "Cannot remove 100 credits: only 99 are available." in response.content.decode()
    assert LedgerEntry.objects.count() == entries_before
    account = CreditAccount.objects.get(pk=alice.pk)
    assert (account.balance, account.reserved) == (100, 1)


def test_submitting_the_same_form_twice_writes_once(root: Client, alice: User) -> None:
    form_id = str(uuid.uuid4())
    for _ in range(2):
        response = post(root, alice, amount="-30", reason="refund by hand", form_id=form_id)
        assert response.status_code == 302
    assert LedgerEntry.objects.filter(reference="adjustment").count() == 1
    assert balance(alice) == 70


def test_reusing_a_form_for_another_amount_is_refused_and_writes_nothing(
    root: Client, alice: User
) -> None:
    form_id = str(uuid.uuid4())
    assert post(root, alice, amount="10", reason="first", form_id=form_id).status_code == 302

    response = post(root, alice, amount="20", reason="second", form_id=form_id)

    assert response.status_code == 200
    assert "already used for a different adjustment" in response.content.decode()
    assert balance(alice) == 110
    assert LedgerEntry.objects.filter(reference="adjustment").count() == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"amount": "5", "reason": ""}, "reason", "This field is required."),
        ({"amount": "5", "reason": "   "}, "reason", "This field is required."),
        ({"amount": "0", "reason": "x"}, "amount", "Enter a non-zero amount."),
        ({"amount": "", "reason": "x"}, "amount", "This field is required."),
        ({"amount": "ten", "reason": "x"}, "amount", "Enter a whole number."),
        ({"amount": "999999999999", "reason": "x"}, "amount", "less than or equal to"),
        (
            {"amount": "-5", "reason": "x", "expires_at_0": "2099-01-01", "expires_at_1": "00:00"},
            "expires_at",
            "Only added credits can expire",
        ),
        (
            {"amount": "5", "reason": "x", "expires_at_0": "2020-01-01", "expires_at_1": "00:00"},
            "expires_at",
            "The expiry must be in the future.",
        ),
        ({"amount": "5", "reason": "x", "form_id": "not-a-uuid"}, "form_id", "valid UUID"),
    ],
)
def test_bad_input_is_explained_on_its_field_and_writes_nothing(
    root: Client, alice: User, fields: dict[str, str], field: str, message: str
) -> None:
    response = post(root, alice, **fields)
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert any(message in error for error in errors[field]), errors
    assert balance(alice) == 100
    assert not LedgerEntry.objects.filter(reference="adjustment").exists()


def test_every_rendered_form_carries_a_fresh_idempotency_id(root: Client, alice: User) -> None:
    ids = set()
    for _ in range(2):
        html = root.get(adjust_url(alice)).content.decode()
        found = re.search(r'name="form_id" value="([0-9a-f-]{36})"', html)
        assert found is not None
        ids.add(found.group(1))
        assert 'id="adjust-available">100<' in html
    assert len(ids) == 2


def test_staff_without_the_permission_get_403_and_nothing_is_written(
    staff: Callable[..., Client], alice: User
) -> None:
    viewer = staff("accounts.view_user", "accounts.change_user", "credits.view_ledgerentry")
    assert viewer.get(adjust_url(alice)).status_code == 403
    assert post(viewer, alice, amount="500", reason="please").status_code == 403
    assert balance(alice) == 100


def test_staff_with_only_the_adjust_permission_can_adjust(
    staff: Callable[..., Client], alice: User
) -> None:
    adjuster = staff("credits.adjust_credits")
    assert adjuster.get(adjust_url(alice)).status_code == 200
    assert post(adjuster, alice, amount="5", reason="goodwill").status_code == 302
    entry = LedgerEntry.objects.select_related("created_by").get(reference="adjustment")
    assert entry.created_by is not None and entry.created_by.email == "staff0@example.com"


def test_non_staff_and_anonymous_visitors_are_sent_to_the_login_page(alice: User) -> None:
    customer = registered_user(email="customer@example.com")
    customer.user_permissions.add(adjust_permission())  # a permission alone does not make staff
    for client in (Client(), logged_in(customer)):
        response = post(client, alice, amount="5", reason="x")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert balance(alice) == 100


def test_an_unknown_user_is_404(root: Client) -> None:
    response = root.get(f"/admin/accounts/user/{uuid.uuid4()}/adjust-credits/")
    assert response.status_code == 404


def test_an_adjustment_made_at_a_given_time_is_recorded_then(root: Client, alice: User) -> None:
    clock.advance(timedelta(days=3))
    post(root, alice, amount="1", reason="later")
    created = LedgerEntry.objects.get(reference="adjustment").created_at
    assert created - datetime.now(UTC) > timedelta(days=2)
