"""Per-dependency health checks: the database is essential, the broker is not (the
outbox keeps accepting work while it is away), so a missing broker is 'degraded'."""
from __future__ import annotations

import threading
import time

import kombu
import sqlalchemy as sa

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


def report(service: str, engine: sa.Engine, amqp_uri: str) -> tuple[int, dict]:
    database, lag = check_database(engine)
    broker = check_broker(amqp_uri)
    if database["status"] != "ok":
        status, code = "down", 503
    elif broker["status"] != "ok":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    body = {"service": service, "status": status, "checks": {"database": database, "broker": broker}}
    if lag is not None:
        body["outbox"] = lag
    return code, body


_depth_cache: dict[tuple, tuple[float, dict]] = {}


def metrics_text(service: str, engine: sa.Engine, amqp_uri: str, handlers=(), ttl: float = 5.0) -> str:
    """Everything /metrics shows for a service: its counters and histograms, the outbox
    lag from its database, and the depth of its handlers' dead-letter queues."""
    from shared.messaging import dead_letters, topology
    from shared.observability import metrics

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
    return metrics.registry(service).render(gauges)
