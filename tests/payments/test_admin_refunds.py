"""The admin's refund page: its own permission, the preview, the form's answers."""

import re
import uuid

import pytest
from django.test import TestCase
from pytest_django.live_server_helper import LiveServer

from credits.models import EntryKind, LedgerEntry
from credits.payments.models import Purchase, PurchaseStatus, StaffRefund, StaffRefundStatus
from tests.admin.conftest import PASSWORD, chromium, logged_in, staff_user
from tests.factories import registered_user
from tests.stripe_support import StripeRecordedServer

from .conftest import paid_with_charge

pytestmark = pytest.mark.django_db


def refund_url(purchase: Purchase) -> str:
    return f"/admin/payments/purchase/{purchase.pk}/refund/"


def test_refunding_needs_its_own_permission(stripe_settings: StripeRecordedServer) -> None:
    purchase = paid_with_charge(registered_user(), stripe_settings)
    viewer = logged_in(staff_user("viewer@example.com", "payments.view_purchase"))
    assert viewer.get(refund_url(purchase)).status_code == 403
    assert viewer.post(refund_url(purchase), {"amount": 1, "reason": "x"}).status_code == 403
    page = viewer.get(f"/admin/payments/purchase/{purchase.pk}/change/")
    assert page.status_code == 200
    assert b'id="refund-link"' not in page.content

    refunder = logged_in(
        staff_user("refunds@example.com", "payments.view_purchase", "payments.refund_purchase")
    )
    page = refunder.get(f"/admin/payments/purchase/{purchase.pk}/change/")
    assert b'id="refund-link"' in page.content
    assert refunder.get(refund_url(purchase)).status_code == 200
    assert StaffRefund.objects.count() == 0


def test_the_form_defaults_to_a_full_refund_and_previews_its_claw_back(
    stripe_settings: StripeRecordedServer,
) -> None:
    purchase = paid_with_charge(registered_user(), stripe_settings)
    client = logged_in(staff_user("r@example.com", "payments.refund_purchase"))
    page = client.get(refund_url(purchase)).content.decode()
    assert re.search(r'name="amount" value="2999"', page)
    assert '<td id="preview-claim">5,000</td>' in page

    preview = client.post(
        refund_url(purchase), {"amount": 1000, "reason": "", "_preview": "1"}
    ).content.decode()
    assert '<td id="preview-claim">1,667</td>' in preview
    assert StaffRefund.objects.count() == 0


def test_a_refund_over_what_is_left_is_explained_on_the_form(
    stripe_settings: StripeRecordedServer,
) -> None:
    purchase = paid_with_charge(registered_user(), stripe_settings)
    client = logged_in(staff_user("r@example.com", "payments.refund_purchase"))
    page = client.post(
        refund_url(purchase),
        {"amount": 5000, "reason": "too much", "refund_id": uuid.uuid4(), "_refund": "1"},
    ).content.decode()
    assert "The amount must be between 1 and 2999" in page
    assert StaffRefund.objects.count() == 0


def test_a_refund_from_the_admin_is_sent_and_clawed_back(
    stripe_settings: StripeRecordedServer,
) -> None:
    purchase = paid_with_charge(registered_user(), stripe_settings)
    client = logged_in(staff_user("r@example.com", "payments.refund_purchase"))
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = client.post(
            refund_url(purchase),
            {
                "amount": 2999,
                "reason": "duplicate order",
                "refund_id": uuid.uuid4(),
                "_refund": "1",
            },
        )
    assert response.status_code == 302
    refund = StaffRefund.objects.get()
    assert (refund.status, refund.created_by.email) == (
        StaffRefundStatus.SUCCEEDED,
        "r@example.com",
    )
    purchase.refresh_from_db()
    assert purchase.status == PurchaseStatus.REFUNDED
    assert LedgerEntry.objects.filter(lot__purchase=purchase, kind=EntryKind.CLAWBACK).count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_staff_refund_a_purchase_in_the_browser(
    live_server: LiveServer, stripe_settings: StripeRecordedServer
) -> None:
    purchase = paid_with_charge(registered_user(email="carol@example.com"), stripe_settings)
    staff_user("refunds@example.com", "payments.view_purchase", "payments.refund_purchase")
    errors: list[str] = []

    with chromium() as browser:
        page = browser.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"{live_server.url}/admin/payments/purchase/{purchase.pk}/change/")
        page.fill("#id_username", "refunds@example.com")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.click("#refund-link")
        assert page.input_value("#id_amount") == "2999"
        assert page.inner_text("#preview-claim") == "5,000"

        page.fill("#id_amount", "1000")
        page.fill("#id_reason", "Half the month unused")
        page.click("input[name=_preview]")
        page.wait_for_selector("#refund-preview")
        assert page.inner_text("#preview-claim") == "1,667"
        assert page.inner_text("#preview-take") == "1,667"

        page.click("input[name=_refund]")
        page.wait_for_selector("ul.messagelist li.success")
        assert "Refund of 1000 usd requested" in page.inner_text("ul.messagelist")

    assert errors == []
    refund = StaffRefund.objects.get()
    assert (refund.amount, refund.reason, refund.status) == (
        1000,
        "Half the month unused",
        StaffRefundStatus.SUCCEEDED,
    )
    purchase.refresh_from_db()
    assert (purchase.amount_refunded, purchase.credits_clawed_back) == (1000, 1667)
