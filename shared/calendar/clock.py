"""Time as a dependency: production reads the system clock, tests move a manual one."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class ManualClock:
    """A clock that only moves when a test moves it."""

    def __init__(self, start: datetime | None = None):
        start = start or datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(timezone.utc)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **kwargs) -> datetime:
        with self._lock:
            self._now += delta if delta is not None else timedelta(**kwargs)
            return self._now

    def set(self, instant: datetime) -> None:
        with self._lock:
            self._now = instant.astimezone(timezone.utc)


def isoformat(instant: datetime) -> str:
    """UTC ISO 8601 with a Z, the one time format on the wire."""
    if instant.tzinfo is None:
        raise ValueError("a naive datetime has no place on the wire: give it a time zone")
    return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
