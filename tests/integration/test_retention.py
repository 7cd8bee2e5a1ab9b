"""Idempotency keys and inbox rows older than the policy's retention are deleted, in batches
of short transactions found through an index; newer ones stay. `closeloop purge` runs one
round, and `closeloop relay` runs it on its own."""
import os
import signal
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from shared.persistence import db
from shared.persistence.retention import SHARED, purge_older
from shared.testing.fixtures import wait_until

pytestmark = pytest.mark.integration
KEYS, INBOX, NOTIFICATIONS = SHARED
ROOT = Path(__file__).resolve().parents[2]


def fill(url: str, keys: dict[int, int], events: dict[int, int]) -> None:
    """{age in days: how many rows} of idempotency keys and of inbox rows, back-dated."""
    engine = db.make_engine(url, 1)
    with engine.begin() as conn:
        for age, count in keys.items():
            conn.execute(sa.text(
                "INSERT INTO idempotency_keys (principal, key, request_hash, status, response, created_at) "
                "SELECT '前台|front_desk', :age || '-' || n, 'h', 201, '{}', now() - make_interval(days => :age) "
                "FROM generate_series(1, :count) n"), {"age": age, "count": count})
        for age, count in events.items():
            conn.execute(sa.text(
                "INSERT INTO inbox (handler, event_id, handled_at) "
                "SELECT 'intake.case_status', gen_random_uuid(), now() - make_interval(days => :age) "
                "FROM generate_series(1, :count) n"), {"age": age, "count": count})
    engine.dispose()


def ages(url: str) -> tuple[dict, dict]:
    engine = db.make_engine(url, 1)
    with engine.connect() as conn:
        keys = dict(conn.execute(sa.text(
            "SELECT round(extract(epoch FROM now() - created_at) / 86400)::int, count(*) FROM idempotency_keys "
            "GROUP BY 1")).all())
        events = dict(conn.execute(sa.text(
            "SELECT round(extract(epoch FROM now() - handled_at) / 86400)::int, count(*) FROM inbox "
            "GROUP BY 1")).all())
    engine.dispose()
    return keys, events


def test_rows_older_than_the_retention_go_in_batches_and_newer_ones_stay(database_factory):
    url = database_factory("intake")
    fill(url, keys={10: 250, 6: 3, 0: 2}, events={40: 120, 29: 4})
    engine = db.make_engine(url, 1)
    keys = purge_older(engine, KEYS, timedelta(days=7), batch=100)
    events = purge_older(engine, INBOX, timedelta(days=30), batch=100)
    again = purge_older(engine, KEYS, timedelta(days=7), batch=100)
    engine.dispose()
    assert (keys.deleted, keys.batch_sizes) == (250, [100, 100, 50])
    assert (events.deleted, events.batch_sizes) == (120, [100, 20])
    assert (again.deleted, again.batches) == (0, 1)
    assert ages(url) == ({6: 3, 0: 2}, {29: 4})


def test_the_purge_finds_old_rows_through_an_index(database_factory):
    url = database_factory("intake")
    fill(url, keys={10: 2000, 0: 2000}, events={40: 2000, 0: 2000})
    engine = db.make_engine(url, 1)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO notifications (channel, recipient, language, body, subject_id, sent_at) "
            "SELECT 'sms', '13812346138', 'zh', 'x', 'c-' || n, "
            "CASE WHEN n % 2 = 0 THEN now() - interval '40 days' END FROM generate_series(1, 4000) n"))
        conn.execute(sa.text("ANALYZE idempotency_keys; ANALYZE inbox; ANALYZE notifications"))
        plans = [" ".join(conn.execute(sa.text(
            f"EXPLAIN SELECT ctid FROM {table} WHERE {column} < now() - interval '7 days' "
            f"ORDER BY {column} LIMIT 100 FOR UPDATE SKIP LOCKED")).scalars())
            for table, column in (("idempotency_keys", "created_at"), ("inbox", "handled_at"),
                                  ("notifications", NOTIFICATIONS.time))]
    engine.dispose()
    assert "Index Scan using ix_idempotency_keys_created_at" in plans[0], plans[0]
    assert "Index Scan using ix_inbox_handled_at" in plans[1], plans[1]
    assert "Index Scan using ix_notifications_done_at" in plans[2], plans[2]


