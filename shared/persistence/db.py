"""Engines, database creation and migrations for every service; the unit of work is in
`shared.persistence.unit_of_work`."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa


PROJECT_ROOT = Path(__file__).resolve().parents[2]


def make_engine(url: str, pool_size: int = 5) -> sa.Engine:
    # A fixed pool: overflow connections opening and closing cost 15-25% throughput. No
    # pre-ping (a round trip per checkout): a connection the server dropped fails one
    # request with 503 and is replaced.
    return sa.create_engine(url, pool_size=pool_size, max_overflow=0, pool_recycle=1800,
                            pool_timeout=10, json_serializer=lambda v: json.dumps(v, ensure_ascii=False))


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
