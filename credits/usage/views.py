"""The usage API (`GET /api/user/credits`, `GET /api/user/ledger`, requests, limits); the
`/my-credits` pages are the console's (credits.console).

Views only parse input, call one selector and serialize its result.
"""

import base64
import binascii
import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiKeyAuthentication
from accounts.login_tokens import LoginTokenAuthentication
from config.errors import ApplicationError, error_responses
from config.fields import rfc3339
from credits import services
from credits.models import MAX_CREDITS, CreditAccount, EntryKind

from . import selectors
from .serializers import (
    CreditsOutputSerializer,
    LedgerEntrySerializer,
    LedgerPageSerializer,
    RequestSerializer,
    RequestsPageSerializer,
    credits_body,
    parse_bound,
)

LEDGER_PAGE_SIZE = 50
LEDGER_MAX_PAGE_SIZE = 200


class CreditsApi(APIView):
    # The dashboard's token or session, and also the user's own API key: a key holder can check
    # their balance with the credential they already have. Reading it costs no credit and no
    # rate-limit quota (nothing here touches holds or the limiter).
    authentication_classes = [LoginTokenAuthentication, ApiKeyAuthentication, SessionAuthentication]

    @extend_schema(
        operation_id="user_credits",
        parameters=[
            OpenApiParameter(
                "from",
                OpenApiTypes.STR,
                description="Start (inclusive) of the usage window: ISO date or datetime, UTC.",
            ),
            OpenApiParameter(
                "to",
                OpenApiTypes.STR,
                description="End (exclusive) of the usage window: ISO date or datetime, UTC.",
            ),
            OpenApiParameter("key", OpenApiTypes.UUID, description="Only this API key's usage."),
        ],
        responses={
            200: CreditsOutputSerializer,
            **error_responses(
                400,
                401,
                404,
                s400="invalid_request: a malformed from/to, one outside the years 1 to 9999 "
                "in UTC, or from not before to",
                s404="key_not_found: no API key of this user has that id",
            ),
        },
        tags=["credits"],
        summary="Balance, lots, tier and usage by day and hour (X-Credits-Remaining too).",
        description=(
            "Without parameters usage_by_day covers the last 30 UTC days including today and "
            "usage_by_hour the last 48 hours. With from and/or to, both series and the average "
            "cover exactly [from, to) (a missing bound is open): an hour a bound falls inside "
            "of counts only its part inside the window. Also accepts "
            "`Authorization: Bearer KEY` or `X-API-Key: KEY` with the user's own API key."
        ),
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        window = _window(params)
        start, end = window.start, window.end
        key_id = params.get("key") or None
        report = selectors.credits_report(
            user=request.user,  # type: ignore[arg-type]
            start=start,
            end=end,
            key_id=key_id,
        )
        response = Response(credits_body(report))
        response["X-Credits-Remaining"] = str(report.credits_remaining)
        return response


def _encode_cursor(entry_id: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": entry_id}).encode()).decode().rstrip("=")


# A cursor we give out is `{"before": N}` in base64, about 30 characters. The bound also keeps
# what is decoded shallow (a deeply nested JSON array was a RecursionError, a 500).
_MAX_CURSOR = 64


def _decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > _MAX_CURSOR:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        before = json.loads(base64.urlsafe_b64decode(padded.encode()))["before"]
        if not isinstance(before, int) or isinstance(before, bool) or before < 1:
            raise ValueError(before)
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApplicationError(
            "cursor is not one this API gave out; use the `next` URL as it is.", field="cursor"
        ) from exc
    return before


def _page_size(raw: str | None) -> int:
    if raw is None or raw == "":
        return LEDGER_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= LEDGER_MAX_PAGE_SIZE:
        raise ApplicationError(
            f"limit must be an integer from 1 to {LEDGER_MAX_PAGE_SIZE}.", field="limit"
        )
    return size


def _kind(params: Any) -> str | None:
    kind = params.get("kind") or None
    if kind is not None and kind not in EntryKind.values:
        raise ApplicationError(
            f"kind must be one of {', '.join(EntryKind.values)}; got {kind!r}.", field="kind"
        )
    return kind


class LedgerApi(APIView):
    @extend_schema(
        operation_id="user_ledger",
        parameters=[
            OpenApiParameter(
                "kind", OpenApiTypes.STR, enum=list(EntryKind.values), description="Only this kind."
            ),
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description="From a previous page's `next` URL."
            ),
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description=f"Entries per page, 1 to {LEDGER_MAX_PAGE_SIZE} (default "
                f"{LEDGER_PAGE_SIZE}).",
            ),
        ],
        responses={
            200: LedgerPageSerializer,
            **error_responses(400, 401, s400="invalid_request: unknown kind, bad cursor or limit"),
        },
        tags=["credits"],
        summary="The user's ledger entries, newest first, a page at a time.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        kind = _kind(params)
        cursor = params.get("cursor") or None
        before_id = _decode_cursor(cursor) if cursor is not None else None
        limit = _page_size(params.get("limit"))
        # One more than a page tells whether there is a next page without a COUNT.
        entries = selectors.ledger_entries(
            user=request.user,  # type: ignore[arg-type]
            kind=kind,
            before_id=before_id,
            limit=limit + 1,
        )
        next_url = None
        if len(entries) > limit:
            entries = entries[:limit]
            query = params.copy()
            query["cursor"] = _encode_cursor(entries[-1].pk)
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response(
            {"results": LedgerEntrySerializer(entries, many=True).data, "next": next_url}
        )


def _encode_position(settled_at: datetime, record_id: int) -> str:
    raw = json.dumps({"at": settled_at.isoformat(), "id": record_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A position we give out is `{"at": ISO datetime, "id": N}` in base64, about 90 characters.
_MAX_POSITION = 160


def _decode_position(cursor: str) -> tuple[datetime, int]:
    try:
        if len(cursor) > _MAX_POSITION:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded.encode()))
        at = datetime.fromisoformat(position["at"])
        record_id = position["id"]
        if at.tzinfo is None or not isinstance(record_id, int) or isinstance(record_id, bool):
            raise ValueError(position)
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError) as exc:
        raise ApplicationError(
            "cursor is not one this API gave out; use the `next` URL as it is.", field="cursor"
        ) from exc
    return at, record_id


