"""`make bench`: Closeloop's throughput and latency, each figure beside its ceiling.

    python -m bench.run [--seconds 15] [--profile]
        [--only intake,relay,consumer,cases,timers,lifecycle,engine,aftercare,reporting,console,customer_file]

Uses the RabbitMQ and PostgreSQL that `make test` would (AMQP_URI / DATABASE_URL, else the
local defaults), in a vhost `closeloop-bench` and databases `closeloop_bench_*` of its own.
Prints a table and writes bench/results/<time>.json and bench/results/latest.{json,md}.
Every step is bounded in time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import kombu
import sqlalchemy as sa

from shared.testing.samples import COMPLAINT_REQUEST, policy_for_load

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = {"intake_per_s": 600, "intake_p99_ms_at_200": 50, "relay_per_s": 5000, "consumer_per_s": 1000,
           "cases_per_s": 200, "timers_find_ms": 100, "timers_fire_per_s": 200,
           "aftercare_plans_per_s": 500, "aftercare_queue_ms": 20, "reporting_ingest_per_s": 2000,
           "reporting_kpis_ms": 50, "reporting_export_rows_per_s": 50_000, "reporting_export_rss_mb": 200,
           "console_page_p95_ms": 100, "console_page_bytes": 100_000, "customer_file_p95_ms": 50}
STEPS = ("intake", "relay", "consumer", "cases", "timers", "lifecycle", "engine", "aftercare", "reporting", "console",
         "customer_file")


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Child processes, each stopped (TERM, then KILL) when the step ends."""

    def __init__(self, env):
        self.env, self.children = env, []

    def start(self, *argv, wait_for: str | None = None, timeout: float = 30,
              log: Path | None = None) -> subprocess.Popen:
        """`wait_for`: a line its stdout prints when it is ready; `log`: a file for its stderr."""
        with open(log, "w") if log else open(os.devnull, "w") as stderr:
            child = subprocess.Popen([sys.executable, *argv], env=self.env, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE if wait_for else subprocess.DEVNULL, stderr=stderr)
        self.children.append(child)
        if wait_for:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = child.stdout.readline()
                if wait_for in line:
                    return child
                if not line and child.poll() is not None:
                    break
            raise RuntimeError(f"{argv} did not print {wait_for!r} within {timeout}s")
        return child

    def stop(self):
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children = []


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def wrk(url: str, seconds: int, lua: Path, connections: int = 32) -> dict:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout

    def latency(p):
        match = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not match:
            return None
        value, unit = float(match.group(1)), match.group(2)
        return round(value / 1000 if unit == "us" else value * 1000 if unit == "s" else value, 2)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": latency(50),
            "p99_ms": latency(99), "non_2xx": int(errors.group(1)) if errors else 0, "connections": connections}


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pids_named(name: str) -> list[int]:
    """Every local process called `name` (postgres, beam.smp); none for servers in containers
    or on other hosts."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == name:
                found.append(int(entry.name))
        except OSError:
            pass  # ended meanwhile
    return found


def cpu_by_pid(pids) -> dict[int, float]:
    """CPU seconds of each of `pids` still running."""
    read = {}
    for pid in pids:
        try:
            read[pid] = cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            pass  # ended meanwhile
    return read


class CpuMeter:
    """CPU milliseconds per request, by part, over one run: a figure that noisy neighbours
    move far less than throughput (each part's cost, not how much CPU was left for it).
    A part is the processes it names (a server: every local process of that name at the
    start), counted over those still running at the end: one that ended meanwhile (another
    client's database backend, a test's broker) would take its whole CPU time off."""

    def __init__(self, parts: dict[str, list[int]], servers=("postgres", "beam.smp")):
        named = {**parts, **{server: pids_named(server) for server in servers}}
        self.start = {name: cpu_by_pid(pids) for name, pids in named.items()}

    def per_request(self, requests: float) -> dict[str, float]:
        figures = {}
        for name, before in self.start.items():
            after = cpu_by_pid(before)
            if after and requests:
                figures[name] = round(1000 * sum(after[pid] - before[pid] for pid in after) / requests, 3)
        return figures


def drained(env, timeout: float = 60) -> None:
    """Wait until intake's relay has published every event and sent every message."""
    from shared.runtime import config as settings

    engine = sa.create_engine(settings.service_database_url("intake", env), poolclass=sa.pool.NullPool)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if not conn.execute(sa.text(
                        "SELECT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL) "
                        "OR EXISTS (SELECT 1 FROM notifications WHERE sent_at IS NULL AND failed_at IS NULL)")).scalar():
                    return
            time.sleep(0.2)
    finally:
        engine.dispose()
    raise RuntimeError(f"intake's relay left events or messages unsent after {timeout}s")


def wrk_script(path: Path, token: str, body: dict, dir_: Path) -> Path:
    body_file = dir_ / f"{path.name}.json"
    body_file.write_text(json.dumps(body, ensure_ascii=False))
    lua = dir_ / f"{path.name}.lua"
    lua.write_text(f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                   f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                   f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*a")\nf:close()\n')
    return lua


# --- steps -----------------------------------------------------------------------------------

def step_intake(env, seconds, work, results, profile: bool):
    """Two intake processes sharing one port (SO_REUSEPORT), one relay; then a bare nameko
    endpoint, two processes, as the ceiling."""
    from shared.security import auth

    token = auth.issue_token(role="front_desk", subject="bench", branch="SH001")
    lua = wrk_script(Path("complaint"), token, COMPLAINT_REQUEST, work)
    port = free_port()
    procs = Processes({**env, "INTAKE_BIND": f"127.0.0.1:{port}", "CLOSELOOP_MAX_WORKERS": "20",
                       "CLOSELOOP_DB_POOL_SIZE": "20", "LOG_LEVEL": "WARNING"})
    try:
        intakes = [procs.start("-m", "shared.cli", "serve", "intake") for _ in range(2)]
        relay = procs.start("-m", "shared.cli", "relay", "intake")
        wait_http(f"http://127.0.0.1:{port}/health")
        wrk(f"http://127.0.0.1:{port}/v1/complaints", 3, lua)  # warm up
        log(f"intake: wrk for {seconds}s against two processes")
        drained(env)
        meter = CpuMeter({"intake": [p.pid for p in intakes], "relay": [relay.pid]})
        results["intake"] = wrk(f"http://127.0.0.1:{port}/v1/complaints", seconds, lua)
        drained(env)
        results["intake"]["cpu_ms_per_complaint"] = meter.per_request(results["intake"]["per_s"] * seconds)
        log(f"intake: {results['intake']['per_s']}/s")
        body_file = work / "complaint.json"
        log(f"intake: 200 complaints/s offered for {seconds}s (open loop)")
        out = subprocess.run([sys.executable, "-m", "bench.loadgen", f"http://127.0.0.1:{port}/v1/complaints",
                              "200", str(seconds), str(body_file), token, "32"],
                             capture_output=True, text=True, timeout=seconds + 60, cwd=ROOT, env=env)
        results["intake_at_200"] = json.loads(out.stdout)
        if profile:
            results["intake_profile"] = profile_process(intakes[0].pid, port, lua, work)
    finally:
        procs.stop()
    bare_port = free_port()
    try:
        for _ in range(2):
            procs.start("-m", "bench.services", "http", str(bare_port), wait_for="ready")
        bare_lua = wrk_script(Path("bare"), token, COMPLAINT_REQUEST, work)
        wrk(f"http://127.0.0.1:{bare_port}/bare", 3, bare_lua)
        results["bare_http"] = wrk(f"http://127.0.0.1:{bare_port}/bare", seconds, bare_lua)
        log(f"bare nameko http: {results['bare_http']['per_s']}/s")
    finally:
        procs.stop()


def profile_process(pid: int, port: int, lua: Path, work: Path, seconds: int = 10) -> list[str]:
    """Where one intake process spends its time under load (py-spy, inclusive %)."""
    raw = work / "profile.txt"
    load = subprocess.Popen(["wrk", "-t2", "-c32", f"-d{seconds + 2}s", "-s", str(lua),
                             f"http://127.0.0.1:{port}/v1/complaints"], stdout=subprocess.DEVNULL)
    subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(pid), "-d", str(seconds),
                    "-r", "200", "-f", "raw", "-o", str(raw), "--nonblocking"],
                   capture_output=True, timeout=seconds + 30)
    load.wait(timeout=seconds + 30)
    inclusive, total = {}, 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        total += int(count)
        for frame in {f.split(" (")[0] + " " + f.split(" (")[-1].split(":")[0] for f in stack.split(";")}:
            inclusive[frame] = inclusive.get(frame, 0) + int(count)
    top = sorted(inclusive.items(), key=lambda kv: -kv[1])
    return [f"{100 * n / total:5.1f}% {frame}" for frame, n in top
            if "eventlet/hubs" not in frame and "greenthread" not in frame and "threading" not in frame][:25]


