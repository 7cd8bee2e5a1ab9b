"""The HTTP transport under attack, against `closeloop serve intake` as a real process, with
raw sockets: stalled bodies, idle connections, running out of file descriptors, ambiguous
framing, and liveness while every worker is busy."""
from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from shared.testing.fixtures import free_port, wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# Small limits so that each attack shows within a few seconds.
FAST = {"CLOSELOOP_HTTP_SOCKET_TIMEOUT_SECONDS": "3", "CLOSELOOP_HTTP_REQUEST_TIMEOUT_SECONDS": "2",
        "CLOSELOOP_MAX_BODY_BYTES": "4096"}


class Served:
    def __init__(self, process, port, log_path, database_url):
        self.process, self.port, self.log_path, self.database_url = process, port, log_path, database_url

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _answers(port: int, path: str = "/health") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            return sock.recv(12).startswith(b"HTTP/1.1 2")
    except OSError:
        return False


def launch(amqp_uri: str, database_url: str, log_path: Path, nofile: int | None = None, **settings) -> Served:
    """`closeloop serve intake` as its own process, once it answers."""
    port = free_port()
    env = {**os.environ, "AMQP_URI": amqp_uri, "INTAKE_DATABASE_URL": database_url,
           "INTAKE_BIND": f"127.0.0.1:{port}", "CLOSELOOP_DEV_KEYS": "1",
           "CLOSELOOP_CUSTOMER_REF_KEY": "test-customer-ref-key", "CLOSELOOP_DB_POOL_SIZE": "3", **settings}

    def lower_descriptor_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "intake"], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   preexec_fn=lower_descriptor_limit if nofile else None)
    served = Served(process, port, log_path, database_url)
    try:
        wait_until(lambda: process.poll() is not None or _answers(port), "intake to start", timeout=60,
                   interval=0.2)
        assert process.poll() is None, served.log()[-3000:]
    except BaseException:
        stop(served)
        raise
    return served


def stop(served: Served, graceful: bool = True) -> None:
    """SIGTERM and its drain (what an orchestrator does), or at once: after a transport test the
    drain only waits out the sockets it left stalled (3-6 s), and stopping is tested elsewhere
    (test_investigation_ops_probe, test_dev_command)."""
    if graceful:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            pass
    served.process.kill()
    served.process.wait(timeout=10)


@pytest.fixture
def serve_intake(amqp_uri, database_factory, tmp_path):
    """`serve_intake(nofile=200, CLOSELOOP_MAX_WORKERS="2")`: intake as its own process."""
    started = []

    def start(nofile: int | None = None, **settings) -> Served:
        served = launch(amqp_uri, database_factory("intake"), tmp_path / f"intake-{len(started)}.log", nofile,
                        **settings)
        started.append(served)
        return served

    yield start
    for served in started:
        stop(served, graceful=False)


@pytest.fixture(scope="module")
def front_door(amqp_uri, database_factory, tmp_path_factory):
    """One intake process for the framing tests; each test opens its own connections."""
    served = launch(amqp_uri, database_factory("intake"), tmp_path_factory.mktemp("front-door") / "intake.log",
                    **FAST)
    yield served
    stop(served, graceful=False)


@pytest.fixture(scope="module")
def module_token():
    from shared.security import auth

    return auth.issue_token(role="front_desk", subject="transport-test", branch="SH001", region=None)


def read_answer(sock: socket.socket) -> tuple[int, dict, dict]:
    """The next HTTP answer on `sock`: status, headers (lower-case names) and JSON body."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    raw = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise AssertionError(f"not JSON ({response.status}): {raw[:300]!r}") from None
    return response.status, headers, body


def closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True once the server has closed the connection (EOF or reset), within `timeout`."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (fails at the deadline)."""
    deadline, got = time.monotonic() + timeout, b""
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"the server kept the connection open; got {got[:300]!r}") from None
        if not data:
            return got
        got += data


