"""COPY ... TO STDOUT read as it comes, on a psycopg2 connection made cooperative for eventlet.

psycopg2 refuses COPY on such a connection (copy_expert: "cannot be used with an asynchronous
callback"), so the lines are read through the connection's own libpq (psycopg2's `pgconn_ptr`,
libpq's asynchronous COPY calls, by ctypes), waiting on the socket through eventlet like every
other query: other greenlets run meanwhile, and a reader that takes lines slowly makes the
server wait (nothing is buffered beyond a chunk). Needs psycopg2 >= 2.8 (`pgconn_ptr`)."""
from __future__ import annotations

import ctypes
import functools
import logging

import psycopg2
from eventlet.hubs import trampoline

from shared.runtime import green

log = logging.getLogger("closeloop.persistence")


class _LibPQ:
    """libpq's asynchronous calls, from the libpq psycopg2 itself is linked to (symbols are
    looked up in its C extension's dependencies): the same library that made the connection."""
    COMMAND_OK, COPY_OUT = 1, 3  # ExecStatusType

    def __init__(self):
        from psycopg2 import _psycopg

        lib = ctypes.CDLL(_psycopg.__file__)
        pointer, number, text = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p

        def function(name, restype, *argtypes):
            f = getattr(lib, name)
            f.restype, f.argtypes = restype, argtypes
            return f

        self.send_query = function("PQsendQuery", number, pointer, text)
        self.flush = function("PQflush", number, pointer)
        self.consume_input = function("PQconsumeInput", number, pointer)
        self.is_busy = function("PQisBusy", number, pointer)
        self.get_result = function("PQgetResult", pointer, pointer)
        self.result_status = function("PQresultStatus", number, pointer)
        self.result_error = function("PQresultErrorMessage", text, pointer)
        self.clear = function("PQclear", None, pointer)
        self.error_message = function("PQerrorMessage", text, pointer)
        self.get_copy_data = function("PQgetCopyData", number, pointer, ctypes.POINTER(ctypes.c_void_p), number)
        self.free = function("PQfreemem", None, pointer)


@functools.cache
def _libpq() -> _LibPQ:
    return _LibPQ()


class CopyOut:
    """One COPY ... TO STDOUT on a psycopg2 connection, its lines read as they come. `running`
    while the connection is within the statement: a caller that stops reading part way cancels
    it (`cancel`) and does not reuse the connection."""

    def __init__(self):
        self.pq, self.dbapi, self.running = _libpq(), None, False

    def lines(self, dbapi, statement: bytes, chunk: int = 128 * 1024):
        """COPY's lines (each a bytes ending in LF), in lists of about `chunk` bytes."""
        pq = self.pq
        self.dbapi, self.pg, self.fd = dbapi, ctypes.c_void_p(dbapi.pgconn_ptr), dbapi.fileno()
        self.running = True
        if not pq.send_query(self.pg, statement):
            self._fail()
        while (flushed := pq.flush(self.pg)) == 1:
            self._wait(read=False)
        if flushed < 0:
            self._fail()
        result = self._result()
        status, message = pq.result_status(result), pq.result_error(result)
        pq.clear(result)
        if status != pq.COPY_OUT:  # the statement failed (its error), nothing else to read
            self._drain()
            self.running = False
            self._fail(message)
        buffer = ctypes.c_void_p()
        into, get, free, string_at = ctypes.byref(buffer), pq.get_copy_data, pq.free, ctypes.string_at
        lines, size = [], 0
        while True:
            n = get(self.pg, into, 1)
            if n > 0:
                lines.append(string_at(buffer, n))
                free(buffer)
                size += n
                if size >= chunk:
                    yield lines
                    lines, size = [], 0
            elif n == 0:  # no whole line in libpq's buffer: wait for more from the socket
                self._wait()
                if not pq.consume_input(self.pg):
                    self._fail()
            elif n == -1:  # the COPY's end
                break
            else:
                self._fail()
        failure = self._drain()  # its command status, or an error after the last line
        self.running = False
        if failure is not None:
            self._fail(failure)
        if lines:
            yield lines

    def cancel(self) -> None:
        """Asks the server to stop the statement."""
        try:
            self.dbapi.cancel()
        except psycopg2.Error:
            log.warning("could not cancel a COPY", exc_info=True)

    def _fail(self, message: bytes | None = None):
        text = (message or self.pq.error_message(self.pg) or b"").decode("utf-8", "replace").strip()
        raise psycopg2.OperationalError(text or "the COPY failed")

    def _wait(self, read: bool = True) -> None:
        """Until the socket can be read (or written), through eventlet: other greenlets run
        meanwhile. A database silent for DATABASE_WAIT_SECONDS fails the export."""
        trampoline(self.fd, read=read, write=not read, timeout=green.DATABASE_WAIT_SECONDS,
                   timeout_exc=green.DatabaseSilent(
                       f"the database did not answer within {green.DATABASE_WAIT_SECONDS:g} s"))

    def _result(self):
        """The statement's next result (NULL: none left), once libpq has it whole."""
        while self.pq.is_busy(self.pg):
            self._wait()
            if not self.pq.consume_input(self.pg):
                self._fail()
        return self.pq.get_result(self.pg)

    def _drain(self) -> bytes | None:
        """The statement's remaining results read: the first error's message, if any."""
        failure = None
        while result := self._result():
            if self.pq.result_status(result) != self.pq.COMMAND_OK and failure is None:
                failure = self.pq.result_error(result) or b"the COPY failed"
            self.pq.clear(result)
        return failure
