"""Request fields every service's schemas share."""
from __future__ import annotations

from datetime import datetime, timezone

from marshmallow import ValidationError, fields

# About a century inside Python's range (years 1-9999): far beyond any policy duration
# (deadlines, return visits) or a day either side, so a value within survives UTC
# conversion and that arithmetic without OverflowError.
EARLIEST = datetime(100, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9900, 1, 1, tzinfo=timezone.utc)
RANGE_MESSAGE = f"must be between {EARLIEST.date().isoformat()} and {LATEST.date().isoformat()} (UTC)"


def in_range(value: datetime) -> bool:
    """Whether an aware datetime can be converted to UTC and moved by a few decades."""
    try:
        return EARLIEST <= value.astimezone(timezone.utc) <= LATEST
    except OverflowError:  # e.g. 9999-12-31T23:59:59-14:00 is in year 10000 in UTC
        return False


class AwareDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time with an offset, refused (400 naming the field) when UTC
    conversion or arithmetic of decades on it would leave Python's range."""

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        if not in_range(result):
            raise ValidationError(RANGE_MESSAGE)
        return result
