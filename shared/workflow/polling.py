"""A service's timer poll over its process instances, as nameko's `timer` calls it every
second: batches fired until none is full or the round's time is up, a database away logged and
tried again at the next tick, and the gauges that say whether any replica is firing."""
from __future__ import annotations

import logging
import time
from typing import Callable

from shared.messaging.failures import is_temporary
from shared.observability import metrics

log = logging.getLogger(__name__)
TIMER_BATCH = 100           # instances fired per transaction
TIMER_ROUND_SECONDS = 5.0   # one tick fires batches for at most this long, then lets the next tick come


def fire_rounds(service: str, fire: Callable[[int], object], *, batch: int = TIMER_BATCH,
                seconds: float = TIMER_ROUND_SECONDS) -> None:
    """`fire(limit)` -> a TimerRound (the service's handler: one transaction). Replicas poll side
    by side: each claims the due instances no other holds."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            done = fire(batch)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again; nothing was fired
            if not is_temporary(exc):
                raise
            log.warning("%s timer poll: database unavailable (%s); trying again next second", service,
                        exc.__class__.__name__)
            return
        registry = metrics.registry(service)
        for outcome, count in (("fired", len(done.fired)), ("failed", len(done.failed))):
            if count:
                registry.inc("closeloop_process_timers_total", "process instances whose due timers were stepped, "
                             "by outcome (failed: rolled back, retried later)", count, outcome=outcome)
        if len(done.fired) + len(done.failed) < batch:
            break


def timer_gauges(service: str, database, engine, now) -> str:
    """What the timer polls have yet to fire: a count that stays up, or an age that grows,
    means no replica is firing (or every try fails: see closeloop_process_timers_total)."""
    try:
        with database.connect() as conn:
            count, earliest = engine.overdue(conn)
    except Exception:  # noqa: BLE001 - the database away: /health/ready says so; report nothing here
        return ""
    age = 0.0 if earliest is None else max((now - earliest).total_seconds(), 0.0)
    return metrics.render_gauges([
        ("closeloop_process_timers_due", "process instances with a timer due and not yet fired", count,
         {"service": service}),
        ("closeloop_process_timers_oldest_due_seconds", "how long the earliest unfired timer has been due", age,
         {"service": service})])