def refused(served: Served, raw: bytes, status: int, code: str, half_close: bool = False) -> dict:
    """Send `raw`, and check the one answer: `status`, the JSON error shape, then the
    connection closed with nothing more (no second, smuggled request answered)."""
    with served.connect() as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        got = until_closed(sock)
    head, _, rest = got.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0].split(" ")[1] == str(status), got[:500]
    length = int(headers["content-length"])
    body = json.loads(rest[:length])
    assert body["error"]["code"] == code, body
    if "retry-after" in headers:  # the body says it too, as a 429 does
        assert body["error"].pop("retry_after") == int(headers["retry-after"])
    assert set(body["error"]) == {"code", "message", "fields"}
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert rest[length:] == b"", f"more after the answer: {rest[length:][:300]!r}"
    return body


def accepts_a_complaint(served: Served, token: str) -> bool:
    with served.connect() as sock:
        sock.sendall(post(f"Content-Length: {len(COMPLAINT)}\r\n", COMPLAINT, token))
        return read_answer(sock)[0] == 201


def post(head: str, body: bytes = b"", token: str = "") -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"POST /v1/complaints HTTP/1.1\r\nHost: intake\r\nContent-Type: application/json\r\n{auth}{head}\r\n"
            .encode() + body)


COMPLAINT = json.dumps({"kind": "praise", "channel": "wechat", "description": "发型师很专业",
                        "customer": {"name": "陈先生", "phone": "13900001111"}}).encode()


# -- framing (RFC 9112 §5.1, §6.1-6.3, §7.1)

def test_a_bad_chunk_size_is_400(front_door, module_token):
    refused(front_door, post("Transfer-Encoding: chunked\r\n", b"zz\r\n{}\r\n0\r\n\r\n", module_token),
            400, "malformed_request")
    # int(..., 16) would take these; a proxy in front may not
    refused(front_door, post("Transfer-Encoding: chunked\r\n", b"0x2\r\n{}\r\n0\r\n\r\n", module_token),
            400, "malformed_request")


def test_a_body_of_many_tiny_chunks_is_400(front_door, module_token):
    refused(front_door, post("Transfer-Encoding: chunked\r\n", b"1\r\n \r\n" * 4097 + b"0\r\n\r\n", module_token),
            400, "malformed_request")


def test_a_truncated_chunked_body_is_400(front_door, module_token):
    refused(front_door, post("Transfer-Encoding: chunked\r\n", b"40\r\n{\"kind\":", module_token),
            400, "malformed_request", half_close=True)


def test_a_truncated_body_is_400(front_door, module_token):
    refused(front_door, post("Content-Length: 40\r\n", b"{\"kind\":", module_token),
            400, "malformed_request", half_close=True)


def test_conflicting_content_lengths_are_400_and_the_rest_is_not_a_second_request(front_door, module_token):
    smuggled = b"GET /health/live HTTP/1.1\r\nHost: intake\r\n\r\n"
    refused(front_door, post("Content-Length: 2\r\nContent-Length: 45\r\n", b"{}" + smuggled, module_token),
            400, "malformed_request")


@pytest.mark.parametrize("value", ["+2", "1_0", "0x2", "2 2", "-1", "2,2"])
def test_a_content_length_that_is_not_a_number_is_400(front_door, module_token, value):
    refused(front_door, post(f"Content-Length: {value}\r\n", b"{}", module_token), 400, "malformed_request")


def test_whitespace_before_a_header_colon_is_400(front_door, module_token):
    refused(front_door, post("Transfer-Encoding : chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n", module_token),
            400, "malformed_request")
    refused(front_door, post("Content-Length\t: 2\r\n", b"{}", module_token), 400, "malformed_request")


def test_content_length_with_transfer_encoding_is_400_in_json(front_door, module_token):
    refused(front_door, post("Content-Length: 7\r\nTransfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n",
                             module_token), 400, "malformed_request")


def test_an_unknown_transfer_coding_is_refused(front_door, module_token):
    refused(front_door, post("Transfer-Encoding: gzip\r\n", b"{}", module_token), 400, "malformed_request")
    refused(front_door, post("Transfer-Encoding: gzip, chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n", module_token),
            501, "not_implemented")


