"""Readiness, per dependency: the database is essential, the broker is not (the outbox
keeps accepting work while it is away), so a missing broker is 'degraded'; a replica whose
own consumer lost the broker, or a relay that stopped publishing, is not ready."""
from __future__ import annotations

import threading
import time

import eventlet
import kombu
import sqlalchemy as sa
from eventlet import event
from nameko.extensions import DependencyProvider

from shared.runtime.config import setting
from shared.messaging import outbox
from shared.notifications import queue

_broker_cache: dict[str, tuple[float, dict]] = {}
_broker_lock = threading.Lock()


def check_database(engine: sa.Engine) -> tuple[dict, dict | None]:
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            lag = outbox.lag(conn)
            lag.update(queue.state(conn))
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}, None
    return {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}, lag


def check_broker(amqp_uri: str, ttl: float = 2.0) -> dict:
    """Open and close a connection, at most once per `ttl` seconds per broker."""
    with _broker_lock:
        cached = _broker_cache.get(amqp_uri)
        if cached and time.monotonic() - cached[0] < ttl:
            return cached[1]
    started = time.perf_counter()
    try:
        with kombu.Connection(amqp_uri, connect_timeout=1) as conn:
            conn.connect()
        result = {"status": "ok", "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
    except Exception as exc:
        result = {"status": "degraded", "error": f"{exc.__class__.__name__}: {exc}"[:200]}
    with _broker_lock:
        _broker_cache[amqp_uri] = (time.monotonic(), result)
    return result


# The relay touches its heartbeat file after each healthy round; `closeloop relay
# --healthcheck` calls it dead after this long.
HEARTBEAT_MAX_AGE = 30.0


def check_consumer(container) -> dict:
    """This replica's own event consumer: is its connection to the broker up? (A fresh
    connection opening says nothing about the one the consumer holds.)"""
    from nameko.messaging import QueueConsumer

    queue_consumers = [e for e in container.subextensions if isinstance(e, QueueConsumer)]
    if not queue_consumers:
        return {"status": "none"}
    for qc in queue_consumers:
        channels = [getattr(c, "channel", None) for c in list(qc._consumers.values())]
        if not channels or not all(ch is not None and getattr(ch, "is_open", False)
                                   and getattr(ch.connection, "connected", False) for ch in channels):
            return {"status": "disconnected"}
    return {"status": "ok"}


def check_relay(service: str) -> dict:
    """The relay's heartbeat file, when the relay runs where this replica can see it."""
    from shared.messaging.relay import heartbeat_path

    try:
        age = time.time() - heartbeat_path(service).stat().st_mtime
    except OSError:
        return {"status": "unknown"}  # elsewhere (another container): judged by the outbox lag
    return {"status": "ok" if age <= HEARTBEAT_MAX_AGE else "stale", "heartbeat_age_seconds": round(age, 1)}


def report(service: str, engine: sa.Engine, amqp_uri: str, container=None,
           max_lag: float = 60.0) -> tuple[int, dict]:
    """Readiness: 503 `down` without the database; 200 `degraded` while the broker is
    unreachable (the outbox keeps the events, so intake keeps accepting); 503 `not_ready`
    when the broker is there but this replica's consumer is not connected to it. An oldest
    unsent event older than `max_lag` with no healthy relay in sight is 200 `degraded` with
    the reason."""
    database, lag = check_database(engine)
    broker = check_broker(amqp_uri)
    checks = {"database": database, "broker": broker}
    if container is not None:
        checks["consumer"] = check_consumer(container)
    checks["relay"] = relay = check_relay(service)
    reasons = []
    if database["status"] != "ok":
        status, code = "down", 503
        reasons.append("the database is unreachable")
    elif broker["status"] != "ok":
        status, code = "degraded", 200
        reasons.append("the broker is unreachable; events wait in the outbox")
    elif checks.get("consumer", {}).get("status") == "disconnected":
        status, code = "not_ready", 503
        reasons.append("this replica's event consumer is not connected to the broker")
    else:
        status, code = "ok", 200
    if database["status"] == "ok" and lag["oldest_age_seconds"] > max_lag and relay["status"] != "ok":
        # Said, not acted on: every replica shares the outbox, so taking them out of service
        # would refuse complaints the outbox can hold until the relay is back.
        seen = (f"; the relay's last healthy round was {relay['heartbeat_age_seconds']:.0f} s ago"
                if relay["status"] == "stale" else "")
        reasons.append(f"the oldest unsent event is {lag['oldest_age_seconds']:.0f} s old "
                       f"(limit {max_lag:g} s): is the relay running?{seen}")
        if status == "ok":
            status = "degraded"
    body = {"service": service, "status": status, "reasons": reasons, "checks": checks}
    if lag is not None:
        body["outbox"] = lag
    return code, body


class Readiness(DependencyProvider):
    """`self.readiness()` in a service: its readiness report (status, body), cached for
    `ttl` seconds so that probes under load cost at most one database round trip a second.

    One check runs at a time, in a greenthread of its own; probes wait for it at most
    `patience` seconds. A check still running then is the answer itself: 503 `down`. (Waiting
    longer would leave an orchestrator's probe hanging on a database that hangs.)"""

    def __init__(self, ttl: float = 1.0, patience: float = 5.0):
        self.ttl, self.patience = ttl, patience
        self._cached: tuple[float, tuple[int, dict]] | None = None
        self._pending: tuple[float, event.Event] | None = None

    def _report(self, engine: sa.Engine) -> tuple[int, dict]:
        if self._cached is not None and time.monotonic() - self._cached[0] <= self.ttl:
            return self._cached[1]
        if self._pending is None:
            self._pending = (time.monotonic(), event.Event())
            eventlet.spawn_n(self._refresh, engine, self._pending[1])
        since, done = self._pending
        with eventlet.Timeout(max(0.0, self.patience - (time.monotonic() - since)), False):
            return done.wait()
        return 503, {"service": self.container.service_name, "status": "down",
                     "reasons": [f"the readiness check has waited {time.monotonic() - since:.0f} s for the "
                                 f"database or the broker"]}

    def _refresh(self, engine: sa.Engine, done: event.Event) -> None:
        config = self.container.config
        try:
            answer = report(self.container.service_name, engine, config["AMQP_URI"], self.container,
                            setting(config, "READY_OUTBOX_LAG_SECONDS"))
        except Exception as exc:  # noqa: BLE001 - a probe gets an answer, whatever failed
            answer = 503, {"service": self.container.service_name, "status": "down",
                           "reasons": [f"the readiness check failed: {exc.__class__.__name__}"]}
        self._cached, self._pending = (time.monotonic(), answer), None
        done.send(answer)

    def get_dependency(self, worker_ctx):
        return self._report


_depth_cache: dict[tuple, tuple[float, dict]] = {}


def shared_gauges(service: str, engine: sa.Engine, amqp_uri: str, handlers=(), ttl: float = 5.0) -> list:
    """The gauges of state every replica shares (the outbox and notifications in the
    database, the dead-letter and unroutable queues on the broker): the same from any
    replica, so published once, on /metrics/shared, never summed across replicas."""
    from shared.messaging import dead_letters, topology

    gauges = []
    _, lag = check_database(engine)
    if lag is not None:
        gauges += [("closeloop_outbox_pending", "events waiting for the relay", lag["pending"], {"service": service}),
                   ("closeloop_outbox_lag_seconds", "age of the oldest unpublished event",
                    lag["oldest_age_seconds"], {"service": service}),
                   ("closeloop_notifications_pending", "messages to customers and staff waiting to be sent",
                    lag["notifications_pending"], {"service": service}),
                   ("closeloop_notifications_failed", "messages to customers and staff given up",
                    lag["notifications_failed"], {"service": service})]
    unroutable = topology.unroutable_queue_name(service)
    names = (*(h.dlq_name for h in handlers), unroutable)
    key = (amqp_uri, names)
    cached = _depth_cache.get(key)
    if cached is None or time.monotonic() - cached[0] > ttl:
        try:
            cached = (time.monotonic(), dead_letters.queue_depths(amqp_uri, list(names)))
        except Exception:  # broker away: report what we know
            cached = (time.monotonic(), {name: -1 for name in names})
        _depth_cache[key] = cached
    depths = dict(cached[1])
    gauges.append(("closeloop_unroutable_events", "events of this service that no queue took, kept in "
                   f"{unroutable} (-1: unknown)", depths.pop(unroutable), {"exchange": f"{service}.events"}))
    gauges += [("closeloop_dead_letter_depth", "messages parked in a handler's dead-letter queue (-1: unknown)",
                depth, {"service": service, "queue": name}) for name, depth in depths.items()]
    return gauges


def replica_metrics_text(service: str) -> str:
    """/metrics: this replica's own counters, histograms and gauges (sum them across replicas)."""
    from shared.observability import metrics

    return metrics.registry(service).render()


def shared_metrics_text(service: str, engine: sa.Engine, amqp_uri: str, handlers=(), ttl: float = 5.0) -> str:
    """/metrics/shared: the shared state's gauges alone."""
    from shared.observability import metrics

    return metrics.render_gauges(shared_gauges(service, engine, amqp_uri, handlers, ttl))


def metrics_text(service: str, engine: sa.Engine, amqp_uri: str, handlers=(), ttl: float = 5.0) -> str:
    """Both in one text, for a process that is the only one of its service (tests, tools)."""
    from shared.observability import metrics

    return metrics.registry(service).render(shared_gauges(service, engine, amqp_uri, handlers, ttl))
