"""The two hot-path calls' request and answer, independent of Django's request/response objects.

A handler of `/internal/v1/` takes a `Call` (method, Authorization header, body) and returns an
`Answer` (status, JSON payload, extra headers). Two adapters serve it:

- `as_django_view` wraps it as a plain Django view (the URLconf, Django's test client, and every
  server that runs `config.wsgi`);
- `credits.gateway.wsgi` calls it straight from the WSGI environ and writes the JSON itself.

Measured on this machine, Django's WSGIRequest (headers, body, host) and JsonResponse cost about
120 us of CPU per call, against about 20 us for the same work done here; on a path that is
CPU-bound in Python, that is a tenth of each call.

Both adapters give the same answer to the same call, byte for byte (both write `encode`):
tests/gateway runs through Django's test client, and tests/gateway/test_wsgi.py plus
tests/security/test_hostile_bodies.py through the WSGI entry.

JSON is orjson's both ways (`decode`, `encode`), issue 23: measured on this machine (loaded,
`timeit`, best of 5), a decision's body is written in 0.7 us against 12.7 us with `json.dumps`,
and an authorize and a settle body read in 1.7 and 2.8 us against 6.9 and 11.2 us with
`json.loads`: about 30 us of CPU per authorize+settle pair. orjson writes compact JSON (no
space after `:` and `,`) and UTF-8 rather than ASCII escapes: the same JSON value.
"""

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from accounts.authentication import ServiceTokenRefused, service_token_required
from config.errors import error_body


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    payload: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


def error_answer(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
) -> Answer:
    return Answer(status, error_body(code, message, field), headers)


class Call(Protocol):
    method: str
    authorization: str  # the Authorization header, "" when absent

    def body(self) -> bytes:
        """The request body; raises `RequestDataTooBig` past DATA_UPLOAD_MAX_MEMORY_SIZE."""
        ...


Handler = Callable[[Call], Answer]


class DjangoCall:
    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.method = request.method or ""
        self.authorization = request.headers.get("Authorization", "")

    def body(self) -> bytes:
        return self.request.body


class WsgiCall:
    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "")
        self.authorization = environ.get("HTTP_AUTHORIZATION", "")

    def body(self) -> bytes:
        # As WSGIRequest does: CONTENT_LENGTH bytes, none when it is absent or not a number,
        # and refused past the limit before anything is read.
        try:
            length = max(0, int(self.environ.get("CONTENT_LENGTH") or 0))
        except ValueError:
            length = 0
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None and length > limit:
            raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
        if length == 0:
            return b""
        data: bytes = self.environ["wsgi.input"].read(length)
        return data


def with_service_token(handler: Handler) -> Handler:
    """`accounts.authentication.service_token_required` in front of a handler: a 401 or 503
    answer instead of the call."""

    def guarded(call: Call) -> Answer:
        try:
            service_token_required(call.authorization)
        except ServiceTokenRefused as refused:
            return error_answer(
                refused.status, refused.code, refused.message, headers=refused.headers
            )
        return handler(call)

    return functools.wraps(handler)(guarded)


def as_django_view(handler: Handler) -> Callable[[HttpRequest], HttpResponse]:
    """The handler as a Django view. CSRF-exempt: the gateway sends no cookies, so there is no
    session to forge."""

    def view(request: HttpRequest) -> HttpResponse:
        answer = handler(DjangoCall(request))
        response = HttpResponse(
            encode(answer), content_type="application/json", status=answer.status
        )
        for name, value in answer.headers:
            response[name] = value
        if 400 <= answer.status < 500:
            # The handler logged it (`views._logged`); Django's log_response skips it then.
            response._has_been_logged = True  # type: ignore[attr-defined]
        return response

    view.__name__ = handler.__name__.removesuffix("_answer")
    view.__doc__ = handler.__doc__
    return csrf_exempt(view)


def encode(answer: Answer) -> bytes:
    """The answer's body (both adapters write it). A payload orjson refuses (an integer past 64
    bits: none of ours) is written by `json.dumps` in the same compact style."""
    try:
        return orjson.dumps(answer.payload)
    except TypeError:
        return json.dumps(answer.payload, separators=(",", ":"), ensure_ascii=False).encode()


def decode(raw: bytes) -> Any:
    """The JSON value of a request body. Where orjson refuses a body that `json.loads` reads
    (NaN or Infinity, a lone surrogate escape, a byte-order mark, UTF-16, nesting past 1,024
    levels), `json.loads` decides, so every body gets the answer it had before: the same value,
    or the same error (`ValueError`, `UnicodeDecodeError`, `RecursionError`). One difference: an
    integer past 64 bits is read by orjson as a float (a 400 either way, as not an integer)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
