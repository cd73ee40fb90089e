"""`POST /internal/v1/settle`: commit or release, idempotency, 404/409/400, a success after the
hold expired, and the usage record each first settle writes."""

from datetime import timedelta

import pytest
from django.utils import timezone

from credits import clock, services
from credits.gateway.models import UsageRecord
from credits.models import CreditAccount, EntryKind, Hold, HoldStatus, LedgerEntry
from credits.reconciliation import reconcile
from tests.gateway.conftest import Gateway, funded_customer

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("backend")]


def authorized(gateway: Gateway, raw_key: str, request_id: str) -> dict[str, object]:
    decision = gateway.authorize(raw_key, request_id)
    assert decision["allowed"] is True, decision
    return decision


def test_a_success_charges_exactly_one_credit_and_records_the_usage(gateway: Gateway) -> None:
    customer = funded_customer(522)
    decision = authorized(gateway, customer.raw_key, "req_123")
    response = gateway.settle(
        "req_123", "success", usage={"prompt_tokens": 25, "completion_tokens": 189}
    )
    assert response.status_code == 200
    assert response.json() == {"request_id": "req_123", "charged": 1, "credits_remaining": 521}
    hold = Hold.objects.get(request_id="req_123")
    assert (hold.status, hold.charged) == (HoldStatus.COMMITTED, 1)
    charge = LedgerEntry.objects.get(account_id=customer.user.pk, kind=EntryKind.CHARGE)
    assert (charge.amount, charge.balance_after) == (-1, 521)
    assert charge.idempotency_key == f"charge:{decision['hold_id']}"
    assert charge.reference == "request:req_123"
    record = UsageRecord.objects.get(request_id="req_123")
    assert (
        record.account_id,
        record.api_key_id,
        record.model,
        record.prompt_tokens,
        record.completion_tokens,
        record.outcome,
        record.reason,
        record.http_status,
        record.charged,
    ) == (customer.user.pk, customer.key.pk, "kimi-k2-0905", 25, 189, "success", "", 200, 1)
    assert record.settled_at == hold.settled_at
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved, account.consumed) == (521, 0, 1)
    assert reconcile() == []


def test_a_failure_releases_the_hold_and_charges_nothing(gateway: Gateway) -> None:
    customer = funded_customer(10)
    authorized(gateway, customer.raw_key, "req_fail")
    response = gateway.settle(
        "req_fail", "failure", http_status=502, usage=None, reason="upstream_error"
    )
    assert response.json() == {"request_id": "req_fail", "charged": 0, "credits_remaining": 10}
    assert not LedgerEntry.objects.filter(kind=EntryKind.CHARGE).exists()
    record = UsageRecord.objects.get(request_id="req_fail")
    assert (record.outcome, record.reason, record.http_status, record.charged) == (
        "failure",
        "upstream_error",
        502,
        0,
    )
    assert (record.prompt_tokens, record.completion_tokens) == (25, 189)
    assert reconcile() == []


def test_a_failure_may_omit_usage_and_http_status(gateway: Gateway) -> None:
    customer = funded_customer(10)
    authorized(gateway, customer.raw_key, "req_gone")
    response = gateway.post(
        "settle", {"request_id": "req_gone", "outcome": "failure", "reason": "client_disconnected"}
    )
    assert response.status_code == 200
    record = UsageRecord.objects.get(request_id="req_gone")
    assert (record.prompt_tokens, record.completion_tokens, record.http_status) == (0, 0, None)
    assert (record.model, record.reason) == ("", "client_disconnected")


def test_settling_again_with_the_same_outcome_returns_the_first_answer(gateway: Gateway) -> None:
    customer = funded_customer(10)
    authorized(gateway, customer.raw_key, "req_twice")
    first = gateway.settle("req_twice", "success").json()
    # Other requests move the balance meanwhile; the replay still answers what it answered.
    other = authorized(gateway, customer.raw_key, "req_other")
    assert other["credits_remaining"] == 8
    again = gateway.settle("req_twice", "success")
    assert (again.status_code, again.json()) == (200, first)
    assert first == {"request_id": "req_twice", "charged": 1, "credits_remaining": 9}
    assert LedgerEntry.objects.filter(kind=EntryKind.CHARGE).count() == 1
    assert UsageRecord.objects.count() == 1

    authorized(gateway, customer.raw_key, "req_released")
    released = gateway.settle("req_released", "failure").json()
    assert gateway.settle("req_released", "failure").json() == released
    assert UsageRecord.objects.count() == 2
    assert reconcile() == []


