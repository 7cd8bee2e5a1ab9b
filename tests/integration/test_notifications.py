"""Messages to customers and staff: queued with the state change, sent by the notification
sender beside the relay, on the real database and broker (and a real relay process)."""
import collections
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import eventlet
import pytest
import sqlalchemy as sa

from shared.notifications.port import LogNotifier
from shared.notifications.queue import CustomerMessage, StaffMessage
from shared.notifications.sender import NotificationSender
from shared.observability.logs import JsonFormatter
from shared.persistence import db
from shared.persistence.unit_of_work import Store
from shared.testing.fixtures import wait_until
from shared.testing.notifiers import RecordingNotifier
from shared.testing.samples import complaint_event

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

ACKNOWLEDGEMENT = "王女士，您好！您的投诉 SH001-20261122-0007 已收到，我们将在1小时内回复。"
ACKNOWLEDGEMENT_LOGGED = "王**，您好！您的投诉 SH001-20261122-0007 已收到，我们将在1小时内回复。"


def message(n: int = 0, **changes) -> CustomerMessage:
    fields = {"channel": "sms", "recipient": f"1381234{n:04d}", "language": "zh", "body": ACKNOWLEDGEMENT,
              "subject_id": f"complaint-{n}"}
    return CustomerMessage(**{**fields, **changes})


@pytest.fixture
def url(database_factory) -> str:
    return database_factory("intake")


@pytest.fixture
def store(url):
    engine = db.make_engine(url, 3)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def make_sender(url):
    """A sender the test drives round by round with send_due()."""
    engines, senders = [], []

    def make(notifier, **kwargs) -> NotificationSender:
        kwargs.setdefault("batch", 20)
        engine = db.make_engine(url, kwargs["batch"] + 1)
        engines.append(engine)
        senders.append(NotificationSender(engine, notifier, **kwargs))
        return senders[-1]

    yield make
    for sender in senders:
        sender.close()
    for engine in engines:
        engine.dispose()


def queue(store, *messages) -> list[int]:
    with store.unit_of_work() as uow:
        for m in messages:
            uow.notify(m)
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id FROM notifications ORDER BY id")).scalars())


def rows(store) -> dict[int, sa.Row]:
    with store.engine.connect() as conn:
        return {r.id: r for r in conn.execute(sa.text("SELECT * FROM notifications ORDER BY id"))}


def make_due(store, *ids) -> None:
    """What time passing does: the retry (or the lease) falls due."""
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET next_attempt_at = now() WHERE id = ANY(:ids)"),
                     {"ids": list(ids)})


def failing(error=ConnectionError("the SMS gateway is down")):
    def behaviour(m):
        raise error
    return behaviour


def test_twenty_slow_sends_do_not_delay_an_event(store, url, start_relay, start_sender, bus_listener):
    listener = bus_listener("intake.events", "complaint_registered")
    gateway = RecordingNotifier()
    gateway.hold()  # every send blocks until the test releases it
    queue(store, *(message(n) for n in range(20)))
    start_relay(url)
    start_sender(url, gateway, batch=20, timeout_s=60, lease_s=120)
    wait_until(lambda: len(gateway.started) == 20, "20 sends in flight")

    event = complaint_event()
    with store.unit_of_work() as uow:
        uow.publish(event)
    listener.wait_for(lambda m: m["body"]["event_id"] == event["event_id"], timeout=10)
    assert gateway.sent == []  # the event went out while all 20 sends were still held

    gateway.release()
    wait_until(lambda: all(r.sent_at for r in rows(store).values()), "the 20 messages to be recorded sent")


