"""Safe consuming on the real broker and database, proven with a small probe service:
duplicates, a handler failing twice then succeeding, one failing for good, garbage bytes,
a wrong schema, and a replay from the dead-letter queue."""
import json
import uuid

import eventlet
import eventlet.event
import kombu
import pytest
import sqlalchemy as sa
from nameko.events import event_handler
from nameko.runners import ServiceRunner

from shared.messaging import topology, dead_letters, consumer
from shared.persistence import db
from shared.messaging import inbox
from shared.observability import metrics
from shared.runtime.config import with_database
from shared.messaging.consumer import handle_event
from shared.messaging.relay import Publisher
from shared.persistence.unit_of_work import Database
from shared.testing.fixtures import RUN_ID, drop_at_exit, wait_until
from shared.testing.samples import complaint_event

pytestmark = pytest.mark.integration
DELAYS_MS = (100, 300)  # three attempts in all, quickly

probe_metadata = sa.MetaData()
inbox.add_tables(probe_metadata)
SEEN = sa.Table("seen", probe_metadata, sa.Column("event_id", sa.Text, primary_key=True),
                sa.Column("description", sa.Text))
TRIES = sa.Table("tries", probe_metadata, sa.Column("event_id", sa.Text, primary_key=True),
                 sa.Column("count", sa.Integer, nullable=False))
BROKEN = sa.Table("broken", probe_metadata, sa.Column("word", sa.Text, primary_key=True))


class ProbeService:
    """Fails as its input says: 'fail-twice' fails the first two tries; a description
    listed in `broken` fails every time."""

    name = "probe"
    db = Database()

    @handle_event("intake", "complaint_registered")
    def record(self, event):
        description = event["payload"]["description"]
        with self.db.engine.begin() as conn:  # counted outside the handler's transaction
            tries = conn.execute(sa.text(
                "INSERT INTO tries VALUES (:e, 1) ON CONFLICT (event_id) DO UPDATE SET count = tries.count + 1 "
                "RETURNING count"), {"e": event["event_id"]}).scalar_one()
            broken = conn.execute(sa.select(BROKEN).where(BROKEN.c.word == description)).first()
        if broken or (description == "fail-twice" and tries <= 2):
            raise RuntimeError(f"probe refuses {description!r} (try {tries})")
        with self.db.unit_of_work() as uow:
            uow.execute(SEEN.insert().values(event_id=event["event_id"], description=description))


@pytest.fixture
def start_probe(infra, amqp_uri, tcp_proxy):
    """A probe service on a fresh database: `start_probe()`, or `start_probe(through_proxy=True)`
    for one whose database connection a test can cut."""
    runners, engines = [], []

    def start(service_class=None, through_proxy: bool = False, **config) -> "Probe":
        service_class = service_class or ProbeService
        url = with_database(infra.database_url, f"cltest_{RUN_ID}_probe_{uuid.uuid4().hex[:8]}")
        db.create_database(url)
        drop_at_exit(url)
        engine = db.make_engine(url, 2)
        engines.append(engine)
        probe_metadata.create_all(engine)
        handlers = consumer.handlers_of(service_class, DELAYS_MS)
        topology.declare(amqp_uri, handlers)
        with kombu.Connection(amqp_uri) as conn:  # a clean slate: queues outlive a test
            for handler in handlers:
                for name in (handler.queue_name, handler.dlq_name, *map(handler.retry_name, handler.delays_ms)):
                    kombu.Queue(name)(conn.channel()).purge()
        proxy, service_url = tcp_proxy(url, 5432) if through_proxy else (None, url)
        runner = ServiceRunner({"AMQP_URI": amqp_uri, "DATABASE_URL": service_url, "EVENT_RETRY_DELAYS_MS": DELAYS_MS,
                                "max_workers": 10, "EVENT_PAUSE_MAX_SECONDS": 1, **config})
        metrics._registries.pop("probe", None)  # counts of this test only
        runner.add_service(service_class)
        runner.start()
        runners.append(runner)
        return Probe(engine, handlers[0], amqp_uri, proxy, handlers)

    yield start
    for runner in runners:
        runner.kill()
    for engine in engines:
        engine.dispose()


@pytest.fixture
def probe(start_probe):
    return start_probe()


