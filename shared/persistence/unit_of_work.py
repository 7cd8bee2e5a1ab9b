"""The unit of work: one transaction holding a state change, the events it publishes and
the messages it sends, so all of them happen or none does. In an event handler it also
claims the event in the inbox first, so a duplicate delivery raises AlreadyHandled instead
of having a second effect.

A service subclasses `UnitOfWork` to open its repositories (`_open`) and `Store` to say
which unit of work it makes; `Database(ServiceStore)` injects the store into workers.
Service-layer tests use the in-memory fakes of `shared.testing.fakes` instead."""
from __future__ import annotations

import json
from contextlib import contextmanager

import sqlalchemy as sa
from nameko.extensions import DependencyProvider

from shared.messaging import inbox, outbox
from shared.notifications import queue
from shared.persistence.db import make_engine


class UnpublishedEvents(RuntimeError):
    """A record's domain events were recorded but never queued: they would be lost."""


class UnitOfWork:
    def __init__(self, engine: sa.Engine | None, claim: tuple[str, str] | None = None):
        self._engine = engine
        self._claim = claim
        self._joined = False  # working inside a transaction someone else owns (see `joining`)
        self._conn: sa.Connection | None = None
        self._cursor = None  # the driver's cursor, for the queued inserts
        self._pending: list[bytes] = []
        self._seen: list = []  # aggregates loaded or added: their recorded events must be published

    @classmethod
    def joining(cls, conn: sa.Connection) -> "UnitOfWork":
        """A unit of work inside a transaction the caller owns and commits (e.g. the
        notification sender's, recording an outcome): its writes and events join it."""
        uow = cls(None)
        uow._conn, uow._joined = conn, True
        return uow

    def __enter__(self):
        if self._joined:
            self._open()
            return self
        self._conn = self._engine.connect()
        self._tx = self._conn.begin()
        try:
            if self._claim is not None:
                inbox.claim(self._conn, *self._claim)
            self._open()
        except BaseException:
            self._tx.rollback()
            self._conn.close()
            raise
        return self

    def _open(self) -> None:
        """Open the service's repositories on this unit of work."""

    def __exit__(self, exc_type, exc, tb):
        if self._joined:
            try:
                if exc_type is None:
                    self._check_published()
                    self._flush()
            finally:
                if self._cursor is not None:
                    self._cursor.close()
            return False
        try:
            if exc_type is None and self._tx.is_active:
                self._check_published()
                self._flush()
                self._tx.commit()
            elif self._tx.is_active:
                self._tx.rollback()
        except BaseException:
            if self._tx.is_active:
                self._tx.rollback()
            raise
        finally:
            if self._cursor is not None:
                self._cursor.close()
            self._conn.close()
        return False

    def track(self, aggregate):
        """Repositories call this for every aggregate they load or add."""
        self._seen.append(aggregate)
        return aggregate

    def _check_published(self) -> None:
        unpublished = [a for a in self._seen if a.pending_events()]
        if unpublished:
            raise UnpublishedEvents(f"{len(unpublished)} record(s) with recorded events not queued for publishing")

    @contextmanager
    def part(self):
        """A part of the transaction that may fail alone, inside a savepoint the caller holds
        (the timer poll fires each instance in one): its queued inserts are sent before the
        savepoint is released; when it fails, they are dropped, and so are the records it loaded
        (their unpublished events went with the savepoint)."""
        seen, pending = len(self._seen), len(self._pending)
        try:
            yield self
            self._flush()
        except BaseException:
            del self._pending[pending:]
            del self._seen[seen:]
            raise

    @property
    def conn(self) -> sa.Connection:
        """The transaction's connection (queued inserts are sent first, to keep their order)."""
        self._flush()
        return self._conn

    def execute(self, statement, *args, **kwargs):
        return self.conn.execute(statement, *args, **kwargs)

    def insert(self, table: sa.Table, values: dict) -> None:
        """Queue an INSERT: the queued inserts go to the server together, in one round trip,
        before the next statement or the commit. Values are plain Python; dicts and lists
        are stored as JSON."""
        if self._cursor is None:
            self._cursor = self._conn.connection.dbapi_connection.cursor()
        self._pending.append(self._cursor.mogrify(*_insert_sql(table, values)))

    def _flush(self) -> None:
        if self._pending:
            self._cursor.execute(b";".join(self._pending))
            self._pending.clear()

    def publish(self, envelope: dict) -> None:
        """Queue an event made by shared.messaging.envelope.build_event; the relay publishes it after commit."""
        self.insert(outbox.OUTBOX, outbox.event_row(envelope))

    def notify(self, message) -> None:
        """Queue a CustomerMessage (intake only) or a StaffMessage; the sender sends it after commit."""
        self.insert(queue.NOTIFICATIONS, queue.message_row(message))


_INSERTS: dict[tuple, str] = {}


def _insert_sql(table: sa.Table, values: dict) -> tuple[str, dict]:
    """The INSERT for these columns (built once) and its parameters, for psycopg2's mogrify."""
    key = (table.name, tuple(values))
    sql = _INSERTS.get(key)
    if sql is None:
        columns = ", ".join(f'"{name}"' for name in values)
        placeholders = ", ".join(f"%({name})s" for name in values)
        sql = _INSERTS[key] = f'INSERT INTO "{table.name}" ({columns}) VALUES ({placeholders})'
    return sql, {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in values.items()}


class Store:
    """Makes units of work on the service's engine. In an event handler the store claims the
    event: the handler does its work in one unit of work, so that claim and effect commit
    together."""

    unit_of_work_class = UnitOfWork

    def __init__(self, engine: sa.Engine, claim: tuple[str, str] | None = None):
        self.engine = engine
        self._claim = claim
        self._claimed = False

    def for_event(self, handler: str, event_id: str) -> "Store":
        return type(self)(self.engine, claim=(handler, event_id))

    def unit_of_work(self) -> UnitOfWork:
        if self._claim is None:
            return self.unit_of_work_class(self.engine)
        if self._claimed:
            raise RuntimeError(f"{self._claim[0]} opened a second unit of work for one event; "
                               "do the handler's work in one")
        self._claimed = True
        return self.unit_of_work_class(self.engine, self._claim)


class Database(DependencyProvider):
    """The service's own PostgreSQL database (config DATABASE_URL, a full URL with its name),
    as a Store of the service's kind: `db = Database(IntakeStore)`."""

    def __init__(self, store_class: type[Store] = Store):
        self.store_class = store_class

    def setup(self):
        config = self.container.config
        self.store = self.store_class(make_engine(config["DATABASE_URL"], config.get("DB_POOL_SIZE", 10)))

    def stop(self):
        self.store.engine.dispose()

    def kill(self):
        self.store.engine.dispose()

    def get_dependency(self, worker_ctx):
        topology = getattr(worker_ctx.entrypoint, "topology", None)
        if topology is not None and getattr(worker_ctx.entrypoint, "claims_inbox", True):
            # a safe event handler: its unit of work claims the event
            return self.store.for_event(topology.handler, worker_ctx.args[0]["event_id"])
        return self.store
