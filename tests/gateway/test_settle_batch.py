"""`POST /internal/v1/settle/batch` (CONTRACT.md part 2, "Batch settle for gateways"): each item
answered in order exactly as the single settle answers it, writing exactly the rows the same
settles sent one by one write; one database call on PostgreSQL; races with single settles of
the same holds charge each request once."""

import threading
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from django.conf import settings
from django.db import connection, connections
from django.test import Client

from credits import clock, services
from credits.gateway.models import UsageBucket, UsageRecord
from credits.models import CreditAccount, Hold, LedgerEntry, Lot
from credits.reconciliation import reconcile
from tests import concurrency
from tests.gateway.conftest import (
    Customer,
    Gateway,
    funded_customer,
    gateway_calls,
    start_of_next,
)

pytestmark = pytest.mark.django_db

USAGE = {"prompt_tokens": 25, "completion_tokens": 189}


class FrozenClock:
    def __init__(self) -> None:
        self.at = clock.now().replace(microsecond=0)

    def now(self) -> datetime:
        return self.at


@pytest.fixture
def frozen(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """Both twins see the same instants (a batch settles all its items at one `now`)."""
    start_of_next("minute")
    frozen = FrozenClock()
    monkeypatch.setattr(clock, "now", frozen.now)
    return frozen


def settle_body(request_id: str, outcome: str = "success", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": request_id,
        "outcome": outcome,
        "http_status": 200 if outcome == "success" else 502,
        "model": "kimi-k2-0905",
        "usage": USAGE,
        "reason": None,
    }
    body.update(fields)
    return body


def batch(gateway: Gateway, settles: Any) -> Any:
    return gateway.post("settle/batch", {"settles": settles})


def one_by_one(gateway: Gateway, settles: list[Any]) -> list[Any]:
    """What the single settle answers to each item, in the batch's item shape."""
    answers = []
    for body in settles:
        response = gateway.post("settle", body)
        payload = response.json()
        if response.status_code == 200:
            answers.append(payload)
        else:
            request_id = body.get("request_id") if isinstance(body, dict) else None
            answers.append(
                {
                    "request_id": request_id if isinstance(request_id, str) else None,
                    "error": payload["error"],
                    "status": response.status_code,
                }
            )
    return answers


def rows(customer: Customer, prefix: str) -> dict[str, Any]:
    """Every row the settles wrote for one account, with its request ids' twin prefix removed."""

    def strip(text: str) -> str:
        return text.replace(prefix, "")

    account = CreditAccount.objects.get(pk=customer.user.pk)
    customer.key.refresh_from_db()
    key = customer.key
    return {
        "account": (account.balance, account.reserved, account.consumed, account.month_spent),
        "key": (key.held, key.spent_day, key.spent_month, key.spent_total),
        "lots": list(
            Lot.objects.filter(account=account)
            .order_by("created_at", "id")
            .values_list("remaining", "reserved")
        ),
        "entries": [
            (kind, amount, balance_after, strip(reference), reason, created_at)
            for kind, amount, balance_after, reference, reason, created_at in (
                LedgerEntry.objects.filter(account=account)
                .exclude(kind="grant")
                .order_by("id")
                .values_list("kind", "amount", "balance_after", "reference", "reason", "created_at")
            )
        ],
        "holds": sorted(
            (
                strip(h.request_id),
                h.status,
                h.charged,
                h.settled_at,
                h.settled_available,  # the first settle's answer, for its replay
            )
            for h in Hold.objects.filter(account=account)
        ),
        "usage": sorted(
            (strip(u[0]), *u[1:])
            for u in UsageRecord.objects.filter(account=account).values_list(
                "request_id",
                "model",
                "prompt_tokens",
                "completion_tokens",
                "outcome",
                "reason",
                "http_status",
                "charged",
                "settled_at",
            )
        ),
        "buckets": sorted(
            UsageBucket.objects.filter(account=account).values_list(
                "model", "hour", "requests", "credits", "prompt_tokens", "completion_tokens"
            )
        ),
    }


def twin_answers(answers: list[Any], prefix: str) -> list[Any]:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, str):
            return value.replace(prefix, "")
        return value

    return [strip(a) for a in answers]


