"""Deleting rows that only guard against repeats (idempotency keys, the inbox) once they are
older than the policy's retention, without a long lock: small batches, each its own short
transaction, found through an index on the row's time so no batch scans the table.

`Purger.run` is the loop `closeloop relay <service>` runs beside the relay (hourly; replicas
are harmless, as SKIP LOCKED lets each take other rows); `closeloop purge` runs one round.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import sqlalchemy as sa

log = logging.getLogger("closeloop.retention")
DATABASE_DOWN = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


@dataclass
class Purged:
    table: str
    deleted: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


def purge_older(engine: sa.Engine, table: sa.Table, column: sa.Column, older_than: timedelta,
                batch: int = 1000, stop: threading.Event | None = None) -> Purged:
    """Delete rows whose `column` is older than `older_than`, `batch` rows per transaction,
    oldest first, until none are left (or `stop` is set)."""
    if older_than <= timedelta(0) or batch < 1:
        raise ValueError("a retention and a batch size are positive")
    statement = sa.text(
        f'DELETE FROM "{table.name}" WHERE ctid = ANY(ARRAY('
        f'SELECT ctid FROM "{table.name}" WHERE "{column.name}" < now() - make_interval(secs => :age) '
        f'ORDER BY "{column.name}" LIMIT :batch FOR UPDATE SKIP LOCKED))')
    done = Purged(table.name)
    while not (stop and stop.is_set()):
        with engine.begin() as conn:
            deleted = conn.execute(statement, {"age": older_than.total_seconds(), "batch": batch}).rowcount
        done.batches += 1
        done.batch_sizes.append(deleted)
        done.deleted += deleted
        if deleted < batch:
            break
        time.sleep(0)  # let the relay's greenlets run between batches
    return done


def present(engine: sa.Engine, table: sa.Table) -> bool:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT to_regclass(:t) IS NOT NULL"), {"t": table.name}).scalar()


def purges(retention) -> list:
    """(table, its purge) for each table with a retention; a service without one is skipped."""
    from shared.messaging import inbox
    from shared.persistence import idempotency

    return [(idempotency.KEYS, lambda engine, **kw: idempotency.purge(engine, retention.idempotency_keys, **kw)),
            (inbox.INBOX, lambda engine, **kw: inbox.purge(engine, retention.inbox, **kw))]


class Purger:
    """One round every `interval` seconds until stop(); a database outage waits for the next try."""

    def __init__(self, engine: sa.Engine, retention, service: str = "?", interval: float = 3600.0,
                 batch: int = 1000, retry_after: float = 60.0):
        self.engine, self.retention, self.service = engine, retention, service
        self.interval, self.batch, self.retry_after = interval, batch, retry_after
        self._stop = threading.Event()
        self.rounds = 0

    def purge_once(self) -> list[Purged]:
        results = []
        for table, purge in purges(self.retention):
            if self._stop.is_set():
                break
            if not present(self.engine, table):
                continue
            results.append(purge(self.engine, batch=self.batch, stop=self._stop))
        self.rounds += 1
        for done in results:
            if done.deleted:
                log.info("retention for %s: deleted %d row(s) of %s in %d batch(es)",
                         self.service, done.deleted, done.table, done.batches)
        return results

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.purge_once()
                wait = self.interval
            except DATABASE_DOWN as exc:
                log.warning("retention for %s: database unavailable (%s); trying again in %.0f s",
                            self.service, exc.__class__.__name__, self.retry_after)
                wait = self.retry_after
            except Exception:
                log.exception("retention for %s: purge failed", self.service)
                wait = self.retry_after
            self._stop.wait(wait)

    def stop(self) -> None:
        self._stop.set()