@pytest.mark.parametrize(("first", "second"), [("success", "failure"), ("failure", "success")])
def test_settling_with_the_other_outcome_is_a_409_and_changes_nothing(
    gateway: Gateway, first: str, second: str
) -> None:
    customer = funded_customer(10)
    authorized(gateway, customer.raw_key, "req_x")
    assert gateway.settle("req_x", first).status_code == 200
    balance = CreditAccount.objects.values_list("balance", "reserved").get(pk=customer.user.pk)
    response = gateway.settle("req_x", second)
    assert response.status_code == 409
    body = response.json()
    assert body["error"]["code"] == "request_already_settled"
    assert body["error"]["message"] == (
        f"This request was already settled as {first}; settling it as {second} changed nothing."
    )
    assert (
        CreditAccount.objects.values_list("balance", "reserved").get(pk=customer.user.pk) == balance
    )
    assert UsageRecord.objects.get().outcome == first
    assert reconcile() == []


def test_settling_an_unknown_request_id_is_a_404(gateway: Gateway) -> None:
    response = gateway.settle("req_never", "success")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "request_not_found"


def test_settling_a_denied_request_is_a_404(gateway: Gateway) -> None:
    customer = funded_customer(0)
    assert gateway.authorize(customer.raw_key, "req_denied")["status"] == 403
    assert gateway.settle("req_denied", "failure").status_code == 404
    assert not UsageRecord.objects.exists()


def test_a_success_after_the_hold_expired_is_charged_if_a_credit_is_available(
    gateway: Gateway,
) -> None:
    customer = funded_customer(5)
    authorized(gateway, customer.raw_key, "req_late")
    clock.advance(timedelta(seconds=661))
    response = gateway.settle("req_late", "success")
    assert response.json() == {"request_id": "req_late", "charged": 1, "credits_remaining": 4}
    record = UsageRecord.objects.get(request_id="req_late")
    assert (record.charged, record.reason) == (1, "")
    assert Hold.objects.get(request_id="req_late").status == HoldStatus.COMMITTED
    assert reconcile() == []


def test_a_success_after_the_hold_expired_and_was_swept_is_charged_too(gateway: Gateway) -> None:
    customer = funded_customer(5)
    authorized(gateway, customer.raw_key, "req_swept")
    clock.advance(timedelta(seconds=661))
    services.accounts_sweep()
    assert Hold.objects.get(request_id="req_swept").status == HoldStatus.EXPIRED
    response = gateway.settle("req_swept", "success")
    assert response.json() == {"request_id": "req_swept", "charged": 1, "credits_remaining": 4}
    assert gateway.settle("req_swept", "success").json()["charged"] == 1
    assert gateway.settle("req_swept", "failure").status_code == 409
    assert reconcile() == []


def test_a_late_success_without_available_credit_is_charged_0_with_the_reason_hold_expired(
    gateway: Gateway,
) -> None:
    customer = funded_customer(1)
    authorized(gateway, customer.raw_key, "req_late")
    clock.advance(timedelta(seconds=661))
    # The released credit is taken by another request before the late success arrives.
    authorized(gateway, customer.raw_key, "req_next")
    response = gateway.settle("req_late", "success", reason="timeout")
    assert response.json() == {"request_id": "req_late", "charged": 0, "credits_remaining": 0}
    record = UsageRecord.objects.get(request_id="req_late")
    assert (record.outcome, record.charged, record.reason) == ("success", 0, "hold_expired")
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved) == (1, 1)
    assert reconcile() == []


def test_a_failure_after_the_hold_expired_charges_nothing(gateway: Gateway) -> None:
    customer = funded_customer(3)
    authorized(gateway, customer.raw_key, "req_timeout")
    clock.advance(timedelta(seconds=661))
    response = gateway.settle("req_timeout", "failure", reason="timeout")
    assert response.json() == {"request_id": "req_timeout", "charged": 0, "credits_remaining": 3}
    assert reconcile() == []