def test_a_killed_relay_process_sends_again_at_most_the_rows_in_flight_and_only_after_their_lease(
        store, url, amqp_uri, tmp_path):
    ids = queue(store, *(message(n) for n in range(20)))
    sends = tmp_path / "sends.txt"
    sends.touch()
    env = {**os.environ, "AMQP_URI": amqp_uri, "INTAKE_DATABASE_URL": url, "CLOSELOOP_RUN_DIR": str(tmp_path),
           "CLOSELOOP_NOTIFIER": "shared.testing.notifiers:FileNotifier",
           "CLOSELOOP_TEST_NOTIFY_FILE": str(sends), "CLOSELOOP_TEST_NOTIFY_SECONDS": "0.5",
           "CLOSELOOP_NOTIFY_TIMEOUT_SECONDS": "2", "CLOSELOOP_NOTIFY_LEASE_SECONDS": "3",
           "CLOSELOOP_NOTIFY_CONCURRENCY": "8"}

    def relay_process(name: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "w") as log_file:
            return subprocess.Popen([sys.executable, "-m", "shared.cli", "relay", "intake"], cwd=ROOT, env=env,
                                    stdout=log_file, stderr=subprocess.STDOUT)

    def sent_ids() -> list[int]:
        return [int(line.split()[0]) for line in sends.read_text().splitlines()]

    def log_of(name: str) -> str:
        return (tmp_path / f"{name}.log").read_text()[-3000:]

    first = relay_process("first")
    try:
        # 8 sends at a time, half a second each: once the second wave began, kill mid-batch.
        wait_until(lambda: len(sent_ids()) >= 10 or first.poll() is not None, "the second wave of sends",
                   timeout=30)
        assert first.poll() is None, log_of("first")
        first.kill()
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    after_kill = rows(store)
    sent_before = {i for i, r in after_kill.items() if r.sent_at is not None}
    in_flight = {i for i, r in after_kill.items() if r.sent_at is None and r.attempts == 1}
    lease_ends = {i: after_kill[i].next_attempt_at for i in in_flight}
    assert sent_before and in_flight, "the kill should land mid-batch"
    assert len(in_flight) <= 8  # CLOSELOOP_NOTIFY_CONCURRENCY: what it had claimed

    second = relay_process("second")
    try:
        wait_until(lambda: all(r.sent_at for r in rows(store).values()) or second.poll() is not None,
                   "every message to be sent after the restart", timeout=30)
        assert second.poll() is None, log_of("second")
        second.send_signal(signal.SIGTERM)  # stops the relay and the sender
        assert second.wait(timeout=20) == 0, log_of("second")
    finally:
        if second.poll() is None:
            second.kill()
            second.wait(timeout=10)

    times = collections.Counter(sent_ids())
    assert set(times) == set(ids)
    sent_twice = {i for i, n in times.items() if n > 1}
    assert max(times.values()) <= 2
    assert sent_twice <= in_flight  # never what was sent and recorded, never the whole batch
    final = rows(store)
    for i in in_flight:  # claimed again only once the dead process's lease ran out
        assert final[i].sent_at >= lease_ends[i] and final[i].attempts == 2


def test_back_off_counts_from_the_last_attempt_so_old_failures_are_not_retried_all_at_once(store, make_sender):
    ids = queue(store, *(message(n) for n in range(20)))
    # Queued an hour ago, failed 5 times, then the sender was down for 50 minutes.
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE notifications SET created_at = now() - interval '1 hour', attempts = 5, "
                             "next_attempt_at = now() - interval '50 minutes'"))
    sender = make_sender(RecordingNotifier(failing()), batch=20)

    assert sender.send_due() == 20  # all were due: they waited through the downtime
    assert sender.send_due() == 0   # and having failed again, none is due again at once
    with store.engine.connect() as conn:
        retries = conn.execute(sa.text(
            "SELECT attempts, sent_at, failed_at, last_error, EXTRACT(EPOCH FROM next_attempt_at - now()) AS wait, "
            "next_attempt_at FROM notifications ORDER BY id")).all()
    assert len(retries) == len(ids)
    assert all(r.attempts == 6 and r.sent_at is None and r.failed_at is None for r in retries)
    assert all(r.last_error == "ConnectionError: the SMS gateway is down" for r in retries)
    # The 6th failure waits about 64 s from now (not from created_at, an hour ago), with jitter.
    assert all(50 < r.wait < 75 for r in retries)
    assert len({r.next_attempt_at for r in retries}) > 1