def step_relay(env, seconds, work, results, count: int = 20_000):
    """Relay: events/s from outbox rows to confirmed publishes; beside raw kombu publishing
    of the same bodies without confirms."""
    from shared.runtime import config as settings
    from shared.persistence.db import make_engine
    from shared.messaging.relay import Relay

    amqp = env["AMQP_URI"]
    engine = make_engine(settings.service_database_url("intake", env), 2)
    body = (work / "event.json").read_text()
    with kombu.Connection(amqp) as conn:
        sink = kombu.Queue("bench-relay-sink", kombu.Exchange("intake.events", "topic", durable=True), "#",
                           durable=True)(conn.channel())
        sink.declare()
        sink.purge()
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM outbox"))
        raw = conn.connection.dbapi_connection.cursor()
        from psycopg2.extras import execute_values

        execute_values(raw, "INSERT INTO outbox (event_id, exchange, routing_key, body) VALUES %s",
                       [(str(uuid.uuid4()), "intake.events", "complaint_registered", body) for _ in range(count)],
                       page_size=2000)
    relay = Relay(engine, amqp, batch_size=500, service="bench")
    started = time.perf_counter()
    deadline = started + 120
    while relay.publish_pending() and time.perf_counter() < deadline:
        pass
    elapsed = time.perf_counter() - started
    relay.publisher.close()
    results["relay"] = {"events": relay.published, "seconds": round(elapsed, 2),
                        "per_s": round(relay.published / elapsed, 1), "batch": 500}
    log(f"relay: {results['relay']['per_s']}/s")
    with kombu.Connection(amqp) as conn:
        producer = kombu.Producer(conn.channel())
        payload = body.encode()
        started = time.perf_counter()
        for _ in range(count):
            producer.publish(payload, exchange="intake.events", routing_key="complaint_registered",
                             content_type="application/json", content_encoding="utf-8", delivery_mode=2,
                             serializer=None)
        elapsed = time.perf_counter() - started
        kombu.Queue("bench-relay-sink")(conn.channel()).delete()
    results["raw_kombu_no_confirms"] = {"events": count, "seconds": round(elapsed, 2),
                                        "per_s": round(count / elapsed, 1)}
    log(f"raw kombu without confirms: {results['raw_kombu_no_confirms']['per_s']}/s")
    engine.dispose()


