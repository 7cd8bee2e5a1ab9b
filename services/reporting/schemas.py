"""Reporting's query shapes (marshmallow): a period (dates in the chain's time zone, or
instants), a grouping and filters. Unknown parameters are named, as everywhere."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from marshmallow import ValidationError, fields, validate

from services.reporting.queries import GROUPINGS
from shared.web import fields as datetimes
from shared.web.requests import PageQuery, Strict

MAX_PERIOD_DAYS = 3 * 366
DEFAULT_DAYS = 30


class DayOrInstant(fields.Field):
    """`2026-11-23` (a whole day in the chain's zone) or an ISO 8601 instant with an offset."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or len(value) > 40:
            raise ValidationError("a date (YYYY-MM-DD) or a date-time with an offset")
        try:
            day = date.fromisoformat(value) if len(value) == 10 else None
            return _instant(value) if day is None else _day(day)
        except ValueError:
            raise ValidationError("a date (YYYY-MM-DD) or a date-time with an offset") from None


def _day(day: date) -> date:
    if not datetimes.EARLIEST.date() <= day <= datetimes.LATEST.date():
        raise ValidationError(datetimes.RANGE_MESSAGE)
    return day


def _instant(value: str) -> datetime:
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        raise ValidationError("a date-time needs its UTC offset (e.g. +08:00 or Z)")
    wrong = datetimes.problem(at)
    if wrong:
        raise ValidationError(wrong)
    return at


class PeriodQuery(Strict):
    """`from` and `to` (inclusive when dates): default the last 30 days, today included."""
    from_ = DayOrInstant(data_key="from")
    to = DayOrInstant()
    branch = fields.String(validate=validate.Length(min=1, max=100))
    region = fields.String(validate=validate.Length(min=1, max=100))


class KpiQuery(PeriodQuery):
    group_by = fields.String(validate=validate.OneOf(GROUPINGS))


class ExportQuery(PeriodQuery):
    kind = fields.String(validate=validate.OneOf(("complaint", "suggestion", "praise", "inquiry")))
    category = fields.String(validate=validate.Length(min=1, max=100))


class AlertQuery(Strict):
    kind = fields.String(validate=validate.OneOf(("recurring_problem", "safety_signal")))
    status = fields.String(load_default="open", validate=validate.OneOf(("open", "all")))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    # each alert lists its first 50 records (`records_more` when it has more), every one with `all`
    records = fields.String(validate=validate.OneOf(("all",)))


class CustomerQuery(Strict):
    """The customer file takes no parameters: any given is named."""


class LibraryQuery(PeriodQuery):
    """The case library: closed complaints of a period (by when they closed), one category."""
    category = fields.String(validate=validate.Length(min=1, max=100))


class AccessLogQuery(PageQuery):
    from_ = DayOrInstant(data_key="from")
    to = DayOrInstant()
    case_id = fields.UUID()


def period(params: dict, zone: ZoneInfo, now: datetime, errors: dict) -> tuple[datetime, datetime]:
    """[lo, hi) of the query's loaded `from` and `to` (dates or instants); a period that is not
    one named in `errors`. With errors already (the schema's), nothing to compute."""
    if errors:
        return now, now
    bounds = {name: params[key] for name, key in (("from", "from_"), ("to", "to")) if key in params}
    today = now.astimezone(zone).date()
    lo, hi = bounds.get("from"), bounds.get("to", today)
    hi = datetime.combine(hi + timedelta(days=1), time(), zone) if isinstance(hi, date) and not isinstance(
        hi, datetime) else hi
    if lo is None:
        lo = datetime.combine(today - timedelta(days=DEFAULT_DAYS - 1), time(), zone) if "to" not in bounds \
            else hi - timedelta(days=DEFAULT_DAYS)
    elif not isinstance(lo, datetime):
        lo = datetime.combine(lo, time(), zone)
    if lo >= hi:
        errors["to"] = ["must be after from"]
    elif hi - lo > timedelta(days=MAX_PERIOD_DAYS):
        errors["from"] = [f"a period is at most {MAX_PERIOD_DAYS} days"]
    return lo, hi
