"""The HTTP transport below every service's app: the accept loop, each connection's
request framing and body, and the answers the app never sees.

nameko's WebServer runs eventlet's HTTP protocol in one greenthread per connection and
hands the request to a worker from the service's pool. Here, before a worker is taken:
- the request head and body must arrive within a deadline (408), and a body is read in
  full (up to the size limit, 413) in the connection's greenthread, so a slow client
  holds a connection, never a worker;
- framing that a proxy could read differently is refused (400, RFC 9112 §5.1, §6.1-6.3):
  whitespace before a header's colon, Content-Length values that differ or are not
  numbers, Content-Length with Transfer-Encoding, a bad chunk, a truncated body;
- every refusal is the JSON error shape and closes the connection;
- the number of connections is capped, and running out of file descriptors pauses the
  accept loop instead of killing the process.
"""
from __future__ import annotations

import errno
import io
import json
import logging
import re
import socket
import time
from functools import partial

import eventlet
from eventlet import wsgi
from eventlet.support import get_errno
from nameko.web.server import HttpOnlyProtocol

from shared.runtime.config import setting
from shared.web.errors import ApiError, PayloadTooLarge, ServiceUnavailable

log = logging.getLogger("closeloop.http")


class MalformedRequest(ApiError):
    """The request is not valid HTTP/1.1."""
    status, code = 400, "malformed_request"


class RequestTimeout(ApiError):
    """The request did not arrive in time."""
    status, code = 408, "request_timeout"


class UriTooLong(ApiError):
    """The request line is too long."""
    status, code = 414, "uri_too_long"


class HeadersTooLarge(ApiError):
    """The request's headers are too large."""
    status, code = 431, "headers_too_large"


class NotImplementedCoding(ApiError):
    """The request uses a transfer coding this server does not implement."""
    status, code = 501, "not_implemented"


class VersionNotSupported(ApiError):
    """The HTTP version is not supported."""
    status, code = 505, "http_version_not_supported"


_REASONS = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 501: "Not Implemented",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_BY_STATUS = {400: MalformedRequest, 408: RequestTimeout, 413: PayloadTooLarge, 414: UriTooLong,
              431: HeadersTooLarge, 501: NotImplementedCoding, 505: VersionNotSupported}


# On every answer that is not a page (JSON, text, a download): nothing in it may run or be framed,
# and no browser may take it for another type. Pages (text/html) set their own policy.
DATA_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}
_DATA_HEAD = "".join(f"{name}: {value}\r\n" for name, value in DATA_HEADERS.items())


def error_bytes(error: ApiError) -> bytes:
    """A whole HTTP/1.1 answer in the JSON error shape that closes the connection."""
    body = json.dumps(error.to_body()).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers().items())
    head = (f"HTTP/1.1 {error.status} {_REASONS.get(error.status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{_DATA_HEAD}Connection: close\r\n{extra}\r\n")
    return head.encode("latin-1") + body


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,15}\Z")
_MAX_DIGITS = 15  # more is far over any body limit, and int() of it costs time
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024
# Each chunk costs a few Python steps: a body of a million one-byte chunks would buy
# a second of CPU for a few megabytes on the wire.
MAX_CHUNKS = 4096


_SOUND_HEAD = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\r\n\x00]*\r?\n)*\r?\n\Z")


def framing_problem(lines: list[bytes], http10: bool) -> ApiError | None:
    """Why these raw header lines do not frame a request unambiguously, or None."""
    if not _SOUND_HEAD.match(b"".join(lines)):  # one pass in C for the usual, sound head
        return _malformed_line(lines)
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    for line in lines:
        first = line[:1]
        if first not in b"cCtT" or not first:
            continue
        name, _, value = line.partition(b":")
        lowered = name.lower()
        if lowered == b"content-length":
            value = value.strip(b" \t\r\n")
            if not value.isdigit():
                return MalformedRequest("Content-Length must be a decimal number of bytes")
            if len(value) > _MAX_DIGITS:
                return PayloadTooLarge("the body is over the limit")
            lengths.add(value.lstrip(b"0") or b"0")
        elif lowered == b"transfer-encoding":
            codings += [c.strip(b" \t\r\n").lower() for c in value.split(b",")]
    if len(lengths) > 1:
        return MalformedRequest("conflicting Content-Length values")
    if codings:
        if lengths:
            return MalformedRequest("Content-Length and Transfer-Encoding must not be sent together")
        if http10:
            return MalformedRequest("Transfer-Encoding is not allowed in an HTTP/1.0 request")
        if codings[-1] != b"chunked":
            return MalformedRequest("the last transfer coding must be chunked")
        if len(codings) > 1:
            return NotImplementedCoding("only the chunked transfer coding is supported")
    return None


def _malformed_line(lines: list[bytes]) -> ApiError:
    for raw in lines:
        line = raw.rstrip(b"\r\n")
        if not line:
            break
        name, colon, value = line.partition(b":")
        if line[:1] in (b" ", b"\t"):
            return MalformedRequest("a header line starts with whitespace (obsolete line folding)")
        if not colon or not _TOKEN.match(name):
            return MalformedRequest(f"malformed header line {name[:40].decode('latin-1')!r}: a field name "
                                    "is a token followed directly by a colon")
        if b"\r" in value or b"\x00" in value:
            return MalformedRequest(f"header {name.decode('latin-1')} holds a CR or NUL")
    return MalformedRequest("malformed headers")