def test_a_send_past_the_timeout_is_recorded_failed_and_retried_while_the_others_go_out(store, url, start_sender):
    slow_in_flight = threading.Event()
    during_slow = []

    def behaviour(m):
        if m.subject_id == "slow" and m.attempts == 1:
            slow_in_flight.set()
            try:
                threading.Event().wait(60)  # a gateway call that never answers (in time)
            finally:
                slow_in_flight.clear()
        elif m.subject_id != "slow":
            slow_in_flight.wait(5)
            during_slow.append(slow_in_flight.is_set())

    gateway = RecordingNotifier(behaviour)
    ids = queue(store, message(0, subject_id="slow"), *(message(n) for n in range(1, 6)))
    start_sender(url, gateway, timeout_s=0.5, lease_s=5)

    wait_until(lambda: rows(store)[ids[0]].sent_at is not None, "the slow message to go out on its retry")
    final = rows(store)
    assert (final[ids[0]].attempts, final[ids[0]].last_error) == (2, "no answer in 0.5s")
    assert all(final[i].sent_at is not None and final[i].attempts == 1 for i in ids[1:])
    assert during_slow == [True] * 5  # the others were sent while the slow call hung


def test_the_sender_claims_again_as_soon_as_a_send_ends_not_after_its_idle_pause(store, url, start_sender):
    ids = queue(store, *(message(n) for n in range(5)))
    gateway = RecordingNotifier()
    # One slot and a minute's idle pause: only a send ending may wake the loop to claim the next.
    start_sender(url, gateway, batch=1, idle_wait=60)
    wait_until(lambda: len(gateway.sent) == 5, "the five messages to go out one after another", timeout=20)
    assert [s["id"] for s in gateway.sent] == ids


@pytest.fixture
def outcomes(store):
    with store.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE outcomes (notification_id bigint, delivered boolean, error text, "
                             "sent_at_seen timestamptz, failed_at_seen timestamptz)"))

    def hook(conn, row, delivered, error):
        seen = conn.execute(sa.text("SELECT sent_at, failed_at FROM notifications WHERE id = :id"),
                            {"id": row.id}).one()
        conn.execute(sa.text("INSERT INTO outcomes VALUES (:id, :delivered, :error, :sent, :failed)"),
                     {"id": row.id, "delivered": delivered, "error": error, "sent": seen.sent_at,
                      "failed": seen.failed_at})

    def recorded() -> list[sa.Row]:
        with store.engine.connect() as conn:
            return conn.execute(sa.text("SELECT * FROM outcomes ORDER BY notification_id")).all()

    hook.recorded = recorded
    return hook


def test_the_outcome_hook_runs_once_per_final_outcome_in_the_recording_transaction(store, make_sender, outcomes):
    ok, bad, own = queue(store, message(0, request_event_id="5b0e7b43-3f55-4d6e-9a55-8f1b1f2a0c11"),
                         message(1, subject_id="unreachable", request_event_id="6c1f8c54-4066-4e7f-8b66-9a2c2b3b1d22"),
                         message(2))  # the service's own message: nobody waits for its outcome

    def behaviour(m):
        if m.subject_id == "unreachable":
            raise ConnectionError("the SMS gateway is down")

    sender = make_sender(RecordingNotifier(behaviour), max_attempts=2, on_outcome=outcomes)
    assert sender.send_due() == 3
    # Delivered: final. Failed once of two: not final, no call.
    [delivered] = outcomes.recorded()
    assert (delivered.notification_id, delivered.delivered, delivered.error) == (ok, True, None)
    assert delivered.sent_at_seen is not None  # the hook ran in the transaction that marked it sent

    make_due(store, bad)
    assert sender.send_due() == 1
    assert sender.send_due() == 0  # a final outcome is never claimed again
    assert [(r.notification_id, r.delivered, r.error) for r in outcomes.recorded()] == \
        [(ok, True, None), (bad, False, "ConnectionError: the SMS gateway is down")]
    given_up = outcomes.recorded()[1]
    assert given_up.failed_at_seen is not None and given_up.sent_at_seen is None
    assert rows(store)[bad].failed_at is not None


