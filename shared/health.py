"""Per-dependency health checks: the database is essential, the broker is not (the
outbox keeps accepting work while it is away), so a missing broker is 'degraded'."""
from __future__ import annotations

import threading
import time

import kombu
import sqlalchemy as sa

from shared import outbox

_broker_cache: dict[str, tuple[float, dict]] = {}
_broker_lock = threading.Lock()


def check_database(engine: sa.Engine) -> tuple[dict, dict | None]:
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            lag = outbox.lag(conn)
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
