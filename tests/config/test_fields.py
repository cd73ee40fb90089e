from datetime import UTC, datetime, timedelta, timezone

import pytest

from config.fields import RFC3339Field, rfc3339


def test_timestamps_render_in_utc_with_whole_seconds_and_a_z() -> None:
    moment = datetime(2026, 11, 25, 10, 10, 0, 999_999, tzinfo=UTC)
    assert rfc3339(moment) == "2026-11-25T10:10:00Z"


def test_other_zones_are_converted_to_utc() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert rfc3339(datetime(2026, 11, 25, 19, 10, 5, tzinfo=tokyo)) == "2026-11-25T10:10:05Z"


def test_none_stays_none_and_a_naive_datetime_is_refused() -> None:
    assert rfc3339(None) is None
    with pytest.raises(ValueError, match="aware"):
        rfc3339(datetime(2026, 11, 25, 10, 10))


def test_the_drf_field_renders_and_parses_the_same_format() -> None:
    field = RFC3339Field()
    assert field.to_representation(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == (
        "2026-01-02T03:04:05Z"
    )
    assert field.to_internal_value("2026-01-02T03:04:05Z") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    # A naive input is UTC (TIME_ZONE is UTC).
    assert field.to_internal_value("2026-01-02T03:04:05") == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
