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


def is_temporary(exc: BaseException) -> bool:
    from shared.web.errors import ServiceUnavailable

    return isinstance(exc, TEMPORARY) or isinstance(exc, ServiceUnavailable)


def pause_after(pauses: int, cap: float = 30.0) -> float:
    """The back-off before the n-th retry of a temporary failure: 1, 2, 4 ... seconds, capped."""
    return min(cap, 2.0 ** max(0, pauses - 1))
