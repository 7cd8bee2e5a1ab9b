"""An outside operator's probe of `closeloop serve investigation` as a real process: defects found
by running it as an operator would (see each test's docstring for what was observed)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.testing.fixtures import free_port, wait_until
from tests.e2e.test_front_door_transport import _answers, stop  # the same process handling

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ROOT / "services" / "investigation" / "processes"


def _env(amqp_uri: str, database_url: str, port: int, **settings) -> dict:
    return {**os.environ, "AMQP_URI": amqp_uri, "INVESTIGATION_DATABASE_URL": database_url,
            "INVESTIGATION_BIND": f"127.0.0.1:{port}", "CLOSELOOP_DEV_KEYS": "1",
            "CLOSELOOP_CUSTOMER_REF_KEY": "test-customer-ref-key", "CLOSELOOP_DB_POOL_SIZE": "3", **settings}


def _serve_once(env: dict, timeout: float = 60) -> tuple[int, str]:
    """Run `closeloop serve investigation` expecting it to refuse to start: (exit status, output)."""
    done = subprocess.run([sys.executable, "-m", "shared.cli", "serve", "investigation"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    return done.returncode, done.stdout.decode(errors="replace")


def _edited(tmp_path: Path, edit) -> Path:
    directory = tmp_path / "processes"
    shutil.copytree(PROCESSES, directory)
    edit(directory)
    return directory


def _bad_expression(directory: Path) -> None:
    path = directory / "complaint_case.bpmn"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('clocks["first_response"]["escalations"][1]', "__import__('os').getcwd()", 1),
                    encoding="utf-8")


def _missing_respond(directory: Path) -> None:
    path = directory / "complaint_case.bpmn"
    text = path.read_text(encoding="utf-8")
    for attribute in ("id", "targetRef", "sourceRef", "bpmnElement"):
        text = text.replace(f'{attribute}="respond"', f'{attribute}="respond_renamed"')
    path.write_text(text, encoding="utf-8")


def _unparseable(directory: Path) -> None:
    path = directory / "feedback_case.bpmn"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[: len(text) // 2], encoding="utf-8")


@pytest.mark.parametrize("edit, says", [(_bad_expression, "__import__"), (_missing_respond, "respond"),
                                        (_unparseable, "not well-formed")],
                         ids=["bad-expression", "missing-respond", "unparseable"])
def test_a_bad_process_file_stops_serve_with_one_line_not_a_traceback_wall(amqp_uri, database_factory, tmp_path,
                                                                          edit, says):
    """Observed: exit status 1 after ~140 lines holding three copies of the same traceback
    (eventlet's hub, nameko's runner, the CLI) with the one useful line at the very end.
    Expected (README "Processes": the service refuses to start on a failing file; as `serve`
    already does for missing keys or a bad policy): `closeloop: investigation cannot start:
    <file>: <problem>` in a line, no traceback, exit status 2."""
    directory = _edited(tmp_path, edit)
    env = _env(amqp_uri, database_factory("investigation"), free_port(), CLOSELOOP_PROCESS_DIR=str(directory))
    status, output = _serve_once(env)
    assert status != 0
    assert says in output
    assert "Traceback" not in output, f"{output.count('Traceback')} tracebacks in {len(output.splitlines())} lines"
    assert len([line for line in output.splitlines() if says in line]) >= 1
    assert len(output.splitlines()) <= 5, output[-2000:]


class Served:
    def __init__(self, process, port: int, log_path: Path):
        self.process, self.port, self.log_path = process, port, log_path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch(amqp_uri: str, database_url: str, log_path: Path, **settings) -> Served:
    """`closeloop serve investigation` as its own process, once it answers."""
    port = free_port()
    env = _env(amqp_uri, database_url, port, **settings)
    with open(log_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "investigation"], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Served(process, port, log_path)
    try:
        wait_until(lambda: process.poll() is not None or _answers(port, "/health/ready"), "investigation to start",
                   timeout=60, interval=0.2)
        assert process.poll() is None, served.log()[-3000:]
    except BaseException:
        stop(served)
        raise
    return served


@pytest.fixture
def serve_investigation(amqp_uri, tmp_path):
    started = []

    def start(database_url: str, **settings) -> Served:
        served = launch(settings.pop("amqp_uri", amqp_uri), database_url,
                        tmp_path / f"investigation-{len(started)}.log", **settings)
        started.append(served)
        return served

    yield start
    for served in started:
        stop(served)


def _registered_now(complaint_id: str | None = None) -> dict:
    """A complaint_registered event received now, with deadlines ahead (no timer due)."""
    from datetime import datetime, timedelta, timezone

    from shared.calendar.clock import isoformat
    from shared.testing.samples import complaint_event

    event = complaint_event()
    now = datetime.now(timezone.utc)
    event["payload"].update(received_at=isoformat(now), first_response_due=isoformat(now + timedelta(hours=24)),
                            resolution_due=isoformat(now + timedelta(days=7)))
    return event


def _case_count(database_url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("select count(*) from cases")).scalar_one()
    finally:
        engine.dispose()


def test_opening_a_case_does_not_flood_the_log_with_the_engines_task_states(serve_investigation, database_factory,
                                                                             amqp_uri):
    """Observed (LOG_LEVEL=INFO, the default): every case opened writes ~32 JSON lines from
    SpiffWorkflow's `spiff.task` / `spiff.workflow` loggers ("State changed to WAITING", "Initialized
    workflow" with every task id), and every timer step as many again: 6,931 of a replica's 6,938
    lines after 200 complaints, and not one line of investigation's own. The operator's log is
    the engine's debug trace; a real problem is buried in it.
    Expected: the engine's per-task chatter below INFO (or off), a handful of lines per case."""
    from tests.e2e.test_investigation_cases import publish_raw

    database_url = database_factory("investigation")
    served = serve_investigation(database_url)
    before = len(served.log().splitlines())
    cases = 5
    for _ in range(cases):
        publish_raw(amqp_uri, _registered_now())
    wait_until(lambda: _case_count(database_url) == cases, "the cases to open", timeout=30, interval=0.2)
    lines = served.log().splitlines()[before:]
    engine_lines = [line for line in lines if '"logger": "spiff' in line]
    assert len(engine_lines) <= cases, f"{len(engine_lines)} engine lines of {len(lines)} for {cases} cases"


