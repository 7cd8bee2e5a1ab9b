"""Structured logs: one JSON object a line, with the service and the correlation id."""
from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import datetime, timezone

from nameko.extensions import DependencyProvider

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        cid = correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # SpiffWorkflow logs every task's every state change at INFO (30 lines a case): its
    # trace, not the operator's; shown with LOG_LEVEL=DEBUG.
    if root.level > logging.DEBUG:
        logging.getLogger("spiff").setLevel(logging.WARNING)
    containers = logging.getLogger("nameko.containers")
    if not any(isinstance(f, WorkerFailures) for f in containers.filters):
        containers.addFilter(WorkerFailures())


class WorkerFailures(logging.Filter):
    """nameko logs every failed worker with its traceback. A refusal it was told to expect (a
    4xx, a duplicate event) and a temporary failure (the database or broker away: answered 503,
    or the event retried) are said in a line by what handles them: nameko's line stays, at
    warning, without the traceback (880 of them a replica in a 20 s database outage)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from shared.messaging.failures import is_temporary

        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and (str(record.msg).startswith("(expected)") or is_temporary(exc)):
            record.exc_info, record.exc_text = None, None
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class CorrelationLogging(DependencyProvider):
    """Puts the request's correlation id into the worker's logging context: a worker runs
    in its own greenlet, which does not inherit the entrypoint's context variables."""

    def worker_setup(self, worker_ctx):
        cid = worker_ctx.data.get("correlation_id")
        if cid:
            correlation_id.set(cid)
