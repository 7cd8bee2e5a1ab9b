"""The demo's hand on the demo clock (shared.calendar.clock.DemoClock): where its file is, setting
it back before the services start, and moving it forward, never back, while the demo plays."""
from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta, timezone

from shared.calendar.clock import DEMO_CLOCK_ENV, DemoClock, read_demo_offset, write_demo_offset

DAY = 86400.0


def default_path(env=os.environ) -> str:
    """CLOSELOOP_DEMO_CLOCK_FILE, else `closeloop-demo-clock` in CLOSELOOP_RUN_DIR (or the
    temporary directory): where `closeloop dev --demo-clock` and `closeloop demo` meet."""
    return env.get(DEMO_CLOCK_ENV) or os.path.join(env.get("CLOSELOOP_RUN_DIR") or tempfile.gettempdir(),
                                                   "closeloop-demo-clock")


def rewind(path: str, days: int) -> None:
    """Set the clock `days` + 1 days back: far enough for a demo of `days` days. Only before the
    services start: a running service's clock never goes back."""
    write_demo_offset(path, -(days + 1) * DAY)


class Hand:
    """Moves the clock of `path` forward to an instant; the demo reads its time from it too."""

    def __init__(self, path: str):
        self.path = path
        self.clock = DemoClock(path)

    def exists(self) -> bool:
        return os.path.exists(self.path)

    def now(self) -> datetime:
        return self.clock.now()

    def offset(self) -> float:
        return read_demo_offset(self.path)

    def move_to(self, instant: datetime) -> datetime:
        """The clock at `instant` (it goes on from there at the system's pace); an instant
        passed already leaves it where it is."""
        if instant > self.clock.now():
            write_demo_offset(self.path, (instant - datetime.now(timezone.utc)) / timedelta(seconds=1))
        return self.clock.now()

    def to_real_time(self) -> None:
        if self.offset() < 0:
            write_demo_offset(self.path, 0.0)