class _Truncated(Exception):
    pass


def read_chunked(rfile, limit: int) -> bytes:
    """A chunked body (RFC 9112 §7.1), strictly: hex sizes only, CRLF after each chunk."""
    parts, total = [], 0
    while True:
        line = rfile.readline(MAX_CHUNK_LINE)
        if not line.endswith(b"\n"):
            if len(line) >= MAX_CHUNK_LINE:
                raise MalformedRequest("a chunk-size line is too long")
            raise _Truncated()
        size_text = line.rstrip(b"\r\n").split(b";", 1)[0].rstrip(b" \t")
        if not _HEX.match(size_text):
            raise MalformedRequest(f"bad chunk size {size_text[:20].decode('latin-1')!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        if len(parts) >= MAX_CHUNKS:
            raise MalformedRequest(f"the body has more than {MAX_CHUNKS} chunks")
        total += size
        if total > limit:
            raise PayloadTooLarge(f"the body is over the limit of {limit} bytes")
        data = rfile.read(size)
        if len(data) < size:
            raise _Truncated()
        parts.append(data)
        end = rfile.readline(3)
        if end not in (b"\r\n", b"\n"):
            if not end:
                raise _Truncated()
            raise MalformedRequest("a chunk is longer than its size")
    trailers = 0
    while True:  # trailer fields are read and dropped
        line = rfile.readline(MAX_CHUNK_LINE)
        if line in (b"\r\n", b"\n"):
            return b"".join(parts)
        if not line.endswith(b"\n"):
            raise _Truncated() if len(line) < MAX_CHUNK_LINE else MalformedRequest("a trailer line is too long")
        trailers += len(line)
        if trailers > MAX_TRAILERS:
            raise HeadersTooLarge("the trailer fields are too large")


class _Deadline(BaseException):
    """Raised into a connection's greenthread when its request is late (not an Exception,
    so that no handler on the way swallows it)."""


class _HeadLines:
    """Records the raw header lines as the standard parser reads them."""
    __slots__ = ("inner", "lines")

    def __init__(self, inner):
        self.inner = inner
        self.lines = []

    def readline(self, size=-1):
        line = self.inner.readline(size)
        self.lines.append(line)
        return line


class FrontDoorProtocol(HttpOnlyProtocol):
    """eventlet's protocol with strict framing, a request deadline, the body read before
    the app, and JSON answers for what eventlet would answer in plain text."""

    _deadline = None
    _linger = False
    _reserved = 0

    # -- the request line and head
    def _read_request_line(self):
        # Idle between requests, a connection has the socket timeout; once the first byte of a
        # request arrives, the request deadline runs, so a line trickled a byte at a time
        # holds a connection no longer than headers do.
        try:
            began = not self.rfile.closed and bool(self.rfile.peek(1))
        except OSError:  # idle past the socket timeout, or reset: the connection ends
            began = False
        if not began:
            self.close_connection = 1
            return ""
        self._deadline = eventlet.Timeout(self.server.request_timeout, _Deadline)
        try:
            line = super()._read_request_line()
        except _Deadline:
            self.answer(RequestTimeout(f"the request line did not arrive within {self.server.request_timeout} s"))
            return ""
        if len(line) >= self.server.url_length_limit:
            self.answer(UriTooLong(f"the request line is over {self.server.url_length_limit} bytes"))
            return ""
        return line

    def parse_request(self):
        if self._deadline is None:
            self._deadline = eventlet.Timeout(self.server.request_timeout, _Deadline)
        recorder = self.rfile = _HeadLines(self.rfile)
        try:
            if not super().parse_request():
                return False
        except wsgi.HeaderLineTooLong:
            self.answer(HeadersTooLarge("a header line is too long"))
            return False
        except wsgi.HeadersTooLarge:
            self.answer(HeadersTooLarge("the headers are too large"))
            return False
        except _Deadline:
            self.answer(RequestTimeout(f"the headers did not arrive within {self.server.request_timeout} s"))
            return False
        problem = framing_problem(recorder.lines, self.request_version == "HTTP/1.0")
        if problem is not None:
            self.answer(problem)
            return False
        return True

    def send_error(self, code, message=None, explain=None):
        # The standard parser's refusals (bad request line, version, too many headers).
        self.answer(_BY_STATUS.get(code, MalformedRequest)(message))

    def handle_one_request(self):
        try:
            super().handle_one_request()
        finally:
            self._stop_deadline()

    def _stop_deadline(self):
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # -- the body, then the app
    def handle_one_response(self):
        try:
            try:
                problem = self._read_body()
            finally:
                self._stop_deadline()
            if problem is not None:
                self.answer(problem)
                return
            super().handle_one_response()
        finally:
            # The body is freed with the request, however it ended: a client that resets
            # while we write "100 Continue" must not keep its share of the budget.
            self.server.body_bytes -= self._reserved
            self._reserved = 0

    def _read_body(self) -> ApiError | None:
        environ = self.environ
        given = environ["eventlet.input"]
        chunked, length = given.chunked_input, given.content_length
        if not chunked and not length:
            return None
        limit = self.server.max_body
        if not chunked and length > limit:
            return PayloadTooLarge(f"the body is {length} bytes; the limit is {limit}")
        # Bodies wait in memory for a worker: their total is capped, not only each one.
        needed = limit if chunked else length
        if self.server.body_bytes + needed > self.server.body_budget:
            return ServiceUnavailable("too many request bodies in flight; try again shortly", retry_after=1)
        self.server.body_bytes += needed
        self._reserved = needed
        try:
            if given.should_send_hundred_continue:
                given.send_hundred_continue_response()
                given.is_hundred_continue_response_sent = True
            if chunked:
                body = read_chunked(self.rfile, limit)
            else:
                body = self.rfile.read(length)
                if len(body) < length:
                    raise _Truncated()
        except ApiError as exc:
            return exc
        except _Truncated:
            return MalformedRequest("the body ended before it was complete")
        except (_Deadline, socket.timeout):
            return RequestTimeout(f"the body did not arrive within {self.server.request_timeout} s")
        # The app gets the whole body, de-chunked, as if it had a Content-Length.
        environ["wsgi.input"] = environ["eventlet.input"] = wsgi.Input(io.BytesIO(body), len(body), None)
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return None

    # -- answers from this layer
    def answer(self, error: ApiError):
        self._stop_deadline()
        self.close_connection = 1
        self._linger = True
        try:
            self.wfile.write(error_bytes(error))
            self.wfile.flush()
        except OSError:
            pass  # the client is gone

    def finish(self):
        if self._linger:
            self._drain()
        super().finish()

    def _drain(self):
        # Closing with unread input sends a reset, which can destroy the answer before the
        # client reads it: close our side, then read and drop a bounded amount first.
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 2.0
            dropped = 0
            while dropped < 1 << 20:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.connection.settimeout(remaining)
                data = self.connection.recv(65536)
                if not data:
                    break
                dropped += len(data)
        except OSError:
            pass


LIVE_BODY = json.dumps({"status": "ok"}).encode()


def liveness(environ, start_response):
    """`GET /health/live`: the process accepts and answers, without a worker, database or
    broker, so that a busy replica does not look dead."""
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(LIVE_BODY))),
                              ("X-Content-Type-Options", "nosniff"),
                              ("Cache-Control", "no-store")])
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [LIVE_BODY]