class Probe:
    def __init__(self, engine, topology, amqp_uri, proxy=None, handlers=()):
        self.engine, self.topology, self.amqp_uri, self.proxy = engine, topology, amqp_uri, proxy
        self.handlers = list(handlers)
        self.publisher = Publisher(amqp_uri)

    def publish(self, *events):
        self.publisher.publish_batch([("intake.events", e["type"], json.dumps(e), e["event_id"]) for e in events])

    def publish_raw(self, body: bytes, content_type="application/json", headers=None,
                    routing_key="complaint_registered"):
        with kombu.Connection(self.amqp_uri) as conn:
            kombu.Producer(conn.channel()).publish(body, exchange="intake.events", routing_key=routing_key,
                                                   content_type=content_type, content_encoding="binary",
                                                   headers=headers or {})

    def rows(self, table):
        with self.engine.connect() as conn:
            return conn.execute(sa.select(table)).all()

    def seen(self, event_id) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(SEEN).where(SEEN.c.event_id == event_id)).first() is not None

    def tries(self, event_id) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(TRIES.c.count).where(TRIES.c.event_id == event_id)).scalar() or 0

    def parked(self):
        return dead_letters.list_parked(self.amqp_uri, [self.topology.dlq_name])

    def replay(self, **options):
        return dead_letters.replay(self.amqp_uri, self.topology.dlq_name,
                                   routes=consumer.replay_routes(self.handlers), **options)

    def count(self, outcome) -> float:
        text = metrics.registry("probe").render()
        line = f'closeloop_events_total{{handler="probe.record",outcome="{outcome}"}} '
        return next((float(l.split()[-1]) for l in text.splitlines() if l.startswith(line)), 0.0)


def test_a_duplicated_delivery_has_exactly_one_effect(probe):
    event = complaint_event("毛巾很脏")
    probe.publish(event, event, event)
    wait_until(lambda: probe.count("handled") + probe.count("duplicate") == 3, "three deliveries to be handled")
    assert probe.count("handled") == 1 and probe.count("duplicate") == 2
    assert [r.event_id for r in probe.rows(SEEN)] == [event["event_id"]]
    assert [(r.handler, r.event_id) for r in probe.rows(inbox.INBOX)] == [("probe.record", event["event_id"])]


def test_a_handler_failing_twice_then_succeeding_is_retried_with_delays(probe):
    event = complaint_event("fail-twice")
    probe.publish(event)
    wait_until(lambda: probe.seen(event["event_id"]), "the third attempt to succeed")
    assert probe.tries(event["event_id"]) == 3
    assert probe.count("retried") == 2 and probe.parked() == []


def test_a_handler_failing_for_good_is_parked_and_other_messages_keep_flowing(probe):
    with probe.engine.begin() as conn:
        conn.execute(BROKEN.insert().values(word="poison"))
    poison, fine = complaint_event("poison"), complaint_event("fine")
    probe.publish(poison, fine)
    wait_until(lambda: probe.seen(fine["event_id"]), "the good message behind the poison one")
    wait_until(lambda: probe.parked(), "the poison message to be parked")
    [parked] = probe.parked()
    assert (parked.event_id, parked.reason, parked.attempts) == (poison["event_id"], "failed", 3)
    assert "probe refuses 'poison' (try 3)" in parked.error and parked.event_type == "complaint_registered"
    assert probe.tries(poison["event_id"]) == 3  # bounded: no hot loop
    assert probe.parked() != []  # listing does not consume

    # The operator mends the cause and replays it: handled once, the queue empty.
    with probe.engine.begin() as conn:
        conn.execute(BROKEN.delete())
    assert len(probe.replay(event_ids={poison["event_id"]}).moved) == 1
    wait_until(lambda: probe.seen(poison["event_id"]), "the replayed message to be handled")
    assert probe.parked() == []


@pytest.mark.parametrize("body, content_type, why", [
    (b"\xff\x00 garbage", "application/json", "not JSON"),
    (b"plain words", "text/plain", "not JSON"),
    (b'{"event_id": "x"}', "application/json", "fails its schema"),
    (b"[1, 2, 3]", "application/json", "fails its schema"),
    (b"[" * 100_000, "application/json", "not JSON"),  # too deep for the parser
])
def test_a_malformed_message_is_parked_at_once(probe, body, content_type, why):
    probe.publish_raw(body, content_type)
    after = complaint_event("after the garbage")
    probe.publish(after)
    wait_until(lambda: probe.seen(after["event_id"]), "the next message to be handled")
    [parked] = wait_until(lambda: probe.parked(), "the malformed message to be parked")
    assert (parked.reason, parked.attempts) == ("malformed", 1) and why in parked.error
    assert probe.tries(after["event_id"]) == 1 and len(probe.rows(TRIES)) == 1  # the garbage reached no handler


