"""Tests for tests/stripe_support.py, checked against the real ``stripe`` library.

No Django and no network: run with ``pytest tests/test_stripe_support.py -p no:django``.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest
import stripe

from tests import stripe_support
from tests.stripe_support import (
    STRIPE_API_VERSION,
    StripeRecordedServer,
    build_event,
    charge,
    checkout_session,
    dispute,
    event_payload,
    fixture,
    parse_form,
    payment_intent,
    refund,
    sign_payload,
    signed_webhook,
)

# Exposes the support module's fixture to this module's tests. An assignment rather than an
# import, so ruff does not flag the fixture parameters as redefinitions (F811).
stripe_server = stripe_support.stripe_server

SECRET = "whsec_test_secret"


def make_client(server: StripeRecordedServer, **kwargs: Any) -> stripe.StripeClient:
    # The same construction the module docstring prescribes for production code.
    kwargs.setdefault("stripe_version", STRIPE_API_VERSION)
    return stripe.StripeClient(
        api_key="sk_test_x", base_addresses={"api": server.api_base}, **kwargs
    )


# The library's own TypedDict, so mypy checks these params the way it will check production's.
SessionCreateParams = stripe.checkout.SessionService.CreateParams


def checkout_params(**overrides: Any) -> SessionCreateParams:
    params: SessionCreateParams = {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": 1500,
                    "product_data": {"name": "Kimi K2 credits - 15 USD"},
                },
                "quantity": 2,
            }
        ],
        "client_reference_id": "user-42",
        "metadata": {"user_id": "42", "credit_pack": "starter"},
        "payment_intent_data": {"metadata": {"user_id": "42", "credit_pack": "starter"}},
        "success_url": "https://billing.example.com/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://billing.example.com/cancel",
    }
    return cast(SessionCreateParams, {**params, **overrides})


def raw_request(server: StripeRecordedServer, method: str, path: str) -> tuple[int, Any]:
    host, port = server.api_base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# API version
# --------------------------------------------------------------------------------------------


def test_pinned_api_version_is_the_installed_librarys_default(
    stripe_server: StripeRecordedServer,
) -> None:
    # If this fails, stripe-python was upgraded and now defaults to another API version:
    # review Stripe's changelog, then update STRIPE_API_VERSION (and the webhook endpoint).
    client = stripe.StripeClient(
        api_key="sk_test_x", base_addresses={"api": stripe_server.api_base}
    )
    client.v1.checkout.sessions.create(params=checkout_params())
    assert stripe_server.requests[0].stripe_version == STRIPE_API_VERSION
    assert stripe.api_version == STRIPE_API_VERSION == "2025-08-27.basil"


# --------------------------------------------------------------------------------------------
# Object builders
# --------------------------------------------------------------------------------------------

BUILDERS = [
    pytest.param(checkout_session, "checkout.session", "cs_test_", id="checkout_session"),
    pytest.param(payment_intent, "payment_intent", "pi_", id="payment_intent"),
    pytest.param(charge, "charge", "ch_", id="charge"),
    pytest.param(dispute, "dispute", "dp_", id="dispute"),
    pytest.param(refund, "refund", "re_", id="refund"),
]


@pytest.mark.parametrize(("builder", "resource", "prefix"), BUILDERS)
def test_builder_starts_from_fixture_with_fresh_ids(
    builder: Any, resource: str, prefix: str
) -> None:
    first, second = builder(), builder()
    example = fixture(resource)

    assert first["object"] == resource
    assert set(example) <= set(first), "every field of Stripe's example object is present"
    assert first["id"].startswith(prefix)
    assert first["id"] != second["id"] != example["id"]
    assert first.get("livemode", False) is False  # refunds have no livemode field
    assert abs(first["created"] - time.time()) < 60


@pytest.mark.parametrize(("builder", "resource", "prefix"), BUILDERS)
def test_builder_applies_overrides_and_returns_independent_copies(
    builder: Any, resource: str, prefix: str
) -> None:
    obj = builder(id=f"{prefix}given", metadata={"user_id": "42"})
    obj["metadata"]["mutated"] = "yes"

    assert obj["id"] == f"{prefix}given"
    assert builder()["metadata"] == {}
    assert fixture(resource)["metadata"] == {}


def test_checkout_session_scenario_fields() -> None:
    session = checkout_session(
        id="cs_test_abc",
        amount_total=3000,
        payment_status="paid",
        status="complete",
        client_reference_id="user-42",
        payment_intent="pi_123",
    )

    assert session["url"] == "https://checkout.stripe.com/c/pay/cs_test_abc"
    assert session["amount_subtotal"] == session["amount_total"] == 3000
    assert session["currency"] == "usd"
    assert session["payment_status"] == "paid"
    assert session["status"] == "complete"
    assert session["payment_intent"] == "pi_123"
    # stripe-mock's random placeholder amounts must not leak into amount calculations.
    assert session["total_details"] == {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0}
    assert session["shipping_cost"] is None
    assert session["expires_at"] > session["created"]


def test_charge_derives_captured_and_refunded_amounts() -> None:
    ch = charge(amount=3000, amount_refunded=3000, payment_intent="pi_123")

    assert ch["amount_captured"] == 3000
    assert ch["refunded"] is True
    assert ch["captured"] is True
    assert ch["refunds"]["url"] == f"/v1/charges/{ch['id']}/refunds"
    assert charge(amount=3000, amount_refunded=1000)["refunded"] is False


def test_payment_intent_is_coherent() -> None:
    pi = payment_intent(amount=3000, status="succeeded", amount_received=3000)

    assert pi["client_secret"].startswith(f"{pi['id']}_secret_")
    assert pi["canceled_at"] is None
    assert pi["last_payment_error"] is None
    assert (pi["amount"], pi["amount_received"], pi["status"]) == (3000, 3000, "succeeded")


def test_dispute_and_refund_do_not_share_the_fixture_charge() -> None:
    # Distinct charges unless the scenario links them, so lookups cannot match by accident.
    assert dispute()["charge"] != refund()["charge"] != fixture("refund")["charge"]
    assert dispute(charge="ch_1")["charge"] == refund(charge="ch_1")["charge"] == "ch_1"


# --------------------------------------------------------------------------------------------
# Events and signatures
# --------------------------------------------------------------------------------------------


def test_build_event_has_stripes_event_shape() -> None:
    session = checkout_session(payment_status="paid", status="complete")
    event = build_event("checkout.session.completed", session)
    session["payment_status"] = "mutated afterwards"

    assert set(event) == set(fixture("event"))
    assert event["id"].startswith("evt_")
    assert event["object"] == "event"
    assert event["api_version"] == STRIPE_API_VERSION
    assert event["type"] == "checkout.session.completed"
    assert event["livemode"] is False
    assert event["pending_webhooks"] == 1
    assert event["request"] == {"id": None, "idempotency_key": None}
    assert event["data"]["object"]["payment_status"] == "paid"
    assert event["data"]["object"]["id"] == session["id"]
    assert abs(event["created"] - time.time()) < 60


def test_build_event_explicit_fields() -> None:
    event = build_event(
        "charge.refunded", charge(), event_id="evt_1", created=1700000000, api_version="2024-06-20"
    )

    assert (event["id"], event["created"], event["api_version"]) == (
        "evt_1",
        1700000000,
        "2024-06-20",
    )
    assert build_event("charge.refunded", charge())["id"] != build_event("x", {})["id"]


def test_sign_payload_matches_stripes_scheme() -> None:
    payload = b'{"id": "evt_1"}'
    header = sign_payload(payload, SECRET, timestamp=1700000000)

    expected = hmac.new(SECRET.encode(), b'1700000000.{"id": "evt_1"}', hashlib.sha256)
    assert header == f"t=1700000000,v1={expected.hexdigest()}"
    # The library's own implementation agrees (private helper, used only as an oracle).
    assert header.endswith(
        stripe.WebhookSignature._compute_signature(f"1700000000.{payload.decode()}", SECRET)
    )


def test_real_library_accepts_signed_event() -> None:
    session = checkout_session(payment_status="paid", status="complete", client_reference_id="7")
    payload, header = signed_webhook(build_event("checkout.session.completed", session), SECRET)

    event = stripe.Webhook.construct_event(payload, header, SECRET, tolerance=300)

    assert event.type == "checkout.session.completed"
    assert isinstance(event.data.object, stripe.checkout.Session)
    assert event.data.object.id == session["id"]
    assert event.data.object.client_reference_id == "7"


def test_real_library_rejects_tampered_payload() -> None:
    payload = event_payload(build_event("charge.refunded", charge(amount_refunded=100)))
    header = sign_payload(payload, SECRET)
    tampered = payload.replace(b'"amount_refunded": 100', b'"amount_refunded": 999')
    assert tampered != payload

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(tampered, header, SECRET, tolerance=300)


def test_real_library_rejects_wrong_secret() -> None:
    payload, header = signed_webhook(build_event("charge.dispute.created", dispute()), SECRET)

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload, header, "whsec_other", tolerance=300)


def test_real_library_enforces_replay_tolerance() -> None:
    event = build_event("payment_intent.succeeded", payment_intent(status="succeeded"))
    now = int(time.time())

    stale_payload, stale_header = signed_webhook(event, SECRET, timestamp=now - 301)
    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.Webhook.construct_event(stale_payload, stale_header, SECRET, tolerance=300)

    # Margin below 300 s so a slow CI machine cannot push it over the limit.
    fresh_payload, fresh_header = signed_webhook(event, SECRET, timestamp=now - 240)
    assert stripe.Webhook.construct_event(fresh_payload, fresh_header, SECRET, tolerance=300)


# --------------------------------------------------------------------------------------------
# Form parsing
# --------------------------------------------------------------------------------------------


def test_parse_form_nests_brackets_and_lists() -> None:
    form = parse_form(
        "mode=payment&line_items[0][price_data][unit_amount]=1500&line_items[0][quantity]=2"
        "&line_items[1][quantity]=1&metadata[user_id]=42&expand[]=a&expand[]=b&empty="
        "&success_url=https%3A%2F%2Fx.test%2F%3Fa%3D1"
    )

    assert form == {
        "mode": "payment",
        "line_items": [
            {"price_data": {"unit_amount": "1500"}, "quantity": "2"},
            {"quantity": "1"},
        ],
        "metadata": {"user_id": "42"},
        "expand": ["a", "b"],
        "empty": "",
        "success_url": "https://x.test/?a=1",
    }


# --------------------------------------------------------------------------------------------
# Recorded server with the real stripe library
# --------------------------------------------------------------------------------------------


def test_real_client_creates_checkout_session(stripe_server: StripeRecordedServer) -> None:
    client = make_client(stripe_server)

    session = client.v1.checkout.sessions.create(
        params=checkout_params(), options={"idempotency_key": "checkout-order-1"}
    )

    assert isinstance(session, stripe.checkout.Session)
    assert session.id.startswith("cs_test_")
    assert session.url == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert session.object == "checkout.session"
    assert session.mode == "payment"
    assert session.amount_total == 3000
    assert session.currency == "usd"
    assert session.payment_status == "unpaid"
    assert session.status == "open"
    assert session.client_reference_id == "user-42"
    assert session.metadata == {"user_id": "42", "credit_pack": "starter"}
    assert session.success_url == checkout_params()["success_url"]
    assert session.cancel_url == "https://billing.example.com/cancel"
    assert session.payment_intent is None

    [request] = stripe_server.requests
    assert (request.method, request.path) == ("POST", "/v1/checkout/sessions")
    assert request.idempotency_key == "checkout-order-1"
    assert request.stripe_version == STRIPE_API_VERSION
    assert request.header("authorization") == "Bearer sk_test_x"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    # Form values arrive as strings: that is Stripe's wire format.
    assert request.form == {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": "1500",
                    "product_data": {"name": "Kimi K2 credits - 15 USD"},
                },
                "quantity": "2",
            }
        ],
        "client_reference_id": "user-42",
        "metadata": {"user_id": "42", "credit_pack": "starter"},
        "payment_intent_data": {"metadata": {"user_id": "42", "credit_pack": "starter"}},
        "success_url": "https://billing.example.com/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "https://billing.example.com/cancel",
    }


def test_real_client_retrieves_stored_session(stripe_server: StripeRecordedServer) -> None:
    client = make_client(stripe_server)
    created = client.v1.checkout.sessions.create(params=checkout_params())
    # Tests drive state changes (the customer paying) by editing the stored session.
    stripe_server.sessions[created.id]["payment_status"] = "paid"

    retrieved = client.v1.checkout.sessions.retrieve(created.id)

    assert retrieved.id == created.id
    assert retrieved.payment_status == "paid"
    assert stripe_server.requests[-1].method == "GET"
    assert stripe_server.requests[-1].path == f"/v1/checkout/sessions/{created.id}"


def test_same_idempotency_key_replays_first_response(stripe_server: StripeRecordedServer) -> None:
    client = make_client(stripe_server)
    options: Any = {"idempotency_key": "checkout-order-2"}

    first = client.v1.checkout.sessions.create(params=checkout_params(), options=options)
    second = client.v1.checkout.sessions.create(params=checkout_params(), options=options)

    assert first.last_response is not None
    assert second.last_response is not None
    assert second.last_response.body == first.last_response.body
    assert second.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_server.sessions) == 1
    assert len(stripe_server.requests) == 2


def test_idempotency_key_reused_with_other_params_is_rejected(
    stripe_server: StripeRecordedServer,
) -> None:
    client = make_client(stripe_server)
    options: Any = {"idempotency_key": "checkout-order-3"}
    client.v1.checkout.sessions.create(params=checkout_params(), options=options)

    with pytest.raises(stripe.IdempotencyError, match="checkout-order-3"):
        client.v1.checkout.sessions.create(
            params=checkout_params(client_reference_id="someone-else"), options=options
        )
    assert len(stripe_server.sessions) == 1


def test_validation_errors_use_stripes_shape(stripe_server: StripeRecordedServer) -> None:
    client = make_client(stripe_server)
    params = checkout_params()
    del params["mode"]

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.checkout.sessions.create(params=params)

    assert excinfo.value.http_status == 400
    assert excinfo.value.param == "mode"
    assert excinfo.value.code == "parameter_missing"


def test_unknown_session_is_resource_missing(stripe_server: StripeRecordedServer) -> None:
    client = make_client(stripe_server)

    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        client.v1.checkout.sessions.retrieve("cs_test_missing")

    assert excinfo.value.http_status == 404
    assert excinfo.value.code == "resource_missing"


def test_unknown_path_is_stripe_shaped_404(stripe_server: StripeRecordedServer) -> None:
    status, body = raw_request(stripe_server, "GET", "/v1/nope")

    assert status == 404
    assert body["error"]["type"] == "invalid_request_error"
    assert "Unrecognized request URL (GET: /v1/nope)" in body["error"]["message"]
    assert stripe_server.requests[-1].path == "/v1/nope"

    with pytest.raises(stripe.InvalidRequestError, match="Unrecognized request URL"):
        # (Customers were the example here until auto top-up taught the server them.)
        make_client(stripe_server).v1.invoices.create(params={"customer": "cus_123"})


def _saved_card(server: StripeRecordedServer, outcome: str) -> tuple[stripe.StripeClient, Any]:
    client = make_client(server)
    customer = client.v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": "customer-1"}
    )
    session = client.v1.checkout.sessions.create(
        params={
            "mode": "setup",
            "customer": customer.id,
            "success_url": "https://example.com/ok",
        }
    )
    server.complete_setup(session.id, outcome=outcome)
    intent = client.v1.setup_intents.retrieve(
        cast(str, session.setup_intent), params={"expand": ["payment_method"]}
    )
    return client, intent


def test_a_setup_session_saves_a_card_that_a_payment_intent_charges_once_per_key(
    stripe_server: StripeRecordedServer,
) -> None:
    client, setup = _saved_card(stripe_server, "succeeds")
    assert setup.status == "succeeded"
    method = cast(Any, setup.payment_method)
    assert (method.card.brand, method.card.last4) == ("visa", "4242")
    params: Any = {
        "amount": 499,
        "currency": "usd",
        "customer": setup.customer,
        "payment_method": method.id,
        "off_session": True,
        "confirm": True,
    }

    first = client.v1.payment_intents.create(params=params, options={"idempotency_key": "k"})
    again = client.v1.payment_intents.create(params=params, options={"idempotency_key": "k"})

    assert first.status == "succeeded" and first.amount_received == 499
    assert again.id == first.id  # the same object, replayed
    assert len(stripe_server.payment_intents) == 1
    assert stripe_server.charges[cast(str, first.latest_charge)]["payment_intent"] == first.id


@pytest.mark.parametrize("outcome", ["card_declined", "authentication_required"])
def test_a_refused_card_is_stripes_402_card_error_naming_the_payment_intent(
    stripe_server: StripeRecordedServer, outcome: str
) -> None:
    client, setup = _saved_card(stripe_server, outcome)
    params: Any = {
        "amount": 499,
        "currency": "usd",
        "payment_method": cast(Any, setup.payment_method).id,
        "off_session": True,
        "confirm": True,
    }

    with pytest.raises(stripe.CardError) as refused:
        client.v1.payment_intents.create(params=params, options={"idempotency_key": "k"})

    assert refused.value.code == outcome
    intent = cast(Any, refused.value.error).payment_intent
    assert intent["status"] == "requires_payment_method"
    assert intent["last_payment_error"]["code"] == outcome


def test_server_handles_concurrent_requests(stripe_server: StripeRecordedServer) -> None:
    client = make_client(stripe_server)

    def create(n: int) -> str:
        params = checkout_params(client_reference_id=f"user-{n}")
        return client.v1.checkout.sessions.create(params=params).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(16)))

    assert len(set(ids)) == 16
    assert len(stripe_server.requests) == 16
    assert len({r.idempotency_key for r in stripe_server.requests}) == 16


def test_context_manager_binds_loopback_and_stops() -> None:
    with StripeRecordedServer() as server:
        api_base = server.api_base
        assert api_base.startswith("http://127.0.0.1:")
        assert raw_request(server, "GET", "/v1/checkout/sessions/cs_test_x")[0] == 404

    host, port = api_base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    with pytest.raises(OSError):
        conn.request("GET", "/")
    conn.close()
    with pytest.raises(RuntimeError):
        _ = server.api_base
