"""Stripe test support: realistic Stripe objects, signed webhooks and a recorded-response API.

Nothing here touches the network: Stripe's servers are unreachable from tests. Everything is
built from Stripe's own example objects (``fixtures3.json`` from ``stripe/openapi``, the data
stripe-mock serves; see ``/work/shared/stripe/README.md``), so tests exercise the same shapes
production will see, and the real ``stripe`` library is used to verify signatures and parse
responses.

Public API
----------
* ``STRIPE_API_VERSION`` - the Stripe API version the service pins (see below).
* ``build_event(...)`` - a webhook Event dict wrapping any object.
* ``checkout_session(...)``, ``payment_intent(...)``, ``charge(...)``, ``dispute(...)``,
  ``refund(...)`` - fixture-based objects with fresh ids and scenario overrides.
* ``sign_payload(...)`` / ``event_payload(...)`` / ``signed_webhook(...)`` - the
  ``Stripe-Signature`` header exactly as Stripe computes it.
* ``StripeRecordedServer`` / the ``stripe_server`` pytest fixture - a local fake of the
  Checkout Sessions API that records every request.

Pointing the stripe library at another API base (production code)
-----------------------------------------------------------------
Use a per-call-site ``StripeClient`` with ``base_addresses`` and an explicit
``stripe_version``; do not assign the module globals (``stripe.api_base``, ``stripe.api_key``,
``stripe.api_version``). The globals are process-wide, read at request time by every legacy
``stripe.checkout.Session.create(...)`` call, and leak between tests and threads; a client
carries its own configuration, so a test can aim it at a ``StripeRecordedServer``::

    import stripe
    from django.conf import settings

    client = stripe.StripeClient(
        api_key=settings.STRIPE_SECRET_KEY,
        stripe_version=STRIPE_API_VERSION,  # "2025-08-27.basil"
        # stripe 12 does NOT fall back to https://api.stripe.com when "api" is "" or None:
        # it drops the entry and requests go to "None/v1/...". Only pass a non-empty base
        # (without a trailing slash: the library appends "/v1/...").
        base_addresses=(
            {"api": settings.STRIPE_API_BASE.rstrip("/")} if settings.STRIPE_API_BASE else {}
        ),
    )
    session = client.v1.checkout.sessions.create(
        params={...}, options={"idempotency_key": f"checkout-{order_id}"}
    )

Use ``client.v1.checkout.sessions``: the un-namespaced ``client.checkout`` still works in
stripe 12 but is documented as deprecated in the next major release.

API version
-----------
stripe-python pins one API version per release and sends it as ``Stripe-Version`` unless told
otherwise; stripe 12.5.2 pins ``"2025-08-27.basil"`` (``stripe.api_version`` /
``stripe._api_version._ApiVersion.CURRENT``). ``pyproject.toml`` allows ``stripe>=11,<13``, and
minor releases move that default, so we pin the string here and pass it explicitly; the tests
fail when the installed library's default drifts, forcing a deliberate upgrade. Webhook events
are rendered in the version of the webhook endpoint (or the account default), not the
library's, so the endpoint must be created with the same ``api_version``; built events default
to it.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast
from urllib.parse import parse_qsl, urlsplit

import pytest

JSONDict = dict[str, Any]

STRIPE_API_VERSION: Final[str] = "2025-08-27.basil"

# A copy of fixtures3.json is vendored under tests/fixtures/; the env var can point elsewhere.
FIXTURES_PATH: Final[Path] = Path(
    os.environ.get(
        "STRIPE_FIXTURES_PATH", str(Path(__file__).parent / "fixtures" / "stripe_fixtures3.json")
    )
)

_ID_ALPHABET: Final[str] = string.ascii_letters + string.digits
# Lengths of the random part of real Stripe ids, so ids fit the same columns/validators.
_ID_LENGTH: Final[int] = 24
_CHECKOUT_SESSION_ID_LENGTH: Final[int] = 58
_CHECKOUT_SESSION_LIFETIME: Final[int] = 24 * 60 * 60
_DISPUTE_RESPONSE_WINDOW: Final[int] = 7 * 24 * 60 * 60


# --------------------------------------------------------------------------------------------
# Fixtures and ids
# --------------------------------------------------------------------------------------------


@cache
def _fixtures() -> dict[str, JSONDict]:
    # Loaded lazily so importing this module never fails; only tests that build objects need it.
    try:
        with FIXTURES_PATH.open(encoding="utf-8") as fh:
            return cast(dict[str, JSONDict], json.load(fh)["resources"])
    except FileNotFoundError as exc:
        raise RuntimeError(
            f"Stripe fixtures not found at {FIXTURES_PATH}; set STRIPE_FIXTURES_PATH to a copy "
            "of stripe/openapi's openapi/fixtures3.json"
        ) from exc


def fixture(resource: str) -> JSONDict:
    """Deep copy of Stripe's example object for ``resource`` (e.g. ``"checkout.session"``)."""
    return copy.deepcopy(_fixtures()[resource])