def test_a_wrong_payload_schema_is_parked_without_reaching_the_handler(probe):
    event = complaint_event("x")
    event["payload"]["priority"] = "whenever"
    probe.publish(event)
    [parked] = wait_until(lambda: probe.parked(), "the invalid event to be parked")
    assert parked.event_id == event["event_id"] and "priority" in parked.error
    assert probe.tries(event["event_id"]) == 0


class PlainNamekoService:
    name = "probe"

    @event_handler("intake", "complaint_registered")
    def record(self, payload):
        pass


def test_declared_queues_match_what_nameko_declares(amqp_uri, probe):
    # After `bus declare` (in the probe fixture) a stock nameko handler on the same queue
    # starts: a mismatch in arguments would fail with PRECONDITION_FAILED.
    runner = ServiceRunner({"AMQP_URI": amqp_uri})
    runner.add_service(PlainNamekoService)
    runner.start()
    runner.kill()
    # (nameko declared intake.events too: the unroutable policy changes no declared argument.)
    assert f"queue {probe.topology.queue_name} (+2 retry, 1 dlq)" in topology.declare(amqp_uri, [probe.topology])


def test_the_dlq_commands_list_and_replay(probe, capsys, monkeypatch):
    from shared import cli

    monkeypatch.setenv("AMQP_URI", probe.amqp_uri)
    with probe.engine.begin() as conn:
        conn.execute(BROKEN.insert().values(word="poison"))
    poison = complaint_event("poison")
    probe.publish(poison)
    wait_until(lambda: probe.parked(), "the poison message to be parked")
    queue = probe.topology.queue_name

    assert cli.main(["dlq", "list", "--queue", queue]) == 0
    listing = capsys.readouterr().out
    assert poison["event_id"] in listing and "failed" in listing and "probe refuses 'poison' (try 3)" in listing
    assert "1 parked message(s)" in listing

    assert cli.main(["dlq", "replay", "--queue", queue, "--id", str(uuid.uuid4())]) == 1  # nothing matched
    with probe.engine.begin() as conn:
        conn.execute(BROKEN.delete())
    assert cli.main(["dlq", "replay", "--queue", queue, "--all"]) == 0
    assert "replayed 1 message(s)" in capsys.readouterr().out
    wait_until(lambda: probe.seen(poison["event_id"]), "the replayed message to be handled")
    assert cli.main(["dlq", "list", "--queue", queue]) == 0 and "no parked messages" in capsys.readouterr().out


def test_metrics_show_dead_letter_depth_and_handler_outcomes(probe):
    from shared.web import health

    probe.publish_raw(b"garbage")
    wait_until(lambda: probe.parked(), "the garbage to be parked")
    def counted():  # the count follows the broker's confirm of the copy, a moment after it is visible
        text = health.metrics_text("probe", probe.engine, probe.amqp_uri, [probe.topology], ttl=0)
        return text if 'closeloop_events_total{handler="probe.record",outcome="malformed"} 1.0' in text else None

    text = wait_until(counted, "the parked message to be counted")
    assert f'closeloop_dead_letter_depth{{queue="{probe.topology.dlq_name}",service="probe"}} 1' in text


def test_an_attempt_header_we_did_not_write_does_not_stop_the_handler(probe):
    for value in ("abc", -5, 99):
        event = complaint_event(f"header {value}")
        probe.publish_raw(json.dumps(event).encode(), headers={"x-closeloop-attempt": value})
        wait_until(lambda: probe.seen(event["event_id"]), f"the event with attempt header {value!r}")


def test_a_message_is_not_acked_until_its_dead_letter_copy_has_a_queue(probe):
    with kombu.Connection(probe.amqp_uri) as conn:
        kombu.Queue(probe.topology.dlq_name)(conn.channel()).delete()  # an operator's mistake
    probe.publish_raw(b"garbage while the dead-letter queue is gone")
    wait_until(lambda: probe.count("requeued") >= 1, "the failed copy to put the message back")
    assert probe.count("malformed") == 0
    topology.declare(probe.amqp_uri, [probe.topology])  # `closeloop bus declare` mends it
    [parked] = wait_until(lambda: probe.parked(), "the garbage to be parked once the queue exists", timeout=30)
    assert parked.reason == "malformed"
    # The count follows the broker's confirm of the copy: wait for it rather than race it.
    wait_until(lambda: probe.count("malformed") == 1, "the parked message to be counted")


# --- the failure model: replay, temporary failures, versions, prefetch, unroutable events ------