def test_a_held_credit_stays_chargeable_after_its_lot_expires(gateway: Gateway) -> None:
    customer = funded_customer(2, expires_at=timezone.now() + timedelta(seconds=30))
    authorized(gateway, customer.raw_key, "req_a")
    authorized(gateway, customer.raw_key, "req_b")
    clock.advance(timedelta(seconds=31))
    assert gateway.settle("req_a", "success").json()["charged"] == 1
    # The other held credit is released after its lot expired: it expires now.
    assert gateway.settle("req_b", "failure").json() == {
        "request_id": "req_b",
        "charged": 0,
        "credits_remaining": 0,
    }
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved, account.consumed) == (0, 0, 1)
    assert LedgerEntry.objects.filter(kind=EntryKind.EXPIRE, amount=-1).count() == 1
    assert reconcile() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"outcome": "success"}, "request_id"),
        ({"request_id": "r", "outcome": "maybe"}, "outcome"),
        ({"request_id": "r"}, "outcome"),
        ({"request_id": "r", "outcome": "success", "http_status": 500}, "http_status"),
        ({"request_id": "r", "outcome": "success", "http_status": 404}, "http_status"),
        ({"request_id": "r", "outcome": "failure", "http_status": "500"}, "http_status"),
        ({"request_id": "r", "outcome": "failure", "usage": []}, "usage"),
        (
            {"request_id": "r", "outcome": "success", "usage": {"prompt_tokens": -1}},
            "usage.prompt_tokens",
        ),
        (
            {"request_id": "r", "outcome": "success", "usage": {"completion_tokens": 1.5}},
            "usage.completion_tokens",
        ),
        (
            {"request_id": "r", "outcome": "success", "usage": {"input_tokens": -3}},
            "usage.input_tokens",
        ),
        (
            {"request_id": "r", "outcome": "success", "usage": {"output_tokens": "12"}},
            "usage.output_tokens",
        ),
        (
            {"request_id": "r", "outcome": "success", "usage": {"total_tokens": 214}},
            "usage.total_tokens",
        ),
        (
            {"request_id": "r", "outcome": "success", "usage": {"prompt_token": 25}},
            "usage.prompt_token",
        ),
        (
            {
                "request_id": "r",
                "outcome": "success",
                "usage": {"prompt_tokens": 25, "input_tokens": 25},
            },
            "usage.input_tokens",
        ),
        ({"request_id": "r", "outcome": "failure", "reason": "x" * 65}, "reason"),
        ({"request_id": "r", "outcome": "failure", "reason": 3}, "reason"),
        ({"request_id": "r\u0000", "outcome": "success"}, "request_id"),
    ],
)
def test_a_malformed_settle_is_a_400_naming_the_field_and_changes_nothing(
    gateway: Gateway, body: dict[str, object], field: str
) -> None:
    customer = funded_customer(3)
    authorized(gateway, customer.raw_key, "r")
    response = gateway.post("settle", body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.json()["error"]["field"] == field
    assert Hold.objects.get(request_id="r").status == HoldStatus.LIVE
    assert not UsageRecord.objects.exists()


def test_anthropic_input_and_output_tokens_are_recorded_as_prompt_and_completion_tokens(
    gateway: Gateway,
) -> None:
    customer = funded_customer(3)
    authorized(gateway, customer.raw_key, "r")
    response = gateway.settle("r", "success", usage={"input_tokens": 31, "output_tokens": 7})
    assert response.status_code == 200
    record = UsageRecord.objects.get()
    assert (record.prompt_tokens, record.completion_tokens, record.charged) == (31, 7, 1)


def test_an_unknown_usage_key_is_named_in_the_message(gateway: Gateway) -> None:
    customer = funded_customer(3)
    authorized(gateway, customer.raw_key, "r")
    response = gateway.settle("r", "success", usage={"prompt_tokens": 2, "cached_tokens": 1})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "usage.cached_tokens"
    assert error["message"].startswith("usage.cached_tokens is not a usage field")
    assert not UsageRecord.objects.exists()


def test_a_free_text_reason_of_64_characters_and_a_long_model_name_are_recorded(
    gateway: Gateway,
) -> None:
    customer = funded_customer(3)
    authorized(gateway, customer.raw_key, "r")
    assert gateway.settle("r", "failure", reason="y" * 64, model="m" * 100).status_code == 200
    record = UsageRecord.objects.get()
    assert (record.reason, record.model) == ("y" * 64, "m" * 64)


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [("kimi\u0000k2", "kimik2"), ("kimi\ud800k2", "kimi?k2")],
    ids=["nul", "unpaired-surrogate"],
)
def test_a_success_naming_what_postgresql_cannot_store_is_charged_and_recorded(
    gateway: Gateway, sent: str, recorded: str
) -> None:
    # The model comes from the end user's request: refusing the settle (or failing on it) would
    # leave the request uncharged, as the hold would only expire.
    customer = funded_customer(3)
    authorized(gateway, customer.raw_key, "r")
    response = gateway.settle("r", "success", model=sent, reason=sent)
    assert response.status_code == 200, response.content
    assert response.json()["charged"] == 1
    record = UsageRecord.objects.get()
    assert (record.model, record.reason, record.charged) == (recorded, recorded, 1)
    assert Hold.objects.get(request_id="r").status == HoldStatus.COMMITTED


