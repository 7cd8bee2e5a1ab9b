"""The staff console under a branch's load (issue 12's figures), for the step `console` of
`python -m bench.run`: each page's server time with 10,000 open cases in one branch's scope
(target: under 100 ms at p95) and the bytes a page sends, its assets included, without caching
(target: under 100 KB).

What runs: `closeloop serve` intake, investigation, aftercare, reporting and console, and the
relays of intake, investigation and aftercare, as separate processes on a vhost and databases
of the bench's own (`closeloop-bench-console` and `closeloop_bench_console_*`; another vhost with
CLOSELOOP_BENCH_VHOST, whose name then prefixes the databases too, to run two at once).

The load, all of branch SH001 (the bundled policy with intake's message limits out of reach):
- templates through the real path: `--today` complaints, suggestions and praise posted to
  intake's API by a front desk (cases opened by investigation from the bus), and `--past`
  complaint_registered events (as intake publishes them: general and urgent, received over the
  last 14 days) published onto intake.events, whose overdue timers investigation fires
  (warnings, breaches, escalations, staff notices) until none is due;
- then cloned in investigation's database up to `--cases` open cases: each clone is a
  template's process instance, case, tasks, timeline and staff notices under a new id and a new
  reference (templates with a timer due within the next 30 minutes are not cloned, so no burst
  of fires lands in the measure); reporting folds the clones from the templates' own events
  (from intake's and investigation's outboxes, with the new ids), published onto its queues
  alone, so its alerts and breaching lists count them too;
- `--visits` sales posted to intake's API (one hair-colour service or one skincare product
  each, the customer consenting, sold two to thirteen days ago): aftercare plans their return
  visits from the bus, most of them due now.

Staff accounts are added with `handlers.add_staff` (what `closeloop staff add` calls): a store
manager of SH001, an HQ admin ('*'), a front desk and an aftercare agent of SH001; each signs in
through `/login` (its CSRF token, the session cookie kept). Then, for each page a role works in,
`--warm` requests not counted and `--runs` counted, sequential, one client on localhost: the time
to the full response (p50 / p95 / max); beside it the console's own per-request duration (its
/metrics histogram, mean over the same requests) and the services' (their /metrics: what each
page's calls cost them), and the CPU of the console process a request. Bytes: the HTML, then
every asset its <link> and <script> tags name, fetched once each, as sent (the console does not
compress; the gzip size is what a compressing gateway would send). The SQL behind the list
pages is EXPLAIN (ANALYZE, BUFFERS)ed on the same databases, and `--profile` adds a cProfile of
the pages that miss the target or come within a fifth of it, run in this process against
the same services.
`--compare-nodelay` then restarts the services and the console on the same data with TCP_NODELAY
set on the connections their HTTP servers accept (serve_with_nodelay: the bench's launcher, not the
project's code) and measures every page again: without it an answer of 16-64 KB on a kept-alive
connection waits about 40 ms for the client's delayed ACK (Nagle's algorithm), on each hop.

By hand (DATABASE_URL's server and AMQP_URI's broker, else the local defaults; everything it
made is dropped at the end):

    python -m bench.console [--cases 10000] [--today 150] [--past 150] [--visits 3000]
                            [--runs 200] [--warm 10] [--profile] [--compare-nodelay] [--json] [--keep]

It prints a table and writes bench/results/<time>.json and bench/results/console.{json,md} (its
last run; `bench.run --only console` writes latest.{json,md} as every step does). `--json`
prints the figures as JSON instead (what bench.run reads).
"""
from __future__ import annotations

import argparse
import cProfile
import gzip
import hashlib
import inspect
import io
import json
import os
import pstats
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import kombu
import requests
import sqlalchemy as sa

from shared.calendar.clock import isoformat
from shared.messaging.envelope import build_event
from shared.persistence import db
from shared.runtime import config as settings

ROOT = Path(__file__).resolve().parent.parent
BRANCH = "SH001"
SERVICES = ("intake", "investigation", "aftercare", "reporting")
RELAYS = ("intake", "investigation", "aftercare")
DATABASES = (*SERVICES, "console")
TARGET_P95_MS, TARGET_BYTES = 100, 100_000  # 100 KB: 100,000 bytes
PROFILE_FROM = 0.8  # `--profile`: the pages at or over this share of the target at p95
NO_FIRE_WITHIN = timedelta(minutes=30)  # templates with a timer due this soon are not cloned
PASSWORD = "bench-console-pass-1"
REPLAY_EXCHANGE = "bench-console.replay"  # bound to reporting's queues alone
STAFF = {  # role -> (login, branch)
    "store_manager": ("bench-manager", BRANCH),
    "hq_admin": ("bench-hq", "*"),
    "front_desk": ("bench-desk", BRANCH),
    "aftercare_agent": ("bench-agent", BRANCH),
}
# (name, path, roles): the pages each role works in ({case}, {visit}, {reference} filled in).
PAGES = (
    ("my work", "/", ("store_manager", "hq_admin", "front_desk", "aftercare_agent")),
    ("my work, htmx list", "/ (HX-Request)", ("store_manager", "hq_admin", "front_desk", "aftercare_agent")),
    ("my work, breached tab", "/?deadline=breached", ("store_manager", "hq_admin")),
    ("a case", "/cases/{case}", ("store_manager", "hq_admin", "front_desk")),
    ("new complaint", "/complaints/new", ("store_manager", "front_desk")),
    ("new sale", "/sales/new", ("store_manager", "front_desk")),
    ("look-up", "/lookup?q={reference}", ("store_manager", "front_desk")),
    ("call list", "/visits", ("store_manager", "aftercare_agent")),
    ("a visit", "/visits/{visit}", ("store_manager", "aftercare_agent")),
    ("alerts", "/alerts", ("store_manager", "hq_admin")),
    ("notifications", "/notifications", ("store_manager", "hq_admin", "front_desk", "aftercare_agent")),
    ("sign-in form", "/login", ("anonymous",)),
)
COMPLAINTS = (  # (kind, description, severity flags): intake classifies and triages the text
    ("complaint", "毛巾很脏，没有消毒", []),
    ("complaint", "昨天染发后头皮过敏红肿", ["allergy"]),
    ("complaint", "前台态度很不耐烦，爱答不理", []),
    ("complaint", "预约了还排队等了一个小时", []),
    ("complaint", "收费比说好的贵，乱收费", []),
    ("complaint", "头发剪得太短了，不专业", []),
    ("complaint", "烫发后头发很干，效果不好", []),
    ("complaint", "说好的退款一直没有到账", []),
    ("suggestion", "建议周末延长营业时间", []),
    ("praise", "张师傅剪得很好，服务周到", []),
)
PAST_CATEGORIES = ("service_quality", "hygiene_environment", "staff_attitude", "booking", "price", "product_quality")
SALE_ITEMS = {
    "hair_colour": {"type": "service", "code": "S-HC-01", "name": "染发", "product_type": "hair_colour",
                    "technician_id": "T-017", "batch": "B2026-11-03"},
    "skincare": {"type": "product", "sku": "SK-1001", "name": "保湿精华", "product_type": "skincare",
                 "batch": "B2026-09-14"},
}


