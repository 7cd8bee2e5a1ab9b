"""Anonymising personal data once its record has been closed longer than the policy's
`retention.personal_data`: the mechanism each service's retention (services/<name>/retention.py)
runs its own kinds of record through, and the log of every run (`retention_runs`, and the ids
each run touched in `retention_run_records`).

A run goes kind by kind in batches, each its own short transaction: it locks the due records it
takes (SKIP LOCKED, so replicas and `closeloop retention run` share the work and never wait on a
case being worked), anonymises them and logs their ids in the same transaction, so the log says
exactly what was touched, even of a run that stopped half-way. A dry run finds the same records,
changes none of them, and is logged too, as a dry run, with what it would have touched.

Each service runs it daily from a nameko timer (`retention_timer`, `scheduled_run`), and an
operator at once with `closeloop retention run`."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

import sqlalchemy as sa
from nameko.timer import Timer
from sqlalchemy.dialects import postgresql as pg

from shared.messaging.failures import is_temporary

log = logging.getLogger("closeloop.retention")
TZ = sa.DateTime(timezone=True)
DEFAULT_INTERVAL_SECONDS = 86400.0  # config RETENTION_INTERVAL_SECONDS
TICK_SECONDS = 3600.0               # how often the timer looks whether a run is due


def add_tables(metadata: sa.MetaData) -> sa.Table:
    runs = sa.Table(
        "retention_runs", metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        # The instant the retention counted back from (the run's clock), and the closure time
        # before which a record was due.
        sa.Column("as_of", TZ, nullable=False),
        sa.Column("closed_before", TZ, nullable=False),
        sa.Column("retention", sa.Text, nullable=False),  # the policy's period, as written (P3Y)
        sa.Column("started_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("finished_at", TZ),
        # record type -> how many were anonymised (would be, in a dry run), and how many were due
        # but kept under a legal hold.
        sa.Column("counts", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("held", pg.JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
    )
    sa.Table(
        "retention_run_records", metadata,
        sa.Column("run_id", sa.BigInteger, sa.ForeignKey("retention_runs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("record_type", sa.Text, primary_key=True),
        sa.Column("record_id", sa.Text, primary_key=True),
        sa.Index("ix_retention_run_records_record", "record_id"),  # when was this one anonymised, by which run
    )
    return runs


def create_tables_v1(op) -> None:
    """Alembic: the run log as its first version made it."""
    metadata = sa.MetaData()
    add_tables(metadata)
    metadata.create_all(op.get_bind())


_metadata = sa.MetaData()
RUNS = add_tables(_metadata)
RUN_RECORDS = _metadata.tables["retention_run_records"]


@dataclass(frozen=True)
class RecordKind:
    """One kind of record a service anonymises. `due(uow, closed_before, limit=, lock=)` lists the
    records due (closed before that instant, not under an open case or a legal hold, not yet
    anonymised; each with an `id`), oldest closure first, locked when `lock` (skipping those
    locked elsewhere); `anonymise(uow, records, now)` anonymises them; `held(uow, closed_before)`
    counts those a legal hold keeps."""
    name: str
    due: Callable
    anonymise: Callable
    held: Callable


@dataclass
class RunReport:
    service: str
    dry_run: bool
    as_of: datetime
    closed_before: datetime
    run_id: int | None = None
    touched: dict[str, list[str]] = field(default_factory=dict)  # record type -> ids, in the order done
    held: dict[str, int] = field(default_factory=dict)

    def lines(self, ids: bool = True) -> list[str]:
        """One line per record type, as `closeloop retention run` prints them (the log, without ids)."""
        did = "would anonymise" if self.dry_run else "anonymised"
        return [f"{self.service}: {did} {len(done)} {kind}(s) closed before {self.closed_before.isoformat()}"
                f"{f', {self.held[kind]} kept under a legal hold' if self.held.get(kind) else ''}"
                f"{': ' + ' '.join(done) if ids and done else ''}" for kind, done in self.touched.items()]


def run(store, kinds: tuple[RecordKind, ...], *, service: str, retention, now: datetime, dry_run: bool = False,
        batch: int = 200) -> RunReport:
    """Anonymise every record of `kinds` closed longer than `retention` (a policy Period) before
    `now`, and log the run; a dry run changes no record."""
    closed_before = retention.before(now)
    report = RunReport(service, dry_run, now, closed_before, touched={k.name: [] for k in kinds})
    with store.unit_of_work() as uow:
        report.held = {k.name: k.held(uow, closed_before) for k in kinds}
        report.run_id = uow.execute(RUNS.insert().values(
            dry_run=dry_run, as_of=now, closed_before=closed_before, retention=str(retention),
            held=report.held).returning(RUNS.c.id)).scalar_one()
        if dry_run:
            for kind in kinds:
                _log_records(uow, report, kind.name, kind.due(uow, closed_before, limit=None, lock=False))
    if not dry_run:
        for kind in kinds:
            while True:
                with store.unit_of_work() as uow:
                    records = kind.due(uow, closed_before, limit=batch, lock=True)
                    kind.anonymise(uow, records, now)
                    _log_records(uow, report, kind.name, records)
                if len(records) < batch:
                    break
    with store.unit_of_work() as uow:
        uow.execute(RUNS.update().where(RUNS.c.id == report.run_id).values(finished_at=sa.func.clock_timestamp()))
    for line in report.lines(ids=False):
        log.info("retention run %s: %s", report.run_id, line)
    return report


def _log_records(uow, report: RunReport, kind: str, records: list) -> None:
    """The records' ids under the run, and the run's count, in the transaction that touched them."""
    if not records:
        return
    ids = [str(r.id) for r in records]
    report.touched[kind].extend(ids)
    uow.execute(RUN_RECORDS.insert(), [{"run_id": report.run_id, "record_type": kind, "record_id": i} for i in ids])
    uow.execute(RUNS.update().where(RUNS.c.id == report.run_id).values(
        counts=RUNS.c.counts.op("||")(sa.func.jsonb_build_object(kind, len(report.touched[kind])))))


def last_run(store) -> datetime | None:
    """When the last run that finished counted from (dry runs aside)."""
    with store.unit_of_work() as uow:
        return uow.execute(sa.select(sa.func.max(RUNS.c.as_of)).where(
            RUNS.c.dry_run.is_(False), RUNS.c.finished_at.is_not(None))).scalar()


def interval(config: dict) -> timedelta:
    return timedelta(seconds=float(config.get("RETENTION_INTERVAL_SECONDS") or DEFAULT_INTERVAL_SECONDS))


def scheduled_run(store, kinds: tuple[RecordKind, ...], *, service: str, retention, now: datetime,
                  every: timedelta) -> RunReport | None:
    """What the daily timer does: a run when the last one is `every` old (or there was none);
    a database that is away is logged and tried again at the next tick."""
    try:
        # One replica at a time decides and runs (a session lock, held through the run's own
        # transactions, on a connection of its own beside the pool's): replicas ticking together
        # would each find yesterday's run the last.
        locker = sa.create_engine(store.engine.url, poolclass=sa.pool.NullPool)
        with locker.connect() as lock:
            key = sa.func.hashtext(f"closeloop.retention.{service}")
            if not lock.execute(sa.select(sa.func.pg_try_advisory_lock(key))).scalar():
                return None  # another replica runs it now
            try:
                last = last_run(store)
                if last is not None and now - last < every:
                    return None
                return run(store, kinds, service=service, retention=retention, now=now)
            finally:
                lock.execute(sa.select(sa.func.pg_advisory_unlock(key)))
                lock.commit()
                locker.dispose()
    except Exception as exc:  # noqa: BLE001 - the next tick tries again; a batch done stays done
        if not is_temporary(exc):
            raise
        log.warning("retention for %s: database unavailable (%s); trying again at the next tick", service,
                    exc.__class__.__name__)
        return None


class RetentionTimer(Timer):
    """The daily retention's timer: ticks every RETENTION_INTERVAL_SECONDS (config; a day by
    default), at most an hour apart, and the method it decorates runs the retention only when the
    last run is that old (`scheduled_run`), so a replica restarted more often than daily still
    runs it, and several replicas do not each run it every tick."""

    def __init__(self, **kwargs):
        super().__init__(interval=TICK_SECONDS, **kwargs)

    def setup(self):
        self.interval = min(interval(self.container.config).total_seconds(), TICK_SECONDS)


retention_timer = RetentionTimer.decorator