_OUT_OF_DESCRIPTORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def _no_delay(sock) -> None:
    """Answers go out at once: the server writes the headers and a body over 16 KB apart, and
    with Nagle's algorithm the body then waits for the client's delayed ACK (40 ms on Linux,
    measured by bench.console on every 16-64 KB answer of a kept-alive connection)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # not TCP (a test's socket pair), or already closed: nothing to speed up
        pass


# The peer gave up between the handshake and accept(): nothing to do.
_ACCEPT_TRANSIENT = {errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN}
_TOO_MANY = error_bytes(ServiceUnavailable("too many connections; try again shortly", retry_after=1))


class AcceptLoop:
    """The accept loop of a nameko WebServer (mixed in): a cap on open connections, and a
    pause, not a crash, when the process runs out of file descriptors."""

    def start_accepting(self, config: dict):
        self._open_connections = 0
        self._max_connections = setting(config, "HTTP_MAX_CONNECTIONS")

    def run(self):
        backoff, refused = 0.0, 0
        while self._is_accepting:
            try:
                sock, addr = self._sock.accept()
            except OSError as exc:
                code = get_errno(exc)
                if code in _ACCEPT_TRANSIENT:
                    continue
                if code not in _OUT_OF_DESCRIPTORS:
                    raise
                if not refused:
                    log.error("cannot accept connections: %s (%s open); pausing until descriptors free up",
                              errno.errorcode.get(code, code), self._open_connections)
                refused += 1
                backoff = min(max(backoff * 2, 0.01), 0.5)
                eventlet.sleep(backoff)
                continue
            if refused:
                log.warning("accepting connections again after %s refused attempts", refused)
                backoff, refused = 0.0, 0
            if self._open_connections >= self._max_connections:
                self._refuse(sock)
                continue
            self._open_connections += 1
            sock.settimeout(self._serv.socket_timeout)
            _no_delay(sock)
            self.container.spawn_managed_thread(partial(self.process_request, sock, addr))

    @staticmethod
    def _refuse(sock):
        try:
            sock.settimeout(0)
            sock.send(_TOO_MANY)
        except OSError:
            pass
        sock.close()

    def process_request(self, sock, address):
        try:
            super().process_request(sock, address)
        except (Exception, _Deadline):  # one connection's fault must not stop the service
            log.exception("HTTP connection from %s failed", address[0] if address else "?")
        finally:
            self._open_connections -= 1
            sock.close()