def log(message: str) -> None:
    print(f"[bench.console] {message}", file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def _accepts(fn, **kwargs):
    """Call `fn` with the keyword arguments its signature takes (others change theirs meanwhile)."""
    wanted = inspect.signature(fn).parameters
    return fn(**{k: v for k, v in kwargs.items() if k in wanted})


# --- names, databases, vhost ---------------------------------------------------------------------

def names(env=os.environ) -> tuple[str, str]:
    """(vhost, database prefix): closeloop-bench-console and closeloop_bench_console, or with
    CLOSELOOP_BENCH_VHOST both named after it (two runs at once on one server and broker)."""
    base = env.get("CLOSELOOP_DB_PREFIX", "closeloop_bench")
    vhost = env.get("CLOSELOOP_BENCH_VHOST")
    if not vhost:
        return "closeloop-bench-console", f"{base}_console"
    return vhost, f"{base}_" + re.sub(r"[^a-z0-9]+", "_", vhost.lower()).strip("_")


def database_url(service: str, env) -> str:
    """A database of the run: `env` is the services' environment (prepare's), its prefix the run's."""
    return settings.service_database_url(service, env)


def drop_all(env=os.environ, resolved=None) -> None:
    """The databases and vhost a run made (or an interrupted one left); `env` is the caller's."""
    from shared.testing import infra

    ours = {**env, "CLOSELOOP_DB_PREFIX": names(env)[1]}
    for service in DATABASES:
        try:
            db.drop_database(database_url(service, ours))
        except Exception as exc:  # noqa: BLE001 - the others still go
            log(f"could not drop the {service} database: {exc}")
    try:
        infra.delete_vhost(resolved or infra.resolve(env), names(env)[0])
    except Exception:  # noqa: BLE001 - none to delete
        pass


def prepare(env, work: Path) -> tuple[dict, object]:
    """Fresh databases (migrated), a fresh vhost with every handler's queues declared, the
    development keys, a load policy: the services' environment, and the resolved infra."""
    from shared.messaging import consumer, topology
    from shared.security import auth
    from shared.testing import infra
    from shared.testing.samples import policy_for_load

    vhost, prefix = names(env)
    resolved = infra.resolve(env)
    drop_all(env, resolved)
    amqp = infra.create_vhost(resolved, vhost)
    topology.declare(amqp, consumer.all_handlers())  # as `closeloop bus declare` does
    for service in DATABASES:
        url = database_url(service, {**env, "CLOSELOOP_DB_PREFIX": prefix})
        db.create_database(url)
        db.migrate(service, url)
    auth.ensure_dev_keys()
    return {**env, "AMQP_URI": amqp, "DATABASE_URL": resolved.database_url, "CLOSELOOP_DB_PREFIX": prefix,
            "CLOSELOOP_DEV_KEYS": "1", "CLOSELOOP_POLICY_FILE": policy_for_load(str(work)),
            "LOG_LEVEL": "WARNING"}, resolved


def code_state() -> dict:
    """Which code was measured: a digest of each part's Python files and templates (they change
    between runs)."""
    state = {}
    for part in ("console", *SERVICES):
        digest = hashlib.sha1()
        folder = ROOT / "services" / part
        for path in sorted([*folder.rglob("*.py"), *folder.rglob("*.html")]):
            digest.update(path.read_bytes())
        state[part] = digest.hexdigest()[:12]
    return state


# --- the services ------------------------------------------------------------------------------

class Stack:
    """The four services, three relays and the console, each a `closeloop` process; `nodelay`:
    each HTTP server started through serve_with_nodelay (the comparison)."""

    def __init__(self, env, work: Path, nodelay: bool = False):
        from bench.run import Processes, free_port

        self.ports = {name: free_port() for name in (*SERVICES, "console")}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        binds = {f"{name.upper()}_BIND": f"127.0.0.1:{port}" for name, port in self.ports.items()}
        targets = {f"{name.upper()}_URL": self.urls[name] for name in SERVICES}
        self.env = {**env, **binds, **targets}
        self.work = work
        self.procs = Processes(self.env)
        self.pids: dict[str, int] = {}
        self.nodelay = nodelay

    def start(self) -> None:
        from bench.run import wait_http

        for name in (*SERVICES, "console"):
            argv = ("-m", "bench.console", "--serve-with-nodelay", name) if self.nodelay else \
                ("-m", "shared.cli", "serve", name)
            self.pids[name] = self.procs.start(*argv, log=self.work / f"{name}.log").pid
        for name in RELAYS:
            self.pids[f"{name} relay"] = self.procs.start("-m", "shared.cli", "relay", name,
                                                           log=self.work / f"{name}-relay.log").pid
        for name, url in self.urls.items():
            try:
                wait_http(url + "/health", timeout=60)
            except RuntimeError:
                raise RuntimeError(f"{name} did not start: {self.log_tail(name)}") from None

    def log_tail(self, name: str, chars: int = 2000) -> str:
        path = self.work / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        self.procs.stop()


def _scalar(url: str, sql: str, **params):
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def wait_for(what: str, ready, timeout: float, stack: Stack | None = None, poll: float = 0.5):
    """Poll `ready()` until it answers something true; a RuntimeError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {n}:\n{stack.log_tail(n, 800)}" for n in ("investigation", "aftercare", "reporting",
                                                                             "intake")) if stack else ""
            raise RuntimeError(f"waited {timeout:.0f} s for {what}{tails}")
        time.sleep(poll)


def serve_with_nodelay(service: str) -> int:
    """`closeloop serve <service>` with TCP_NODELAY on every connection its HTTP server accepts
    (what shared/web/server.py does not set): the comparison `--compare-nodelay` measures. Without
    it, an answer whose body is over eventlet's 16 KB write buffer leaves in two sends (headers,
    then body) and Nagle holds the body until the client's delayed ACK, about 40 ms, on a
    kept-alive connection."""
    import socket

    from shared.runtime import green

    green.patch()
    import eventlet.greenio

    accept = eventlet.greenio.GreenSocket.accept

    def accept_nodelay(self):
        conn, address = accept(self)
        if self.family in (socket.AF_INET, socket.AF_INET6):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address

    eventlet.greenio.GreenSocket.accept = accept_nodelay
    from shared import cli

    return cli.main(["serve", service])


# --- the load: templates through the real path --------------------------------------------------------

def _post_all(url: str, token: str, bodies: list[dict], workers: int = 6) -> list[dict]:
    """POST each body (an Idempotency-Key each) with a few clients at once: intake's answers."""
    local = threading.local()

    def post(body):
        if not hasattr(local, "http"):
            local.http = requests.Session()
        answer = local.http.post(url, json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())})
        if answer.status_code != 201:
            raise RuntimeError(f"intake answered {answer.status_code}: {answer.text[:500]}")
        return answer.json()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(post, bodies))


def today_complaints(count: int, rng: random.Random) -> list[dict]:
    """Front-desk complaints, suggestions and praise as the console's form posts them."""
    bodies = []
    for n in range(count):
        kind, description, flags = COMPLAINTS[n % len(COMPLAINTS)]
        bodies.append({"kind": kind, "channel": rng.choice(("front_desk", "phone", "wechat")),
                       "customer": {"name": rng.choice(("王女士", "李先生", "张女士", "陈先生")),
                                    "phone": f"138{rng.randrange(10 ** 8):08d}", "language": "zh"},
                       "description": description, "category": None, "severity_flags": flags or None,
                       "service": {"code": "S-HC-01", "name": "染发", "technician_id": f"T-0{rng.randrange(10, 30)}"}
                       if kind == "complaint" else None, "products": []})
    return bodies