def test_replay_all_ends_while_the_consumer_parks_every_message_again(probe):
    # Malformed messages come straight back to the dead-letter queue: a replay that kept
    # reading would move them for ever. It moves what was parked when it started, once.
    for n in range(30):
        probe.publish_raw(f"garbage {n}".encode())
    wait_until(lambda: len(probe.parked()) == 30, "30 malformed messages to be parked")
    report = probe.replay(include_malformed=True)
    assert len(report.moved) == 30 and report.kept == []
    wait_until(lambda: probe.count("malformed") == 60, "every replayed message to be parked again")
    assert len(probe.parked()) == 30


def test_replay_leaves_malformed_messages_parked_unless_asked(probe, capsys, monkeypatch):
    from shared import cli

    with probe.engine.begin() as conn:
        conn.execute(BROKEN.insert().values(word="poison"))
    poison = complaint_event("poison")
    probe.publish(poison)
    probe.publish_raw(b"garbage")
    wait_until(lambda: len(probe.parked()) == 2, "a failed and a malformed message to be parked")
    with probe.engine.begin() as conn:
        conn.execute(BROKEN.delete())

    monkeypatch.setenv("AMQP_URI", probe.amqp_uri)
    assert cli.main(["dlq", "replay", "--queue", probe.topology.queue_name, "--all"]) == 0
    out = capsys.readouterr().out
    assert f"moved {poison['event_id']} complaint_registered (failed) -> {probe.topology.queue_name}" in out
    assert "replayed 1 message(s)" in out and "1 malformed message(s) left parked (--include-malformed" in out
    wait_until(lambda: probe.seen(poison["event_id"]), "the replayed message to be handled")
    [left] = probe.parked()
    assert left.reason == "malformed"


def test_a_replay_to_a_missing_handler_queue_keeps_the_message_parked(probe, amqp_uri):
    with probe.engine.begin() as conn:
        conn.execute(BROKEN.insert().values(word="poison"))
    poison = complaint_event("poison")
    probe.publish(poison)
    wait_until(lambda: probe.parked(), "the poison message to be parked")
    with kombu.Connection(amqp_uri) as conn:  # e.g. an operator removed the handler's queue
        kombu.Queue(probe.topology.queue_name)(conn.channel()).delete()

    report = probe.replay()
    assert report.moved == [] and "does not exist" in report.kept[0][1]
    [still] = probe.parked()
    assert still.event_id == poison["event_id"] and still.reason == "failed"


def test_a_database_outage_longer_than_every_retry_parks_nothing(start_probe):
    probe = start_probe(through_proxy=True)
    probe.proxy.cut()
    events = [complaint_event(f"during the outage {n}") for n in range(5)]
    probe.publish(*events)
    # Each message is tried again and again (a pause of at most 1 s here) for longer than all
    # its retry delays (0.1 s + 0.3 s): none may use up an attempt or be parked.
    wait_until(lambda: probe.count("deferred") >= 15, "each event to be held back several times")
    assert probe.count("retried") == 0 and probe.parked() == []
    probe.proxy.restore()
    for event in events:
        wait_until(lambda: probe.seen(event["event_id"]), "the held-back events to be handled")
    wait_until(lambda: probe.count("handled") == 5, "the five to be counted handled")
    assert probe.parked() == []
    assert all(probe.tries(e["event_id"]) == 1 for e in events)  # the handler's own work ran once


def test_an_event_of_a_newer_version_waits_for_the_upgrade_and_is_replayed_after_it(probe, monkeypatch):
    from shared.messaging import catalogue

    event = dict(complaint_event("from a producer that rolled out first"), version=2)
    probe.publish(event)
    [parked] = wait_until(lambda: probe.parked(), "the early event to be parked")
    assert (parked.reason, parked.attempts) == ("newer_version", 3) and probe.count("retried") == 2
    assert probe.tries(event["event_id"]) == 0

    # The consumer is upgraded (here: it learns version 2), then the operator replays.
    monkeypatch.setitem(catalogue.SCHEMAS, ("complaint_registered", 2), catalogue.intake.ComplaintRegisteredV1)
    monkeypatch.setitem(catalogue.LATEST, "complaint_registered", 2)
    assert len(probe.replay(reasons={"newer_version"}).moved) == 1
    wait_until(lambda: probe.seen(event["event_id"]), "the upgraded consumer to handle it")


RELEASE = eventlet.event.Event()
ENTERED = []


class BusyProbeService:
    """Three handlers whose work blocks until the test releases it."""

    name = "probe"

    def _block(self, event):
        ENTERED.append(event["event_id"])
        RELEASE.wait()

    @handle_event("intake", "complaint_registered")
    def first(self, event):
        self._block(event)

    @handle_event("intake", "complaint_registered")
    def second(self, event):
        self._block(event)

    @handle_event("intake", "complaint_registered")
    def third(self, event):
        self._block(event)


