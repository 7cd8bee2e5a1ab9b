"""Request fields every service's schemas share."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from marshmallow import ValidationError, fields

# About a century inside Python's range (years 1-9999): far beyond any policy duration
# (deadlines, return visits) or a day either side, so a value within survives UTC
# conversion and that arithmetic without OverflowError.
EARLIEST = datetime(100, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9900, 1, 1, tzinfo=timezone.utc)
RANGE_MESSAGE = f"must be between {EARLIEST.date().isoformat()} and {LATEST.date().isoformat()} (UTC)"


# Python takes offsets up to ±23:59:59.999999; PostgreSQL refuses those past ±15:59 (real ones
# stop at ±14:00) and any with a fraction of a second.
MAX_OFFSET = timedelta(hours=15, minutes=59)
OFFSET_MESSAGE = "the UTC offset must be whole minutes between -15:59 and +15:59"


def offset_ok(value: datetime) -> bool:
    offset = value.utcoffset()
    return offset is not None and abs(offset) <= MAX_OFFSET and offset.microseconds == 0


def in_range(value: datetime) -> bool:
    """Whether an aware datetime can be converted to UTC and moved by a few decades."""
    try:
        return EARLIEST <= value.astimezone(timezone.utc) <= LATEST
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is in year 10000 in UTC
        return False


def problem(value: datetime) -> str | None:
    """Why an aware datetime from a caller cannot be taken (stored, compared, moved), or None."""
    if not offset_ok(value):
        return OFFSET_MESSAGE
    if not in_range(value):
        return RANGE_MESSAGE
    return None


class AwareDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time with an offset, refused (400 naming the field) when PostgreSQL
    could not take its offset, or UTC conversion or arithmetic of decades on it would leave
    Python's range."""

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        wrong = problem(result)
        if wrong:
            raise ValidationError(wrong)
        return result
