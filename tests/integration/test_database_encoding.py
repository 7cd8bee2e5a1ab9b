"""Databases are UTF8 and spoken to in UTF-8; a database that is not is refused at start, with
a message saying how to fix it (on a server initialised without a UTF-8 locale every Chinese
complaint was a 500)."""
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.persistence import db
from shared.runtime.config import with_database
from shared.testing.fixtures import RUN_ID, drop_at_exit

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sql_ascii_database(infra):
    """A database as a server without a UTF-8 locale makes by default."""
    url = with_database(infra.database_url, f"cltest_{RUN_ID}_ascii_{uuid.uuid4().hex[:8]}")
    name = url.rsplit("/", 1)[-1]
    drop_at_exit(url)
    admin = sa.create_engine(with_database(infra.database_url, "postgres"), isolation_level="AUTOCOMMIT",
                             poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' "
                             "TEMPLATE template0"))
    admin.dispose()
    return url


def closeloop(*args, database_url: str, amqp_uri: str = "amqp://guest:guest@127.0.0.1:1//"):
    env = {**os.environ, "INTAKE_DATABASE_URL": database_url, "AMQP_URI": amqp_uri, "CLOSELOOP_DEV_KEYS": "1",
           "INTAKE_PORT": "0"}
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("command", [("serve", "intake"), ("relay", "intake"), ("db", "upgrade", "intake")])
def test_every_command_refuses_a_database_that_is_not_utf8(sql_ascii_database, command):
    done = closeloop(*command, database_url=sql_ascii_database)
    assert done.returncode == 2, done.stderr
    assert "is encoded SQL_ASCII, not UTF8" in done.stderr
    assert "ENCODING 'UTF8' TEMPLATE template0" in done.stderr  # how to fix it
    assert "Traceback" not in done.stderr


def test_an_engine_never_uses_a_database_that_is_not_utf8(sql_ascii_database):
    """Checked on each new connection too (a database swapped while a service runs): an
    OperationalError, which requests answer with 503."""
    engine = db.make_engine(sql_ascii_database, 1)
    with pytest.raises(sa.exc.OperationalError, match="SQL_ASCII"):
        with engine.connect():
            pass
    engine.dispose()


def test_the_projects_create_path_makes_utf8_databases_that_store_chinese(infra, monkeypatch):
    # A client whose environment asks for another encoding still speaks UTF-8 to the server.
    monkeypatch.setenv("PGCLIENTENCODING", "LATIN1")
    url = with_database(infra.database_url, f"cltest_{RUN_ID}_utf8_{uuid.uuid4().hex[:8]}")
    drop_at_exit(url)
    assert db.create_database(url)
    db.migrate("intake", url)
    clone = with_database(infra.database_url, f"cltest_{RUN_ID}_utf8c_{uuid.uuid4().hex[:8]}")
    drop_at_exit(clone)
    assert db.create_database(clone, template=url.rsplit("/", 1)[-1])
    for target in (url, clone):
        engine = db.make_engine(target, 1)
        with engine.begin() as conn:
            assert conn.execute(sa.text("SHOW server_encoding")).scalar() == "UTF8"
            assert conn.execute(sa.text("SHOW client_encoding")).scalar() == "UTF8"
            conn.execute(sa.text("INSERT INTO idempotency_keys (principal, key, request_hash, status, response) "
                                 "VALUES ('前台|front_desk', 'k1', 'h', 201, :r)"), {"r": '{"description": "染发后头皮过敏红肿"}'})
            stored = conn.execute(sa.text("SELECT principal, response FROM idempotency_keys")).one()
        engine.dispose()
        assert tuple(stored) == ("前台|front_desk", '{"description": "染发后头皮过敏红肿"}')


def test_a_clone_of_a_database_that_is_not_utf8_is_refused(infra, sql_ascii_database):
    clone = with_database(infra.database_url, f"cltest_{RUN_ID}_asciic_{uuid.uuid4().hex[:8]}")
    drop_at_exit(clone)
    with pytest.raises(sa.exc.DBAPIError, match="encoding"):
        db.create_database(clone, template=sql_ascii_database.rsplit("/", 1)[-1])
