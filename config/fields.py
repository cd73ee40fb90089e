"""Timestamps in the one format the contract uses: RFC 3339, UTC, whole seconds
(`2026-11-25T10:10:00Z`). Every app renders datetimes through `rfc3339` or `RFC3339Field`, so no
response ever carries microseconds or a `+00:00` offset."""

from datetime import UTC, datetime
from typing import Any, overload

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


@overload
def rfc3339(value: datetime) -> str: ...
@overload
def rfc3339(value: None) -> None: ...
def rfc3339(value: datetime | None) -> str | None:
    """`2026-11-25T10:10:00Z` for an aware datetime (any zone), None for None.

    Sub-second parts are truncated, not rounded: a timestamp never moves into the future.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("rfc3339() needs an aware datetime")
    return value.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@extend_schema_field(OpenApiTypes.DATETIME)
class RFC3339Field(serializers.DateTimeField):
    """A DRF datetime field that renders with `rfc3339` and parses any ISO 8601 input
    (a naive input is taken as UTC, since TIME_ZONE is UTC)."""

    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]
        if value is None or value == "":
            return None
        if isinstance(value, str):
            value = self.to_internal_value(value)
        return rfc3339(value)