def test_a_released_credit_of_a_lot_that_was_fully_held_expires_with_its_lot(
    gateway: Gateway,
) -> None:
    # Lot A (1 credit, expires in 30 s) is fully held; lot B expires first, and its expiry
    # recomputes the account's next event while A is fully held (so A is skipped). Releasing
    # the hold makes A's credit unheld again: its expiry must be due again.
    customer = funded_customer(1, expires_at=timezone.now() + timedelta(seconds=30))
    authorized(gateway, customer.raw_key, "req_a")
    services.credits_grant(
        user_id=customer.user.pk,
        amount=1,
        source="purchase",
        expires_at=timezone.now() + timedelta(seconds=10),
        idempotency_key="grant:b",
    )
    clock.advance(timedelta(seconds=11))
    services.accounts_sweep()
    assert gateway.settle("req_a", "failure").json()["credits_remaining"] == 1
    clock.advance(timedelta(seconds=20))  # lot A has expired now
    decision = gateway.authorize(customer.raw_key)
    assert (decision["status"], decision["headers"]) == (403, {"X-Credits-Remaining": "0"})
    services.accounts_sweep()
    account = CreditAccount.objects.get(pk=customer.user.pk)
    assert (account.balance, account.reserved) == (0, 0)
    assert reconcile() == []


def test_a_success_taking_the_balance_below_the_auto_top_up_threshold_stamps_the_account(
    gateway: Gateway,
) -> None:
    """Issue 19: the charge that crosses stamps the account and kicks payments (the signal),
    the next one below the threshold stamps nothing new, and a balance never at or above the
    threshold stamps nothing; on both backends."""
    from credits.signals import auto_topup_requested

    kicks: list[object] = []

    def kicked(sender: object, user_id: object, **kwargs: object) -> None:
        kicks.append(user_id)

    auto_topup_requested.connect(kicked, dispatch_uid="test-kicked")
    try:
        customer = funded_customer(12)
        services.auto_topup_threshold_set(user_id=customer.user.pk, threshold=11)
        authorized(gateway, customer.raw_key, "req_a")
        assert gateway.settle("req_a").status_code == 200  # 12 -> 11: not below
        assert CreditAccount.objects.get(pk=customer.user.pk).auto_topup_requested_at is None
        authorized(gateway, customer.raw_key, "req_b")
        assert gateway.settle("req_b").status_code == 200  # 11 -> 10: crosses
        stamped = CreditAccount.objects.get(pk=customer.user.pk).auto_topup_requested_at
        assert stamped == clock.now() or stamped is not None
        assert kicks == [customer.user.pk]
        authorized(gateway, customer.raw_key, "req_c")
        assert gateway.settle("req_c").status_code == 200  # 10 -> 9: below already
        account = CreditAccount.objects.get(pk=customer.user.pk)
        assert account.auto_topup_requested_at == stamped  # the first stamp stays
        assert kicks == [customer.user.pk]
    finally:
        auto_topup_requested.disconnect(dispatch_uid="test-kicked")
    assert reconcile() == []
