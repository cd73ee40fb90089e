"""Input parsing and output shapes of the usage API (CONTRACT.md, `GET /api/user/credits` and
`GET /api/user/ledger`). Outputs are plain serializers over the selectors' results; they also
document the responses in the OpenAPI schema."""

from datetime import UTC, date, datetime, time
from typing import Any

from rest_framework import serializers

from config.errors import ApplicationError
from config.fields import RFC3339Field, rfc3339
from credits.models import EntryKind

from .selectors import CreditsReport


def parse_bound(value: str, *, name: str) -> datetime:
    """An ISO date (its midnight, UTC) or an ISO datetime (naive: UTC; with an offset:
    converted to UTC)."""
    text = value.strip()
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ApplicationError(
            f"{name} must be an ISO date (2026-11-25) or datetime in UTC "
            f"(2026-11-25T10:00:00Z), got {value!r}.",
            field=name,
        ) from exc
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00:00+01:00 is in the year 0 in UTC
        raise ApplicationError(
            f"{name} must fall within the years 1 to 9999 in UTC, got {value!r}.", field=name
        ) from exc


class TierSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    requests_per_minute = serializers.IntegerField()
    requests_per_hour = serializers.IntegerField()
    requests_per_day = serializers.IntegerField()


class LotSerializer(serializers.Serializer[Any]):
    # A field named `source` shadows `Field.source` in the stubs; DRF itself allows it.
    source = serializers.CharField()  # type: ignore[assignment]
    package = serializers.SerializerMethodField()
    granted = serializers.IntegerField()
    remaining = serializers.IntegerField(help_text="Includes credits held by live requests.")
    expires_at = RFC3339Field(allow_null=True)

    def get_package(self, lot: Any) -> str | None:
        return lot.package or None


class _UsageFields(serializers.Serializer[Any]):
    requests = serializers.IntegerField(help_text="Settled requests, successes and failures.")
    credits = serializers.IntegerField(help_text="Charged requests.")
    prompt_tokens = serializers.IntegerField(help_text="Of charged requests.")
    completion_tokens = serializers.IntegerField(help_text="Of charged requests.")


class UsageDaySerializer(_UsageFields):
    date = serializers.DateField()


class UsageHourSerializer(_UsageFields):
    hour = RFC3339Field()


class CreditsOutputSerializer(serializers.Serializer[Any]):
    credits_remaining = serializers.IntegerField(help_text="Available: balance - reserved.")
    credits_reserved = serializers.IntegerField()
    total_credits_consumed = serializers.IntegerField(help_text="All charges ever.")
    tier = TierSerializer(allow_null=True, help_text="Null at balance 0.")
    lots = LotSerializer(many=True)
    usage_by_day = UsageDaySerializer(many=True)
    usage_by_hour = UsageHourSerializer(many=True)
    average_tokens_per_request = serializers.FloatField(allow_null=True)


def credits_body(report: CreditsReport) -> dict[str, Any]:
    """The response body of `GET /api/user/credits`, in the shape `CreditsOutputSerializer`
    documents (a test holds the two equal). Built by hand: this is the dashboard's most frequent
    call and a filtered report can carry thousands of hourly rows, for which DRF's field-by-field
    serialization costs more than all the queries together."""
    tier = report.tier
    return {
        "credits_remaining": report.credits_remaining,
        "credits_reserved": report.credits_reserved,
        "total_credits_consumed": report.total_credits_consumed,
        "tier": None
        if tier is None
        else {
            "name": tier.name,
            "requests_per_minute": tier.limits[0],
            "requests_per_hour": tier.limits[1],
            "requests_per_day": tier.limits[2],
        },
        "lots": [
            {
                "source": lot.source,
                "package": lot.package or None,
                "granted": lot.granted,
                "remaining": lot.remaining,
                "expires_at": rfc3339(lot.expires_at),
            }
            for lot in report.lots
        ],
        "usage_by_day": [
            {"date": day.isoformat(), **totals.as_dict()} for day, totals in report.usage_by_day
        ],
        "usage_by_hour": [
            {"hour": rfc3339(hour), **totals.as_dict()} for hour, totals in report.usage_by_hour
        ],
        "average_tokens_per_request": report.average_tokens_per_request,
    }


class LedgerEntrySerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=EntryKind.choices)
    amount = serializers.IntegerField(help_text="Signed: positive adds credits.")
    balance_after = serializers.IntegerField()
    source = serializers.CharField(  # type: ignore[assignment]
        source="lot.source", help_text="Source of the lot touched."
    )
    reference = serializers.CharField()
    reason = serializers.CharField()
    created_at = RFC3339Field()


class LedgerPageSerializer(serializers.Serializer[Any]):
    results = LedgerEntrySerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null.")


class RequestSerializer(serializers.Serializer[Any]):
    request_id = serializers.CharField()
    key_id = serializers.UUIDField(allow_null=True)
    model = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["success", "failure"])
    http_status = serializers.IntegerField(allow_null=True)
    charged = serializers.IntegerField()
    reason = serializers.CharField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    authorized_at = RFC3339Field(allow_null=True, help_text="When authorize held its credit.")
    settled_at = RFC3339Field()


class RequestsPageSerializer(serializers.Serializer[Any]):
    results = RequestSerializer(many=True)
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null.")