def test_a_failing_outcome_hook_rolls_the_outcome_back_and_the_row_stays_claimable(store, make_sender, outcomes):
    calls = []

    def hook(conn, row, delivered, error):
        calls.append(row.id)
        outcomes(conn, row, delivered, error)
        if len(calls) == 1:
            raise RuntimeError("the outbox insert failed")

    gateway = RecordingNotifier()
    [only] = queue(store, message(0, request_event_id="7d2a9d65-5177-4f80-9c77-ab3d3c4c2e33"))
    sender = make_sender(gateway, on_outcome=hook)
    assert sender.send_due() == 1
    row = rows(store)[only]
    assert (row.sent_at, row.failed_at, row.attempts) == (None, None, 1)
    assert outcomes.recorded() == []  # the hook's own write went with the rollback
    assert sender.send_due() == 0     # held until its lease ends

    make_due(store, only)  # the lease ran out
    assert sender.send_due() == 1
    assert rows(store)[only].sent_at is not None
    assert [(r.notification_id, r.delivered) for r in outcomes.recorded()] == [(only, True)]
    assert len(gateway.sent) == 2  # at least once: the customer may get it twice, never zero times


def rendered(caplog) -> str:
    """The log lines as the JSON formatter writes them, extra fields included."""
    formatter = JsonFormatter("intake-relay")
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_logs_show_masked_names_and_numbers_only(store, make_sender, caplog):
    masked, withheld = queue(store, message(0, recipient="13812346138", log_text=ACKNOWLEDGEMENT_LOGGED),
                             message(1, recipient="13812346138"))
    logger = LogNotifier()
    with caplog.at_level(logging.INFO, logger="closeloop"):
        assert make_sender(logger).send_due() == 2
    lines = rendered(caplog)
    assert "王女士" not in lines and "13812346138" not in lines
    assert "138****6138" in lines and ACKNOWLEDGEMENT_LOGGED in lines
    assert f"[text withheld, {len(ACKNOWLEDGEMENT)} chars]" in lines
    assert {r["text"] for r in logger.sent} == {ACKNOWLEDGEMENT_LOGGED, f"[text withheld, {len(ACKNOWLEDGEMENT)} chars]"}
    assert all(r.sent_at for r in rows(store).values())

    # A gateway that echoes the number and the text in its error: the sender logs only the
    # kind of error; last_error keeps its words with the number masked.
    [*_, echoed] = queue(store, message(2, recipient="13812346138"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="closeloop"):
        make_sender(RecordingNotifier(failing(ValueError("rejected 13812346138: 王女士，您好")))).send_due()
    lines = rendered(caplog)
    assert "13812346138" not in lines and "王女士" not in lines
    assert "attempt 1 failed (ValueError (see last_error))" in lines
    assert rows(store)[echoed].last_error == "ValueError: rejected 138****6138: 王女士，您好"


def test_staff_messages_address_a_role_and_scope_and_go_through_the_adapter(store, make_sender, caplog):
    queue(store, StaffMessage(role="store_manager", subject_id="case-1", text="案件 SH001-20261122-0007 等待分派",
                              branch="SH001"),
          StaffMessage(role="regional_manager", subject_id="case-1", text="案件超时，已升级", region="east"),
          StaffMessage(role="hq_admin", subject_id="case-2", text="医疗费用待审批"))
    gateway = RecordingNotifier()
    assert make_sender(gateway).send_due() == 3
    assert sorted((s["audience"], s["channel"], s["recipient"], s["body"]) for s in gateway.sent) == [
        ("staff", "staff", "role:hq_admin", "医疗费用待审批"),
        ("staff", "staff", "role:regional_manager;region:east", "案件超时，已升级"),
        ("staff", "staff", "role:store_manager;branch:SH001", "案件 SH001-20261122-0007 等待分派"),
    ]

    # The log adapter shows a staff address as it is.
    queue(store, StaffMessage(role="store_manager", subject_id="case-3", text="审批等待中", branch="SH002"))
    with caplog.at_level(logging.INFO, logger="closeloop"):
        assert make_sender(LogNotifier()).send_due() == 1
    assert "role:store_manager;branch:SH002" in rendered(caplog)

    with pytest.raises(ValueError, match="unknown role 'janitor'"):
        StaffMessage(role="janitor", subject_id="case-1", text="...", branch="SH001")
    with pytest.raises(ValueError, match="not both"):
        StaffMessage(role="store_manager", subject_id="case-1", text="...", branch="SH001", region="east")


def test_the_sender_waits_out_a_database_outage_logging_it_once(store, start_sender, tcp_proxy, url, caplog):
    proxy, proxied_url = tcp_proxy(url, 5432)
    gateway = RecordingNotifier()
    with caplog.at_level(logging.INFO, logger="closeloop.notify"):
        sender = start_sender(proxied_url, gateway)
        wait_until(lambda: sender.database_ok is True, "a first round")
        proxy.cut()
        [only] = queue(store, message(0))  # written directly, not through the cut proxy
        wait_until(lambda: sender.database_errors >= 3, "the sender to try a few times during the outage")
        assert sender.database_ok is False and gateway.sent == []
        proxy.restore()
        wait_until(lambda: rows(store)[only].sent_at is not None, "the message to go out after the outage")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unavailable" in m for m in messages) == 1
    assert sum("database reachable again" in m for m in messages) == 1
    assert [s["id"] for s in gateway.sent] == [only]


def test_messages_done_a_month_ago_are_deleted_with_their_bodies(store):
    with store.unit_of_work() as uow:
        for n in range(3):
            uow.notify(CustomerMessage(channel="sms", recipient="13812346138", language="zh",
                                       body=f"王女士，您好 {n}", subject_id=f"c-{n}"))
    with store.engine.begin() as conn:  # one sent long ago, one given up long ago, one waiting
        conn.execute(sa.text("UPDATE notifications SET sent_at = now() - interval '31 days' WHERE subject_id = 'c-0'"))
        conn.execute(sa.text("UPDATE notifications SET failed_at = now() - interval '40 days' "
                             "WHERE subject_id = 'c-1'"))
    from shared.calendar.policy import Retention
    from shared.persistence.retention import Purger

    done = {d.table: d.deleted for d in Purger(store.engine, Retention(), service="intake").purge_once()}
    assert done["notifications"] == 2  # the policy's retention.notifications: 30 days
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT subject_id FROM notifications")).scalars().all() == ["c-2"]


class BlockingGateway:
    """A gateway client that blocks the whole thread (as a C library would), not a greenlet."""

    blocking = True

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.calls = 0

    def send(self, message):
        import eventlet.patcher

        self.calls += 1
        eventlet.patcher.original("time").sleep(self.seconds)


def test_an_adapter_that_blocks_its_thread_still_times_out_and_leaves_the_process_running(store):
    with store.unit_of_work() as uow:
        uow.notify(CustomerMessage(channel="sms", recipient="13812346138", language="zh", body="结果",
                                   subject_id="c-block", log_text="结果"))
    gateway = BlockingGateway(3.0)
    sender = NotificationSender(store.engine, gateway, service="intake", timeout_s=0.5, lease_s=5)
    ticks = []
    ticker = eventlet.spawn(lambda: [ticks.append(1) or eventlet.sleep(0.05) for _ in range(20)])
    sender.send_due()  # returns once the row is recorded: after the timeout, not the 3 s block
    ticker.wait()
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT sent_at, last_error FROM notifications WHERE subject_id = 'c-block'")).one()
    assert row.sent_at is None and "no answer in 0.5s" in row.last_error
    assert len(ticks) == 20  # other greenlets (the event relay beside it) kept running meanwhile