def _window(params: Any) -> selectors.Window:
    """`from` (inclusive) and `to` (exclusive), as `GET /api/user/credits` reads them."""
    start = parse_bound(params["from"], name="from") if params.get("from") else None
    end = parse_bound(params["to"], name="to") if params.get("to") else None
    if start is not None and end is not None and start >= end:
        raise ApplicationError("from must be before to.", field="to")
    return selectors.Window(start, end)


_WINDOW_PARAMETERS = [
    OpenApiParameter(
        "from", OpenApiTypes.STR, description="Start (inclusive): ISO date or datetime, UTC."
    ),
    OpenApiParameter("to", OpenApiTypes.STR, description="End (exclusive): ISO date or datetime."),
]


class RequestsApi(APIView):
    @extend_schema(
        operation_id="user_requests",
        parameters=[
            *_WINDOW_PARAMETERS,
            OpenApiParameter("key", OpenApiTypes.UUID, description="Only this API key's requests."),
            OpenApiParameter(
                "cursor", OpenApiTypes.STR, description="From a previous page's `next` URL."
            ),
            OpenApiParameter(
                "limit",
                OpenApiTypes.INT,
                description=f"Requests per page, 1 to {LEDGER_MAX_PAGE_SIZE} (default "
                f"{LEDGER_PAGE_SIZE}).",
            ),
        ],
        responses={
            200: RequestsPageSerializer,
            **error_responses(
                400,
                401,
                404,
                s400="invalid_request: bad from/to, cursor or limit",
                s404="key_not_found: no API key of this user has that id",
            ),
        },
        tags=["credits"],
        summary="Every settled request of the user, newest first: why it was (not) charged.",
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        window = _window(params)
        cursor = params.get("cursor") or None
        before = _decode_position(cursor) if cursor is not None else None
        limit = _page_size(params.get("limit"))
        records = list(
            selectors.usage_records(
                user=request.user,  # type: ignore[arg-type]
                window=window,
                key_id=params.get("key") or None,
                before=before,
            )[: limit + 1]
        )
        next_url = None
        if len(records) > limit:
            records = records[:limit]
            query = params.copy()
            query["cursor"] = _encode_position(records[-1]["settled_at"], records[-1]["id"])
            next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
        return Response({"results": RequestSerializer(records, many=True).data, "next": next_url})


class _Echo:
    """A file-like object whose write returns what it was given: `csv.writer` formats one row
    and the generator yields it, so nothing accumulates (Django's documented streaming CSV)."""

    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    return "" if value is None else value


def _csv_stream(name: str, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> Any:
    """A `text/csv` attachment streamed row by row: the rows come from a server-side cursor
    (`QuerySet.iterator`), so memory stays constant whatever the range (bench/exports.py)."""
    writer = csv.writer(_Echo())

    def lines() -> Iterator[str]:
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow([_csv_cell(value) for value in row])

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


_CSV_CHUNK = 2000


class RequestsCsvApi(APIView):
    @extend_schema(
        operation_id="user_requests_csv",
        parameters=[
            *_WINDOW_PARAMETERS,
            OpenApiParameter("key", OpenApiTypes.UUID, description="Only this API key's requests."),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            **error_responses(400, 401, 404, s400="invalid_request: bad from/to"),
        },
        tags=["credits"],
        summary="The settled requests as CSV (header row; the list's columns), streamed.",
    )
    def get(self, request: Request) -> Any:
        params = request.query_params
        records = selectors.usage_records(
            user=request.user,  # type: ignore[arg-type]
            window=_window(params),
            key_id=params.get("key") or None,
        ).values_list(*selectors.REQUEST_FIELDS)
        return _csv_stream(
            "requests.csv", selectors.REQUEST_FIELDS, records.iterator(chunk_size=_CSV_CHUNK)
        )


LEDGER_CSV_FIELDS = (
    "id",
    "kind",
    "amount",
    "balance_after",
    "source",
    "reference",
    "reason",
    "created_at",
)


class LedgerCsvApi(APIView):
    @extend_schema(
        operation_id="user_ledger_csv",
        parameters=[
            *_WINDOW_PARAMETERS,
            OpenApiParameter(
                "kind", OpenApiTypes.STR, enum=list(EntryKind.values), description="Only this kind."
            ),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            **error_responses(400, 401, s400="invalid_request: bad from/to or kind"),
        },
        tags=["credits"],
        summary="The ledger entries as CSV (header row; the ledger's columns), streamed.",
    )
    def get(self, request: Request) -> Any:
        params = request.query_params
        entries = selectors.ledger_entries_in(
            user=request.user,  # type: ignore[arg-type]
            window=_window(params),
            kind=_kind(params),
        )
        return _csv_stream("ledger.csv", LEDGER_CSV_FIELDS, entries.iterator(chunk_size=_CSV_CHUNK))


class LimitsInputSerializer(serializers.Serializer[Any]):
    monthly_credit_limit = serializers.IntegerField(
        min_value=0,
        max_value=MAX_CREDITS,
        allow_null=True,
        help_text="Most credits charged per UTC calendar month; null: no limit.",
    )


class LimitsApi(APIView):
    """`GET`/`PUT /api/user/limits`: the account's monthly credit limit (issue 18)."""

    @extend_schema(
        operation_id="user_limits",
        responses={200: LimitsInputSerializer, **error_responses(401)},
        tags=["credits"],
        summary="The account's spend limits.",
    )
    def get(self, request: Request) -> Response:
        account = CreditAccount.objects.filter(pk=request.user.pk).first()
        return Response({"monthly_credit_limit": account.monthly_credit_limit if account else None})

    @extend_schema(
        operation_id="user_limits_set",
        request=LimitsInputSerializer,
        responses={200: LimitsInputSerializer, **error_responses(400, 401)},
        tags=["credits"],
        summary="Set or remove the account's monthly credit limit.",
    )
    def put(self, request: Request) -> Response:
        if not isinstance(request.data, dict):
            raise ApplicationError("The body must be a JSON object.", code="invalid_json")
        serializer = LimitsInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        limit = serializer.validated_data["monthly_credit_limit"]
        user_id = request.user.pk
        assert user_id is not None  # IsAuthenticated
        account = services.account_limit_set(user_id=user_id, monthly_credit_limit=limit)
        return Response({"monthly_credit_limit": account.monthly_credit_limit})