def past_registrations(count: int, now: datetime, rng: random.Random) -> list[dict]:
    """complaint_registered envelopes as intake publishes them, received over the last 14 days
    (a fifth urgent), each with its own complaint and reference."""
    from shared.testing.samples import complaint_event

    events = []
    for n in range(count):
        received = now - timedelta(seconds=rng.randrange(60, 14 * 86400))
        urgent = rng.random() < 0.2
        complaint_id = str(uuid.uuid4())
        local_day = (received + timedelta(hours=8)).strftime("%Y%m%d")  # Asia/Shanghai
        payload = {**complaint_event()["payload"], "complaint_id": complaint_id,
                   "reference": f"{BRANCH}-{local_day}-{9000 + n:04d}", "priority": "urgent" if urgent else "general",
                   "category": "safety" if urgent else rng.choice(PAST_CATEGORIES),
                   "severity_flags": ["allergy"] if urgent else [], "received_at": isoformat(received),
                   "first_response_due": isoformat(received + timedelta(hours=1 if urgent else 24)),
                   "resolution_due": isoformat(received + timedelta(days=7)),
                   "customer_masked": {"name": rng.choice(("王**", "李**", "张**"))}}
        events.append(json.loads(json.dumps(build_event(
            "complaint_registered", payload, branch_code=BRANCH, correlation_id=complaint_id, sequence=1,
            occurred_at=received), ensure_ascii=False)))
    return events


def sales(count: int, now: datetime, rng: random.Random) -> list[dict]:
    """Sales with the customer's consent, one item each: two in three a hair-colour service
    (its allergy check two days later), one in three a skincare product (seven days): sold so
    that most visits are due now, a sixth not yet."""
    bodies = []
    for _ in range(count):
        kind = "hair_colour" if rng.random() < 2 / 3 else "skincare"
        delay = 2 if kind == "hair_colour" else 7
        sold = now - timedelta(days=delay) + timedelta(seconds=rng.randrange(-int(5.5 * 86400), int(1.1 * 86400)))
        bodies.append({"customer": {"name": rng.choice(("王女士", "李先生", "赵女士")),
                                    "phone": f"139{rng.randrange(10 ** 8):08d}", "language": "zh",
                                    "contact_consent": True},
                       "sold_at": isoformat(sold), "items": [dict(SALE_ITEMS[kind])]})
    return bodies


def _unsent(url: str) -> int:
    return _scalar(url, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")


def _due_timers(url: str) -> int:
    return _scalar(url, "SELECT count(*) FROM process_instances WHERE next_timer_due <= now()")


def reporting_queues() -> list[str]:
    from shared.messaging import consumer, topology

    return [h.queue_name for h in consumer.all_handlers() if h.service == "reporting"] or \
        [topology.HandlerTopology(s, "all", "reporting", "ingest", ()).queue_name for s in RELAYS]


def _reporting_drained(amqp: str) -> bool:
    from shared.messaging import dead_letters

    return not any(dead_letters.queue_depths(amqp, reporting_queues()).values())


def seed_templates(stack: Stack, today: int, past: int, visits: int, rng: random.Random) -> dict:
    """The templates and the visits, through intake's API and the bus: their counts and times."""
    from shared.messaging.relay import Publisher
    from shared.security import auth

    env, started = stack.env, time.perf_counter()
    now = datetime.now(timezone.utc)
    urls = {s: database_url(s, env) for s in DATABASES}
    desk = auth.issue_token(role="front_desk", subject="bench-till", branch=BRANCH, ttl=timedelta(hours=2))
    log(f"{today} complaints, suggestions and praise posted to intake; {past} past complaints published")
    posted = _post_all(stack.urls["intake"] + "/v1/complaints", desk, today_complaints(today, rng))
    events = past_registrations(past, now, rng)
    publisher = Publisher(env["AMQP_URI"])
    try:
        publisher.publish_batch([("intake.events", "complaint_registered", json.dumps(e, ensure_ascii=False),
                                  e["event_id"]) for e in events])
    finally:
        publisher.close()
    log(f"{visits} sales posted to intake")
    sold = _post_all(stack.urls["intake"] + "/v1/sales", desk, sales(visits, now, rng))
    posted_s = time.perf_counter() - started
    expected = today + past
    wait_for(f"investigation to open {expected} cases", lambda: _scalar(urls["investigation"],
             "SELECT count(*) FROM cases") >= expected, 300, stack)
    wait_for(f"aftercare to plan {visits} visits", lambda: _scalar(urls["aftercare"],
             "SELECT count(*) FROM visits") >= visits, 300, stack)
    wait_for("the timers due to be fired", lambda: _due_timers(urls["investigation"]) == 0
             and _due_timers(urls["aftercare"]) == 0, 300, stack)
    wait_for("the relays to publish every event", lambda: not any(_unsent(urls[s]) for s in RELAYS), 120, stack)
    wait_for("reporting to fold every event", lambda: _reporting_drained(env["AMQP_URI"]), 300, stack)
    return {"today": today, "past": past, "sales": len(sold), "references": [p["reference"] for p in posted],
            "past_events": events, "posted_s": round(posted_s, 1),
            "seed_s": round(time.perf_counter() - started, 1)}


# --- the load: clones ---------------------------------------------------------------------------------

def _columns(conn, table: str) -> list[str]:
    """The table's columns as migrated (not the models': other engineers change them meanwhile)."""
    return list(conn.execute(sa.text(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = :t "
        "AND is_identity = 'NO' AND is_generated = 'NEVER' ORDER BY ordinal_position"), {"t": table}).scalars())


def _copy(conn, table: str, join: str, replaced: dict[str, str]) -> int:
    columns = _columns(conn, table)
    picked = ", ".join(replaced.get(c, f"t.{c}") for c in columns)
    return conn.execute(sa.text(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {picked} "
                                f"FROM clone_of c JOIN {table} t ON {join} ORDER BY c.n")).rowcount


def clone_cases(url: str, cases: int) -> dict:
    """Investigation's open cases of the branch cloned up to `cases`: each clone a template's
    process instance, case, tasks, timeline and staff notices under a new id and reference.
    The clone map (clone id, template id, reference, template reference) for reporting."""
    started = time.perf_counter()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            templates = conn.execute(sa.text(
                "SELECT c.id::text FROM cases c JOIN process_instances p ON p.id = c.id::text "
                "WHERE c.branch_code = :branch AND c.closed_at IS NULL "
                "AND (p.next_timer_due IS NULL OR p.next_timer_due > now() + :soon) ORDER BY c.opened_at, c.id"),
                {"branch": BRANCH, "soon": NO_FIRE_WITHIN}).scalars().all()
            open_now = conn.execute(sa.text("SELECT count(*) FROM cases WHERE branch_code = :b AND closed_at IS NULL"),
                                    {"b": BRANCH}).scalar()
            count = max(0, cases - open_now)
            if count and not templates:
                raise RuntimeError("no case to clone: every template has a timer due within 30 minutes")
            conn.execute(sa.text(
                "CREATE TEMP TABLE clone_of ON COMMIT DROP AS "
                "SELECT n, gen_random_uuid() AS id, t.id AS template, t.reference AS template_reference, "
                "split_part(t.reference, '-', 1) || '-' || split_part(t.reference, '-', 2) || '-' "
                "|| (100000 + n)::text AS reference "
                "FROM generate_series(0, :count - 1) AS n "
                "JOIN (SELECT id, reference, row_number() OVER (ORDER BY opened_at, id) - 1 AS k "
                "      FROM cases WHERE id = ANY(CAST(:templates AS uuid[]))) t ON t.k = n % :many"),
                {"count": count, "templates": templates, "many": max(1, len(templates))})
            rename = "replace(replace({}, c.template::text, c.id::text), c.template_reference, c.reference)"
            written = {
                "process_instances": _copy(conn, "process_instances", "t.id = c.template::text", {
                    "id": "c.id::text", "state": rename.format("t.state"),
                    "correlation_keys": "array_replace(t.correlation_keys, c.template::text, c.id::text)"}),
                "cases": _copy(conn, "cases", "t.id = c.template", {
                    "id": "c.id", "complaint_id": "CASE WHEN t.complaint_id IS NULL THEN NULL ELSE c.id END",
                    "reference": "c.reference"}),
                "case_tasks": _copy(conn, "case_tasks", "t.case_id = c.template", {"case_id": "c.id"}),
                "case_timeline": _copy(conn, "case_timeline", "t.case_id = c.template", {
                    "case_id": "c.id", "detail": rename.format("t.detail::text") + "::jsonb"}),
                "notifications": _copy(conn, "notifications", "t.subject_id = c.template::text AND t.audience = 'staff'", {
                    "subject_id": "c.id::text", "body": rename.format("t.body"),
                    "log_text": rename.format("t.log_text"),
                    "request_event_id": "CASE WHEN t.request_event_id IS NULL THEN NULL ELSE gen_random_uuid() END"}),
            }
            clones = [tuple(r) for r in conn.execute(sa.text(
                "SELECT id::text, template::text, reference, template_reference FROM clone_of ORDER BY n")).all()]
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM (ANALYZE) process_instances, cases, case_tasks, case_timeline, notifications"))
            shape = dict(conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM cases WHERE branch_code = :b AND closed_at IS NULL) AS open_cases, "
                "(SELECT count(*) FROM case_tasks WHERE branch_code = :b) AS tasks, "
                "(SELECT count(*) FROM notifications WHERE audience = 'staff') AS staff_notices, "
                "(SELECT count(*) FROM case_timeline) AS timeline, "
                "(SELECT count(*) FROM cases WHERE branch_code = :b AND escalation_level > 0) AS escalated"),
                {"b": BRANCH}).one()._mapping)
    finally:
        engine.dispose()
    return {"templates": len(templates), "clones": len(clones), "rows": written, **shape,
            "clone_s": round(time.perf_counter() - started, 1), "map": clones}


