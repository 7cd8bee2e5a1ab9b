"""Engines, the unit of work, database creation and migrations for every service."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from nameko.extensions import DependencyProvider

from shared import inbox, outbox

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
        self.conn: sa.Connection | None = None

    def __enter__(self) -> "UnitOfWork":
        self.conn = self._engine.connect()
        self._tx = self.conn.begin()
        if self._claim is not None:
            try:
                inbox.claim(self.conn, *self._claim)
            except BaseException:
                self._tx.rollback()
                self.conn.close()
                raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None and self._tx.is_active:
                self._tx.commit()
            elif self._tx.is_active:
                self._tx.rollback()
        finally:
            self.conn.close()
        return False

    def execute(self, statement, *args, **kwargs):
        return self.conn.execute(statement, *args, **kwargs)

    def publish(self, envelope: dict) -> None:
        """Queue an already validated event; the relay publishes it after commit."""
        outbox.add_event(self.conn, envelope)

    def notify(self, notification) -> None:
        outbox.add_notification(self.conn, notification)


class Store:
    def __init__(self, engine: sa.Engine, claim: tuple[str, str] | None = None):
        self.engine = engine
        self._claim = claim

    def unit_of_work(self) -> UnitOfWork:
        """A handler does its work in one unit of work (the one that claims its event)."""
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
