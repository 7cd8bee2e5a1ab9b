"""Engines, the unit of work, database creation and migrations for every service."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from nameko.extensions import DependencyProvider

from shared.messaging import inbox
from shared.messaging import outbox
from shared.notifications import queue

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def make_engine(url: str, pool_size: int = 5) -> sa.Engine:
    # A fixed pool: overflow connections opening and closing cost 15-25% throughput. No
    # pre-ping (a round trip per checkout): a connection the server dropped fails one
    # request with 503 and is replaced.
    return sa.create_engine(url, pool_size=pool_size, max_overflow=0, pool_recycle=1800,
                            pool_timeout=10, json_serializer=lambda v: json.dumps(v, ensure_ascii=False))


class UnitOfWork:
    """One transaction: the state change, its outbox events and its notifications together.
    In an event handler it also claims the event in the inbox, so a duplicate delivery
    raises AlreadyHandled instead of having a second effect."""

    def __init__(self, engine: sa.Engine, claim: tuple[str, str] | None = None):
        self._engine = engine
        self._claim = claim
        self._conn: sa.Connection | None = None
        self._cursor = None  # the driver's cursor, for the queued inserts
        self._pending: list[bytes] = []

    def __enter__(self) -> "UnitOfWork":
        self._conn = self._engine.connect()
        self._tx = self._conn.begin()
        if self._claim is not None:
            try:
                inbox.claim(self._conn, *self._claim)
            except BaseException:
                self._tx.rollback()
                self._conn.close()
                raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self._tx.is_active:
                self._flush()
                self._tx.commit()
            elif self._tx.is_active:
                self._tx.rollback()
        finally:
            if self._cursor is not None:
                self._cursor.close()
            self._conn.close()
        return False

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

    def notify(self, notification) -> None:
        self.insert(queue.NOTIFICATIONS, queue.message_row(notification))


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
    def __init__(self, engine: sa.Engine, claim: tuple[str, str] | None = None):
        self.engine = engine
        self._claim = claim
        self._claimed = False

    def unit_of_work(self) -> UnitOfWork:
        """In an event handler, the unit of work claims the event: a handler does its work in
        one unit of work, so that the claim and the effect commit together."""
        if self._claim is None:
            return UnitOfWork(self.engine)
        if self._claimed:
            raise RuntimeError(f"{self._claim[0]} opened a second unit of work for one event; "
                               "do the handler's work in one")
        self._claimed = True
        return UnitOfWork(self.engine, self._claim)


class Database(DependencyProvider):
    """The service's own PostgreSQL database (config DATABASE_URL, a full URL with its name)."""

    def setup(self):
        config = self.container.config
        self.store = Store(make_engine(config["DATABASE_URL"], config.get("DB_POOL_SIZE", 10)))

    def stop(self):
        self.store.engine.dispose()

    def kill(self):
        self.store.engine.dispose()

    def get_dependency(self, worker_ctx):
        topology = getattr(worker_ctx.entrypoint, "topology", None)
        if topology is not None:  # a safe event handler: its unit of work claims the event
            return Store(self.store.engine, claim=(topology.handler, worker_ctx.args[0]["event_id"]))
        return self.store


# --- creating and migrating databases -------------------------------------------------------

def _admin_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def database_exists(database_url: str) -> bool:
    name = urlsplit(database_url).path.lstrip("/")
    engine = sa.create_engine(_admin_url(database_url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
    engine.dispose()
    return bool(found)


def create_database(database_url: str, template: str | None = None) -> bool:
    """Create the database if it is missing; True when it was created."""
    name = urlsplit(database_url).path.lstrip("/")
    engine = sa.create_engine(_admin_url(database_url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                return False
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{suffix}'))
            return True
    finally:
        engine.dispose()


def drop_database(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    engine = sa.create_engine(_admin_url(database_url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def alembic_config(service: str, database_url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(PROJECT_ROOT / "services" / service / "migrations"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["database_url"] = database_url
    return config


def migrate(service: str, database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(service, database_url), revision)
