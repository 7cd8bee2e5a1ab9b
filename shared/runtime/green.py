"""Make the process cooperative: eventlet for sockets, psycogreen for psycopg2.

Without the psycopg2 patch one slow query stalls every greenlet, HTTP and AMQP
heartbeats included. Call before anything opens a socket.
"""
import eventlet

_patched = False


def patch() -> None:
    global _patched
    if _patched:
        return
    eventlet.monkey_patch()
    from psycogreen.eventlet import patch_psycopg

    patch_psycopg()
    _patched = True
