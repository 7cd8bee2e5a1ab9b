"""Deleting rows nothing needs any more once they are older than the policy's retention
(idempotency keys, the inbox, sent customer messages, and what a service adds), without a long
lock: small batches, each its own short transaction, found through an index on the row's time so
no batch scans the table.

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


@dataclass(frozen=True)
class Purge:
    """Rows of `table` whose time (`time`: a column, or an SQL expression over columns with an
    index of its own) is older than `kept_for`: the name of a retention of the policy, or a
    fixed time (zero: rows whose time has passed)."""
    table: str
    time: str
    kept_for: str | timedelta

    def older_than(self, retention) -> timedelta:
        return getattr(retention, self.kept_for) if isinstance(self.kept_for, str) else self.kept_for


# The mechanism's own tables, in every service that has them.
SHARED = (
    Purge("idempotency_keys", "created_at", "idempotency_keys"),  # a later retry is a new request
    Purge("inbox", "handled_at", "inbox"),  # an event delivered again after this is handled again
    # Customer messages once sent or given up: their bodies greet customers by name.
    Purge("notifications", "coalesce(sent_at, failed_at)", "notifications"),
)


@dataclass
class Purged:
    table: str
    deleted: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


def purge_older(engine: sa.Engine, purge: Purge, older_than: timedelta, batch: int = 1000,
                stop: threading.Event | None = None) -> Purged:
    """Delete the rows of `purge` older than `older_than`, `batch` rows per transaction,
    oldest first, until none are left (or `stop` is set)."""
    if older_than < timedelta(0) or batch < 1:
        raise ValueError("a retention is not negative and a batch size is positive")
    statement = sa.text(
        f'DELETE FROM "{purge.table}" WHERE ctid = ANY(ARRAY('
        f'SELECT ctid FROM "{purge.table}" WHERE {purge.time} < now() - make_interval(secs => :age) '
        f'ORDER BY {purge.time} LIMIT :batch FOR UPDATE SKIP LOCKED))')
    done = Purged(purge.table)
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


def present(engine: sa.Engine) -> set[str]:
    """The tables this database has (a service may not have all of the shared ones)."""
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names())


class Purger:
    """One round every `interval` seconds until stop(); a database outage waits for the next try."""

    def __init__(self, engine: sa.Engine, retention, service: str = "?", interval: float = 3600.0,
                 batch: int = 1000, retry_after: float = 60.0, own: tuple[Purge, ...] = ()):
        self.engine, self.retention, self.service = engine, retention, service
        self.purges = SHARED + tuple(own)  # `own`: the service's tables (its models.PURGES)
        self.interval, self.batch, self.retry_after = interval, batch, retry_after
        self._stop = threading.Event()
        self.rounds = 0

    def purge_once(self) -> list[Purged]:
        results = []
        tables = present(self.engine)
        for purge in self.purges:
            if self._stop.is_set():
                break
            if purge.table in tables:
                results.append(purge_older(self.engine, purge, purge.older_than(self.retention), batch=self.batch,
                                           stop=self._stop))
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