def _token(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = _ID_LENGTH) -> str:
    """A fresh Stripe-style id such as ``pi_3Qx...``; random, so unique across a test run."""
    return f"{prefix}_{_token(length)}"


def checkout_url(session_id: str) -> str:
    """The hosted Checkout page URL Stripe returns for a session."""
    return f"https://checkout.stripe.com/c/pay/{session_id}"


def _now() -> int:
    return int(time.time())


# --------------------------------------------------------------------------------------------
# Object builders
#
# Each starts from the fixture, replaces values that stripe-mock fills with placeholders
# (random nine-digit amounts, "type": "type", timestamps of 1234567890, one shared id reused
# across resources) with a coherent default, then applies the caller's overrides verbatim.
# Overrides replace top-level fields wholesale (``metadata={...}`` is not merged) and may add
# fields the fixture lacks, because fixtures3.json predates some fields Stripe now returns.
# --------------------------------------------------------------------------------------------


def checkout_session(**overrides: Any) -> JSONDict:
    """A ``checkout.session`` (payment mode, open, unpaid, 10.00 USD) with ``overrides``.

    ``url`` follows ``id`` and ``amount_subtotal`` follows ``amount_total`` unless given.
    """
    session_id = overrides.get("id") or new_id("cs_test", _CHECKOUT_SESSION_ID_LENGTH)
    created = overrides.get("created", _now())
    obj = fixture("checkout.session")
    obj.update(
        id=session_id,
        created=created,
        expires_at=created + _CHECKOUT_SESSION_LIFETIME,
        url=checkout_url(session_id),
        currency="usd",
        amount_subtotal=1000,
        amount_total=1000,
        # A fresh id: the fixture's PaymentIntent id is shared with payment_intent()'s fixture
        # and would silently link unrelated objects.
        payment_intent=new_id("pi"),
        total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        shipping_cost=None,
        shipping_address_collection=None,
        currency_conversion=None,
        collected_information=None,
        after_expiration=None,
        custom_text={
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
    )
    if "amount_total" in overrides and "amount_subtotal" not in overrides:
        obj["amount_subtotal"] = overrides["amount_total"]
    obj.update(overrides)
    return obj


def payment_intent(**overrides: Any) -> JSONDict:
    """A ``payment_intent`` (10.99 USD, ``requires_payment_method``) with ``overrides``."""
    intent_id = overrides.get("id") or new_id("pi")
    obj = fixture("payment_intent")
    obj.update(
        id=intent_id,
        created=_now(),
        client_secret=f"{intent_id}_secret_{_token(_ID_LENGTH)}",
        canceled_at=None,
        last_payment_error=None,
        next_action=None,
        processing=None,
        shipping=None,
        transfer_data=None,
    )
    obj.update(overrides)
    return obj


def charge(**overrides: Any) -> JSONDict:
    """A succeeded, captured card ``charge`` (1.00 USD) with ``overrides``.

    ``amount_captured`` follows ``amount``; ``refunded`` follows ``amount_refunded``.
    """
    charge_id = overrides.get("id") or new_id("ch")
    obj = fixture("charge")
    obj.update(
        id=charge_id,
        created=_now(),
        balance_transaction=new_id("txn"),
        captured=True,
        amount_captured=obj["amount"],
        outcome={
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        # Charges made through PaymentIntents never carry a legacy Source.
        source=None,
        shipping=None,
        transfer_data=None,
    )
    obj["refunds"]["url"] = f"/v1/charges/{charge_id}/refunds"
    if "amount" in overrides and "amount_captured" not in overrides:
        obj["amount_captured"] = overrides["amount"]
    obj.update(overrides)
    if "amount_refunded" in overrides and "refunded" not in overrides:
        obj["refunded"] = obj["amount_refunded"] >= obj["amount"]
    return obj


def dispute(**overrides: Any) -> JSONDict:
    """A ``dispute`` (10.00 USD, ``warning_needs_response``) with ``overrides``."""
    created = overrides.get("created", _now())
    obj = fixture("dispute")
    obj.update(
        id=overrides.get("id") or new_id("dp"),
        created=created,
        charge=new_id("ch"),
    )
    obj["evidence_details"]["due_by"] = created + _DISPUTE_RESPONSE_WINDOW
    obj.update(overrides)
    return obj


def refund(**overrides: Any) -> JSONDict:
    """A succeeded card ``refund`` (1.00 USD) with ``overrides``."""
    obj = fixture("refund")
    obj.update(id=overrides.get("id") or new_id("re"), created=_now(), charge=new_id("ch"))
    obj.update(overrides)
    return obj


def build_event(
    event_type: str,
    obj: JSONDict,
    *,
    event_id: str | None = None,
    created: int | None = None,
    api_version: str = STRIPE_API_VERSION,
) -> JSONDict:
    """A Stripe ``event`` of ``event_type`` whose ``data.object`` is a copy of ``obj``.

    ``request`` is null as for events Stripe emits on its own (e.g. a completed Checkout);
    ``pending_webhooks`` is 1 because the event is on its way to our endpoint.
    """
    event = fixture("event")
    event.update(
        id=event_id or new_id("evt"),
        object="event",
        api_version=api_version,
        created=_now() if created is None else created,
        # Copied so that mutating the builder output afterwards cannot change a built event.
        data={"object": copy.deepcopy(obj)},
        livemode=False,
        pending_webhooks=1,
        request={"id": None, "idempotency_key": None},
        type=event_type,
    )
    return event


# --------------------------------------------------------------------------------------------
# Webhook signatures
# --------------------------------------------------------------------------------------------


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value Stripe sends for ``payload``.

    ``t=TIMESTAMP,v1=HEX(HMAC_SHA256(secret, "TIMESTAMP.PAYLOAD"))``; pass an old ``timestamp``
    to test the replay-tolerance check.
    """
    ts = _now() if timestamp is None else timestamp
    # Signed over the exact bytes sent: re-serialising would break the signature.
    signed = f"{ts}.".encode() + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={ts},v1={digest}"


def event_payload(event: JSONDict) -> bytes:
    """The request body Stripe POSTs to a webhook endpoint for ``event``."""
    return json.dumps(event, indent=2).encode("utf-8")


def signed_webhook(event: JSONDict, secret: str, timestamp: int | None = None) -> tuple[bytes, str]:
    """``(body, Stripe-Signature header)`` ready to POST to the webhook view."""
    body = event_payload(event)
    return body, sign_payload(body, secret, timestamp)


# --------------------------------------------------------------------------------------------
# Recorded-response Stripe API server
# --------------------------------------------------------------------------------------------

_KEY_RE: Final = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBKEY_RE: Final = re.compile(r"\[([^\[\]]*)\]")
_SESSION_PATH_RE: Final = re.compile(r"^/v1/checkout/sessions/([^/]+)$")
_OBJECT_PATH_RE: Final = re.compile(
    r"^/v1/(setup_intents|payment_methods|payment_intents|customers)/([^/]+)$"
)


def parse_form(encoded: str) -> JSONDict:
    """Decode Stripe's bracketed form encoding into nested dicts and lists.

    ``line_items[0][price_data][unit_amount]=1500`` becomes
    ``{"line_items": [{"price_data": {"unit_amount": "1500"}}]}``. Values stay strings, as on
    the wire; a dict whose keys are exactly ``"0".."n-1"`` becomes a list.
    """
    root: JSONDict = {}
    for key, value in parse_qsl(encoded, keep_blank_values=True):
        match = _KEY_RE.match(key)
        parts = [match.group(1), *_SUBKEY_RE.findall(match.group(2))] if match else [key]
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"form key {key!r} conflicts with a scalar value")
            node = child
        last = parts[-1]
        # "a[]=x" (PHP-style append) is not what stripe-python sends, but Stripe accepts it.
        node[str(len(node)) if last == "" else last] = value
    return cast(JSONDict, _listify(root))


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {k: _listify(v) for k, v in node.items()}
    if items and set(items) == {str(i) for i in range(len(items))}:
        return [items[str(i)] for i in range(len(items))]
    return items


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake Stripe API received it."""

    method: str
    path: str
    headers: dict[str, str]
    query: JSONDict = field(default_factory=dict)
    form: JSONDict = field(default_factory=dict)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup (HTTP header names are case-insensitive)."""
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    @property
    def idempotency_key(self) -> str | None:
        return self.header("Idempotency-Key")

    @property
    def stripe_version(self) -> str | None:
        return self.header("Stripe-Version")


@dataclass(frozen=True)
class _Response:
    status: int
    body: JSONDict
    request_id: str


class _StripeError(Exception):
    """An API error rendered as Stripe's ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSONDict = {"error": {"type": type_, "message": message}}
        if code is not None:
            self.body["error"]["code"] = code
        if param is not None:
            self.body["error"]["param"] = param


class StripeRecordedServer:
    """A local stand-in for ``api.stripe.com`` serving the Checkout Sessions endpoints.

    * ``POST /v1/checkout/sessions`` creates an open, unpaid session from the form fields.
    * ``GET /v1/checkout/sessions/{id}`` returns the stored session (``sessions`` is public so
      a test can mark one paid/complete before production code retrieves it).
    * ``POST /v1/refunds`` refunds a charge a test put in ``charges`` (by ``charge`` or
      ``payment_intent``), all of what is left or ``amount``, raising the charge's
      ``amount_refunded`` as Stripe does; more than is left is Stripe's 400
      ``charge_already_refunded``/``amount_too_large``. ``expand[]=charge`` embeds the charge.
    * Auto top-up (issue 19): ``POST /v1/customers``; ``POST /v1/checkout/sessions`` in
      ``setup`` mode makes the session's SetupIntent, which ``complete_setup`` (a test's
      stand-in for the customer entering a card) succeeds with a new PaymentMethod;
      ``GET /v1/setup_intents/{id}`` (``expand[]=payment_method``) and
      ``GET /v1/payment_methods/{id}``; ``POST /v1/payment_intents`` charges a saved card as
      Stripe's test cards do, by the card's ``outcome``: ``succeeds`` (``succeeded``, with a
      Charge in ``charges``), ``card_declined`` and ``authentication_required`` (Stripe's 402
      ``card_error`` naming the PaymentIntent, left ``requires_payment_method``),
      ``requires_action`` (200, ``requires_action``). ``drop_payment_intents`` makes the next N
      creations happen and their answers never arrive (a timeout, as the client sees it);
      ``on_payment_intent_created`` runs before the answer is sent (a webhook that arrives
      before the create call returned).
    * Anything else gets Stripe's 404 ``invalid_request_error``.

    Like Stripe, a POST repeating an ``Idempotency-Key`` replays the first response (with
    ``Idempotent-Replayed: true``), and reusing a key with different parameters is a 400
    ``idempotency_error``. Every request, including rejected ones, is appended to ``requests``.
    """

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.sessions: dict[str, JSONDict] = {}
        self.charges: dict[str, JSONDict] = {}
        self.refunds: dict[str, JSONDict] = {}
        self.customers: dict[str, JSONDict] = {}
        self.setup_intents: dict[str, JSONDict] = {}
        self.payment_methods: dict[str, JSONDict] = {}
        self.payment_intents: dict[str, JSONDict] = {}
        # payment method id -> what charging it does (see the class docstring)
        self.card_outcomes: dict[str, str] = {}
        self.drop_payment_intents = 0
        self.on_payment_intent_created: Callable[[JSONDict], None] | None = None
        # Idempotency-Key -> (request fingerprint, first response)
        self._idempotent: dict[str, tuple[tuple[str, str, JSONDict], _Response]] = {}
        # Handler threads run concurrently; one lock keeps records and replays consistent.
        self._lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("StripeRecordedServer is already running")
        # Port 0: the OS picks a free port, so parallel test runs never collide.
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="stripe-recorded-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:PORT``: the value for ``base_addresses={"api": ...}``."""
        if self._httpd is None:
            raise RuntimeError("StripeRecordedServer is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- request handling (called from handler threads) --------------------------------------

    def _handle(self, request: RecordedRequest) -> tuple[_Response, dict[str, str]]:
        with self._lock:
            self.requests.append(request)
            key = request.idempotency_key
            # Stripe applies idempotency to POSTs only; GETs are idempotent already.
            idempotent_paths = (
                "/v1/checkout/sessions",
                "/v1/refunds",
                "/v1/customers",
                "/v1/payment_intents",
            )
            if request.method != "POST" or key is None or request.path not in idempotent_paths:
                return self._route(request), {}

            fingerprint = (request.method, request.path, request.form)
            if key in self._idempotent:
                first_fingerprint, first_response = self._idempotent[key]
                if first_fingerprint != fingerprint:
                    return self._error(
                        _StripeError(
                            HTTPStatus.BAD_REQUEST,
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other "
                            f"than '{key}' if you meant to execute a different request.",
                            type_="idempotency_error",
                        )
                    ), {"Idempotency-Key": key}
                replay = _Response(first_response.status, first_response.body, _request_id())
                return replay, {
                    "Idempotency-Key": key,
                    "Idempotent-Replayed": "true",
                    "Original-Request": first_response.request_id,
                }

            response = self._route(request)
            # Stripe saves a result only once the endpoint ran: a request rejected by
            # validation can be retried, corrected, under the same key. A declined card did
            # run (402): its answer is replayed.
            if response.status in (HTTPStatus.OK, HTTPStatus.PAYMENT_REQUIRED):
                self._idempotent[key] = (fingerprint, response)
            return response, {"Idempotency-Key": key}

    def _route(self, request: RecordedRequest) -> _Response:
        try:
            if request.path == "/v1/checkout/sessions" and request.method == "POST":
                session = self._create_checkout_session(request.form)
                self.sessions[session["id"]] = session
                return _Response(HTTPStatus.OK, copy.deepcopy(session), _request_id())
            if request.path == "/v1/refunds" and request.method == "POST":
                return _Response(HTTPStatus.OK, self._create_refund(request.form), _request_id())
            match = _SESSION_PATH_RE.match(request.path)
            if match and request.method == "GET":
                return _Response(HTTPStatus.OK, self._get_session(match.group(1)), _request_id())
            if request.path == "/v1/customers" and request.method == "POST":
                return _Response(HTTPStatus.OK, self._create_customer(request.form), _request_id())
            if request.path == "/v1/payment_intents" and request.method == "POST":
                return self._create_payment_intent(request.form)
            match = _OBJECT_PATH_RE.match(request.path)
            if match and request.method == "GET":
                return _Response(
                    HTTPStatus.OK,
                    self._get_object(match.group(1), match.group(2), request.query),
                    _request_id(),
                )
            raise _StripeError(
                HTTPStatus.NOT_FOUND,
                f"Unrecognized request URL ({request.method}: {request.path}). Please see "
                "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            )
        except _StripeError as exc:
            return self._error(exc)

    @staticmethod
    def _error(exc: _StripeError) -> _Response:
        return _Response(exc.status, exc.body, _request_id())

    def _get_session(self, session_id: str) -> JSONDict:
        try:
            # A copy: the response is serialised outside the lock while tests may edit sessions.
            return copy.deepcopy(self.sessions[session_id])
        except KeyError:
            raise _StripeError(
                HTTPStatus.NOT_FOUND,
                f"No such checkout.session: '{session_id}'",
                code="resource_missing",
                param="session",
            ) from None

    def _create_refund(self, form: JSONDict) -> JSONDict:
        charge_id = form.get("charge")
        if not charge_id and form.get("payment_intent"):
            charge_id = next(
                (
                    c["id"]
                    for c in self.charges.values()
                    if c.get("payment_intent") == form["payment_intent"]
                ),
                None,
            )
        if not charge_id or charge_id not in self.charges:
            raise _StripeError(
                HTTPStatus.NOT_FOUND,
                f"No such charge: '{charge_id}'",
                code="resource_missing",
                param="charge",
            )
        stored = self.charges[charge_id]
        left = stored["amount"] - stored["amount_refunded"]
        amount = _int_param(form["amount"], "amount") if "amount" in form else left
        if left <= 0:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                f"Charge {charge_id} has already been refunded.",
                code="charge_already_refunded",
            )
        if amount <= 0 or amount > left:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                f"Refund amount (${amount / 100:.2f}) is greater than unrefunded amount on "
                f"charge (${left / 100:.2f})",
                code="amount_too_large",
                param="amount",
            )
        stored["amount_refunded"] += amount
        stored["refunded"] = stored["amount_refunded"] >= stored["amount"]
        created = refund(
            amount=amount,
            charge=charge_id,
            currency=stored["currency"],
            payment_intent=stored.get("payment_intent"),
            metadata=form.get("metadata", {}),
            reason=form.get("reason"),
            status="succeeded",
        )
        self.refunds[created["id"]] = created
        body = copy.deepcopy(created)
        if "charge" in (form.get("expand") or []):
            body["charge"] = copy.deepcopy(stored)
        return cast(JSONDict, body)

    # -- auto top-up: customers, setup, payment methods, payment intents ---------------------

    def _create_customer(self, form: JSONDict) -> JSONDict:
        created = fixture("customer")
        created.update(
            id=new_id("cus", 14),
            created=_now(),
            email=form.get("email"),
            metadata=form.get("metadata", {}),
            name=form.get("name"),
            test_clock=None,
        )
        self.customers[created["id"]] = created
        return copy.deepcopy(created)

    def _get_object(self, kind: str, object_id: str, query: JSONDict) -> JSONDict:
        store = {
            "setup_intents": self.setup_intents,
            "payment_methods": self.payment_methods,
            "payment_intents": self.payment_intents,
            "customers": self.customers,
        }[kind]
        if object_id not in store:
            raise _StripeError(
                HTTPStatus.NOT_FOUND,
                f"No such {kind[:-1]}: '{object_id}'",
                code="resource_missing",
                param="id",
            )
        obj = copy.deepcopy(store[object_id])
        if "payment_method" in (query.get("expand") or []) and obj.get("payment_method"):
            obj["payment_method"] = copy.deepcopy(self.payment_methods[obj["payment_method"]])
        return cast(JSONDict, obj)

    def complete_setup(
        self,
        session_id: str,
        *,
        brand: str = "visa",
        last4: str = "4242",
        exp_month: int = 12,
        exp_year: int = 2030,
        outcome: str = "succeeds",
    ) -> JSONDict:
        """The customer saved a card on the setup session: its SetupIntent succeeds with a new
        PaymentMethod (charged later as `outcome` says). Returns the completed session, as the
        `checkout.session.completed` event carries it."""
        with self._lock:
            session = self.sessions[session_id]
            method = fixture("payment_method")
            method.update(id=new_id("pm"), created=_now(), customer=session.get("customer"))
            method["card"].update(
                brand=brand,
                display_brand=brand,
                last4=last4,
                exp_month=exp_month,
                exp_year=exp_year,
            )
            self.payment_methods[method["id"]] = method
            self.card_outcomes[method["id"]] = outcome
            intent = self.setup_intents[session["setup_intent"]]
            intent.update(status="succeeded", payment_method=method["id"])
            session.update(status="complete")
            return copy.deepcopy(session)

    def _setup_intent(self, customer: Any, metadata: Any) -> JSONDict:
        intent = fixture("setup_intent")
        intent.update(
            id=new_id("seti"),
            created=_now(),
            customer=customer,
            metadata=metadata or {},
            status="requires_payment_method",
            payment_method=None,
            usage="off_session",
            latest_attempt=None,
            last_setup_error=None,
            next_action=None,
            mandate=None,
            single_use_mandate=None,
        )
        intent["client_secret"] = f"{intent['id']}_secret_{_token(_ID_LENGTH)}"
        self.setup_intents[intent["id"]] = intent
        return intent

    def _create_payment_intent(self, form: JSONDict) -> _Response:
        for required in ("amount", "currency"):
            if required not in form:
                raise _StripeError(
                    HTTPStatus.BAD_REQUEST,
                    f"Missing required param: {required}.",
                    code="parameter_missing",
                    param=required,
                )
        method_id = form.get("payment_method")
        if method_id not in self.payment_methods:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                f"No such PaymentMethod: '{method_id}'",
                code="resource_missing",
                param="payment_method",
            )
        amount = _int_param(form["amount"], "amount")
        outcome = self.card_outcomes.get(str(method_id), "succeeds")
        intent = payment_intent(
            amount=amount,
            amount_capturable=0,
            amount_received=0,
            currency=str(form["currency"]).lower(),
            customer=form.get("customer"),
            payment_method=method_id,
            metadata=form.get("metadata", {}),
            description=form.get("description"),
            confirmation_method="automatic",
            capture_method="automatic",
            latest_charge=None,
            setup_future_usage=None,
        )
        error: _StripeError | None = None
        if outcome == "succeeds":
            charged = charge(
                amount=amount,
                amount_refunded=0,
                currency=intent["currency"],
                payment_intent=intent["id"],
                metadata=intent["metadata"],
                customer=intent["customer"],
                payment_method=method_id,
            )
            self.charges[charged["id"]] = charged
            intent.update(status="succeeded", amount_received=amount, latest_charge=charged["id"])
        elif outcome == "requires_action":
            intent.update(
                status="requires_action",
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}},
            )
        else:
            message = {
                "card_declined": "Your card was declined.",
                "authentication_required": "Your card requires authentication.",
            }.get(outcome, "Your card was declined.")
            last_error = {
                "type": "card_error",
                "code": outcome,
                "decline_code": "generic_decline" if outcome == "card_declined" else outcome,
                "message": message,
                "payment_method": copy.deepcopy(self.payment_methods[str(method_id)]),
            }
            intent.update(status="requires_payment_method", last_payment_error=last_error)
            error = _StripeError(
                HTTPStatus.PAYMENT_REQUIRED, message, type_="card_error", code=outcome
            )
            error.body["error"]["decline_code"] = last_error["decline_code"]
            error.body["error"]["payment_intent"] = copy.deepcopy(intent)
        self.payment_intents[intent["id"]] = intent
        if error is not None:
            return self._error(error)
        return _Response(HTTPStatus.OK, copy.deepcopy(intent), _request_id())

    def _create_checkout_session(self, form: JSONDict) -> JSONDict:
        # Validate what production relies on, with Stripe's error shapes, so a malformed
        # request fails in tests the way it would against Stripe instead of "succeeding".
        mode = form.get("mode")
        if not mode:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                "Missing required param: mode.",
                code="parameter_missing",
                param="mode",
            )
        line_items = form.get("line_items")
        if mode == "payment" and not line_items:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                "Missing required param: line_items.",
                code="parameter_missing",
                param="line_items",
            )
        amount_total, currency = _price_line_items(line_items or [])

        fields: JSONDict = {
            "mode": mode,
            "client_reference_id": form.get("client_reference_id"),
            "metadata": form.get("metadata", {}),
            "success_url": form.get("success_url"),
            "cancel_url": form.get("cancel_url"),
            "customer": form.get("customer"),
            "customer_email": form.get("customer_email"),
            "amount_total": amount_total,
            "amount_subtotal": amount_total,
            "currency": currency,
            "payment_status": "unpaid",
            "status": "open",
            # Since API 2022-08-01 the PaymentIntent is created when the customer pays, and
            # nothing is known about the customer yet.
            "payment_intent": None,
            "customer_details": None,
        }
        if "expires_at" in form:
            fields["expires_at"] = _int_param(form["expires_at"], "expires_at")
        if mode == "setup":
            if not form.get("customer"):
                raise _StripeError(
                    HTTPStatus.BAD_REQUEST,
                    "Missing required param: customer.",
                    code="parameter_missing",
                    param="customer",
                )
            fields.update(
                amount_total=None,
                amount_subtotal=None,
                currency=None,
                payment_status="no_payment_required",
                setup_intent=self._setup_intent(form.get("customer"), form.get("metadata"))["id"],
            )
        return checkout_session(**fields)


