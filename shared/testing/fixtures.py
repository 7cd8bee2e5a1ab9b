"""pytest fixtures for every service's tests: the broker and database of this run, a
migrated database per test, services, relays and notification senders running in the
test process, a bus listener that waits for an event with a deadline, and a TCP proxy to
cut connections."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import eventlet
import kombu
import pytest
import requests
import sqlalchemy as sa

from shared.security import auth
from shared.persistence import db
from shared.calendar.clock import ManualClock
from shared.runtime.config import with_database
from shared.messaging.relay import Relay
from shared.testing import infra as infra_module

# Names of this run's vhost and databases start with the run's start time, so that a later
# run can drop what an interrupted one left behind.
RUN_ID = f"{int(time.time())}_{uuid.uuid4().hex[:6]}"
STALE_AFTER = 6 * 3600
INFRA_FIXTURES = {"infra", "amqp_uri", "database_factory", "start_service", "start_relay", "start_sender",
                  "bus_listener", "tcp_proxy"}
_state: dict = {}


def pytest_collection_finish(session):
    """Resolve the infrastructure before the first test, and stop at once without it."""
    needs = any(INFRA_FIXTURES & set(getattr(item, "fixturenames", ())) for item in session.items)
    if not needs or session.config.option.collectonly:
        return
    try:
        resolved = infra_module.resolve()
        _drop_stale_runs(resolved)
        vhost = f"closeloop-test-{RUN_ID}"
        _state["amqp_uri"] = infra_module.create_vhost(resolved, vhost)
        _state.update(infra=resolved, vhost=vhost)
        from shared.messaging import topology, consumer

        topology.declare(_state["amqp_uri"], consumer.all_handlers())  # as `closeloop bus declare` does
    except infra_module.InfraMissing as exc:
        pytest.exit(str(exc), returncode=3)


def _stale(name: str, prefix: str) -> bool:
    started = name[len(prefix):].split("_", 1)[0]
    return started.isdigit() and time.time() - int(started) > STALE_AFTER


def _drop_stale_runs(resolved) -> None:
    """Vhosts and databases of runs that started hours ago and never cleaned up (killed)."""
    import sqlalchemy as sa

    for vhost in infra_module.list_vhosts(resolved):
        if vhost.startswith("closeloop-test-") and _stale(vhost, "closeloop-test-"):
            infra_module.delete_vhost(resolved, vhost)
    engine = sa.create_engine(with_database(resolved.database_url, "postgres"), poolclass=sa.NullPool)
    with engine.connect() as conn:
        names = conn.execute(sa.text("SELECT datname FROM pg_database WHERE datname LIKE 'cltest\\_%'")).scalars()
        stale = [n for n in names if _stale(n, "cltest_")]
    engine.dispose()
    for name in stale:
        db.drop_database(with_database(resolved.database_url, name))


def pytest_sessionfinish(session, exitstatus):
    resolved = _state.get("infra")
    if resolved is None:
        return
    for url in _state.get("databases", []):
        try:
            db.drop_database(url)
        except Exception:
            pass
    try:
        infra_module.delete_vhost(resolved, _state["vhost"])
    finally:
        resolved.stop()


@pytest.fixture(scope="session")
def infra():
    if "infra" not in _state:
        pytest.exit("infrastructure was not resolved at collection", returncode=3)
    return _state["infra"]


@pytest.fixture(scope="session")
def amqp_uri(infra) -> str:
    """The AMQP URI of this run's own vhost."""
    return _state["amqp_uri"]


def drop_at_exit(database_url: str) -> None:
    """Drop this database when the test run ends."""
    _state.setdefault("databases", []).insert(0, database_url)


@pytest.fixture(scope="session")
def database_factory(infra):
    """`new("intake")` -> the URL of a fresh database with intake's schema, cloned from a
    template migrated once per run."""
    templates: dict[str, str] = {}
    created = _state.setdefault("databases", [])
    lock = threading.Lock()

    def new(service: str) -> str:
        with lock:
            if service not in templates:
                url = with_database(infra.database_url, f"cltest_{RUN_ID}_{service}_tpl")
                db.create_database(url)
                created.append(url)
                db.migrate(service, url)
                templates[service] = url
            url = with_database(infra.database_url, f"cltest_{RUN_ID}_{service}_{uuid.uuid4().hex[:8]}")
            db.create_database(url, template=urlsplit(templates[service]).path.lstrip("/"))
            created.insert(0, url)
            return url

    return new