def scenario(prefix: str, held: list[str]) -> list[Any]:
    """A batch of every kind of item: charged, released, replayed, settled the other way,
    unknown, malformed in each way, Anthropic usage names, the same request twice."""
    r = [f"{prefix}{name}" for name in held]
    return [
        settle_body(r[0]),
        settle_body(r[1], "failure", reason="upstream_error", usage=None),
        settle_body(r[2], usage={"input_tokens": 7, "output_tokens": 9}),
        settle_body(r[0]),  # the same request again in the batch: its first answer
        settle_body(r[1]),  # settled as a failure above: 409
        settle_body(f"{prefix}never-authorized"),  # 404
        "not an object",
        {"outcome": "success"},  # no request_id
        settle_body(r[3], "maybe"),
        settle_body(r[3], http_status=500),
        settle_body(r[3], usage={"prompt_tokens": -1}),
        settle_body(r[3], reason="client_disconnected", http_status=None),
        settle_body(r[2], "failure"),  # 409
    ]


def authorized(gateway: Gateway, customer: Customer, prefix: str, names: list[str]) -> None:
    for name in names:
        assert gateway.authorize(customer.raw_key, f"{prefix}{name}")["allowed"] is True


@pytest.mark.usefixtures("backend")
def test_a_batch_answers_and_writes_what_the_same_settles_sent_one_by_one_do(
    gateway: Gateway, frozen: FrozenClock
) -> None:
    names = ["r0", "r1", "r2", "r3", "r4", "r5"]
    twins = {prefix: funded_customer(50) for prefix in ("a-", "b-")}
    for prefix, customer in twins.items():
        authorized(gateway, customer, prefix, names)

    first = batch(gateway, scenario("a-", names))
    assert first.status_code == 200, first.content
    batched = first.json()["results"]
    singles = one_by_one(gateway, scenario("b-", names))
    assert twin_answers(batched, "a-") == twin_answers(singles, "b-")
    assert [item.get("status", 200) for item in batched] == [
        200,
        200,
        200,
        200,
        409,
        404,
        400,
        400,
        400,
        400,
        400,
        200,
        409,
    ]
    assert batched[0] == {"request_id": "a-r0", "charged": 1, "credits_remaining": 44}
    assert batched[3] == batched[0]
    assert batched[6]["request_id"] is None
    assert batched[9]["error"]["field"] == "http_status"
    assert rows(twins["a-"], "a-") == rows(twins["b-"], "b-")

    # A replay of the whole batch changes nothing and answers as the first time.
    again = batch(gateway, scenario("a-", names)).json()["results"]
    assert again == batched
    assert rows(twins["a-"], "a-") == rows(twins["b-"], "b-")
    assert reconcile() == []


@pytest.mark.usefixtures("backend")
def test_items_the_services_must_settle_keep_the_batchs_order_on_their_account(
    gateway: Gateway, frozen: FrozenClock
) -> None:
    """A hold past its expiry is `due` (the services release it and charge the late success if
    a credit is available); the later items of its account wait for it, so the rows are those
    of one-by-one settles."""
    names = ["early", "late", "after", "other"]
    twins = {prefix: funded_customer(4) for prefix in ("a-", "b-")}
    for prefix, customer in twins.items():
        authorized(gateway, customer, prefix, names[:2])
    frozen.at += timedelta(seconds=settings.HOLD_TTL_SECONDS - 5)
    for prefix, customer in twins.items():
        authorized(gateway, customer, prefix, names[2:])
    frozen.at += timedelta(seconds=10)  # "early" and "late" expired, "after" and "other" live

    def items(prefix: str) -> list[Any]:
        return [
            settle_body(f"{prefix}after"),
            settle_body(f"{prefix}late"),  # due: a late success, charged if a credit is left
            settle_body(f"{prefix}other", "failure"),
            settle_body(f"{prefix}early", "failure"),
        ]

    batched = batch(gateway, items("a-")).json()["results"]
    singles = one_by_one(gateway, items("b-"))
    assert twin_answers(batched, "a-") == twin_answers(singles, "b-")
    assert [item["charged"] for item in batched] == [1, 1, 0, 0]
    assert rows(twins["a-"], "a-") == rows(twins["b-"], "b-")
    assert reconcile() == []