def replay_to_reporting(env, clones: list[tuple], past_events: list[dict]) -> dict:
    """Reporting folds the clones from their templates' own events (intake's outbox and the past
    registrations published, investigation's outbox), each under the clone's id and reference
    and a new event id, published onto its queues alone (an exchange bound to them only)."""
    from shared.messaging.relay import Publisher

    started = time.perf_counter()
    by_template: dict[str, list[tuple[str, str, str]]] = {}
    templates = {t for _, t, _, _ in clones}
    sources = [("intake", e["type"], json.dumps(e, ensure_ascii=False)) for e in past_events]
    for service in ("intake", "investigation"):
        engine = sa.create_engine(database_url(service, env), poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                sources += [(service, key, body) for key, body in conn.execute(sa.text(
                    "SELECT routing_key, body FROM outbox ORDER BY id")).all()]
        finally:
            engine.dispose()
    for source, key, body in sources:
        named = json.loads(body)
        payload = named.get("payload") or {}
        template = payload.get("case_id") or payload.get("complaint_id") or named.get("correlation_id")
        if template in templates:
            by_template.setdefault(template, []).append((source, key, body))
    with kombu.Connection(env["AMQP_URI"]) as conn:
        channel = conn.channel()
        channel.exchange_declare(REPLAY_EXCHANGE, "topic", durable=True, auto_delete=False)
        for queue in reporting_queues():
            source = queue.split("-")[1]
            channel.queue_bind(queue=queue, exchange=REPLAY_EXCHANGE, routing_key=f"{source}.#")
    publisher, batch, published = Publisher(env["AMQP_URI"]), [], 0
    try:
        for clone, template, reference, template_reference in clones:
            for source, key, body in by_template.get(template, ()):
                event = json.loads(body.replace(template, clone).replace(template_reference, reference))
                event["event_id"] = str(uuid.uuid4())
                batch.append((REPLAY_EXCHANGE, f"{source}.{key}", json.dumps(event, ensure_ascii=False),
                              event["event_id"]))
                if len(batch) >= 1000:
                    publisher.publish_batch(batch)
                    published, batch = published + len(batch), []
        if batch:
            publisher.publish_batch(batch)
            published += len(batch)
    finally:
        publisher.close()
    published_s = time.perf_counter() - started
    wait_for("reporting to fold the clones' events", lambda: _reporting_drained(env["AMQP_URI"]), 600)
    url = database_url("reporting", env)
    with sa.create_engine(url, poolclass=sa.pool.NullPool).connect().execution_options(
            isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM (ANALYZE)"))
        open_facts = conn.execute(sa.text(
            "SELECT count(*) FROM case_facts WHERE branch_code = :b AND closed_at IS NULL"), {"b": BRANCH}).scalar()
    return {"events": published, "events_per_template": round(published / max(1, len(clones)), 1),
            "publish_s": round(published_s, 1), "fold_s": round(time.perf_counter() - started, 1),
            "reporting_open_cases": open_facts}


# --- staff and browsers --------------------------------------------------------------------------------

def add_staff(env) -> None:
    """The four staff members, as `closeloop staff add` adds them."""
    from services.console import handlers
    from services.console.repository import ConsoleStore
    from shared.calendar.policy import load_policy

    policy = load_policy(env["CLOSELOOP_POLICY_FILE"])
    store = ConsoleStore(db.make_engine(database_url("console", env), 1))
    try:
        for role, (login, branch) in STAFF.items():
            handlers.add_staff(store, login=login, name=f"{login} 测试", role=role, branch=branch, region=None,
                               password=PASSWORD, policy=policy, now=datetime.now(timezone.utc))
    finally:
        store.engine.dispose()


class Browser:
    """One client: a requests session keeping the console's cookie, never following redirects."""

    def __init__(self, base: str):
        self.base, self.http = base, requests.Session()

    def get(self, path: str, **headers) -> requests.Response:
        return self.http.get(self.base + path, headers=headers, allow_redirects=False, timeout=30)

    def sign_in(self, login: str) -> None:
        form = self.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        if form.status_code != 200 or token is None:
            raise RuntimeError(f"/login answered {form.status_code} without a CSRF token")
        signed = self.http.post(self.base + "/login", allow_redirects=False, timeout=30,
                                data={"login": login, "password": PASSWORD, "csrf_token": token.group(1)})
        if signed.status_code != 303:
            raise RuntimeError(f"signing in as {login} answered {signed.status_code}: {signed.text[:300]}")

    @property
    def cookie(self) -> str | None:
        return self.http.cookies.get("closeloop_session")


# --- measuring -----------------------------------------------------------------------------------------

_SERIES = re.compile(r'^closeloop_http_request_duration_seconds_(sum|count|bucket)\{([^}]*)\} (\S+)$', re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def http_metrics(base: str) -> dict:
    """(method, path) -> {"sum", "count", "buckets": {le: count}} of a service's /metrics."""
    found: dict = {}
    text = requests.get(base + "/metrics", timeout=10).text
    for kind, labels, value in _SERIES.findall(text):
        named = dict(_LABEL.findall(labels))
        entry = found.setdefault((named.get("method"), named.get("path")), {"sum": 0.0, "count": 0.0, "buckets": {}})
        if kind == "bucket":
            entry["buckets"][named["le"]] = float(value)
        else:
            entry[kind] = float(value)
    return found


def _metrics_delta(before: dict, after: dict) -> dict:
    """Per (method, path) answered meanwhile: requests, mean ms, and the histogram's bound of p95."""
    changed = {}
    for key, now in after.items():
        was = before.get(key, {"sum": 0.0, "count": 0.0, "buckets": {}})
        count = now["count"] - was["count"]
        if count <= 0 or key[1] == "/metrics":
            continue
        bound = None
        for le, cumulative in sorted(now["buckets"].items(), key=lambda kv: float(kv[0]) if kv[0] != "+Inf" else 1e9):
            if cumulative - was["buckets"].get(le, 0.0) >= 0.95 * count:
                bound = le
                break
        changed[f"{key[0]} {key[1]}"] = {"requests": int(count), "mean_ms": _ms((now["sum"] - was["sum"]) / count),
                                         "p95_at_most_s": bound}
    return changed


class _Tags(HTMLParser):
    """The assets a page names: <link href> (stylesheet, icon), <script src>, <img src>."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        if tag == "link" and named.get("href") and any(r in (named.get("rel") or "") for r in ("stylesheet", "icon")):
            self.found.append(named["href"])
        elif tag in ("script", "img") and named.get("src"):
            self.found.append(named["src"])


def assets_of(html: str) -> list[str]:
    parser = _Tags()
    parser.feed(html)
    return list(dict.fromkeys(parser.found))


def fetch_asset(base: str, href: str) -> dict:
    """An asset as the console sends it (asked with gzip accepted), and its gzip size."""
    url = urljoin(base + "/", href)
    answer = requests.get(url, headers={"Accept-Encoding": "gzip"}, timeout=10, stream=True)
    sent = answer.raw.read(decode_content=False)
    body = gzip.decompress(sent) if answer.headers.get("Content-Encoding") == "gzip" else sent
    return {"path": urlsplit(url).path, "status": answer.status_code, "bytes": len(body), "sent_bytes": len(sent),
            "gzip_bytes": len(gzip.compress(body, 6)), "type": answer.headers.get("Content-Type", ""),
            "encoding": answer.headers.get("Content-Encoding"), "cache_control": answer.headers.get("Cache-Control"),
            "validator": bool(answer.headers.get("ETag") or answer.headers.get("Last-Modified"))}


def measure_page(stack: Stack, browser: Browser, path: str, headers: dict, runs: int, warm: int) -> dict:
    """`warm` requests, then `runs` timed: the time to the whole body at the client, its status
    codes, the console's and the services' own durations meanwhile, the console's CPU a request."""
    from bench.run import cpu_seconds

    for _ in range(warm):
        browser.get(path, **headers)
    before = {name: http_metrics(url) for name, url in stack.urls.items()}
    cpu = {name: cpu_seconds(pid) for name, pid in stack.pids.items() if name in stack.urls}
    times, statuses, sizes = [], {}, []
    for _ in range(runs):
        started = time.perf_counter()
        answer = browser.get(path, **headers)
        times.append(time.perf_counter() - started)
        statuses[str(answer.status_code)] = statuses.get(str(answer.status_code), 0) + 1
        sizes.append(len(answer.content))
    cpu = {name: _ms((cpu_seconds(stack.pids[name]) - used) / runs) for name, used in cpu.items()}
    after = {name: http_metrics(url) for name, url in stack.urls.items()}
    console = _metrics_delta(before["console"], after["console"])
    calls = {f"{name} {key}": {**v, "per_page": round(v["requests"] / runs, 2)}
             for name in SERVICES for key, v in _metrics_delta(before[name], after[name]).items()}
    own = next(iter(console.values()), {})
    return {"runs": runs, "statuses": statuses, "p50_ms": _ms(statistics.median(times)), "p95_ms": _ms(_p95(times)),
            "max_ms": _ms(max(times)), "mean_ms": _ms(statistics.fmean(times)),
            "console_mean_ms": own.get("mean_ms"), "console_p95_at_most_s": own.get("p95_at_most_s"),
            "calls": calls, "cpu_ms": {k: v for k, v in cpu.items() if v >= 0.05}, "html_bytes": max(sizes),
            "loadavg": loadavg()}


def page_bytes(base: str, html: str, assets: dict) -> dict:
    """The HTML and every asset it names, uncompressed, and gzipped (what a gateway compressing
    would send); `assets` caches the fetches."""
    named = assets_of(html)
    for href in named:
        if href not in assets:
            assets[href] = fetch_asset(base, href)
    html_bytes = len(html.encode())
    return {"assets": named, "total_bytes": html_bytes + sum(assets[h]["bytes"] for h in named),
            # what the console sends a browser that takes gzip (it compresses its assets, not pages)
            "sent_bytes": html_bytes + sum(assets[h]["sent_bytes"] for h in named),
            "total_gzip_bytes": len(gzip.compress(html.encode(), 6)) + sum(assets[h]["gzip_bytes"] for h in named),
            # what a second view sends again: the HTML and the assets a browser may not keep
            # (no-cache without a validator is fetched whole again)
            "repeat_view_bytes": html_bytes + sum(assets[h]["bytes"] for h in named
                                                  if "immutable" not in (assets[h]["cache_control"] or "")
                                                  and not assets[h]["validator"])}


def pick_targets(env, references: list[str]) -> dict:
    """A case to open (the template with the longest timeline, escalated), a visit (the agent's
    first due), a complaint's reference to look up (posted today)."""
    inv, after = database_url("investigation", env), database_url("aftercare", env)
    case = _scalar(inv, "SELECT c.id::text FROM cases c JOIN case_timeline t ON t.case_id = c.id "
                        "WHERE c.branch_code = :b GROUP BY c.id ORDER BY count(*) DESC, c.id LIMIT 1", b=BRANCH)
    visit = _scalar(after, "SELECT id::text FROM visits WHERE branch_code = :b AND status IN ('scheduled', "
                           "'in_progress') AND call_at <= now() ORDER BY allergy_check DESC, call_at LIMIT 1", b=BRANCH)
    return {"case": case, "visit": visit, "reference": references[len(references) // 2] if references else "SH001"}


def shape_of(env) -> dict:
    """What the pages read: open cases, tasks by role, visits, notices."""
    inv, after = database_url("investigation", env), database_url("aftercare", env)
    engine = sa.create_engine(inv, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            tasks = {role: conn.execute(sa.text(
                "SELECT count(*) FROM case_tasks WHERE :role = ANY(roles)"), {"role": role}).scalar()
                for role in STAFF}
            notices = dict(conn.execute(sa.text(
                "SELECT split_part(recipient, ';', 1), count(*) FROM notifications WHERE audience = 'staff' "
                "GROUP BY 1")).all())
    finally:
        engine.dispose()
    return {"tasks_by_role": tasks, "staff_notices": notices,
            "visits": _scalar(after, "SELECT count(*) FROM visits"),
            "visits_open_due": _scalar(after, "SELECT count(*) FROM visits WHERE status IN ('scheduled', "
                                              "'in_progress') AND call_at <= now()")}


# --- where the time goes: the SQL, and the console in this process ------------------------------------

def _explain(engine, statements: list[tuple[str, object]]) -> list[dict]:
    plans = []
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection.cursor()
        for sql, params in statements:
            raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plan = [row[0] for row in raw.fetchall()]
            execution = next((float(line.split(":")[1].split()[0]) for line in plan
                              if line.startswith("Execution Time")), None)
            plans.append({"sql": " ".join(sql.split())[:400], "execution_ms": execution, "plan": plan})
        raw.close()
        conn.rollback()
    return plans


def _captured(store, call, repeat: int = 20) -> dict:
    """`call()` on a service's store, timed (median of `repeat` after one), its SELECTs explained."""
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("SELECT", "WITH")):
            statements.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", capture)
    try:
        call()
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        statements[:] = statements[:len(statements) // (repeat + 1)]  # one call's
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", capture)
    return {"handler_p50_ms": _ms(statistics.median(times)), "statements": _explain(store.engine, statements)}


def explain_lists(env) -> dict:
    """The handlers behind the list pages, called in this process on the same databases (no
    HTTP): their time, and EXPLAIN (ANALYZE, BUFFERS) of each statement they run."""
    from shared.calendar.policy import load_policy
    from shared.security.auth import Identity

    policy = load_policy(env["CLOSELOOP_POLICY_FILE"])
    manager = Identity(subject="bench-manager", role="store_manager", branches=frozenset({BRANCH}),
                       scope={"branch": BRANCH})
    hq = Identity(subject="bench-hq", role="hq_admin", branches=None, scope={"branch": "*"})
    agent = Identity(subject="bench-agent", role="aftercare_agent", branches=frozenset({BRANCH}),
                     scope={"branch": BRANCH})
    found: dict = {}

    def part(name, service, store_class, call):
        store = store_class(db.make_engine(database_url(service, env), 2))
        try:
            found[name] = _captured(store, lambda: call(store))
        except Exception as exc:  # noqa: BLE001 - a handler changed meanwhile: said, the others still run
            found[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        finally:
            store.engine.dispose()

    from services.aftercare import handlers as aftercare
    from services.aftercare.repository import AftercareStore
    from services.investigation import handlers as investigation
    from services.investigation.repository import InvestigationStore
    from services.reporting import handlers as reporting
    from services.reporting.repository import ReportingStore

    now = datetime.now(timezone.utc)
    for who, identity in (("store_manager", manager), ("hq_admin", hq)):
        part(f"investigation GET /v1/tasks ({who})", "investigation", InvestigationStore,
             lambda s, i=identity: _accepts(investigation.list_tasks, store=s, identity=i, query={"limit": "100"},
                                            now=now, policy=policy))
    part("investigation GET /v1/notifications (store_manager)", "investigation", InvestigationStore,
         lambda s: _accepts(investigation.list_notices, store=s, identity=manager, query={"limit": "50"}, now=now))
    part("aftercare GET /v1/visits (aftercare_agent)", "aftercare", AftercareStore,
         lambda s: _accepts(aftercare.list_visits, store=s, identity=agent, query={"status": "open", "limit": "50"},
                            policy=policy, now=now))
    part("reporting GET /v1/alerts (store_manager)", "reporting", ReportingStore,
         lambda s: _accepts(reporting.alerts_now, store=s, identity=manager, query={}, now=now))
    return found


def _page_call(page: str, path: str, target: dict):
    """The console's handler of a page (as service.py calls it): fn(store, request, deps)."""
    from services.console import call_list, cases, front_desk, handlers, overview

    deps = lambda d: {k: d[k] for k in ("services", "tokens", "policy", "now")}  # noqa: E731
    table = {
        "my work": lambda s, r, d: handlers.my_work(s, r, **deps(d)),
        "my work, htmx list": lambda s, r, d: handlers.my_work(s, r, **deps(d)),
        "my work, breached tab": lambda s, r, d: handlers.my_work(s, r, **deps(d)),
        "a case": lambda s, r, d: cases.case_page(s, r, target["case"], **deps(d)),
        "look-up": lambda s, r, d: front_desk.lookup(s, r, **deps(d)),
        "call list": lambda s, r, d: call_list.call_list(s, r, **deps(d)),
        "a visit": lambda s, r, d: call_list.visit_page(s, r, target["visit"], **deps(d)),
        "alerts": lambda s, r, d: overview.alerts(s, r, dashboard=d["dashboard"], **deps(d)),
        "notifications": lambda s, r, d: overview.notifications(s, r, **deps(d)),
        "new complaint": lambda s, r, d: front_desk.complaint_form(s, r, policy=d["policy"], now=d["now"]),
        "new sale": lambda s, r, d: front_desk.sale_form(s, r, policy=d["policy"], now=d["now"]),
    }
    return table.get(page)


# Where a page's time goes, by what it calls (pstats keys: a file part, a function name).
PARTS = (
    ("the page's handler, whole", None, None),
    ("the session read (web.open_caller: the console's database)", "services/console/web.py", "open_caller"),
    ("calls to the services (requests, the wait included)", "requests/sessions.py", "request"),
    ("JSON decoding (the services' answers and anything else)", "json/decoder.py", "decode"),
    ("rendering the template (Jinja2)", "services/console/rendering.py", "render"),
    ("  the template's own code (jinja2 Template.render)", "jinja2/environment.py", "render"),
    ("the call tokens (clients.StaffTokens.for_session)", "services/console/clients.py", "for_session"),
)


def profile_pages(env, stack: Stack, pages: list[tuple[str, str, str, dict]], cookies: dict, target: dict,
                  calls: int = 50) -> dict:
    """cProfile of each page's console handler in this process (the same databases and services
    over HTTP), `calls` calls after one: ms a call by part, and pstats' top functions."""
    from werkzeug.test import EnvironBuilder

    from services.console.clients import Services, StaffTokens, base_urls
    from services.console.overview import DashboardLinks
    from services.console.repository import ConsoleStore
    from shared.calendar.policy import load_policy

    store = ConsoleStore(db.make_engine(database_url("console", env), 2))
    deps = {"services": Services(base_urls({}, stack.env)), "tokens": StaffTokens(),
            "policy": load_policy(env["CLOSELOOP_POLICY_FILE"]), "dashboard": DashboardLinks(stack.urls["reporting"])}
    answers: list[tuple[str, int]] = []  # (service and path, bytes) of each answer the page read
    for name in SERVICES:
        getattr(deps["services"], name)._http.hooks["response"].append(
            lambda r, *args, name=name, **kwargs: answers.append((f"{name} {urlsplit(r.url).path}", len(r.content))))
    profiles = {}
    try:
        for page, role, path, headers in pages:
            handler = _page_call(page, path, target)
            if handler is None or cookies.get(role) is None:
                continue
            url = urlsplit(path)

            def call():
                request = EnvironBuilder(path=url.path, query_string=url.query, headers={
                    **headers, "Cookie": f"closeloop_session={cookies[role]}"}).get_request()
                response = handler(store, request, {**deps, "now": datetime.now(timezone.utc)})
                if response.status_code != 200:
                    raise RuntimeError(f"{path} answered {response.status_code} in process")
            try:
                answers.clear()
                call()
                ids = [v for v in (target.get("case"), target.get("visit")) if v]
                read = [{"call": next((c.replace(v, "{id}") for v in ids if v in c), c), "bytes": n} for c, n in answers]
                started = time.perf_counter()
                for _ in range(calls):
                    call()
                unprofiled = (time.perf_counter() - started) / calls
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(calls):
                    call()
                profiler.disable()
            except Exception as exc:  # noqa: BLE001 - a handler changed meanwhile: said, not fatal
                profiles[f"{page} ({role})"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                continue
            stats = pstats.Stats(profiler, stream=io.StringIO())
            total = sum(v[2] for v in stats.stats.values())  # every function's own time: the whole
            parts = []
            for label, file_part, function in PARTS:
                spent = total if file_part is None else sum(
                    v[3] for (file, _, name), v in stats.stats.items() if file.endswith(file_part) and name == function)
                parts.append({"part": label, "ms_per_call": _ms(spent / calls),
                              "share": round(100 * spent / total, 1) if total else None})
            out = io.StringIO()
            stats.stream = out
            stats.sort_stats("cumulative").print_stats(r"(services/console|jinja2|requests/sessions)", 18)
            print("--- own time ---", file=out)
            stats.sort_stats("tottime").print_stats(12)
            profiles[f"{page} ({role})"] = {"calls": calls, "unprofiled_ms_per_call": _ms(unprofiled), "answers": read,
                                            "parts": parts, "pstats": _trim(out.getvalue())}
    finally:
        store.engine.dispose()
    return profiles


_LIBRARY_PATH = re.compile(r"\S*/(?:site-packages|lib/python3\.\d+)/")


def _trim(text: str) -> list[str]:
    """pstats' lines without machine paths: the project's files from its root, libraries from
    their package."""
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    return [_LIBRARY_PATH.sub("", line.replace(str(ROOT) + "/", "")) for line in lines
            if not line.lstrip().startswith(("Ordered by", "List reduced"))]


# --- the run ---------------------------------------------------------------------------------------------

def series(roles: set[str] | None = None) -> list[tuple[str, str, str]]:
    """(page, role, path) in order, anonymous last."""
    return [(page, role, path) for page, path, allowed in PAGES for role in allowed if roles is None or role in roles]


def sign_in_all(stack: Stack) -> dict[str, Browser]:
    browsers = {role: Browser(stack.urls["console"]) for role in STAFF}
    for role, browser in browsers.items():
        browser.sign_in(STAFF[role][0])
    browsers["anonymous"] = Browser(stack.urls["console"])
    return browsers


def measure_pages(stack: Stack, browsers: dict, target: dict, runs: int, warm: int) -> tuple[list, dict]:
    """Every page for every role that works in it: its figures, and the assets the pages named."""
    results, assets = [], {}
    for page, role, shown in series():
        path = shown.replace(" (HX-Request)", "").format(**target)
        headers = {"HX-Request": "true"} if "HX-Request" in shown else {}
        log(f"{page} as {role}: {path} (load {loadavg()})")
        figure = measure_page(stack, browsers[role], path, headers, runs, warm)
        html = browsers[role].get(path, **headers).text
        figure.update(page=page, role=role, path=shown.format(**{k: "{" + k + "}" for k in target}),
                      **page_bytes(stack.urls["console"], html, assets))
        figure["met"] = {"p95": figure["p95_ms"] < TARGET_P95_MS and set(figure["statuses"]) == {"200"},
                         "bytes": figure["sent_bytes"] < TARGET_BYTES}
        results.append(figure)
        log(f"  p50 {figure['p50_ms']} p95 {figure['p95_ms']} max {figure['max_ms']} ms, console's own "
            f"{figure['console_mean_ms']} ms; {figure['sent_bytes']:,} bytes sent with assets ({figure['total_bytes']:,} unpacked); {figure['statuses']}")
    return results, assets


def measure(env, work: Path, cases: int = 10_000, today: int = 150, past: int = 150, visits: int = 3000,
            runs: int = 200, warm: int = 10, profile: bool = False, compare_nodelay: bool = False,
            seed: int = 17) -> dict:
    rng = random.Random(seed)
    started = time.perf_counter()
    figures: dict = {"code": code_state(), "branch": BRANCH, "runs": runs, "warm": warm,
                     "loadavg": {"start": loadavg()}, "targets": {"p95_ms": TARGET_P95_MS, "bytes": TARGET_BYTES}}
    stack = Stack(env, work)
    try:
        log(f"starting intake, investigation, aftercare, reporting, console and three relays (load {loadavg()})")
        stack.start()
        templates = seed_templates(stack, today, past, visits, rng)
        log(f"templates and visits in {templates['seed_s']} s; cloning cases up to {cases:,}")
        cloned = clone_cases(database_url("investigation", env), cases)
        log(f"{cloned['clones']:,} clones of {cloned['templates']} templates in {cloned['clone_s']} s; "
            "reporting folds them")
        replayed = replay_to_reporting(stack.env, cloned.pop("map"), templates.pop("past_events"))
        figures["load"] = {"templates": templates, "investigation": cloned, "reporting": replayed, **shape_of(env),
                           "seed_s": round(time.perf_counter() - started, 1)}
        log(f"loaded in {figures['load']['seed_s']} s: {cloned['open_cases']:,} open cases, "
            f"{figures['load']['visits_open_due']:,} visits due; load {loadavg()}")
        add_staff(env)
        browsers = sign_in_all(stack)
        target = figures["targets_shown"] = pick_targets(env, templates["references"])
        figures["loadavg"]["measure_start"] = loadavg()
        figures["pages"], figures["assets"] = measure_pages(stack, browsers, target, runs, warm)
        figures["loadavg"]["measure_end"] = loadavg()
        figures["server_gzip"] = any(a["encoding"] == "gzip" for a in figures["assets"].values())
        log("the SQL behind the list pages (EXPLAIN ANALYZE)")
        figures["explain"] = explain_lists(env)
        slow = [r for r in figures["pages"] if r["role"] != "anonymous"
                and (not r["met"]["p95"] or r["p95_ms"] >= PROFILE_FROM * TARGET_P95_MS)]
        if profile and slow:
            log(f"cProfile of {len(slow)} page(s) missing the target or near it, in this process")
            cookies = {role: b.cookie for role, b in browsers.items()}
            figures["profile"] = profile_pages(env, stack, [(r["page"], r["role"], r["path"].format(**target)
                                                             .replace(" (HX-Request)", ""),
                                                             {"HX-Request": "true"} if "HX-Request" in r["path"]
                                                             else {}) for r in slow], cookies, target)
        if compare_nodelay:
            stack.stop()
            log("the same pages, the services' HTTP servers restarted with TCP_NODELAY on their connections")
            stack = Stack(env, work, nodelay=True)
            stack.start()
            compared = {"loadavg_start": loadavg()}
            compared["pages"], _ = measure_pages(stack, sign_in_all(stack), target, runs, warm)
            compared["loadavg_end"] = loadavg()
            figures["nodelay"] = compared
    finally:
        stack.stop()
    figures["loadavg"]["end"] = loadavg()
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures


# --- printing ------------------------------------------------------------------------------------------------

def _kb(n: int) -> str:
    return f"{n / 1000:.1f} KB"


def summary(figures: dict) -> str:
    load = figures["load"]
    inv, rep = load["investigation"], load["reporting"]
    lines = [f"{inv['open_cases']:,} open cases of {figures['branch']} ({inv['templates']} templates through the real "
             f"path, {inv['clones']:,} clones; {inv['tasks']:,} tasks, {inv['escalated']:,} escalated, "
             f"{inv['staff_notices']:,} staff notices); reporting folded {rep['events']:,} replayed events "
             f"({rep['reporting_open_cases']:,} open cases); {load['visits_open_due']:,} of {load['visits']:,} "
             f"visits due; loaded in {load['seed_s']} s. Tasks by role: "
             + ", ".join(f"{k} {v:,}" for k, v in load["tasks_by_role"].items()),
             f"load average: start {figures['loadavg']['start']}, measure {figures['loadavg'].get('measure_start')} "
             f"-> {figures['loadavg'].get('measure_end')}; {figures['runs']} requests a page after {figures['warm']}",
             "", f"{'page':24} {'role':16} {'p50':>7} {'p95':>7} {'max':>7} {'own':>7}  {'service calls (mean ms)':40} "
             f"{'sent':>9} {'unpacked':>9} {'all gzip':>9}  met"]
    for r in figures["pages"]:
        calls = ", ".join(f"{k.split(' ', 1)[0]} {k.split(' ', 2)[2]} {v['mean_ms']}" for k, v in r["calls"].items())
        met = ("ok" if r["met"]["p95"] else "SLOW") + "/" + ("ok" if r["met"]["bytes"] else "BIG")
        lines.append(f"{r['page']:24} {r['role']:16} {r['p50_ms']:7} {r['p95_ms']:7} {r['max_ms']:7} "
                     f"{str(r['console_mean_ms']):>7}  {calls[:40]:40} {r['sent_bytes']:9,} {r['total_bytes']:9,} {r['total_gzip_bytes']:9,}"
                     f"  {met}" + ("" if set(r["statuses"]) == {"200"} else f" statuses {r['statuses']}"))
    if figures.get("nodelay"):
        compared = figures["nodelay"]
        lines += ["", f"With TCP_NODELAY on the services' HTTP connections (load {compared['loadavg_start']} -> "
                  f"{compared['loadavg_end']}): p50 / p95 ms at the client, the console's own mean, as is -> with it",
                  f"{'page':24} {'role':16} {'as is':>15} {'with NODELAY':>15} {'own':>7} {'own':>7}"]
        for before, after in zip(figures["pages"], compared["pages"]):
            lines.append(f"{before['page']:24} {before['role']:16} {before['p50_ms']:>7}/{before['p95_ms']:<7} "
                         f"{after['p50_ms']:>7}/{after['p95_ms']:<7} {str(before['console_mean_ms']):>7} "
                         f"{str(after['console_mean_ms']):>7}")
    lines.append("\nassets: " + "; ".join(f"{a['path']} {a['bytes']:,} B (gzip {a['gzip_bytes']:,}), "
                                         f"{a['cache_control']}{', validator' if a['validator'] else ''}"
                                         for a in figures["assets"].values())
                 + f"; the console gzips: {'yes' if figures['server_gzip'] else 'no'}")
    for name, found in figures.get("explain", {}).items():
        if "error" in found:
            lines.append(f"\n{name}: {found['error']}")
            continue
        lines.append(f"\n{name}: handler {found['handler_p50_ms']} ms (p50, in process); SQL: "
                     + ", ".join(f"{s['execution_ms']} ms" for s in found["statements"]))
        for s in found["statements"]:
            lines += ["  " + s["sql"][:200]] + ["    " + p for p in s["plan"]]
    for name, prof in (figures.get("profile") or {}).items():
        if "error" in prof:
            lines.append(f"\nprofile {name}: {prof['error']}")
            continue
        lines.append(f"\nprofile {name}: {prof['unprofiled_ms_per_call']} ms a call unprofiled (the services' answers "
                     + ", ".join(f"{a['call']} {a['bytes']:,} B" for a in prof.get("answers", [])) + "); profiled, by part:")
        lines += [f"  {p['share']:5}%  {p['ms_per_call']:7} ms  {p['part']}" for p in prof["parts"]]
        lines += ["  " + line for line in prof["pstats"][:45]]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.console", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="open cases of the branch (default 10,000)")
    parser.add_argument("--today", type=int, default=150, help="complaints posted to intake today (default 150)")
    parser.add_argument("--past", type=int, default=150, help="complaints of the last 14 days published (default 150)")
    parser.add_argument("--visits", type=int, default=3000, help="sales posted, one visit each (default 3,000)")
    parser.add_argument("--runs", type=int, default=200, help="timed requests a page (default 200)")
    parser.add_argument("--warm", type=int, default=10, help="requests a page before them (default 10)")
    parser.add_argument("--profile", action="store_true", help="cProfile the pages missing the target or near it")
    parser.add_argument("--compare-nodelay", action="store_true",
                        help="then the same pages with TCP_NODELAY on the services' HTTP connections")
    parser.add_argument("--serve-with-nodelay", metavar="SERVICE", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (what bench.run reads)")
    parser.add_argument("--keep", action="store_true", help="leave the databases and vhost (to look at them)")
    args = parser.parse_args(argv)
    if args.serve_with_nodelay:
        return serve_with_nodelay(args.serve_with_nodelay)
    env = {**os.environ, "CLOSELOOP_DB_PREFIX": os.environ.get("CLOSELOOP_DB_PREFIX", "closeloop_bench")}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            services_env, _ = prepare(env, Path(tmp))
            figures = measure(services_env, Path(tmp), args.cases, args.today, args.past, args.visits, args.runs,
                              args.warm, args.profile, args.compare_nodelay)
        finally:
            if not args.keep:
                drop_all(env)
    if args.json:
        print(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
        return 0
    print(summary(figures))
    from bench import run

    stamp = run.save_results({"console": figures}, latest="console")
    print(f"\nwritten: bench/results/{stamp}.json, bench/results/console.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
