"""Reporting's use cases, first part (issue 11 groundwork, not wired to the bus yet): a batch of
consumed events logged and folded into the read models in one transaction, and the read models
rebuilt from the log. Plain functions over a store of units of work."""
from __future__ import annotations

import logging
from datetime import datetime

from services.reporting import facts

log = logging.getLogger("closeloop.reporting")
REBUILD_BATCH = 2000


def _fold(uow, events: list[dict], now: datetime) -> None:
    """The events folded into the facts of the cases they are about."""
    about = [(facts.case_of(e), e) for e in events]
    about = [(case_id, e) for case_id, e in about if case_id]
    current = uow.cases.lock([case_id for case_id, _ in about], now)
    for case_id, event in about:
        current[case_id] = facts.apply(current[case_id], event)
    uow.cases.save(current, now)


def ingest(store, *, events: list[dict], now: datetime) -> int:
    """A batch of parsed envelopes: each logged once (a copy, or one logged before, is left
    out) and the new ones folded into the read models, all in one transaction. How many were new."""
    with store.unit_of_work() as uow:
        fresh = uow.log.append(events, now)
        _fold(uow, fresh, now)
    return len(fresh)


def rebuild(store, *, now: datetime, batch: int = REBUILD_BATCH) -> int:
    """`closeloop projections rebuild`: the read models dropped and folded again from the whole
    log, in one transaction (readers see the old figures until it commits). Events folded."""
    done = 0
    with store.unit_of_work() as uow:
        uow.cases.clear()
        last = 0
        while True:
            rows = uow.log.after(last, batch)
            if not rows:
                break
            _fold(uow, [envelope for _, envelope in rows], now)
            done += len(rows)
            last = rows[-1][0]
    log.info("projections rebuilt from %d logged event(s)", done)
    return done