def test_lapsed_message_limits_go_and_current_ones_stay(database_factory):
    """Intake's own purge (models.PURGES): a limit whose time has passed means no limit."""
    from services.intake.models import PURGES

    url = database_factory("intake")
    engine = db.make_engine(url, 1)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO message_limits (key, allowed_from) SELECT 'lapsed:' || n, "
                             "now() - make_interval(secs => n) FROM generate_series(1, 25) n"))
        conn.execute(sa.text("INSERT INTO message_limits (key, allowed_from) VALUES ('current', now() + '1 hour')"))
    [limits] = PURGES
    done = purge_older(engine, limits, limits.older_than(None), batch=10)
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT key FROM message_limits")).scalars().all()
    engine.dispose()
    assert (done.deleted, done.batch_sizes, left) == (25, [10, 10, 5], ["current"])


def closeloop_env(url: str, amqp_uri: str, policy: Path) -> dict:
    return {**os.environ, "INTAKE_DATABASE_URL": url, "AMQP_URI": amqp_uri, "CLOSELOOP_DEV_KEYS": "1",
            "CLOSELOOP_POLICY_FILE": str(policy)}


@pytest.fixture
def short_retention(tmp_path) -> Path:
    from shared.calendar.policy import DEFAULT_POLICY_PATH

    text = DEFAULT_POLICY_PATH.read_text(encoding="utf-8")
    path = tmp_path / "policy.yaml"
    path.write_text(text.replace("idempotency_keys: P7D", "idempotency_keys: P2D")
                    .replace("inbox: P30D", "inbox: P5D"), encoding="utf-8")
    return path


def test_closeloop_purge_runs_one_round_with_the_policys_retention(database_factory, amqp_uri, short_retention):
    url = database_factory("intake")
    fill(url, keys={3: 30, 1: 2}, events={6: 25, 4: 1})
    done = subprocess.run([sys.executable, "-m", "shared.cli", "purge", "intake", "--batch-size", "10"], cwd=ROOT,
                          env=closeloop_env(url, amqp_uri, short_retention), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["intake: deleted 30 row(s) of idempotency_keys in 4 batch(es)",
                                        "intake: deleted 25 row(s) of inbox in 3 batch(es)",
                                        "intake: deleted 0 row(s) of notifications in 1 batch(es)",
                                        "intake: deleted 0 row(s) of message_limits in 1 batch(es)"]
    assert ages(url) == ({1: 2}, {4: 1})


def test_closeloop_relay_purges_on_its_own_and_stops_on_sigterm(database_factory, amqp_uri, short_retention):
    url = database_factory("intake")
    fill(url, keys={3: 30, 1: 2}, events={6: 25, 4: 1})
    relay = subprocess.Popen([sys.executable, "-m", "shared.cli", "relay", "intake"], cwd=ROOT,
                             env=closeloop_env(url, amqp_uri, short_retention),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ages(url) == ({1: 2}, {4: 1}) or relay.poll() is not None,
                   "the relay to purge old rows", timeout=60, interval=0.2)
        assert relay.poll() is None, relay.stderr.read()
        assert ages(url) == ({1: 2}, {4: 1})
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=30)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait()
    log = relay.stderr.read()
    assert relay.returncode == 0, log
    assert "deleted 30 row(s) of idempotency_keys in 1 batch(es)" in log


@pytest.mark.parametrize("command", ["relay", "serve"])
def test_a_relay_or_service_with_a_nonsense_retention_does_not_start(database_factory, amqp_uri, tmp_path, command):
    from shared.calendar.policy import DEFAULT_POLICY_PATH

    policy = tmp_path / "policy.yaml"
    policy.write_text(DEFAULT_POLICY_PATH.read_text(encoding="utf-8").replace("inbox: P30D", "inbox: PT0H"),
                      encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "shared.cli", command, "intake"], cwd=ROOT,
                          env=closeloop_env(database_factory("intake"), amqp_uri, policy), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert "retention.inbox: 'PT0H' is not a positive duration" in done.stderr


def test_a_purge_does_not_touch_a_service_without_the_tables(infra):
    """A service whose database has no idempotency keys or inbox (yet) is skipped."""
    from shared.calendar.policy import Retention
    from shared.persistence.retention import Purger
    from shared.runtime.config import with_database
    from shared.testing.fixtures import RUN_ID, drop_at_exit

    url = with_database(infra.database_url, f"cltest_{RUN_ID}_empty_{uuid.uuid4().hex[:8]}")
    drop_at_exit(url)
    db.create_database(url)
    engine = db.make_engine(url, 1)
    assert Purger(engine, Retention(), service="empty").purge_once() == []
    engine.dispose()