def step_consumer(env, seconds, work, results, count: int = 5_000):
    """A safe handler (schema check, inbox row, commit) draining a preloaded queue; beside a
    bare nameko event handler draining the same events."""
    from shared.messaging import topology, dead_letters, consumer
    from shared.runtime import config as settings
    from shared.persistence.db import make_engine
    from shared.messaging.inbox import INBOX
    from shared.messaging.relay import Publisher

    amqp = env["AMQP_URI"]
    inbox_handler = topology.HandlerTopology("intake", "complaint_registered", "benchinbox", "consume",
                                        topology.retry_delays())
    bare_queue = topology.HandlerTopology("intake", "complaint_registered", "benchbare", "consume", ())
    topology.declare(amqp, [inbox_handler])
    with kombu.Connection(amqp) as conn:
        for queue in (inbox_handler.queue(), bare_queue.queue()):
            bound = queue(conn.channel())
            bound.declare()
            bound.purge()
    engine = make_engine(settings.service_database_url("benchinbox", env), 2)
    with engine.begin() as conn:
        conn.execute(INBOX.delete())
    template = json.loads((work / "event.json").read_text())
    publisher = Publisher(amqp)
    for start in range(0, count, 500):
        batch = []
        for _ in range(min(500, count - start)):
            event = {**template, "event_id": str(uuid.uuid4())}
            batch.append(("intake.events", "complaint_registered", json.dumps(event, ensure_ascii=False),
                          event["event_id"]))
        publisher.publish_batch(batch)
    publisher.close()

    def drain(kind: str, progress) -> dict:
        procs = Processes(env)
        try:
            procs.start("-m", "bench.services", kind, wait_for="ready")
            first = progress()
            started = time.perf_counter()
            deadline = started + 120
            while progress() < count and time.perf_counter() < deadline:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            done = progress() - first
            return {"events": done, "seconds": round(elapsed, 2), "per_s": round(done / elapsed, 1)}
        finally:
            procs.stop()

    def inbox_rows():
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(INBOX)).scalar()

    def bare_done():
        return count - dead_letters.queue_depths(amqp, [bare_queue.queue_name])[bare_queue.queue_name]

    results["consumer_inbox"] = drain("inbox-consumer", inbox_rows)
    log(f"consumer with inbox: {results['consumer_inbox']['per_s']}/s")
    results["consumer_bare"] = drain("bare-consumer", bare_done)
    log(f"bare nameko handler: {results['consumer_bare']['per_s']}/s")
    engine.dispose()


def step_cases(env, seconds, work, results, count: int = 5_000):
    """One `closeloop serve investigation` process opening cases from a backlog of `count`
    complaint_registered events (distinct complaints, received now), for at most `seconds`
    from its first case: cases a second and CPU per case; beside the engine alone starting
    the same process."""
    from bench import cases
    from shared.messaging import dead_letters, topology
    from shared.messaging.relay import Publisher
    from shared.persistence import db

    url = cases.fresh_database(env)
    declared = subprocess.run([sys.executable, "-m", "shared.cli", "bus", "declare"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    if declared.returncode:
        raise RuntimeError(f"closeloop bus declare failed: {declared.stderr.strip()}")
    now = datetime.now(timezone.utc)
    alone = cases.Investigation.at(url, now, env.get("CLOSELOOP_POLICY_FILE"))
    try:
        engine_start_per_s = cases.engine_starts(alone)
    finally:
        alone.close()
    messages = cases.registrations(count, now)
    publisher = Publisher(env["AMQP_URI"])
    try:
        for start in range(0, count, 500):
            publisher.publish_batch(messages[start:start + 500])
    finally:
        publisher.close()
    counter = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def opened() -> int:
        with counter.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM cases")).scalar()

    procs = Processes({**env, "INVESTIGATION_BIND": f"127.0.0.1:{free_port()}", "LOG_LEVEL": "WARNING"})
    service_log = work / "investigation.log"
    try:
        service = procs.start("-m", "shared.cli", "serve", "investigation", log=service_log)
        log(f"cases: {count} events queued; one investigation process, at most {seconds}s")
        deadline = time.monotonic() + 60
        while opened() == 0:
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"investigation opened no case: {service_log.read_text()[-2000:]}")
            time.sleep(0.05)
        time.sleep(1)  # warmed up, its pool's connections open: measure from here
        first = opened()
        with counter.connect() as conn:  # the backends working for it (a local server's)
            backends = set(conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )).scalars()) & set(pids_named("postgres"))
        meter = CpuMeter({"investigation": [service.pid], "its postgres backends": sorted(backends)},
                         servers=("beam.smp",))
        started, done = time.perf_counter(), first
        while done < count and time.perf_counter() - started < seconds:
            time.sleep(0.1)
            done = opened()
        elapsed = time.perf_counter() - started
        cpu = meter.per_request(done - first)
    finally:
        procs.stop()
        counter.dispose()
        db.drop_database(url)
    handler = topology.HandlerTopology("intake", "complaint_registered", "investigation", "open_case",
                                       topology.retry_delays())
    side = [q.name for q in handler.side_queues()]  # events that failed: retried or parked
    failed = sum(max(depth, 0) for depth in dead_letters.queue_depths(env["AMQP_URI"], side).values())
    results["cases"] = {"cases": done - first, "seconds": round(elapsed, 2),
                        "per_s": round((done - first) / elapsed, 1), "cpu_ms_per_case": cpu,
                        "engine_start_per_s": engine_start_per_s, "failed_events": failed}
    log(f"cases: {results['cases']['per_s']}/s, investigation CPU {cpu.get('investigation')} ms a case")


def step_timers(env, seconds, work, results):
    """100,000 waiting cases, 1,000 of them due: finding them (engine.claim_due), firing them
    through handlers.fire_timers (the case, its events and notices with each fire)."""
    from bench import cases
    from shared.persistence import db

    url = cases.fresh_database(env)
    try:
        results["timers"] = cases.measure_timers(url, policy_file=env.get("CLOSELOOP_POLICY_FILE"))
    finally:
        db.drop_database(url)
    timers = results["timers"]
    log(f"timers: find {timers['find_due_ms']} ms, fire {timers['fire_per_s']}/s (seeded in {timers['seed_s']}s)")


def step_lifecycle(env, seconds, work, results):
    """Whole complaint cases through investigation's handlers, opened to closed (a remedy above
    authority approved, the written result, a satisfied follow-up): case events a second."""
    from bench import cases
    from shared.persistence import db

    url = cases.fresh_database(env)
    try:
        results["lifecycle"] = cases.lifecycle(url)
    finally:
        db.drop_database(url)
    whole = results["lifecycle"]
    log(f"lifecycle: {whole['case_events_per_s']} case events/s ({whole['cases_per_s']} whole cases/s, "
        f"{whole['events_per_case']} events each); ms per step {whole['step_ms']}")


