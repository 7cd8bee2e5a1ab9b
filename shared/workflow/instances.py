"""Statements on `process_instances` (see shared.workflow.tables). Each runs inside the caller's
transaction (the unit of work's connection), so an instance's new state, the events it asks for
and the handled event's inbox row commit together or not at all."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from shared.workflow.tables import INSTANCES, RUNNING

RETRY_AFTER_FAILURE_MAX = timedelta(hours=1)


@dataclass(frozen=True)
class Row:
    id: str
    process_id: str
    definition_hash: str
    status: str
    state: str
    version: int
    held_since: datetime | None = None  # its timers held since then (see ProcessEngine.hold)


_COLUMNS = (INSTANCES.c.id, INSTANCES.c.process_id, INSTANCES.c.definition_hash, INSTANCES.c.status,
            INSTANCES.c.state, INSTANCES.c.version, INSTANCES.c.held_since)


def insert(conn: sa.Connection, row: Row, next_timer_due: datetime | None, correlation_keys: list[str],
           now: datetime) -> bool:
    """False when an instance with this id exists already."""
    inserted = conn.execute(pg_insert(INSTANCES).values(
        id=row.id, process_id=row.process_id, definition_hash=row.definition_hash, status=row.status,
        state=row.state, next_timer_due=next_timer_due, correlation_keys=correlation_keys, version=row.version,
        created_at=now, updated_at=now).on_conflict_do_nothing().returning(INSTANCES.c.id)).first()
    return inserted is not None


def lock(conn: sa.Connection, instance_id: str) -> Row | None:
    """The row, locked until the caller's transaction ends: a second event for the same
    instance waits here, so two never interleave."""
    found = conn.execute(sa.select(*_COLUMNS).where(INSTANCES.c.id == instance_id).with_for_update()).first()
    return Row(*found) if found else None


def read(conn: sa.Connection, instance_id: str) -> Row | None:
    found = conn.execute(sa.select(*_COLUMNS).where(INSTANCES.c.id == instance_id)).first()
    return Row(*found) if found else None


def lock_by_key(conn: sa.Connection, key: str) -> list[Row]:
    """The running instances a correlation key names, locked in id order (two deliveries that
    lock several rows take them in one order, so they cannot deadlock)."""
    rows = conn.execute(sa.select(*_COLUMNS)
                        .where(INSTANCES.c.correlation_keys.contains([key]), INSTANCES.c.status == RUNNING)
                        .order_by(INSTANCES.c.id).with_for_update()).all()
    return [Row(*r) for r in rows]


def save(conn: sa.Connection, row: Row, status: str, state: str, next_timer_due: datetime | None,
         now: datetime, held_since: datetime | None = None) -> int:
    """Write the state after a step (and whether its timers are held); the new version."""
    return conn.execute(INSTANCES.update().where(INSTANCES.c.id == row.id).values(
        status=status, state=state, next_timer_due=next_timer_due, held_since=held_since,
        version=INSTANCES.c.version + 1, updated_at=now, timer_failures=0, last_error=None)
        .returning(INSTANCES.c.version)).scalar_one()


def replace_definition(conn: sa.Connection, instance_id: str, process_id: str, definition_hash: str) -> None:
    """The (locked) instance runs another process from now on (ProcessEngine.restart saves its state next)."""
    conn.execute(INSTANCES.update().where(INSTANCES.c.id == instance_id).values(
        process_id=process_id, definition_hash=definition_hash))


def add_correlation_key(conn: sa.Connection, instance_id: str, key: str) -> None:
    conn.execute(INSTANCES.update().where(INSTANCES.c.id == instance_id,
                                          sa.not_(INSTANCES.c.correlation_keys.contains([key])))
                 .values(correlation_keys=sa.func.array_append(INSTANCES.c.correlation_keys, key)))


def due_query(now: datetime, limit: int, *columns) -> sa.Select:
    """Instances with a timer due, earliest first, locked; rows another replica holds are
    skipped, so replicas firing side by side never fire one timer twice. Reads the partial
    index on next_timer_due, never the waiting instances that are not due. `columns`: what
    to read of them (their ids unless named)."""
    return (sa.select(*(columns or (INSTANCES.c.id,))).where(INSTANCES.c.next_timer_due <= now)
            .order_by(INSTANCES.c.next_timer_due).limit(limit).with_for_update(skip_locked=True))


def claim_due(conn: sa.Connection, now: datetime, limit: int) -> list[str]:
    return list(conn.execute(due_query(now, limit)).scalars())


def claim_due_rows(conn: sa.Connection, now: datetime, limit: int) -> list[Row]:
    """As claim_due, the rows whole: what the timer poll fires, with no second read of each."""
    return [Row(*r) for r in conn.execute(due_query(now, limit, *_COLUMNS))]


def record_failure(conn: sa.Connection, instance_id: str, error: str, now: datetime) -> datetime:
    """A timer step failed: try again after 1, 2, 4... minutes (at most an hour); when."""
    failures = conn.execute(sa.select(INSTANCES.c.timer_failures).where(INSTANCES.c.id == instance_id)).scalar_one()
    retry_at = now + min(timedelta(minutes=2 ** min(failures, 10)), RETRY_AFTER_FAILURE_MAX)
    conn.execute(INSTANCES.update().where(INSTANCES.c.id == instance_id).values(
        timer_failures=INSTANCES.c.timer_failures + 1, last_error=error[:2000], next_timer_due=retry_at))
    return retry_at


def overdue(conn: sa.Connection, now: datetime) -> tuple[int, datetime | None]:
    """(how many instances have a timer due by `now`, the earliest of those dues): what the
    timer poll has yet to fire. Reads the partial index only."""
    count, earliest = conn.execute(sa.select(sa.func.count(), sa.func.min(INSTANCES.c.next_timer_due))
                                   .where(INSTANCES.c.next_timer_due <= now)).one()
    return count, earliest
