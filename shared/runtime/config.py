"""Configuration from the environment, turned into each service's nameko config.

Everything a service reads at run time comes through its nameko config dict, so that
tests can run several services in one process, each with its own database and clock.
"""
from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

DEFAULT_AMQP_URI = "amqp://guest:guest@127.0.0.1:5672//"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432"

SERVICES = ("intake", "investigation", "aftercare", "reporting")
# Services whose code exists so far (the others are package skeletons), by their nameko class.
SERVICE_CLASSES = {"intake": "services.intake.service:IntakeService",
                   "investigation": "services.investigation.service:InvestigationService",
                   "aftercare": "services.aftercare.service:AftercareService",
                   "reporting": "services.reporting.service:ReportingService",
                   "console": "services.console.service:ConsoleService"}
# The services on the bus, each with its outbox relay. The console is not: it is the staff's web
# front end, calling their APIs; it has a database (staff, sessions) and a server only.
RUNNABLE_SERVICES = tuple(name for name in SERVICE_CLASSES if name in SERVICES)
# Every service with a database of its own to create and migrate.
DATABASE_SERVICES = tuple(SERVICE_CLASSES)


def service_class(name: str):
    import importlib

    module, _, cls = SERVICE_CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)

# Settings the HTTP transport and readiness read, with their defaults: a config made by hand (a
# test's) may leave them out. `setting(config, key)` reads one.
DEFAULTS = {
    "MAX_BODY_BYTES": 1024 * 1024,
    "HTTP_SOCKET_TIMEOUT_SECONDS": 20.0,
    "HTTP_REQUEST_TIMEOUT_SECONDS": 10.0,
    "HTTP_MAX_CONNECTIONS": 512,
    "READY_OUTBOX_LAG_SECONDS": 60.0,
}


def setting(config: dict, key: str):
    value = config.get(key)
    return DEFAULTS[key] if value is None else value


def _number(env, key: str, kind):
    return kind(env.get(f"CLOSELOOP_{key}", DEFAULTS[key]))


HTTP_PORTS = {"intake": 8001, "investigation": 8002, "aftercare": 8003, "reporting": 8004, "console": 8005}


def secret(name: str, env=os.environ) -> bytes | None:
    """A secret given as the variable `name` itself, or as a file `name`_FILE names (a mounted
    Docker or Kubernetes secret), as bytes; None when neither is set."""
    if env.get(name):
        return env[name].encode()
    if env.get(f"{name}_FILE"):
        with open(env[f"{name}_FILE"], "rb") as given:
            return given.read()
    return None


def amqp_uri(env=os.environ) -> str:
    return env.get("AMQP_URI") or DEFAULT_AMQP_URI


def server_url(env=os.environ) -> str:
    """The PostgreSQL server, without a database name."""
    return env.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def database_name(service: str, env=os.environ) -> str:
    prefix = env.get("CLOSELOOP_DB_PREFIX", "closeloop")
    return f"{prefix}_{service}"


def with_database(url: str, name: str) -> str:
    """The server URL pointed at one database, with the psycopg2 driver named."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg2"
    return urlunsplit((scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def service_database_url(service: str, env=os.environ) -> str:
    explicit = env.get(f"{service.upper()}_DATABASE_URL")
    if explicit:
        return with_database(explicit, urlsplit(explicit).path.lstrip("/") or database_name(service, env))
    return with_database(server_url(env), database_name(service, env))


def service_config(service: str, env=os.environ, **overrides) -> dict:
    """The nameko config of one service."""
    port = int(env.get(f"{service.upper()}_PORT", HTTP_PORTS[service]))
    config = {
        "AMQP_URI": amqp_uri(env),
        "WEB_SERVER_ADDRESS": env.get(f"{service.upper()}_BIND", f"0.0.0.0:{port}"),
        "max_workers": int(env.get("CLOSELOOP_MAX_WORKERS", "10")),
        "SERVICE_NAME": service,
        "DATABASE_URL": service_database_url(service, env),
        "DB_POOL_SIZE": int(env.get("CLOSELOOP_DB_POOL_SIZE", "10")),
        "POLICY_FILE": env.get("CLOSELOOP_POLICY_FILE") or None,
        "CUSTOMER_REF_KEY": env.get("CLOSELOOP_CUSTOMER_REF_KEY") or None,
        "NOTIFIER": env.get("CLOSELOOP_NOTIFIER", "log"),
        "NOTIFY_TIMEOUT_SECONDS": float(env.get("CLOSELOOP_NOTIFY_TIMEOUT_SECONDS", "10")),
        "NOTIFY_LEASE_SECONDS": float(env.get("CLOSELOOP_NOTIFY_LEASE_SECONDS", "60")),
        # Messages one sender has in flight at most (one claim takes up to this many).
        "NOTIFY_CONCURRENCY": int(env.get("CLOSELOOP_NOTIFY_CONCURRENCY", "32")),
        "MAX_BODY_BYTES": _number(env, "MAX_BODY_BYTES", int),
        # A connection silent this long (idle, or stalled mid-request) is closed.
        "HTTP_SOCKET_TIMEOUT_SECONDS": _number(env, "HTTP_SOCKET_TIMEOUT_SECONDS", float),
        # The time a client has to send a request's headers and body once it has begun (408).
        "HTTP_REQUEST_TIMEOUT_SECONDS": _number(env, "HTTP_REQUEST_TIMEOUT_SECONDS", float),
        # Request bodies one process holds in memory at once (default: 32 of the largest).
        "HTTP_BODY_BUFFER_BYTES": int(env["CLOSELOOP_HTTP_BODY_BUFFER_BYTES"])
        if env.get("CLOSELOOP_HTTP_BODY_BUFFER_BYTES") else None,
        # Open HTTP connections one process holds at most; more are answered 503 and closed.
        "HTTP_MAX_CONNECTIONS": _number(env, "HTTP_MAX_CONNECTIONS", int),
        # Messages one replica holds unacked across all its event handlers (default: max_workers,
        # or two batches for a batch consumer).
        "EVENT_PREFETCH": int(env["CLOSELOOP_EVENT_PREFETCH"]) if env.get("CLOSELOOP_EVENT_PREFETCH") else None,
        # Events a batch consumer (reporting's) commits at once; default shared.messaging.batches'.
        "EVENT_BATCH": int(env["CLOSELOOP_EVENT_BATCH"]) if env.get("CLOSELOOP_EVENT_BATCH") else None,
        # The longest pause between tries of a message whose handler hit a temporary failure.
        "EVENT_PAUSE_MAX_SECONDS": float(env.get("CLOSELOOP_EVENT_PAUSE_MAX_SECONDS", "30")),
        # /health/ready: the oldest unsent event may be this old before the replica is not ready.
        "READY_OUTBOX_LAG_SECONDS": _number(env, "READY_OUTBOX_LAG_SECONDS", float),
        # A directory of edited process files (investigation, aftercare); default: the service's own.
        "PROCESS_DIR": env.get("CLOSELOOP_PROCESS_DIR") or None,
        # How often a service anonymises personal data past the policy's retention (a day).
        "RETENTION_INTERVAL_SECONDS": float(env.get("CLOSELOOP_RETENTION_INTERVAL_SECONDS", "86400")),
        # Development only (`closeloop dev --demo-clock`): the clock `closeloop demo` moves.
        "DEMO_CLOCK_FILE": env.get("CLOSELOOP_DEMO_CLOCK_FILE") or None,
    }
    config.update(overrides)
    return config