def step_engine(env, seconds, work, results):
    """The workflow engine alone on the tests' example process (bench/workflow_engine.py)."""
    from bench import workflow_engine

    shape = {"instances": 1000, "waiting": 100_000, "due": 1000}
    results["engine"] = {**shape, **workflow_engine.measure(env["DATABASE_URL"], **shape)}
    log(f"engine: {results['engine']}")


def fresh_database(service: str, env) -> str:
    """The bench's database of `service` (closeloop_bench_<service>, or <SERVICE>_DATABASE_URL's),
    dropped if an earlier or interrupted run left it, created and migrated: its URL."""
    from bench import storage
    from shared.runtime import config as settings

    return storage.fresh(settings.service_database_url(service, env), service)


def bench_module(module: str, env, *argv: str, timeout: float, database_url: str) -> dict:
    """`python -m bench.<module> --json <argv>` in a process of its own: its figures. The
    database it makes (`database_url`) is dropped after, also when the run is cut short."""
    from shared.persistence import db

    try:
        out = subprocess.run([sys.executable, "-m", f"bench.{module}", "--json", *argv], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout)
    finally:
        db.drop_database(database_url)
    if out.returncode:
        raise RuntimeError(f"bench.{module} {argv[0]} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def step_aftercare(env, seconds, work, results):
    """Aftercare (issue 10, bench/aftercare.py), each part in a process of its own, bounded in
    time: visits planned a second from sale_recorded events through handlers.plan_sale (one
    worker; four eventlet workers in one process; the engine alone beside them), then the
    agent's queue (handlers.list_visits) among 1,000,000 visits of one branch loaded with COPY."""
    from bench import aftercare

    def run(*argv: str, timeout: float) -> dict:
        return bench_module("aftercare", env, *argv, timeout=timeout, database_url=aftercare.database_url(env))

    log(f"aftercare: plans from sale_recorded events, each measure at most {seconds}s")
    plans = results["aftercare_plans"] = run("plans", "--sales", "2000", "--workers", "4", "--seconds", str(seconds),
                                             timeout=3 * seconds + 240)
    log(f"aftercare: {plans['one_worker']['visits_per_s']} visits/s one worker, "
        f"{plans['workers']['visits_per_s']}/s four (engine alone {plans['engine_start_per_s']}/s)")
    log("aftercare: the queue among 1,000,000 visits of one branch (a minute or two loading them)")
    queue = results["aftercare_queue"] = run("queue", "--visits", "1000000", "--others", "300000", "--runs", "50",
                                             timeout=1200)
    log("aftercare queue p50/p95 ms: " + ", ".join(f"{name} {q['p50_ms']}/{q['p95_ms']}"
                                                   for name, q in queue["queries"].items()))


def step_reporting(env, seconds, work, results):
    """Reporting (issue 11, bench/reporting.py), each part in a process of its own, bounded in
    time: the events one `closeloop serve reporting` process logs and folds a second from the
    bus (50,000 of a chain's last 30 days, batches of 500 (the default), 250 and 100); then, on
    1,000,000 cases of 1,000 branches over two years loaded with COPY, queries.kpis for every grouping
    (HQ, a region, a branch; 30 days and a year) and the CSV export of them all (rows a second,
    the process's peak RSS), with an XLSX of about 100,000 rows beside it."""
    from bench import reporting

    def run(*argv: str, timeout: float) -> dict:
        return bench_module("reporting", env, *argv, timeout=timeout, database_url=reporting.database_url(env))

    log("reporting: 50,000 events through the bus into one process, batches of 500 (the default), 250 and 100")
    ingest = results["reporting_ingest"] = run("ingest", "--events", "50000", "--batches", "500,250,100",
                                               "--timeout", "300", timeout=1200)
    log("reporting ingest events/s: " + ", ".join(f"batch {b} {r['per_s']}" for b, r in ingest["runs"].items()))
    log("reporting: KPIs and exports among 1,000,000 cases (several minutes loading them)")
    reads = results["reporting_reads"] = run("reads", "--cases", "1000000", "--runs", "30", "--budget", "10",
                                             timeout=3600)
    log(f"reporting: slowest KPI query {reads['kpis']['slowest']}, CSV export "
        f"{reads['export']['csv'].get('rows_per_s')} rows/s, peak RSS {reads['export']['csv'].get('peak_rss_mb')} MB")


def own_run(module: str, env, drop_all, timeout: float = 3600) -> dict:
    """`python -m bench.<module> --json` in a process of its own: its figures. What it made (its
    vhost, its databases) is dropped after by `drop_all(env)`, also when the run is cut short."""
    try:
        out = subprocess.run([sys.executable, "-m", f"bench.{module}", "--json"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=timeout)
    finally:
        drop_all(env)
    if out.returncode:
        raise RuntimeError(f"bench.{module} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def step_console(env, seconds, work, results):
    """The staff console (issue 12, bench/console.py) in a process of its own, bounded in time:
    every page's server time for the roles that work in it, with 10,000 open cases and about
    2,500 visits due in one branch (templates through the real path, then cloned), and the bytes
    each page sends with its assets. Its own vhost and databases; all dropped at the end."""
    from bench import console

    log("console: four services, the console and three relays; 10,000 open cases (a few minutes loading them)")
    figures = results["console"] = own_run("console", env, console.drop_all)
    slow = [f"{p['page']} ({p['role']}) {p['p95_ms']} ms" for p in figures["pages"] if not p["met"]["p95"]]
    log(f"console: {len(figures['pages'])} pages measured; over {TARGETS['console_page_p95_ms']} ms at p95: "
        + (", ".join(slow) or "none"))


def step_customer_file(env, seconds, work, results):
    """The customer file (issue 13, bench/customer_file.py) in a process of its own, bounded in
    time: GET /v1/customers/{customer_ref} of a reporting process over HTTP among 1,000,000
    customers loaded with COPY, for a customer with 200 cases, 200 sales and 200 visits and for
    ordinary ones, with an HQ token and a branch token. Its own vhost and database; both dropped
    at the end."""
    from bench import customer_file

    log("customer file: 1,000,000 customers' records (a few minutes loading them), then the file over HTTP")
    figures = results["customer_file"] = own_run("customer_file", env, customer_file.drop_all)
    log("customer file p95 ms: " + ", ".join(f"{k} {figures[k]['p95_ms']}" for k in CUSTOMER_FILE_SERIES))


# --- set-up and report -----------------------------------------------------------------------

def prepare(env) -> dict:
    """A vhost and fresh databases of the benchmark's own."""
    from shared.security import auth
    from shared.messaging import topology, dead_letters, consumer
    from shared.persistence import db
    from shared.runtime import config as settings
    from shared.messaging.inbox import add_tables
    from shared.testing import infra

    resolved = infra.resolve(env)
    try:
        infra.delete_vhost(resolved, "closeloop-bench")
    except Exception:
        pass
    env = {**env, "AMQP_URI": infra.create_vhost(resolved, "closeloop-bench"),
           "DATABASE_URL": resolved.database_url, "CLOSELOOP_DB_PREFIX": "closeloop_bench", "CLOSELOOP_DEV_KEYS": "1"}
    for service in ("intake", "benchinbox"):
        url = settings.service_database_url(service, env)
        db.drop_database(url)
        db.create_database(url)
    db.migrate("intake", settings.service_database_url("intake", env))
    engine = db.make_engine(settings.service_database_url("benchinbox", env), 1)
    metadata = sa.MetaData()
    add_tables(metadata)
    metadata.create_all(engine)
    engine.dispose()
    topology.declare(env["AMQP_URI"], consumer.all_handlers())
    auth.ensure_dev_keys()
    env.setdefault("CLOSELOOP_POLICY_FILE", policy_for_load())
    return env


def sample_event() -> dict:
    from shared.testing.samples import complaint_event

    return complaint_event()


def report(results: dict) -> str:
    def row(what, value, ceiling, target, unit, met):
        return f"| {what} | {value} {unit} | {ceiling} | {target} | {'met' if met else 'NOT met'} |"

    intake, at200 = results.get("intake"), results.get("intake_at_200")
    # A figure made of refusals is no figure: any non-2xx answer fails the target.
    if intake and intake.get("non_2xx"):
        intake = {**intake, "per_s": 0.0}
    if at200 and set(at200.get("statuses", {})) - {"201"}:
        at200 = {**at200, "p99_ms": float("inf")}
    cases, timers, engine = results.get("cases"), results.get("timers"), results.get("engine")
    if cases and cases.get("failed_events"):  # nor one that left events failing
        cases = {**cases, "per_s": 0.0}
    if timers and timers.get("failed"):
        timers = {**timers, "fire_per_s": 0.0}
    lines = ["| measure | Closeloop | ceiling, same run | target | |", "|---|---|---|---|---|"]
    if intake:
        lines.append(row("intake complaints accepted, 2 processes", intake["per_s"],
                         f"{results['bare_http']['per_s']}/s bare nameko HTTP, 2 processes",
                         f">= {TARGETS['intake_per_s']}/s", "/s", intake["per_s"] >= TARGETS["intake_per_s"]))
    if at200:
        lines.append(row("intake p50 / p99 at 200 complaints/s offered", f"{at200['p50_ms']} / {at200['p99_ms']}",
                         f"achieved {at200['achieved_per_s']}/s", f"p99 < {TARGETS['intake_p99_ms_at_200']} ms",
                         "ms", at200["p99_ms"] < TARGETS["intake_p99_ms_at_200"]))
    if "relay" in results:
        lines.append(row("relay, outbox to confirmed publish", results["relay"]["per_s"],
                         f"{results['raw_kombu_no_confirms']['per_s']}/s raw kombu without confirms",
                         f">= {TARGETS['relay_per_s']}/s", "/s", results["relay"]["per_s"] >= TARGETS["relay_per_s"]))
    if "consumer_inbox" in results:
        lines.append(row("consumer with schema check and inbox dedup", results["consumer_inbox"]["per_s"],
                         f"{results['consumer_bare']['per_s']}/s bare nameko event handler",
                         f">= {TARGETS['consumer_per_s']}/s", "/s",
                         results["consumer_inbox"]["per_s"] >= TARGETS["consumer_per_s"]))
    if cases:
        lines.append(row("cases opened from complaint_registered events, 1 investigation process", cases["per_s"],
                         f"{cases['engine_start_per_s']}/s complaint_case started by the engine alone, 1 connection",
                         f">= {TARGETS['cases_per_s']}/s", "/s", cases["per_s"] >= TARGETS["cases_per_s"]))
    if timers:
        find_ceiling = (f"{engine['find_due_ms']} ms the engine alone, example process" if engine
                        else f"first call {timers['find_due_first_ms']} ms")
        lines.append(row(f"timers: find the {timers['due']:,} due among {timers['waiting']:,} waiting cases",
                         timers["find_due_ms"], find_ceiling, f"< {TARGETS['timers_find_ms']} ms", "ms",
                         timers["find_due_ms"] < TARGETS["timers_find_ms"]))
        lines.append(row("timers: fired through the timer poll's handler (case, events, notices)",
                         timers["fire_per_s"], f"{timers['engine_fire_per_s']}/s engine.fire_due alone, same cases",
                         f">= {TARGETS['timers_fire_per_s']}/s", "/s",
                         timers["fire_per_s"] >= TARGETS["timers_fire_per_s"]))
    aftercare_rows, aftercare_notes = aftercare_lines(results.get("aftercare_plans"), results.get("aftercare_queue"))
    lines += aftercare_rows
    reporting_rows, reporting_notes = reporting_lines(results.get("reporting_ingest"), results.get("reporting_reads"))
    lines += reporting_rows
    console_rows, console_notes = console_lines(results.get("console"))
    lines += console_rows
    lines += customer_file_lines(results.get("customer_file"))
    lines += cpu_line("CPU per complaint accepted", (results.get("intake") or {}).get("cpu_ms_per_complaint"))
    lines += cpu_line("CPU per case opened", (cases or {}).get("cpu_ms_per_case"))
    if timers:
        fired = ", ".join(f"{name} {n}" for name, n in timers["timers"].items())
        lines += ["", f"Timers: {timers['templates']} cases opened through handlers.open_case, cloned to "
                  f"{timers['cases']:,} in {timers['seed_s']} s; each fire wrote {timers['events_per_fire']} events "
                  f"and {timers['notices_per_fire']} staff notices ({fired}), "
                  f"{timers['bench_cpu_ms_per_fire']} ms CPU of the firing process."]
    whole = results.get("lifecycle")
    if whole:
        steps = ", ".join(f"{name} {ms}" for name, ms in whole["step_ms"].items())
        lines += ["", f"Whole cases (investigation's handlers, one worker, no HTTP or bus): {whole['cases']} "
                  f"complaint cases opened, a 5,000 CNY refund approved by the regional manager, fulfilled, the "
                  f"written result sent, closed by a satisfied follow-up: {whole['case_events_per_s']} case events "
                  f"a second ({whole['events_per_case']} each, {whole['cases_per_s']} whole cases a second); "
                  f"ms per step: {steps}."]
    if engine:
        lines += ["", "Workflow engine alone (bench/workflow_engine.py, tests/workflow_fixtures/example_case.bpmn): "
                  f"a step to the first wait {engine['step_ms']} ms, serializing {engine['serialize_ms']} ms, "
                  f"restoring {engine['restore_ms']} ms ({engine['state_bytes']:,} bytes); "
                  f"{engine['start_per_s']} starts/s; an event {engine['event_ms']} ms ({engine['events_per_s']}/s); "
                  f"among {engine['waiting']:,} waiting, finding the {engine['fired']:,} due "
                  f"{engine['find_due_ms']} ms, firing them {engine['fire_per_s']}/s."]
    if aftercare_notes:
        lines += ["", " ".join(aftercare_notes)]
    lines += [line for note in reporting_notes for line in ("", note)]
    lines += [line for note in console_notes for line in ("", note)]
    return "\n".join(lines)


QUEUE_QUERIES = {"due_now": "the default queue (due now)", "due_within_week": "due within a week",
                 "second_page": "the default queue's second page (its next_cursor)",
                 "completed": "status=completed", "hq_every_branch": "an HQ caller, every branch",
                 "region_two_branches": "a regional manager, two branches",
                 "smaller_branch": "an agent of a branch with 100,000 visits"}


def aftercare_lines(plans: dict | None, queue: dict | None) -> tuple[list[str], list[str]]:
    """The aftercare step's rows of the table, and its sentences under it."""
    rows, notes = [], []
    if plans:
        ceiling = f"{plans['engine_start_per_s']}/s return_visit started by the engine alone, 1 connection"
        for key, what in (("one_worker", "1 worker"), ("workers", f"{plans['workers']['workers']} eventlet workers")):
            f = plans[key]
            rows.append(f"| aftercare: visits planned from sale_recorded (one hair-colour item a sale), {what}, "
                        f"1 process | {f['visits_per_s']} /s | {ceiling} | >= {TARGETS['aftercare_plans_per_s']}/s | "
                        f"{'met' if f['visits_per_s'] >= TARGETS['aftercare_plans_per_s'] else 'NOT met'} |")
        three = plans["one_worker_three_items"]
        notes.append(f"Aftercare plans (handlers.plan_sale as a consumer worker runs it, its inbox claim included): "
                     f"one worker {plans['one_worker']['sales_per_s']} sales/s of one item "
                     f"({plans['one_worker']['cpu_ms_per_sale']} ms CPU of the process a sale), "
                     f"{three['sales_per_s']} sales/s of three items planning {three['visits_per_s']} visits/s "
                     f"({three['cpu_ms_per_sale']} ms CPU a sale).")
    if queue:
        for name, q in queue["queries"].items():
            met = q["p95_ms"] < TARGETS["aftercare_queue_ms"]
            rows.append(f"| aftercare queue, {queue['visits']:,} visits in the branch: "
                        f"{QUEUE_QUERIES.get(name, name)}, p50 / p95 | {q['p50_ms']} / {q['p95_ms']} ms | "
                        f"SQL {q['plan']['execution_ms']} ms (EXPLAIN ANALYZE) | "
                        f"p95 < {TARGETS['aftercare_queue_ms']} ms | {'met' if met else 'NOT met'} |")
        load, default = queue["load"], queue["queries"]["due_now"]
        notes.append(f"Aftercare queue: {load['rows']:,} visits loaded with COPY in {load['load_s']} s "
                     f"({load['branch_open']:,} of the branch's open, {load['branch_due']:,} due now); "
                     f"{queue['runs']} calls of handlers.list_visits each. The default queue's call: "
                     f"{default['cpu_p50_ms']} ms CPU (p50); apart, its SQL through psycopg2 "
                     f"{default['sql_through_driver_ms']} ms and building its statement with SQLAlchemy "
                     f"{default['statement_build_ms']} ms.")
    return rows, notes


KPI_SCOPES = {"hq": "HQ, every branch", "region": "a region's 50 branches", "branch": "one branch"}
KPI_PERIODS = {"30d": "the last 30 days", "1y": "a year"}


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def reporting_lines(ingest: dict | None, reads: dict | None) -> tuple[list[str], list[str]]:
    """The reporting step's rows of the table, and its sentences under it."""
    rows, notes = [], []
    if ingest:
        target = TARGETS["reporting_ingest_per_s"]
        for batch, r in ingest["runs"].items():
            whole = r["complete"] and not r["failed_events"]  # a run that left events unlogged or failing: no figure
            rows.append(f"| reporting: events logged and folded from the bus, batches of {batch}, 1 process | "
                        f"{r['per_s']} /s{'' if whole else ' (NOT all logged, or some failed)'} | "
                        f"{r['cpu_s_per_1000']} s CPU of the process and {r['postgres_cpu_s_per_1000']} s of its "
                        f"PostgreSQL backends per 1,000 events | >= {target}/s | "
                        f"{_met(whole and r['per_s'] >= target)} |")
        first = next(iter(ingest["runs"].values()))
        notes.append(f"Reporting ingest: {ingest['events']:,} events of a chain of {ingest['branches']:,} branches' "
                     f"last 30 days (most: " + ", ".join(f"{k} {v:,}" for k, v in list(ingest["kinds"].items())[:6])
                     + f") published before one `closeloop serve reporting` started; events a second from its first "
                     f"logged event, the whole drain {first['from_start_s']} s from its start (batches of "
                     f"{first['batch']}); {first['cases']:,} cases, {first['visits']:,} visits, "
                     f"{first['sale_items']:,} sale items and {first['alerts']} alerts folded.")
    for part in ("kpis", "export"):
        failed = ((reads or {}).get(part) or {}).get("error")
        if failed:
            rows.append(f"| reporting {part} among {reads['cases']:,} cases | failed | {failed[:200]} | | NOT met |")
    kpis = (reads or {}).get("kpis")
    if kpis and "error" not in kpis:
        target = TARGETS["reporting_kpis_ms"]
        for scope, scope_text in KPI_SCOPES.items():
            for period, period_text in KPI_PERIODS.items():
                group = [q for q in kpis["queries"].values() if q["scope"] == scope and q["period"] == period]
                if not group:
                    continue
                worst = max(group, key=lambda q: q["p95_ms"])
                plain = next(q for q in group if q["group_by"] is None)
                under = sum(q["p95_ms"] < target for q in group)
                rows.append(f"| reporting KPIs among {reads['cases']:,} cases: {scope_text}, {period_text}, the worst "
                            f"of {len(group)} groupings ({worst['group_by'] or 'none'}), p50 / p95 | "
                            f"{worst['p50_ms']} / {worst['p95_ms']} ms | no grouping {plain['p95_ms']} ms at p95; "
                            f"{under} of {len(group)} under {target} ms | p95 < {target} ms | "
                            f"{_met(under == len(group))} |")
        load = reads["load"]
        slowest = kpis["queries"][kpis["slowest"]]
        jit = "; ".join(f"{name} {j['p50_ms']} ms (with it {j['with_jit_p50_ms']})"
                        for name, j in kpis["jit_off"].items())
        notes.append(f"Reporting KPIs: {', '.join(f'{n:,} {t}' for t, n in load['rows'].items())} loaded with COPY "
                     f"in {load['load_s']} s ({'after refresh_rollups' if load['rollups'] else 'no rollups'}); "
                     f"queries.kpis called {kpis['runs']} times each at most ({kpis['budget_s']} s each). The slowest, "
                     f"{kpis['slowest']}: {slowest['p95_ms']} ms at p95 over {slowest['runs']} runs; its statements "
                     f"(EXPLAIN ANALYZE, of which JIT compiling): "
                     + ", ".join(f"{e['statement']} {e['execution_ms']} ms ({e['jit_ms'] or 0} ms)"
                                 for e in kpis["explain"]["slowest"]["statements"])
                     + f". With PostgreSQL's JIT off, p50: {jit}.")
    export = (reads or {}).get("export")
    if export and "error" not in export:
        csv, xlsx = export["csv"], export["xlsx"]
        good = "error" not in csv and not csv["check"]["problems"]
        rows.append(f"| reporting CSV export of {csv['expected_rows']:,} cases, hq_analyst | "
                    f"{csv.get('rows_per_s', 0) if good else 0} rows/s | "
                    f"{csv.get('error') or '; '.join(csv['check']['problems'][:3]) or 'the CSV well formed'} | "
                    f">= {TARGETS['reporting_export_rows_per_s']:,} rows/s | "
                    f"{_met(good and csv['rows_per_s'] >= TARGETS['reporting_export_rows_per_s'])} |")
        rows.append(f"| reporting CSV export: the process's peak RSS (VmHWM) | {csv['peak_rss_mb']} MB | idle "
                    f"{csv.get('idle_rss_mb')} MB before the request | < {TARGETS['reporting_export_rss_mb']} MB | "
                    f"{_met(csv['peak_rss_mb'] < TARGETS['reporting_export_rss_mb'])} |")
        off = export.get("csv_jit_off") or {}
        notes.append(f"Reporting exports: the CSV ({csv['bytes'] / 1e6:.0f} MB) in {csv['seconds']} s, its first byte "
                     f"after {csv['first_byte_s']} s, RSS at each tenth of the body {csv.get('rss_by_tenth_mb')} MB; "
                     f"CPU per 1,000 rows: the process {csv.get('cpu_ms_per_1000_rows')} ms, its PostgreSQL backends "
                     f"{csv.get('postgres_cpu_ms_per_1000_rows')} ms. With PostgreSQL's JIT off (PGOPTIONS): "
                     f"{off.get('rows_per_s')} rows/s, the first byte after {off.get('first_byte_s')} s. "
                     + (f"The XLSX of {xlsx['expected_rows']:,} cases failed ({xlsx['status']}): {xlsx['error']}."
                        if "error" in xlsx else
                        f"The XLSX of {xlsx['rows']:,} cases: {xlsx['seconds']} s ({xlsx['rows_per_s']} rows/s), "
                        f"peak RSS {xlsx['peak_rss_mb']} MB."))
    return rows, notes


def console_lines(console: dict | None) -> tuple[list[str], list[str]]:
    """The console step's rows (a page for a role each: time and bytes) and its sentences."""
    if not console:
        return [], []
    rows, target_ms, target_bytes = [], TARGETS["console_page_p95_ms"], TARGETS["console_page_bytes"]
    for p in console["pages"]:
        calls = "; ".join(f"{name} {c['mean_ms']} ms x{c['per_page']}" for name, c in p["calls"].items())
        refused = "" if set(p["statuses"]) == {"200"} else f" (answers {p['statuses']})"
        rows.append(f"| console {p['page']} ({p['role']}, `{p['path']}`): p50 / p95; bytes with its assets | "
                    f"{p['p50_ms']} / {p['p95_ms']} ms{refused}; {p['sent_bytes'] / 1000:.1f} KB sent ({p['total_bytes'] / 1000:.1f} unpacked) | the console's own "
                    f"mean {p['console_mean_ms']} ms (its metrics){'; ' + calls if calls else ''}; gzipped "
                    f"{p['total_gzip_bytes'] / 1000:.1f} KB | p95 < {target_ms} ms, < {target_bytes // 1000} KB | "
                    f"{_met(p['met']['p95'] and p['met']['bytes'])} |")
    load, inv = console["load"], console["load"]["investigation"]
    assets = ", ".join(f"{a['path']} {a['bytes']:,} B ({a['cache_control']})" for a in console["assets"].values())
    sql = "; ".join(f"{name}: handler {e['handler_p50_ms']} ms, SQL "
                    + " + ".join(f"{s['execution_ms']} ms" for s in e["statements"])
                    for name, e in console.get("explain", {}).items() if "error" not in e)
    notes = [f"Console: {inv['open_cases']:,} open cases of {console['branch']} ({inv['templates']} through intake's "
             f"API and the bus, the rest their clones: {inv['tasks']:,} tasks, {inv['staff_notices']:,} staff "
             f"notices), {load['visits_open_due']:,} visits due, loaded in {load['seed_s']} s; {console['runs']} "
             f"sequential requests a page after {console['warm']}; load average {console['loadavg'].get('measure_start')}"
             f" at the start of the measure, {console['loadavg'].get('measure_end')} at its end. The console "
             f"{'gzips' if console['server_gzip'] else 'does not gzip'}; its assets: {assets}. The list pages' "
             f"handlers in process (EXPLAIN ANALYZE): {sql}."]
    return rows, notes


CUSTOMER_FILE_SERIES = {"heavy_hq": "a customer with 200 cases, 200 sales and 200 visits, HQ",
                        "heavy_branch": "that customer, one branch's manager",
                        "ordinary_hq": "ordinary customers (one a request), HQ",
                        "ordinary_branch": "ordinary customers, one branch's manager (404 when none there)"}


def customer_file_lines(figures: dict | None) -> list[str]:
    """The customer file step's rows: p50 / p95 / p99 of each series against the target."""
    if not figures:
        return []
    target = TARGETS["customer_file_p95_ms"]
    load = figures["load"]
    return [f"| customer file `GET /v1/customers/{{ref}}` among {load['customers']:,} customers: {what} "
            f"(p50 / p95 / p99) | {f['p50_ms']} / {f['p95_ms']} / {f['p99_ms']} ms | {f['mean_bytes']} B an answer, "
            f"{f['runs']} requests | p95 < {target} ms | {_met(f['p95_ms'] < target and not f['errors'])} |"
            for key, what in CUSTOMER_FILE_SERIES.items() for f in (figures[key],)]


def cpu_line(what: str, cpu: dict | None) -> list[str]:
    """CPU milliseconds by part (postgres and beam.smp: the local servers, whoever used them)."""
    if not cpu:
        return []
    names = {"beam.smp": "rabbitmq"}
    return ["", f"{what} (ms; compare runs by this on a busy machine): "
            + ", ".join(f"{names.get(k, k)} {v}" for k, v in cpu.items()) + f", total {round(sum(cpu.values()), 3)}"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="length of each load run (default 15)")
    parser.add_argument("--only", default=",".join(STEPS), help=f"steps: {', '.join(STEPS)} (default: all)")
    parser.add_argument("--profile", action="store_true", help="profile an intake process under load (py-spy)")
    args = parser.parse_args(argv)
    steps = set(args.only.split(","))
    if steps - set(STEPS):
        parser.error(f"unknown step(s) {', '.join(sorted(steps - set(STEPS)))}; steps: {', '.join(STEPS)}")
    env = prepare(dict(os.environ))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "event.json").write_text(json.dumps(sample_event(), ensure_ascii=False))
        if "intake" in steps:
            step_intake(env, args.seconds, work, results, args.profile)
        if "relay" in steps:
            step_relay(env, args.seconds, work, results)
        if "consumer" in steps:
            step_consumer(env, args.seconds, work, results)
        if "cases" in steps:
            step_cases(env, args.seconds, work, results)
        if "timers" in steps:
            step_timers(env, args.seconds, work, results)
        if "lifecycle" in steps:
            step_lifecycle(env, args.seconds, work, results)
        if "engine" in steps:
            step_engine(env, args.seconds, work, results)
        if "aftercare" in steps:
            step_aftercare(env, args.seconds, work, results)
        if "reporting" in steps:
            step_reporting(env, args.seconds, work, results)
        if "console" in steps:
            step_console(env, args.seconds, work, results)
        if "customer_file" in steps:
            step_customer_file(env, args.seconds, work, results)
    stamp = save_results(results)
    print(report(results))
    profile = results.get("intake_profile")
    if profile:
        print("\n".join(profile[:15]))
    print(f"\nwritten: bench/results/{stamp}.json, bench/results/latest.md")
    return 0


def save_results(results: dict, latest: str = "latest") -> str:
    """bench/results/<time>.json and <latest>.{json,md} (the table, as printed); the time."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    document = {"at": stamp, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                         "loadavg": Path("/proc/loadavg").read_text().split()[:3]
                                         if Path("/proc/loadavg").exists() else None},
                "targets": TARGETS, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in (f"{stamp}.json", f"{latest}.json"):
        (RESULTS / name).write_text(json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")
    profile = results.get("intake_profile")
    markdown = (f"# Benchmarks, {stamp}\n\n{os.cpu_count()} cores, Python {platform.python_version()}\n\n"
                f"{report(results)}\n"
                + ("\n## Where an intake process spends its time (inclusive)\n\n```\n" + "\n".join(profile) + "\n```\n"
                   if profile else ""))
    (RESULTS / f"{latest}.md").write_text(markdown)
    return stamp


if __name__ == "__main__":
    sys.exit(main())
