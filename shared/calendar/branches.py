"""A branch's calendar: opening hours by weekday, holidays and extra working days (调休),
in its own time zone; when it is open and when it next opens."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_SEARCH_DAYS = 800  # how far next_opening looks ahead; validation guarantees some open day
Window = tuple[int, int]  # opening and closing, minutes after local midnight (closing may be 1440)


def aware(instant: datetime) -> datetime:
    if not isinstance(instant, datetime) or instant.utcoffset() is None:
        raise ValueError(f"an aware datetime is needed, got {instant!r}")
    return instant


@dataclass(frozen=True)
class Branch:
    code: str
    name: str
    region: str
    timezone: str
    weekly_hours: tuple[Window | None, ...]  # mon..sun, None = closed
    holidays: frozenset[date] = field(default=frozenset(), repr=False)
    extra_working_days: frozenset[date] = field(default=frozenset(), repr=False)
    extra_working_day_hours: Window | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances, so this is cheap

    def hours_on(self, day: date) -> Window | None:
        # An extra working day wins over a holiday, so a branch can open on a chain-wide holiday.
        if day in self.extra_working_days:
            return self.extra_working_day_hours or next((w for w in self.weekly_hours if w), None)
        if day in self.holidays:
            return None
        return self.weekly_hours[day.weekday()]

    def _bounds(self, day: date, window: Window) -> tuple[datetime, datetime]:
        midnight = datetime.combine(day, time())
        return tuple((midnight + timedelta(minutes=m)).replace(tzinfo=self.zone) for m in window)

    def is_open(self, instant: datetime) -> bool:
        local = aware(instant).astimezone(self.zone)
        window = self.hours_on(local.date())
        if window is None:
            return False
        start, end = self._bounds(local.date(), window)
        return start <= local < end

    def next_opening(self, instant: datetime) -> datetime:
        """The instant itself when open, else the next opening (in the instant's time zone)."""
        for begin, _ in self._open_windows(instant):
            return instant if begin <= instant else begin.astimezone(instant.tzinfo)
        raise ValueError(f"branch {self.code} does not open within {_SEARCH_DAYS} days")

    def _open_windows(self, start: datetime):
        """The opening windows from `start` on, each cut to begin no earlier than it, in order."""
        local = aware(start).astimezone(self.zone)
        for offset in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=offset)
            window = self.hours_on(day)
            if window is None:
                continue
            begin, end = self._bounds(day, window)
            if end > local:
                yield max(begin, local), end

    def open_time_between(self, start: datetime, end: datetime) -> timedelta:
        """How long the branch is open from `start` to `end`."""
        total = timedelta(0)
        for begin, close in self._open_windows(start):
            if begin >= end:
                break
            total += min(close, end) - begin
        return total

    def after_open_time(self, start: datetime, amount: timedelta) -> datetime:
        """The instant at which the branch has been open for `amount` since `start` (in
        `start`'s time zone)."""
        left = amount
        for begin, close in self._open_windows(start):
            if begin + left <= close:
                return (begin + left).astimezone(start.tzinfo)
            left -= close - begin
        raise ValueError(f"branch {self.code} is not open that long within {_SEARCH_DAYS} days")