def _request_id() -> str:
    return new_id("req", 14)


def _int_param(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _StripeError(
            HTTPStatus.BAD_REQUEST,
            f"Invalid integer: {value}",
            code="parameter_invalid_integer",
            param=param,
        ) from None


def _price_line_items(line_items: Any) -> tuple[int | None, str | None]:
    """Sum inline-priced line items; only ``price_data`` can be priced without a Price store."""
    if not isinstance(line_items, list):
        raise _StripeError(
            HTTPStatus.BAD_REQUEST,
            "Invalid array",
            code="parameter_invalid_array",
            param="line_items",
        )
    total: int | None = None
    currency: str | None = None
    for index, item in enumerate(line_items):
        prefix = f"line_items[{index}]"
        if not isinstance(item, dict):
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                "Invalid object",
                code="parameter_invalid_object",
                param=prefix,
            )
        if "price" in item:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                f"No such price: '{item['price']}'",
                code="resource_missing",
                param=f"{prefix}[price]",
            )
        price_data = item.get("price_data")
        if not isinstance(price_data, dict):
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                f"Missing required param: {prefix}[price_data].",
                code="parameter_missing",
                param=f"{prefix}[price_data]",
            )
        for required in ("currency", "unit_amount"):
            if required not in price_data:
                raise _StripeError(
                    HTTPStatus.BAD_REQUEST,
                    f"Missing required param: {prefix}[price_data][{required}].",
                    code="parameter_missing",
                    param=f"{prefix}[price_data][{required}]",
                )
        if "quantity" not in item:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                f"Missing required param: {prefix}[quantity].",
                code="parameter_missing",
                param=f"{prefix}[quantity]",
            )
        unit_amount = _int_param(price_data["unit_amount"], f"{prefix}[price_data][unit_amount]")
        quantity = _int_param(item["quantity"], f"{prefix}[quantity]")
        item_currency = str(price_data["currency"]).lower()
        if currency is not None and item_currency != currency:
            raise _StripeError(
                HTTPStatus.BAD_REQUEST,
                "All line items must use the same currency.",
                param=f"{prefix}[price_data][currency]",
            )
        currency = item_currency
        total = (total or 0) + unit_amount * quantity
    return total, currency


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        app: StripeRecordedServer,
    ) -> None:
        self.app = app
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes each connection after one response, so stop() never waits on idle
    # keep-alive connections held open by the client's connection pool.
    protocol_version = "HTTP/1.0"
    server_version = "stripe-recorded-server"

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        # Silenced: pytest shows captured stderr on failure and the access log is noise there;
        # server.requests is the record to assert on.
        pass

    def _dispatch(self) -> None:
        app = cast(_HTTPServer, self.server).app
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            form = parse_form(body.decode("utf-8")) if body else {}
            query = parse_form(url.query) if url.query else {}
        except (UnicodeDecodeError, ValueError) as exc:
            self._send(
                _Response(
                    HTTPStatus.BAD_REQUEST,
                    {"error": {"type": "invalid_request_error", "message": str(exc)}},
                    _request_id(),
                ),
                {},
            )
            return
        request = RecordedRequest(
            method=self.command,
            path=url.path,
            headers=dict(self.headers.items()),
            query=query,
            form=form,
            body=body,
        )
        response, extra_headers = app._handle(request)
        if request.method == "POST" and request.path == "/v1/payment_intents":
            if response.status in (HTTPStatus.OK, HTTPStatus.PAYMENT_REQUIRED):
                created = response.body.get("error", {}).get("payment_intent") or response.body
                if app.on_payment_intent_created is not None:
                    app.on_payment_intent_created(created)
            with app._lock:
                drop = app.drop_payment_intents > 0
                app.drop_payment_intents -= int(drop)
            if drop:
                # Done, and the answer never arrives: the client sees a broken connection.
                self.close_connection = True
                return
        self._send(response, extra_headers, request.stripe_version)

    def _send(
        self,
        response: _Response,
        extra_headers: dict[str, str],
        stripe_version: str | None = None,
    ) -> None:
        payload = json.dumps(response.body, indent=2).encode("utf-8")
        self.send_response(response.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Request-Id", response.request_id)
        self.send_header("Stripe-Version", stripe_version or STRIPE_API_VERSION)
        for name, value in extra_headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def stripe_server() -> Iterator[StripeRecordedServer]:
    """A running ``StripeRecordedServer``, stopped after the test.

    Enable it with ``pytest_plugins = ["tests.stripe_support"]`` in the root ``conftest.py``
    or by importing ``stripe_server`` into a test module.
    """
    with StripeRecordedServer() as server:
        yield server