@pytest.fixture
def token():
    """`token("front_desk", branch="SH001")` -> a signed bearer token."""
    def issue(role: str, branch: str | None = None, region: str | None = None, subject: str | None = None,
              **kwargs) -> str:
        if branch is None and region is None:
            branch = "*"
        return auth.issue_token(role=role, subject=subject or f"{role}-{uuid.uuid4().hex[:6]}",
                                branch=branch, region=region, **kwargs)
    return issue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningService:
    name: str
    base_url: str
    config: dict
    runner: object

    def url(self, path: str) -> str:
        return self.base_url + path


@pytest.fixture
def start_service(amqp_uri, database_factory, tcp_proxy):
    """Start a service in the test process: `start_service("intake", clock=ManualClock())`.
    (It asks for tcp_proxy so that proxies outlive the services connected through them.)"""
    runners = []

    def start(name: str, *, clock=None, database_url: str | None = None, amqp: str | None = None,
              **overrides) -> RunningService:
        service = run_service(name, amqp or amqp_uri, database_url or database_factory(name), clock, **overrides)
        runners.append(service.runner)
        return service

    yield start
    stop_runners(runners)


def run_service(name: str, amqp_uri: str, database_url: str, clock=None, **overrides) -> RunningService:
    """A service started in the test process (its runner: stop it with stop_runners)."""
    from nameko.runners import ServiceRunner

    from shared.runtime import config

    port = free_port()
    settings = config.service_config(name, env={}, AMQP_URI=amqp_uri, DATABASE_URL=database_url,
                                     WEB_SERVER_ADDRESS=f"127.0.0.1:{port}", CLOCK=clock,
                                     CUSTOMER_REF_KEY="test-customer-ref-key", DB_POOL_SIZE=5, **overrides)
    runner = ServiceRunner(settings)
    runner.add_service(config.service_class(name))
    runner.start()
    return RunningService(name, f"http://127.0.0.1:{port}", settings, runner)


@contextmanager
def services_in_process(amqp_uri: str, database_factory, names, clock, relays: bool = True):
    """For a module's fixture (one start for its tests): the services `names` on fresh databases
    and one clock, each with its relay; {name: RunningService (its `database_url` too)}."""
    running, started = {}, []
    try:
        for name in names:
            service = run_service(name, amqp_uri, database_factory(name), clock)
            service.database_url = service.config["DATABASE_URL"]
            running[name] = service
            if relays:
                relay = Relay(db.make_engine(service.database_url, 2), amqp_uri)
                relay.thread = eventlet.spawn(relay.run)
                started.append(relay)
        yield running
    finally:
        stop_runners([s.runner for s in running.values()])
        for relay in started:
            relay.stop()
            relay.thread.wait()
            relay.engine.dispose()


def stop_runners(runners) -> None:
    """Stop nameko ServiceRunners side by side (each stop waits up to a second for its consumers'
    drain to return); AssertionError when one has not stopped within 15 s."""
    stopping = [eventlet.spawn(runner.kill) for runner in runners]
    with eventlet.Timeout(15, False):
        for thread in stopping:
            thread.wait()
        return
    raise AssertionError("a service did not stop within 15 s")


@pytest.fixture
def start_relay(amqp_uri):
    """Run a relay for a service's database in a greenlet of the test process."""
    relays = []

    def start(database_url: str, amqp: str | None = None, **kwargs) -> Relay:
        relay = Relay(db.make_engine(database_url, 2), amqp or amqp_uri, **kwargs)
        relay.thread = eventlet.spawn(relay.run)
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.stop()
        relay.thread.wait()
        relay.engine.dispose()


@pytest.fixture
def start_sender():
    """Run a notification sender for a service's database in a greenlet of the test
    process: `start_sender(url, notifier, timeout_s=1, lease_s=5)`; the notifier defaults
    to a RecordingNotifier (`sender.notifier.sent`)."""
    from shared.notifications.sender import NotificationSender
    from shared.testing.notifiers import RecordingNotifier

    senders = []

    def start(database_url: str, notifier=None, **kwargs) -> NotificationSender:
        kwargs.setdefault("idle_wait", 0.05)
        engine = db.make_engine(database_url, kwargs.get("batch", 8) + 1)
        sender = NotificationSender(engine, notifier if notifier is not None else RecordingNotifier(), **kwargs)
        sender.thread = eventlet.spawn(sender.run)
        senders.append(sender)
        return sender

    yield start
    stuck = []
    for sender in senders:
        release = getattr(sender.notifier, "release", None)
        if release is not None:
            release()  # sends a test held back end now, not at their timeout
        sender.stop()
    for sender in senders:
        with eventlet.Timeout(sender.timeout_s + 5, False):
            sender.thread.wait()
            sender.engine.dispose()
            continue
        sender.thread.kill()  # a send that ignored its timeout: end it, and fail the test
        sender.engine.dispose()
        stuck.append(sender.service)
    assert not stuck, "a notification sender did not stop within its send timeout"


