"""Which handler failures pass by themselves. A temporary failure (the database or the
broker unreachable, a call to another service timing out) is retried with capped back-off
and never uses up the message's attempts: a PostgreSQL failover must not park every event
consumed meanwhile. Any other failure will repeat, so it is retried a few times and parked."""
from __future__ import annotations

import socket

import psycopg2
from kombu.exceptions import OperationalError as BrokerUnavailable
from nameko.exceptions import RpcTimeout, UnknownService
from sqlalchemy import exc as sa_exc


class TemporaryFailure(Exception):
    """Raise from a handler when what failed will come back (a dependency is away)."""


TEMPORARY = (
    TemporaryFailure,
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,  # includes the pool's timeout
    psycopg2.OperationalError, psycopg2.InterfaceError,  # raw, from the unit of work's queued inserts
    BrokerUnavailable, ConnectionError, socket.timeout, TimeoutError,
    RpcTimeout, UnknownService,  # another service slow, or not started yet
)


# SQLSTATEs that pass with time whatever the exception class: connection exceptions (08),
# a read-only transaction (25006: a standby during a failover), the server shutting down or
# not yet accepting (57P01-57P03), serialization failures and deadlocks (40001, 40P01), the
# server short of resources (53: connections, memory, disk), a lock or a statement timing out
# (55P03, 57014). Any other SQLSTATE will repeat (a value too large for an index: 54000).
_TEMPORARY_SQLSTATES = ("08", "25006", "57P01", "57P02", "57P03", "40001", "40P01", "53", "55P03", "57014")


def sqlstate(exc: BaseException) -> str:
    code = getattr(exc, "pgcode", None) or getattr(getattr(exc, "orig", None), "pgcode", None)
    return code or ""


def is_temporary(exc: BaseException) -> bool:
    from shared.web.errors import ServiceUnavailable

    code = sqlstate(exc)
    if code:  # the server said what went wrong: only some of its answers pass with time
        return code.startswith(_TEMPORARY_SQLSTATES)
    return isinstance(exc, TEMPORARY) or isinstance(exc, ServiceUnavailable)


def pause_after(pauses: int, cap: float = 30.0) -> float:
    """The back-off before the n-th retry of a temporary failure: 1, 2, 4 ... seconds, capped."""
    return min(cap, 2.0 ** max(0, pauses - 1))