@pytest.mark.usefixtures("backend")
def test_the_later_items_of_an_account_wait_for_an_item_the_services_settle(
    gateway: Gateway, frozen: FrozenClock
) -> None:
    """A release on a lot that owes a claw-back is the services' (the released credit is taken
    by a clawback entry) while the account has nothing due: the success after it in the batch
    must not be charged before it, or the ledger's entries (and their running balances) come in
    another order than one-by-one settles write them."""
    names = ["first", "second", "third"]
    twins = {prefix: funded_customer(3) for prefix in ("a-", "b-")}
    for prefix, customer in twins.items():
        authorized(gateway, customer, prefix, names)
        lot = Lot.objects.get(account_id=customer.user.pk)
        owed = services.credits_claw_back(
            user_id=customer.user.pk,
            lot_id=lot.pk,
            claim_up_to=3,
            idempotency_key=f"claw:{prefix}",
        ).owed
        assert owed == 3  # every credit is held: the lot owes them all

    def items(prefix: str) -> list[Any]:
        return [
            settle_body(f"{prefix}first", "failure"),
            settle_body(f"{prefix}second"),
            settle_body(f"{prefix}third", "failure"),
        ]

    batched = batch(gateway, items("a-")).json()["results"]
    singles = one_by_one(gateway, items("b-"))
    assert twin_answers(batched, "a-") == twin_answers(singles, "b-")
    assert rows(twins["a-"], "a-") == rows(twins["b-"], "b-")
    kinds = LedgerEntry.objects.filter(account_id=twins["a-"].user.pk).order_by("id")
    assert [e.kind for e in kinds] == ["grant", "clawback", "charge", "clawback"]
    assert reconcile() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "settles is required: a list of settle bodies."),
        ({"settles": {"request_id": "x"}}, "settles must be a list of settle bodies."),
        ({"settles": []}, "settles must not be empty."),
        ({"settles": [settle_body(f"r{i}") for i in range(101)]}, "at most 100"),
    ],
)
def test_a_bad_envelope_is_a_400_naming_settles_and_settles_nothing(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    customer = funded_customer(5)
    authorized(gateway, customer, "", ["r0"])
    response = gateway.post("settle/batch", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_request", "settles")
    assert message in error["message"]
    assert Hold.objects.get(request_id="r0").status == "live"


def test_a_body_that_is_not_an_object_or_a_wrong_token_is_refused_as_on_the_single_settle(
    gateway: Gateway,
) -> None:
    response = gateway.post("settle/batch", "[1, 2]")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    refused = gateway.post("settle/batch", {"settles": [settle_body("r0")]}, token="svc-wrong")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "invalid_service_token"
    assert (
        gateway.client.get(
            "/internal/v1/settle/batch", HTTP_AUTHORIZATION=f"Bearer {gateway.token}"
        ).status_code
        == 405
    )


def test_a_batch_of_100_settles_is_one_database_call_on_postgresql(gateway: Gateway) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the one-call batch exists on PostgreSQL only")
    customers = [funded_customer(60) for _ in range(5)]  # 20 requests a key: its minute's limit
    ids = []
    for n in range(100):
        request_id = f"req-{n}"
        assert gateway.authorize(customers[n % 5].raw_key, request_id)["allowed"] is True
        ids.append(request_id)
    with gateway_calls() as called:
        response = batch(
            gateway, [settle_body(r, "success" if n % 3 else "failure") for n, r in enumerate(ids)]
        )
    assert called == ["gateway_settle_batch"]
    results = response.json()["results"]
    assert [r["request_id"] for r in results] == ids
    assert sum(r["charged"] for r in results) == 66
    balances = [CreditAccount.objects.get(pk=c.user.pk) for c in customers]
    assert sum(a.balance for a in balances) == 300 - 66
    assert sum(a.reserved for a in balances) == 0
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
def test_an_item_whose_account_stays_locked_fails_alone_and_the_others_are_kept(
    gateway: Gateway,
) -> None:
    """A lock timeout in one item undoes that item only (its subtransaction): 503 for it, and
    the batch's other items are settled and committed."""
    if connection.vendor != "postgresql":
        pytest.skip("the subtransactions exist on PostgreSQL only")
    concurrency.connections_required(1)
    locked, free = funded_customer(5), funded_customer(5)
    authorized(gateway, locked, "", ["locked"])
    authorized(gateway, free, "", ["free"])
    taken, done = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(
                    "SELECT 1 FROM credits_creditaccount WHERE user_id = %s FOR UPDATE",
                    [locked.user.pk],
                )
                taken.set()
                done.wait(10)
                cursor.execute("ROLLBACK")
        finally:
            connections["default"].close()

    thread = threading.Thread(target=hold_the_lock)
    thread.start()
    try:
        assert taken.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        response = batch(gateway, [settle_body("locked"), settle_body("free")])
    finally:
        done.set()
        thread.join()
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    results = response.json()["results"]
    assert results[0]["status"] == 503
    assert results[0]["request_id"] == "locked"
    assert results[0]["error"]["code"] == "unavailable"
    assert results[1] == {"request_id": "free", "charged": 1, "credits_remaining": 4}
    assert Hold.objects.get(request_id="locked").status == "live"
    assert batch(gateway, [settle_body("locked")]).json()["results"][0]["charged"] == 1
    assert reconcile() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("backend")
def test_batches_racing_single_settles_of_the_same_holds_settle_each_request_once(
    service_token: str,
) -> None:
    """10 threads send one batch each of all 40 requests (alternately in forward and reverse
    order, over four accounts, so batches cross each other's account order), 10 threads settle
    the same requests one by one, half of them with the other outcome: each request ends
    settled once, every answer for it agrees with that end, and the ledger reconciles."""
    threads = 20
    customers = [funded_customer(30) for _ in range(4)]
    gateway = Gateway(service_token)
    ids = [f"race-{uuid4().hex[:8]}-{n}" for n in range(40)]
    for n, request_id in enumerate(ids):
        assert gateway.authorize(customers[n % 4].raw_key, request_id)["allowed"] is True

    def work(thread: int) -> list[Any]:
        client = Gateway(service_token, Client())
        if thread < 10:
            order = ids if thread % 2 else ids[::-1]
            response = batch(client, [settle_body(r) for r in order])
            assert response.status_code == 200, response.content
            return list(response.json()["results"])
        answers = []
        for request_id in ids[thread - 10 :: 10]:
            outcome = "failure" if thread % 2 else "success"
            response = client.post("settle", settle_body(request_id, outcome))
            payload = response.json()
            answers.append(
                payload
                if response.status_code == 200
                else {"request_id": request_id, "status": response.status_code}
            )
        return answers

    results = concurrency.run_together(threads, work)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    holds = {h.request_id: h for h in Hold.objects.filter(request_id__in=ids)}
    for answers in results:
        assert isinstance(answers, list)
        for answer in answers:
            hold = holds[answer["request_id"]]
            if "status" in answer:  # the other outcome won: 409
                assert answer["status"] == 409
            else:
                assert answer["charged"] == hold.charged
    assert all(h.status in ("committed", "released") for h in holds.values())
    assert UsageRecord.objects.filter(request_id__in=ids).count() == 40
    charges = LedgerEntry.objects.filter(kind="charge").count()
    assert charges == sum(h.charged for h in holds.values())
    assert reconcile() == []
