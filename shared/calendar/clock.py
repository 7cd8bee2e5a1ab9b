"""Time as a dependency: production reads the system clock, tests move a manual one, and
`closeloop demo` moves a demo clock (the system time plus an offset kept in a file) to play a
chain's history through running services."""
from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

log = logging.getLogger("closeloop.clock")
DEMO_CLOCK_ENV = "CLOSELOOP_DEMO_CLOCK_FILE"


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


class DemoClockRefused(RuntimeError):
    """The demo clock asked for where development keys are not allowed (production)."""


class DemoClock:
    """The system time plus an offset in seconds read from a small file (`-1209600.5`, one
    number on one line), for development only: `closeloop demo` writes the file to move every
    service reading it. The file is stat'ed at each call and read again only when it changed
    (inode, mtime or size: `write_demo_offset` replaces it whole). A missing or unreadable file
    keeps the offset last read (0 before any). Time never goes backwards in one process: an
    earlier offset holds the clock still until the system time has caught up."""

    def __init__(self, path: str | os.PathLike, system=None):
        self.path = os.fspath(path)
        self._system = system or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()
        self._version = None        # (inode, mtime_ns, size) of the file last read
        self._offset = 0.0
        self._last: datetime | None = None

    def now(self) -> datetime:
        with self._lock:
            self._refresh()
            instant = self._system() + timedelta(seconds=self._offset)
            if self._last is not None and instant < self._last:
                instant = self._last
            self._last = instant
            return instant

    @property
    def offset(self) -> float:
        """The offset the file gives, in seconds."""
        with self._lock:
            self._refresh()
            return self._offset

    def view(self) -> dict:
        """What a service's readiness shows: the clock is a demo clock, its time and offset."""
        now = self.now()
        return {"now": isoformat(now), "offset_seconds": self.offset}

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if version == self._version:
            return
        self._version = version
        try:
            self._offset = read_demo_offset(self.path, self._offset)
        except (OSError, ValueError) as exc:
            log.warning("demo clock file %s unreadable (%s); keeping the offset %.0f s", self.path, exc,
                        self._offset)


def read_demo_offset(path: str | os.PathLike, missing: float = 0.0) -> float:
    """The offset in seconds a demo clock file holds (`missing` when there is no file);
    ValueError when it holds anything but a finite number."""
    try:
        with open(path, encoding="ascii") as given:
            text = given.read(100).strip()
    except FileNotFoundError:
        return missing
    offset = float(text)
    if offset != offset or offset in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number of seconds: {text!r}")
    return offset


def write_demo_offset(path: str | os.PathLike, seconds: float) -> None:
    """Set a demo clock file's offset: written under another name, then renamed over it, so a
    reader sees the old file or the new one, never half of one. Its mtime always moves on (two
    writes within one tick of the file system's clock, of the same size, on a reused inode, would
    otherwise look unchanged to a reader's stat)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    try:
        previous = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        previous = 0
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="ascii") as out:
        out.write(f"{seconds:.6f}\n")
    stamp = max(time.time_ns(), previous + 1)
    os.utime(temporary, ns=(stamp, stamp))
    os.replace(temporary, path)


def isoformat(instant: datetime) -> str:
    """UTC ISO 8601 with a Z, the one time format on the wire."""
    if instant.tzinfo is None:
        raise ValueError("a naive datetime has no place on the wire: give it a time zone")
    return instant.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