def test_one_replica_holds_one_window_of_messages_across_all_its_handlers(start_probe, amqp_uri):
    global RELEASE
    RELEASE = eventlet.event.Event()
    ENTERED.clear()
    probe = start_probe(BusyProbeService, max_workers=4)
    probe.publish(*[complaint_event(f"busy {n}") for n in range(10)])  # 10 for each of 3 handlers
    queues = [h.queue_name for h in probe.handlers]
    try:
        wait_until(lambda: len(ENTERED) == 4, "the four workers to be busy")
        # The other 26 stay in the queues for other replicas (with a window per handler, this
        # replica would hold 12 and leave 18).
        wait_until(lambda: sum(dead_letters.queue_depths(amqp_uri, queues).values()) == 26,
                   "26 messages to wait in the queues")
    finally:
        RELEASE.send()
    wait_until(lambda: len(ENTERED) == 30, "every message to be handled once released")


class LateProbeService:
    """A handler deployed after events of its type were published."""

    name = "probe"

    @handle_event("probeland", "complaint_registered")
    def record(self, event):
        pass


def test_an_event_no_queue_takes_is_kept_counted_listed_and_replayed_once_a_handler_exists(
        infra, amqp_uri, start_probe, capsys, monkeypatch):
    from shared import cli
    from shared.web import health

    topology.declare(amqp_uri, [], sources=["probeland"])
    early = {**complaint_event("published before any consumer of its type"), "source": "probeland"}
    Publisher(amqp_uri).publish_batch([("probeland.events", "complaint_registered", json.dumps(early),
                                        early["event_id"])])  # confirmed: the broker took it
    queue = topology.unroutable_queue_name("probeland")
    [kept] = wait_until(lambda: dead_letters.list_parked(amqp_uri, [queue]), "the event to be kept")
    assert (kept.event_id, kept.event_type, kept.reason) == (early["event_id"], "complaint_registered", "unroutable")
    engine = db.make_engine(with_database(infra.database_url, "postgres"), 1)
    try:
        text = health.metrics_text("probeland", engine, amqp_uri, [], ttl=0)
    finally:
        engine.dispose()
    assert 'closeloop_unroutable_events{exchange="probeland.events"} 1' in text
    monkeypatch.setenv("AMQP_URI", amqp_uri)
    assert cli.main(["dlq", "list", "--queue", queue]) == 0
    assert early["event_id"] in capsys.readouterr().out

    probe = start_probe(LateProbeService)
    report = dead_letters.replay(amqp_uri, queue, routes=consumer.replay_routes(probe.handlers))
    assert [p.event_id for p, _ in report.moved] == [early["event_id"]]
    wait_until(lambda: probe.count("handled") == 1, "the late handler to get the kept event")
    assert dead_letters.list_parked(amqp_uri, [queue]) == []


def test_an_event_in_the_queue_of_another_type_or_source_is_malformed(probe):
    stray = dict(complaint_event("routed here by mistake"), type="feedback_registered")
    stray["payload"] = dict(stray["payload"], kind="suggestion")
    probe.publish_raw(json.dumps(stray).encode())  # routing key complaint_registered, body says feedback
    [parked] = wait_until(lambda: probe.parked(), "the stray event to be parked")
    assert parked.reason == "malformed" and "in the queue of intake complaint_registered" in parked.error
    assert probe.tries(stray["event_id"]) == 0


def test_the_dlq_listing_survives_headers_and_bodies_it_did_not_write(probe, capsys, monkeypatch):
    from shared import cli

    probe.publish_raw(b'{"event_id": ["x"], "type": {"a": 1}}')
    wait_until(lambda: probe.parked(), "the odd body to be parked")
    with kombu.Connection(probe.amqp_uri) as conn:  # and a copy with an attempts header we did not write
        kombu.Producer(conn.channel()).publish(b"{}", exchange="", routing_key=probe.topology.dlq_name,
                                               headers={"x-closeloop-attempts": "abc"}, serializer=None,
                                               content_type="application/json", content_encoding="utf-8")
    monkeypatch.setenv("AMQP_URI", probe.amqp_uri)
    wait_until(lambda: len(probe.parked()) == 2, "both to be listed")
    assert cli.main(["dlq", "list", "--queue", probe.topology.queue_name]) == 0
    assert "2 parked message(s)" in capsys.readouterr().out
    assert cli.main(["dlq", "replay", "--queue", probe.topology.queue_name, "--id", "x"]) == 1
