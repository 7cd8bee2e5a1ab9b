"""Engines, database creation and migrations for every service; the unit of work is in
`shared.persistence.unit_of_work`."""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import sqlalchemy as sa


PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Sent in the connection's startup packet (no round trip): text travels as UTF-8 whatever
# the server's or the database's default is.
# A server that vanishes (host down, a partition) is noticed in seconds, not at the kernel's
# two-hour keepalive default: a connection attempt gives up after 5 s, an idle connection is
# probed after 10 s, and unacknowledged data fails the connection after 15 s.
CONNECT_ARGS = {"client_encoding": "UTF8", "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                "keepalives_interval": 3, "keepalives_count": 3, "tcp_user_timeout": 15000}


class DatabaseNotUTF8(psycopg2.OperationalError):
    """The database does not store text as UTF-8: Chinese names and descriptions would fail
    or be stored unchecked. An OperationalError, so a request answers 503, never 500."""


def not_utf8_message(name: str, encoding: str) -> str:
    return (f"database {name!r} is encoded {encoding}, not UTF8: complaints in Chinese cannot be stored. "
            f"Create it with `closeloop db upgrade` on an empty server (it creates databases as "
            f"CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0), or move the data into such a database "
            f"(pg_dump, then pg_restore into the new one)")


def _refuse_non_utf8(dbapi_connection, _record) -> None:
    # The server reports server_encoding when the connection starts: no round trip.
    encoding = dbapi_connection.info.parameter_status("server_encoding")
    if encoding is not None and encoding.upper() not in ("UTF8", "UTF-8"):
        raise DatabaseNotUTF8(not_utf8_message(dbapi_connection.info.dbname, encoding))


def create_engine(url: str, **kwargs) -> sa.Engine:
    """Every engine of the project: UTF-8 on the wire, and no connection to a database
    that is not UTF-8."""
    engine = sa.create_engine(url, connect_args=dict(CONNECT_ARGS), **kwargs)
    sa.event.listen(engine, "connect", _refuse_non_utf8)
    return engine


def make_engine(url: str, pool_size: int = 5) -> sa.Engine:
    # A fixed pool: overflow connections opening and closing cost 15-25% throughput. No
    # pre-ping (a round trip per checkout): a connection the server dropped fails one
    # request with 503 and is replaced.
    return create_engine(url, pool_size=pool_size, max_overflow=0, pool_recycle=1800,
                         pool_timeout=10, json_serializer=lambda v: json.dumps(v, ensure_ascii=False))


def check_utf8(database_url: str) -> str | None:
    """Why this database is unusable (not UTF-8), or None when it is fine. An unreachable
    server is not this check's business: the caller starts and waits for it as usual."""
    engine = sa.create_engine(database_url, poolclass=sa.NullPool, connect_args=dict(CONNECT_ARGS))
    try:
        with engine.connect() as conn:
            encoding = conn.execute(sa.text("SHOW server_encoding")).scalar()
    except sa.exc.OperationalError:
        return None
    finally:
        engine.dispose()
    if encoding.upper() in ("UTF8", "UTF-8"):
        return None
    return not_utf8_message(urlsplit(database_url).path.lstrip("/"), encoding)


# --- creating and migrating databases -------------------------------------------------------

def _admin_url(database_url: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def _admin_engine(database_url: str) -> sa.Engine:
    # The maintenance database may be SQL_ASCII on an old server: no UTF-8 guard here.
    return sa.create_engine(_admin_url(database_url), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool,
                            connect_args=dict(CONNECT_ARGS))


def suits_utf8(locale: str) -> bool:
    """A locale PostgreSQL accepts for a UTF8 database."""
    return bool(re.fullmatch(r"(C|POSIX|.*\.utf-?8(@.*)?)", locale, re.IGNORECASE))


def _utf8_locale(conn) -> str:
    """The LC_COLLATE/LC_CTYPE clause a UTF8 database needs here: template0's own locale when it
    suits UTF-8 (C, POSIX, *.UTF-8), else C.UTF-8 where the server has it, else C (which suits
    every encoding)."""
    collate, ctype = conn.execute(sa.text(
        "SELECT datcollate, datctype FROM pg_database WHERE datname = 'template0'")).one()
    if suits_utf8(collate) and suits_utf8(ctype):
        return ""
    has_c_utf8 = conn.execute(sa.text(
        "SELECT 1 FROM pg_collation WHERE collname IN ('C.UTF-8', 'C.utf8') LIMIT 1")).scalar()
    locale = "C.UTF-8" if has_c_utf8 else "C"
    return f" LC_COLLATE '{locale}' LC_CTYPE '{locale}'"


def database_exists(database_url: str) -> bool:
    name = urlsplit(database_url).path.lstrip("/")
    engine = _admin_engine(database_url)
    with engine.connect() as conn:
        found = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
    engine.dispose()
    return bool(found)


def create_database(database_url: str, template: str | None = None) -> bool:
    """Create the database if it is missing, in UTF8 whatever the server's default (a server
    initialised without a UTF-8 locale defaults to SQL_ASCII); True when it was created.
    `template` clones a database (the tests' migrated template): it must be UTF8 itself."""
    name = urlsplit(database_url).path.lstrip("/")
    engine = _admin_engine(database_url)
    try:
        with engine.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                return False
            if template:  # a clone keeps its template's encoding and locale; ENCODING refuses a non-UTF8 one
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}" ENCODING \'UTF8\''))
            else:  # only template0 may give a database another encoding than the server's default
                conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\''
                                     f'{_utf8_locale(conn)}'))
            return True
    finally:
        engine.dispose()


def drop_database(database_url: str) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    engine = _admin_engine(database_url)
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