class BusListener:
    """A plain kombu consumer on its own queue bound to a service's exchange."""

    def __init__(self, amqp_uri: str, exchange: str, routing_key: str = "#"):
        self.messages: list[dict] = []
        self._conn = kombu.Connection(amqp_uri)
        exchange_obj = kombu.Exchange(exchange, type="topic", durable=True, auto_delete=False)
        self._queue = kombu.Queue(f"test-listener-{uuid.uuid4().hex[:8]}", exchange_obj, routing_key,
                                  exclusive=True, auto_delete=True)
        channel = self._conn.channel()
        exchange_obj(channel).declare()
        self._queue(channel).declare()  # bound before the caller publishes anything
        self._consumer = kombu.Consumer(channel, [self._queue], callbacks=[self._on_message],
                                        accept=["json"])
        self._consumer.consume()
        self._running = True
        self._thread = eventlet.spawn(self._drain)

    def _on_message(self, body, message):
        self.messages.append({"body": body, "routing_key": message.delivery_info["routing_key"],
                              "properties": message.properties, "content_type": message.content_type})
        message.ack()

    def _drain(self):
        while self._running:
            try:
                self._conn.drain_events(timeout=0.2)
            except socket.timeout:
                pass
            except Exception:
                if self._running:
                    raise

    def wait_for(self, predicate, timeout: float = 10.0, count: int = 1) -> list[dict]:
        """The first `count` messages matching `predicate`, or an AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in self.messages if predicate(m)]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {timeout}s for {count} matching event(s), saw {len(found)} "
                                     f"of {len(self.messages)} on the bus")
            eventlet.sleep(0.02)

    def close(self):
        self._running = False
        self._thread.wait()
        self._conn.release()


@pytest.fixture
def bus_listener(amqp_uri):
    listeners = []

    def listen(exchange: str, routing_key: str = "#") -> BusListener:
        listener = BusListener(amqp_uri, exchange, routing_key)
        listeners.append(listener)
        return listener

    yield listen
    for listener in listeners:
        listener.close()


class TcpProxy:
    """A proxy process in front of a host:port; cut() kills it, restore() starts it again;
    silence() pauses it (connections stay open, nothing passes: a partition or a hung peer)."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.process = None
        self.restore()

    def silence(self):
        self.process.send_signal(signal.SIGSTOP)

    def restore(self):
        if self.process is not None and self.process.poll() is None:  # silenced: resume it
            self.process.send_signal(signal.SIGCONT)
            return
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.testing.tcpproxy", str(self.port), *map(str, self.target)],
            stdout=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        line = self.process.stdout.readline()
        assert line.startswith("ready"), f"tcp proxy did not start: {line!r}"

    def cut(self):
        self.process.kill()
        self.process.wait()

    def close(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.cut()


def proxied(url: str, default_port: int = 5432) -> tuple[TcpProxy, str]:
    """A proxy in front of the server of `url`, and the same URL through the proxy (close it
    yourself; the tcp_proxy fixture does for a test)."""
    parts = urlsplit(url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    netloc = parts.netloc.rsplit("@", 1)
    auth_part = netloc[0] + "@" if len(netloc) == 2 else ""
    return proxy, parts._replace(netloc=f"{auth_part}127.0.0.1:{proxy.port}").geturl()


@pytest.fixture
def tcp_proxy():
    proxies = []

    def make(url: str, default_port: int) -> tuple[TcpProxy, str]:
        proxy, through = proxied(url, default_port)
        proxies.append(proxy)
        return proxy, through

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def clock():
    return ManualClock()


@pytest.fixture
def http():
    session = requests.Session()
    yield session
    session.close()


def purge_queues_of(amqp_uri: str, service: str) -> None:
    """Empty a service's event queues on the tests' shared vhost: events that tests which ran
    without the service published there wait for it, and are not this test's."""
    from shared.messaging.consumer import handlers_of
    from shared.runtime.config import service_class

    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        for handler in handlers_of(service_class(service), (1000,)):
            handler.queue()(channel).declare()
            channel.queue_purge(handler.queue_name)


def wait_until(condition, what: str, timeout: float = 15.0, interval: float = 0.05):
    """Poll `condition` until it is true, or fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        eventlet.sleep(interval)


def database_rows(url: str, statement) -> list:
    """What `statement` (SQLAlchemy or sa.text) reads from the database at `url`, on a connection of its own."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(statement).all()
    finally:
        engine.dispose()


def handled(url: str, event_id: str) -> bool:
    """The service of the database at `url` took the event (its inbox row committed), whatever it did."""
    return bool(database_rows(url, sa.text("SELECT 1 FROM inbox WHERE event_id = :e").bindparams(e=event_id)))


def jsonbody(response) -> dict:
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"not JSON ({response.status_code}): {response.text[:500]}") from None