def test_errors_below_the_app_are_json(front_door):
    refused(front_door, b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long")
    refused(front_door, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431,
            "headers_too_large")
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 4000) for i in range(20))
    refused(front_door, b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", 431, "headers_too_large")
    refused(front_door, b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported")
    refused(front_door, b"GET /health HTTP/1.x\r\nHost: x\r\n\r\n", 400, "malformed_request")
    refused(front_door, b"GARBAGE\r\n\r\n", 400, "malformed_request")


def test_bodies_over_the_limit_are_413(front_door, module_token):
    refused(front_door, post("Content-Length: 5000\r\n", b"{", module_token), 413, "payload_too_large")
    big = b"x" * 4097
    refused(front_door, post("Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big),
                             module_token), 413, "payload_too_large")


def test_sound_requests_share_a_connection(front_door, module_token):
    connection = http.client.HTTPConnection("127.0.0.1", front_door.port, timeout=15)
    headers = {"Authorization": f"Bearer {module_token}", "Content-Type": "application/json"}
    try:
        connection.request("POST", "/v1/complaints", body=COMPLAINT, headers=headers)
        first = connection.getresponse()
        assert first.status == 201, first.read()
        first.read()
        connection.request("POST", "/v1/complaints", body=iter([COMPLAINT[:10], COMPLAINT[10:]]),
                           headers=headers, encode_chunked=True)
        second = connection.getresponse()
        assert second.status == 201, second.read()
        assert json.loads(second.read())["reference"].startswith("SH001-")
        connection.request("GET", "/health/live")
        live = connection.getresponse()
        assert (live.status, json.loads(live.read())) == (200, {"status": "ok"})
    finally:
        connection.close()


# -- slow and idle clients

def test_headers_that_stall_are_408(front_door):
    refused(front_door, b"GET /health HTTP/1.1\r\nHost: x\r\n", 408, "request_timeout")


def test_a_request_line_trickled_a_byte_at_a_time_is_408_at_the_request_deadline(front_door):
    # Each byte comes well within the socket timeout (3 s): only the request deadline (2 s)
    # from the first byte can end it.
    line = b"GET /health/ready?" + b"x" * 200
    with front_door.connect() as sock:
        sock.settimeout(0.5)
        got = b""
        for byte in line:
            sock.sendall(bytes([byte]))
            try:
                got += sock.recv(65536)
            except socket.timeout:
                continue
            break
    assert got.split(b" ")[1] == b"408", got[:300]
    assert json.loads(got.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"


def test_idle_connections_are_closed_after_the_socket_timeout(front_door):
    with front_door.connect() as sock:
        started = time.monotonic()
        assert closed_by_server(sock, timeout=20)
        assert 2.5 <= time.monotonic() - started < 15


def test_clients_that_stall_mid_body_hold_no_worker_and_get_408(serve_intake, module_token):
    served = serve_intake(CLOSELOOP_MAX_WORKERS="3", CLOSELOOP_HTTP_REQUEST_TIMEOUT_SECONDS="8")
    stalled = []
    try:
        for _ in range(10):
            sock = served.connect(timeout=20)
            sock.sendall(post("Content-Length: 500\r\n", b'{"kind": ', module_token))
            stalled.append(sock)
        started = time.monotonic()
        with served.connect(timeout=7) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_answer(sock)
        assert status == 200, body
        assert time.monotonic() - started < 7
        for sock in stalled:
            status, headers, body = read_answer(sock)
            assert (status, body["error"]["code"]) == (408, "request_timeout")
            assert closed_by_server(sock)
    finally:
        for sock in stalled:
            sock.close()


def test_bodies_in_memory_are_capped_in_total(serve_intake, module_token):
    served = serve_intake(CLOSELOOP_MAX_BODY_BYTES="4096", CLOSELOOP_HTTP_BODY_BUFFER_BYTES="8192",
                          CLOSELOOP_HTTP_REQUEST_TIMEOUT_SECONDS="30")
    stalled = []
    try:
        for _ in range(2):
            stalled.append(served.connect())
            stalled[-1].sendall(post("Content-Length: 4000\r\n", b"{", module_token))
        refused(served, post("Content-Length: 1000\r\n", b"{}" * 500, module_token), 503, "unavailable")
    finally:
        for sock in stalled:
            sock.close()
    # their reservations are returned when the clients leave
    wait_until(lambda: accepts_a_complaint(served, module_token), "a body to be accepted again",
               timeout=30, interval=0.2)


def test_clients_that_reset_after_expect_100_continue_give_their_bodies_budget_back(serve_intake, module_token):
    # Budget for two bodies; each client reserves one, then resets: before or after the
    # server writes "100 Continue", its reservation must come back.
    served = serve_intake(CLOSELOOP_MAX_BODY_BYTES="4096", CLOSELOOP_HTTP_BODY_BUFFER_BYTES="8192")
    for n in range(20):
        sock = served.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        sock.sendall(post("Content-Length: 4000\r\nExpect: 100-continue\r\n", b"", module_token))
        if n % 2:
            assert sock.recv(100).startswith(b"HTTP/1.1 100")  # reserved, then gone
        sock.close()

    wait_until(lambda: accepts_a_complaint(served, module_token), "a body to be accepted after the resets",
               timeout=30, interval=0.2)


def test_connections_over_the_cap_are_answered_503(serve_intake):
    served = serve_intake(CLOSELOOP_HTTP_MAX_CONNECTIONS="4", CLOSELOOP_HTTP_SOCKET_TIMEOUT_SECONDS="30")
    idle = [served.connect() for _ in range(4)]
    try:
        with served.connect() as sock:
            status, headers, body = read_answer(sock)
        assert (status, body["error"]["code"]) == (503, "unavailable")
        assert headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: _answers(served.port, "/health/live"), "intake to serve once the idle clients left")


def test_running_out_of_descriptors_pauses_accepting_and_serving_resumes(serve_intake):
    served = serve_intake(nofile=128, CLOSELOOP_HTTP_SOCKET_TIMEOUT_SECONDS="30",
                          CLOSELOOP_HTTP_MAX_CONNECTIONS="1000")
    idle = []
    try:
        def starved():
            if served.process.poll() is not None or "cannot accept connections" in served.log():
                return True
            for _ in range(10):
                try:
                    idle.append(served.connect(timeout=2))
                except OSError:  # the listen backlog is full too
                    pass
            return False
        wait_until(starved, "intake to run out of descriptors", timeout=30, interval=0.1)
        assert served.process.poll() is None, f"intake died: {served.log()[-3000:]}"
    finally:
        for sock in idle:
            sock.close()
    wait_until(lambda: _answers(served.port, "/health"), "intake to serve again", timeout=30, interval=0.2)
    log = served.log()
    assert log.count("cannot accept connections") == 1, log[-3000:]
    assert "accepting connections again" in log
    assert served.process.poll() is None


# -- liveness

def test_liveness_answers_while_every_worker_is_busy(serve_intake, module_token):
    served = serve_intake(CLOSELOOP_MAX_WORKERS="2")
    dsn = served.database_url.replace("+psycopg2", "")
    lock = psycopg2.connect(dsn)
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True
    busy = []
    try:
        lock.cursor().execute("LOCK TABLE complaints IN ACCESS EXCLUSIVE MODE")
        for _ in range(3):
            sock = served.connect(timeout=30)
            sock.sendall(f"GET /v1/complaints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {module_token}\r\n\r\n"
                         .encode())
            busy.append(sock)

        def waiting() -> bool:
            with watcher.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                               "AND wait_event_type = 'Lock'")
                return cursor.fetchone()[0] >= 2
        wait_until(waiting, "both workers to wait on the locked table", timeout=30)

        started = time.monotonic()
        with served.connect(timeout=5) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, body = read_answer(sock)
        assert (status, body) == (200, {"status": "ok"})
        assert time.monotonic() - started < 2
        with served.connect(timeout=1.5) as sock:  # while a request that needs a worker waits
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(socket.timeout):
                sock.recv(1)
    finally:
        lock.rollback()
        lock.close()
        watcher.close()
    for sock in busy:
        with sock:
            status, _, body = read_answer(sock)
            assert status == 200, body