def test_a_database_outage_answers_503_without_a_traceback_per_request(serve_investigation, database_factory,
                                                                        tcp_proxy, token):
    """Observed (PostgreSQL stopped for 18 s under 8 clients): every request answered 503 with
    Retry-After: 2 (good), but each also wrote an `error` line from nameko.containers ("error
    handling worker ...") with the full psycopg2 traceback: ~880 tracebacks per replica in 20 s.
    The consumer does the same on a deferral: each "temporary failure" line is followed by a
    nameko.containers "(expected) error handling worker" warning with the traceback (47 per replica
    in 20 s). Expected (README: logs say what happened in a line): the one warning line "database
    unavailable in GET /v1/cases/<case_id>" and no traceback."""
    import uuid

    import requests

    database_url = database_factory("investigation")
    proxy, proxied = tcp_proxy(database_url, 5432)
    served = serve_investigation(proxied)
    headers = {"Authorization": f"Bearer {token('store_manager', branch='SH001')}"}
    assert requests.get(served.url(f"/v1/cases/{uuid.uuid4()}"), headers=headers, timeout=10).status_code == 404
    proxy.cut()
    before = len(served.log())
    answers = [requests.get(served.url(f"/v1/cases/{uuid.uuid4()}"), headers=headers, timeout=40)
               for _ in range(5)]
    assert [a.status_code for a in answers] == [503] * 5
    assert all(a.headers.get("Retry-After") for a in answers)
    wait_until(lambda: "database unavailable in GET" in served.log()[before:], "the warning line", timeout=10)
    proxy.restore()
    wait_until(lambda: requests.get(served.url(f"/v1/cases/{uuid.uuid4()}"), headers=headers,
                                    timeout=10).status_code == 404, "investigation to answer again", timeout=30)
    during = served.log()[before:]
    assert "Traceback" not in during, f"{during.count('Traceback')} tracebacks for 5 refused requests"


def test_sigterm_while_the_broker_is_down_stops_within_15_seconds(serve_investigation, database_factory, amqp_uri,
                                                                  tcp_proxy):
    """Observed (RabbitMQ stopped with `rabbitmqctl stop_app`, then SIGTERM to an idle replica):
    "stopping services" at once, the 10 s graceful stop spent waiting on the consumer's reconnect
    loop, then "killing services" which never returns either, and after the 5 s kill budget
    `did not stop in 15 s; exiting` with status 1: the process was gone 15.3-15.7 s after the
    signal, three runs out of three. Expected (README, Commands: "SIGTERM stops it within 15 s"):
    gone within 15 s; with nothing in flight there is nothing to wait 10 s for."""
    database_url = database_factory("investigation")
    proxy, proxied = tcp_proxy(amqp_uri, 5672)
    served = serve_investigation(database_url, amqp_uri=proxied)
    proxy.cut()
    wait_until(lambda: "Error connecting to broker" in served.log(), "the consumer to notice", timeout=30,
               interval=0.2)
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    try:
        served.process.wait(timeout=30)
    finally:
        took = time.monotonic() - started
    assert took <= 15.0, f"stopped {took:.1f} s after SIGTERM, status {served.process.returncode}"


def test_serve_started_while_the_broker_is_down_waits_or_says_so_in_a_line(database_factory, tmp_path):
    """Observed (AMQP_URI naming a broker that refuses connections, e.g. RabbitMQ restarting when
    the host comes back): `closeloop serve investigation` exits with status 1 within 2 s after 286
    lines holding five tracebacks (ConnectionRefusedError, AttributeError: 'NoneType' object has no
    attribute 'channel', ...), none saying which broker it could not reach. A database down at
    start is waited for (README, "Databases are UTF-8"), and a broker lost later is waited for too.
    Expected: it waits for the broker the same way (or, at the least, refuses in one line naming
    the broker), without a traceback."""
    port = free_port()  # nothing listens there
    env = _env(f"amqp://guest:guest@127.0.0.1:{free_port()}//", database_factory("investigation"), port)
    log_path = tmp_path / "investigation.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "investigation"], cwd=ROOT,
                                   env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # it waits, a line a try (0, 1, 3 s...): the second try shows it kept waiting; or it ends
        wait_until(lambda: process.poll() is not None
                   or log_path.read_text(errors="replace").count(" unreachable (") >= 2,
                   "a second try at the broker, or the end", timeout=30, interval=0.2)
        output = log_path.read_text(errors="replace")
        assert "Traceback" not in output, (f"status {process.poll()}, {output.count('Traceback')} tracebacks "
                                           f"in {len(output.splitlines())} lines")
        if process.poll() is not None:
            assert len(output.splitlines()) <= 5, output[-2000:]
    finally:
        stop(Served(process, port, log_path))
