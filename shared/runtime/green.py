"""Make the process cooperative: eventlet for sockets, and psycopg2 waiting through eventlet.

Without the psycopg2 part one slow query stalls every greenlet, HTTP and AMQP heartbeats
included. Call before anything opens a socket.

The wait is bounded: a database that keeps the connection open and says nothing (a hung
proxy or pooler, a partition the kernel has not noticed) would otherwise hold every worker
that touches it forever. Past `DATABASE_WAIT_SECONDS` of silence in one statement, the
statement fails with OperationalError (a 503 for a request) and psycopg2 closes the
connection, so the pool replaces it.
"""
import os

import eventlet
import psycopg2
from eventlet.hubs import trampoline
from psycopg2 import extensions

# The longest silence between the server's messages within one statement (a long query
# streams nothing until its first row: keep it above the slowest one).
DATABASE_WAIT_SECONDS = float(os.environ.get("CLOSELOOP_DB_WAIT_TIMEOUT_SECONDS", "30"))

_patched = False


class DatabaseSilent(psycopg2.OperationalError):
    """The database did not answer within DATABASE_WAIT_SECONDS."""


def wait_for_database(conn, timeout=None):
    """psycopg2's wait callback: psycogreen's, with a bound on each wait."""
    while True:
        state = conn.poll()
        if state == extensions.POLL_OK:
            return
        if state not in (extensions.POLL_READ, extensions.POLL_WRITE):
            raise psycopg2.OperationalError(f"bad result from poll: {state!r}")
        trampoline(conn.fileno(), read=state == extensions.POLL_READ, write=state == extensions.POLL_WRITE,
                   timeout=DATABASE_WAIT_SECONDS,
                   timeout_exc=DatabaseSilent(f"the database did not answer within {DATABASE_WAIT_SECONDS:g} s"))


def patch() -> None:
    global _patched
    if _patched:
        return
    eventlet.monkey_patch()
    extensions.set_wait_callback(wait_for_database)
    _patched = True
