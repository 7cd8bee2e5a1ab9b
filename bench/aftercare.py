"""Aftercare under load (issue 10), for the step `aftercare` of `python -m bench.run`:

- plans: the visits planned a second from `sale_recorded` events through handlers.plan_sale, as
  a consumer worker runs it (its store claims the event in the inbox, in the same transaction
  as the visits, their process instances and their visit_scheduled events): one worker, then a
  few eventlet workers in the same process (the process is patched as `closeloop serve`
  patches it); beside the engine alone starting the visit process, the ceiling. A sale of one
  hair-colour item plans one visit; a sale of three items (hair colour, perm, skincare) two.
- queue: the agent's queue (handlers.list_visits: the query, the visits shown, no HTTP) with
  1,000,000 visits of one branch stored (and, beside them, other branches'): loaded with COPY,
  about 90% finished and 10% open, 15% allergy checks, their calls spread over two years
  around now; the default queue (due now), due within a week, its second page, the completed
  visits, and an HQ caller's queue over every branch: p50 / p95 / max of each, and the plans
  PostgreSQL chose (EXPLAIN (ANALYZE, BUFFERS)).

By hand (DATABASE_URL's server; a database `closeloop_bench_aftercare` of its own, dropped at
the end):

    python -m bench.aftercare plans [--sales 2000] [--workers 4] [--seconds 20] [--profile]
    python -m bench.aftercare queue [--visits 1000000] [--others 300000] [--runs 50]

`--json` prints the figures as JSON (what bench.run reads) instead of a summary.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from bench import storage
from shared.calendar.clock import ManualClock, isoformat
from shared.messaging.envelope import build_event
from shared.persistence import db
from shared.runtime import config as settings

HANDLER = "aftercare.plan_sale"  # the inbox key of aftercare's sale_recorded handler (HandlerTopology.handler)
MIXES = {"one": ("hair_colour",), "three": ("hair_colour", "perm", "skincare")}  # 1 visit; 2 visits
WARM = 20  # sales planned before each measure (definitions stored, statements cached, pool open)
ENGINE_ALONE_STARTS = 300


def database_url(env=os.environ) -> str:
    return settings.service_database_url("aftercare", env)


def fresh_database(env=os.environ) -> str:
    """closeloop_bench_aftercare (with the bench's prefix), dropped, created and migrated."""
    return storage.fresh(database_url(env), "aftercare")


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 2)


# --- plans -----------------------------------------------------------------------------------------

_ITEMS = {
    "hair_colour": {"type": "service", "code": "S-HC-01", "name": "染发", "product_type": "hair_colour",
                    "technician_id": "T-017", "batch": "B2026-11-03"},
    "perm": {"type": "service", "code": "S-PM-02", "name": "烫发", "product_type": "perm",
             "technician_id": "T-017", "batch": "B2026-10-21"},
    "skincare": {"type": "product", "sku": "SK-1001", "name": "保湿精华", "product_type": "skincare",
                 "batch": "B2026-09-14"},
}


def sale_recorded(types: tuple[str, ...], sold_at: datetime) -> dict:
    """A sale_recorded envelope of branch SH001 as intake publishes it (and a consumer receives
    it: plain JSON), the customer consenting to be contacted."""
    sale_id = str(uuid.uuid4())
    payload = {"sale_id": sale_id, "sold_at": isoformat(sold_at), "recorded_at": isoformat(sold_at),
               "region": "east", "customer_ref": f"c-{sale_id[:8]}",
               "customer_masked": {"name": "王**", "phone": "138****6138", "email": None},
               "contact_consent": True, "items": [dict(_ITEMS[t]) for t in types], "customer_language": "zh"}
    event = build_event("sale_recorded", payload, branch_code="SH001", correlation_id=sale_id, sequence=1,
                        occurred_at=sold_at)
    return json.loads(json.dumps(event, ensure_ascii=False))


@dataclass
class Aftercare:
    """What handlers need, as the service's dependencies give it."""
    clock: ManualClock
    store: object
    process: object
    policy: object
    rules: object

    @classmethod
    def at(cls, url: str, start: datetime, policy_file: str | None = None, pool: int = 2) -> "Aftercare":
        from services.aftercare.dependencies import load_process
        from services.aftercare.repository import AftercareStore
        from shared.calendar.policy import load_policy

        clock = ManualClock(start)
        policy = load_policy(policy_file or os.environ.get("CLOSELOOP_POLICY_FILE") or None)
        return cls(clock, AftercareStore(db.make_engine(url, pool)), load_process(None, clock), policy,
                   policy.sections["aftercare"])

    def plan(self, event: dict) -> list[str]:
        """handlers.plan_sale as the consumer calls it: the store claims the event."""
        from services.aftercare import handlers

        return handlers.plan_sale(self.store.for_event(HANDLER, event["event_id"]), event=event,
                                  process=self.process, policy=self.policy, rules=self.rules, now=self.clock.now())

    def counts(self) -> dict:
        with self.store.engine.connect() as conn:
            return dict(conn.execute(sa.text(
                "SELECT (SELECT count(*) FROM visits) AS visits, (SELECT count(*) FROM outbox) AS events, "
                "(SELECT count(*) FROM process_instances) AS instances")).one()._mapping)

    def close(self) -> None:
        self.store.engine.dispose()


def _green() -> bool:
    import eventlet.patcher

    return eventlet.patcher.is_monkey_patched("socket")


def plan_sales(ac: Aftercare, mix: str, sales: int, workers: int = 1, seconds: float = 20) -> dict:
    """`sales` distinct sales of `mix` planned by `workers` (eventlet greenthreads, one process:
    needs the patched process), for at most `seconds`: sales and visits a second, and this
    process's CPU per sale."""
    if workers > 1 and not _green():
        raise RuntimeError("several workers need the process patched (shared.runtime.green.patch), as "
                           "`python -m bench.aftercare plans` does")
    types = MIXES[mix]
    for _ in range(WARM):
        ac.plan(sale_recorded(types, ac.clock.now()))
    events = [sale_recorded(types, ac.clock.now()) for _ in range(sales)]
    before = ac.counts()
    pending = iter(events)
    done = [0]
    deadline = [0.0]

    def work():
        for event in pending:
            ac.plan(event)
            done[0] += 1
            if time.perf_counter() > deadline[0]:
                return

    cpu, started = time.process_time(), time.perf_counter()
    deadline[0] = started + seconds
    if workers == 1:
        work()
    else:
        import eventlet

        pool = eventlet.GreenPool(workers)
        for _ in range(workers):
            pool.spawn(work)
        pool.waitall()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = ac.counts()
    planned = after["visits"] - before["visits"]
    return {"mix": mix, "workers": workers, "sales": done[0], "visits": planned, "seconds": round(elapsed, 2),
            "sales_per_s": round(done[0] / elapsed, 1), "visits_per_s": round(planned / elapsed, 1),
            "ms_per_sale": _ms(elapsed / done[0]), "cpu_ms_per_sale": _ms(cpu / done[0]),
            "events_per_sale": round((after["events"] - before["events"]) / done[0], 2),
            "instances_per_sale": round((after["instances"] - before["instances"]) / done[0], 2)}


def engine_starts(ac: Aftercare, count: int = ENGINE_ALONE_STARTS) -> float:
    """Starts a second of the visit process alone (engine.start on one connection, no visit row,
    no inbox or outbox), rolled back: the ceiling of planning a visit."""
    from services.aftercare.domain import Visit, plan_return_visits

    sale = sale_recorded(MIXES["one"], ac.clock.now())["payload"]
    [planned] = plan_return_visits(sale, branch=ac.policy.branch("SH001"), rules=ac.rules)
    data = Visit.schedule(planned, ac.clock.now(), ac.rules).process_data(ac.rules)
    engine, definition = ac.process.engine, ac.process.definition
    with ac.store.engine.connect() as conn:
        with conn.begin() as tx:
            engine.start(conn, str(uuid.uuid4()), definition, data)  # warm: the spec cached
            started = time.perf_counter()
            for _ in range(count):
                engine.start(conn, str(uuid.uuid4()), definition, {**data, "visit_id": str(uuid.uuid4())})
            elapsed = time.perf_counter() - started
            tx.rollback()
    return round(count / elapsed, 1)


def measure_plans(url: str, sales: int = 2000, workers: int = 4, seconds: float = 20,
                  policy_file: str | None = None) -> dict:
    """Plans through the handler: one worker (sales of one item, then of three), `workers`
    workers (one item); the engine alone beside them. `url`: a migrated aftercare database."""
    ac = Aftercare.at(url, datetime.now(timezone.utc), policy_file, pool=max(2, workers))
    try:
        figures = {"one_worker": plan_sales(ac, "one", sales, 1, seconds),
                   "one_worker_three_items": plan_sales(ac, "three", sales, 1, seconds)}
        if workers > 1:
            figures["workers"] = plan_sales(ac, "one", sales, workers, seconds)
        figures["engine_start_per_s"] = engine_starts(ac)
    finally:
        ac.close()
    return figures


# Where planning a visit spends its time: (label, a pstats key's file part, its function name).
PARTS = (
    ("handlers.plan_sale, whole", "services/aftercare/handlers.py", "plan_sale"),
    ("engine.start (SpiffWorkflow: build, step, serialize; instance insert)", "shared/workflow/engine.py", "start"),
    ("  start_workflow (SpiffWorkflow build and step to the wait)", "shared/workflow/engine.py", "start_workflow"),
    ("  engine._save (state serialized, instance row written)", "shared/workflow/engine.py", "_save"),
    ("events.envelopes (build_event: schema check of each event)", "services/aftercare/events.py", "envelopes"),
    ("Visits.add (visit row insert)", "services/aftercare/repository.py", "add"),
    ("unit of work exit (outbox flush, commit)", "shared/persistence/unit_of_work.py", "__exit__"),
    ("unit of work enter (connect, begin, inbox claim)", "shared/persistence/unit_of_work.py", "__enter__"),
    ("plan_return_visits (the domain)", "services/aftercare/domain.py", "plan_return_visits"),
)


def profile_plans(url: str, sales: int = 500, top: int = 25, policy_file: str | None = None) -> dict:
    """cProfile of handlers.plan_sale (one worker, sales of one item) after an unprofiled half:
    the wall and CPU per sale, the share of the handler's main parts, then pstats' tops."""
    ac = Aftercare.at(url, datetime.now(timezone.utc), policy_file)
    try:
        for _ in range(WARM):
            ac.plan(sale_recorded(MIXES["one"], ac.clock.now()))
        events = [sale_recorded(MIXES["one"], ac.clock.now()) for _ in range(sales)]
        half = sales // 2
        cpu, started = time.process_time(), time.perf_counter()
        for event in events[:half]:
            ac.plan(event)
        wall, cpu = (time.perf_counter() - started) / half, (time.process_time() - cpu) / half
        profiler = cProfile.Profile()
        profiler.enable()
        for event in events[half:]:
            ac.plan(event)
        profiler.disable()
    finally:
        ac.close()
    profiled = sales - half
    stats = pstats.Stats(profiler, stream=io.StringIO())
    whole = next((ct for (file, _, name), (_, _, _, ct, _) in stats.stats.items()
                  if file.endswith(PARTS[0][1]) and name == PARTS[0][2]), None) or 1.0
    parts = []
    for label, file_part, function in PARTS:
        ct = sum(v[3] for (file, _, name), v in stats.stats.items() if file.endswith(file_part) and name == function)
        parts.append({"part": label, "ms_per_sale": _ms(ct / profiled), "share": round(100 * ct / whole, 1)})
    libraries: dict[str, float] = {}
    for (file, _, name), (_, _, tt, _, _) in stats.stats.items():
        libraries[_library(file, name)] = libraries.get(_library(file, name), 0.0) + tt
    total = sum(libraries.values()) or 1.0
    by_library = [{"part": lib, "ms_per_sale": _ms(tt / profiled), "share": round(100 * tt / total, 1)}
                  for lib, tt in sorted(libraries.items(), key=lambda kv: -kv[1])]
    out = io.StringIO()
    stats.stream = out
    print(f"--- cumulative, the project's functions ({profiled} sales, profiled) ---", file=out)
    stats.sort_stats("cumulative").print_stats(r"(services|shared)/", top)
    print("--- own time, everything ---", file=out)
    stats.sort_stats("tottime").print_stats(top)
    return {"sales": profiled, "unprofiled_ms_per_sale": _ms(wall), "unprofiled_cpu_ms_per_sale": _ms(cpu),
            "parts": parts, "by_library": by_library, "pstats": out.getvalue()}


def _library(file: str, name: str) -> str:
    """Whose own time a profiled function's is."""
    if file == "~" and ("epoll" in name or "select" in name):
        return "waiting for PostgreSQL (the hub's epoll)"
    if "psycopg2" in name or "/psycopg2/" in file:
        return "psycopg2 (sending statements, reading answers)"
    for library in ("sqlalchemy", "SpiffWorkflow", "marshmallow", "eventlet", "json"):
        if f"/{library}/" in file:
            return library
    if "/services/" in file or "/shared/" in file:
        return "the project's own code"
    return "the rest (standard library, builtins)"


# --- the agent's queue among a million visits --------------------------------------------------------

# (status, share); the finished ones first: ~90% finished, ~10% open.
STATUSES = (("completed", 0.60), ("abandoned", 0.22), ("cancelled", 0.08), ("scheduled", 0.07), ("in_progress", 0.03))
OTHER_BRANCHES = ("SH002", "BJ001", "GZ001")  # the bundled policy's other branches (list_visits shows their names)
COLUMNS = ("id", "kind", "branch_code", "due_at", "call_at", "abandon_at", "sale_id", "case_id", "record_type",
           "record_id", "customer_ref", "customer_masked", "customer_language", "items", "follows", "allergy_check",
           "status", "attempts", "message", "outcome", "planned_by", "created_at", "updated_at", "finished_at",
           "anonymised_at", "last_sequence")
ALLERGY_SHARE, FOLLOW_UP_SHARE, SPREAD = 0.15, 0.05, timedelta(days=365)
_J = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
_ALLERGY_ITEMS = _J([_ITEMS["hair_colour"]])
_OTHER_ITEMS = _J([_ITEMS["skincare"]])
_OUTCOMES = {
    "completed": _J({"answers": {"met_expectations": True, "discomfort": False, "satisfaction": 5}, "score": 5,
                     "by": "A-1"}),
    "abandoned": _J({"reason": "no answer", "attempts": 3}),
    "cancelled": _J({"reason": "case_reopened"}),
}
_ATTEMPTS = {"completed": _J([{"n": 1, "by": "A-1", "role": "aftercare_agent", "channel": "phone",
                               "outcome": "reached", "note": None}]),
             "in_progress": _J([{"n": 1, "by": "A-1", "role": "aftercare_agent", "channel": "phone",
                                 "outcome": "not_reached", "note": None}])}


def _rows(branch: str, count: int, now: datetime, rng: random.Random):
    """`count` visits of `branch` as COPY's text format lines."""
    thresholds, total = [], 0.0
    for status, share in STATUSES:
        total += share
        thresholds.append((total, status))
    span = int(2 * SPREAD.total_seconds())
    start = now - SPREAD
    masked = _J({"name": "王**"})
    for _ in range(count):
        pick = rng.random()
        status = next(s for limit, s in thresholds if pick < limit)
        follow_up = rng.random() < FOLLOW_UP_SHARE
        allergy = not follow_up and rng.random() < ALLERGY_SHARE / (1 - FOLLOW_UP_SHARE)
        call_at = start + timedelta(seconds=rng.randrange(span))
        due_at = call_at - timedelta(days=1) if status == "in_progress" else call_at
        finished = status in _OUTCOMES
        record = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        stamp = lambda t: t.isoformat(sep=" ")  # noqa: E731
        yield "\t".join((
            str(uuid.UUID(int=rng.getrandbits(128), version=4)), "follow_up" if follow_up else "return", branch,
            stamp(due_at), stamp(call_at), stamp(due_at + timedelta(days=7)),
            "\\N" if follow_up else record, record if follow_up else "\\N",
            "complaint" if follow_up else "sale", record, f"c-{record[:8]}", masked, "zh",
            "[]" if follow_up else (_ALLERGY_ITEMS if allergy else _OTHER_ITEMS), "{}", "t" if allergy else "f",
            status, _ATTEMPTS.get(status, "[]"), "\\N", _OUTCOMES.get(status, "\\N"), record,
            stamp(due_at - timedelta(days=2)), stamp(call_at if finished else due_at - timedelta(days=2)),
            stamp(call_at) if finished else "\\N", "\\N", "2" if finished else "1")) + "\n"


def load_visits(url: str, now: datetime, visits: int = 1_000_000, others: int = 300_000, seed: int = 10,
                chunk: int = 100_000) -> dict:
    """`visits` visits of SH001 and `others` spread over the other branches, loaded with COPY
    (the secondary indexes dropped meanwhile and made again as the migration defines them),
    then VACUUM (ANALYZE), as a table two years old would be, and a CHECKPOINT."""
    rng = random.Random(seed)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            indexes = storage.drop_indexes(conn, ("visits",))
            cursor = conn.connection.dbapi_connection.cursor()
            plan = [("SH001", visits)] + [(b, others // len(OTHER_BRANCHES) + (i < others % len(OTHER_BRANCHES)))
                                         for i, b in enumerate(OTHER_BRANCHES)]
            for branch, count in plan:
                rows, left = _rows(branch, count, now, rng), count
                while left > 0:
                    buffer = io.StringIO("".join(next(rows) for _ in range(min(chunk, left))))
                    cursor.copy_expert(f"COPY visits ({', '.join(COLUMNS)}) FROM STDIN", buffer)
                    left -= chunk
            copied = time.perf_counter() - started
            storage.remake_indexes(conn, indexes)
        indexed = time.perf_counter() - started
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM (ANALYZE) visits"))
            try:
                conn.execute(sa.text("CHECKPOINT"))
            except sa.exc.DBAPIError:
                pass  # not a superuser: left to the server's schedule
            table = conn.execute(sa.text(
                "SELECT pg_size_pretty(pg_table_size('visits')), pg_size_pretty(pg_indexes_size('visits'))")).one()
            shape = dict(conn.execute(sa.text(
                "SELECT count(*) AS rows, count(*) FILTER (WHERE branch_code = 'SH001') AS branch_rows, "
                "count(*) FILTER (WHERE branch_code = 'SH001' AND status IN ('scheduled', 'in_progress')) "
                "AS branch_open, count(*) FILTER (WHERE branch_code = 'SH001' "
                "AND status IN ('scheduled', 'in_progress') AND call_at <= :now) AS branch_due, "
                "count(*) FILTER (WHERE branch_code = 'SH001' AND allergy_check) AS branch_allergy FROM visits"),
                {"now": now}).one()._mapping)
    finally:
        engine.dispose()
    return {**shape, "copy_s": round(copied, 1), "index_s": round(indexed - copied, 1),
            "load_s": round(time.perf_counter() - started, 1), "table_size": table[0], "indexes_size": table[1]}


def _queries(now: datetime) -> dict:
    """name -> (identity, query); the second page's cursor is filled in from the first."""
    from shared.security.auth import Identity

    agent = Identity(subject="A-1", role="aftercare_agent", branches=frozenset({"SH001"}), scope={"branch": "SH001"})
    hq = Identity(subject="HQ-1", role="hq_admin", branches=None, scope={"branch": "*"})
    east = Identity(subject="RM-1", role="regional_manager", branches=frozenset({"SH001", "SH002"}),
                    scope={"region": "east"})
    small = Identity(subject="A-2", role="aftercare_agent", branches=frozenset({"BJ001"}), scope={"branch": "BJ001"})
    return {"due_now": (agent, {}),
            "due_within_week": (agent, {"due_before": isoformat(now + timedelta(days=7))}),
            "second_page": (agent, None),
            "completed": (agent, {"status": "completed"}),
            "hq_every_branch": (hq, {}),
            "region_two_branches": (east, {}),
            "smaller_branch": (small, {})}


class _Unexecuted:
    """A unit of work that runs nothing: what building the queue's statement costs alone."""

    class _Rows:
        def all(self):
            return []

    def execute(self, statement):
        return self._Rows()


def _median_ms(work, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return _ms(statistics.median(times))


def _parts_of_default(ac: Aftercare, sql: str, params, now: datetime, runs: int) -> dict:
    """The default queue's call split: the SQL alone through the driver (server, transfer, JSON
    decoding), and building the statement with SQLAlchemy alone (no database)."""
    from services.aftercare.repository import Visits

    with ac.store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection.cursor()

        def sql_alone():
            raw.execute(sql, params)
            raw.fetchall()
        sql_ms = _median_ms(sql_alone, runs)
        raw.close()
        conn.rollback()
    visits = Visits(_Unexecuted())
    build_ms = _median_ms(lambda: visits.queue(branches=frozenset({"SH001"}), status="open", due_before=now,
                                                after=None, limit=51), runs)
    return {"sql_through_driver_ms": sql_ms, "statement_build_ms": build_ms}


def _summary(plan: list[str]) -> dict:
    """The plan's execution time, the indexes it read, and its costly nodes."""
    text = "\n".join(plan)
    indexes = sorted({line.split(" using ")[1].split(" ")[0] for line in plan if " using " in line})
    execution = next((float(line.split(":")[1].split()[0]) for line in plan if line.startswith("Execution Time")), None)
    return {"execution_ms": execution, "indexes": indexes, "seq_scan": "Seq Scan" in text,
            "sort": any("Sort" in line and "Sort Key" not in line for line in plan)}


def measure_queue(url: str, visits: int = 1_000_000, others: int = 300_000, runs: int = 50,
                  policy_file: str | None = None) -> dict:
    """Load the visits, then time handlers.list_visits (`runs` calls of each query after one
    not counted) and EXPLAIN (ANALYZE, BUFFERS) the SQL each one ran."""
    from services.aftercare import handlers

    now = datetime.now(timezone.utc)
    figures = {"visits": visits, "others": others, "load": load_visits(url, now, visits, others)}
    ac = Aftercare.at(url, now, policy_file)
    statements: list[tuple[str, object]] = []

    @sa.event.listens_for(ac.store.engine, "before_cursor_execute")
    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "visits" in statement:
            statements.append((statement, parameters))

    def call(identity, query):
        return handlers.list_visits(ac.store, identity=identity, query=query, policy=ac.policy, now=now)

    results, plans = {}, {}
    try:
        queries = _queries(now)
        first = call(*queries["due_now"])
        if first["next_cursor"]:
            queries["second_page"] = (queries["due_now"][0], {"cursor": first["next_cursor"]})
        else:  # too few visits for a second page
            del queries["second_page"]
        for name, (identity, query) in queries.items():
            statements.clear()
            shown = call(identity, query)  # not counted: the first call of its shape
            sql, params = statements[-1]
            times, cpu = [], []
            for _ in range(runs):
                started, used = time.perf_counter(), time.process_time()
                call(identity, query)
                times.append(time.perf_counter() - started)
                cpu.append(time.process_time() - used)
            times.sort()
            results[name] = {"p50_ms": _ms(statistics.median(times)),
                             "p95_ms": _ms(times[min(len(times) - 1, round(0.95 * len(times)) - 1)]),
                             "max_ms": _ms(times[-1]), "cpu_p50_ms": _ms(statistics.median(cpu)),
                             "items": len(shown["items"]),
                             "allergy_checks": sum(1 for v in shown["items"] if v["allergy_check"]),
                             "next_cursor": shown["next_cursor"] is not None}
            with ac.store.engine.connect() as conn:
                raw = conn.connection.dbapi_connection.cursor()
                raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plans[name] = [row[0] for row in raw.fetchall()]
                raw.close()
                conn.rollback()
            results[name]["plan"] = _summary(plans[name])
            if name == "due_now":
                results[name].update(_parts_of_default(ac, sql, params, now, runs))
    finally:
        sa.event.remove(ac.store.engine, "before_cursor_execute", capture)
        ac.close()
    figures.update(queries=results, runs=runs, explain_due_now=plans.get("due_now"),
                   explain=plans, slowest=max(results, key=lambda n: results[n]["p95_ms"]))
    return figures


# --- by hand ---------------------------------------------------------------------------------------------

def _print_plans(figures: dict) -> None:
    for key in ("one_worker", "one_worker_three_items", "workers"):
        f = figures.get(key)
        if f:
            print(f"{key}: {f['workers']} worker(s), {f['mix']} item(s) a sale: {f['sales_per_s']} sales/s, "
                  f"{f['visits_per_s']} visits/s ({f['sales']} sales, {f['visits']} visits in {f['seconds']} s; "
                  f"{f['ms_per_sale']} ms wall and {f['cpu_ms_per_sale']} ms CPU of this process a sale; "
                  f"{f['events_per_sale']} events a sale)")
    print(f"engine alone (engine.start of return_visit, one connection, rolled back): "
          f"{figures['engine_start_per_s']}/s")


def _print_queue(figures: dict) -> None:
    load = figures["load"]
    print(f"loaded {load['rows']:,} visits ({load['branch_rows']:,} in SH001: {load['branch_open']:,} open, "
          f"{load['branch_due']:,} of them due now, {load['branch_allergy']:,} allergy checks) in {load['load_s']} s "
          f"(COPY {load['copy_s']} s, indexes {load['index_s']} s); table {load['table_size']}, "
          f"indexes {load['indexes_size']}")
    for name, q in figures["queries"].items():
        plan = q["plan"]
        print(f"{name:19} p50 {q['p50_ms']:6} ms  p95 {q['p95_ms']:6} ms  max {q['max_ms']:6} ms  "
              f"CPU p50 {q['cpu_p50_ms']:6} ms  "
              f"({q['items']} visits, {q['allergy_checks']} allergy checks; SQL {plan['execution_ms']} ms on "
              f"{', '.join(plan['indexes']) or 'no index'}{', a seq scan' if plan['seq_scan'] else ''})")
    default = figures["queries"]["due_now"]
    print(f"\ndue_now, its parts (medians): the SQL alone through psycopg2 {default['sql_through_driver_ms']} ms, "
          f"building the statement (SQLAlchemy, no database) {default['statement_build_ms']} ms")
    print("\nEXPLAIN (ANALYZE, BUFFERS) of the default queue's SQL:\n" + "\n".join(figures["explain_due_now"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.aftercare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    sub = parser.add_subparsers(dest="command", required=True)
    plans = sub.add_parser("plans", help="visits planned a second from sale_recorded events")
    plans.add_argument("--sales", type=int, default=2000, help="sales per measure (default 2000)")
    plans.add_argument("--workers", type=int, default=4, help="eventlet workers of the concurrent measure (default 4)")
    plans.add_argument("--seconds", type=float, default=20, help="the most each measure runs (default 20)")
    plans.add_argument("--profile", action="store_true", help="cProfile of plan_sale instead (--sales of them)")
    queue = sub.add_parser("queue", help="the agent's queue among a million visits of one branch")
    queue.add_argument("--visits", type=int, default=1_000_000, help="visits of branch SH001 (default 1,000,000)")
    queue.add_argument("--others", type=int, default=300_000, help="visits of the other branches (default 300,000)")
    queue.add_argument("--runs", type=int, default=50, help="timed calls of each query (default 50)")
    args = parser.parse_args(argv)
    if args.command == "plans":
        from shared.runtime import green

        green.patch()  # as `closeloop serve` does: eventlet workers, psycopg2 waiting through the hub
    env = {**os.environ, "CLOSELOOP_DB_PREFIX": os.environ.get("CLOSELOOP_DB_PREFIX", "closeloop_bench")}
    url = fresh_database(env)
    try:
        if args.command == "plans" and args.profile:
            figures = profile_plans(url, args.sales)
            if not args.json:
                print(f"unprofiled: {figures['unprofiled_ms_per_sale']} ms a sale, "
                      f"{figures['unprofiled_cpu_ms_per_sale']} ms CPU\n")
                print("inclusive, profiled (cProfile adds its own overhead):")
                for part in figures["parts"]:
                    print(f"{part['share']:5}%  {part['ms_per_sale']:6} ms  {part['part']}")
                print("\nown time by library, profiled:")
                for part in figures["by_library"]:
                    print(f"{part['share']:5}%  {part['ms_per_sale']:6} ms  {part['part']}")
                print("\n" + figures["pstats"])
        elif args.command == "plans":
            figures = measure_plans(url, args.sales, args.workers, args.seconds)
            if not args.json:
                _print_plans(figures)
        else:
            figures = measure_queue(url, args.visits, args.others, args.runs)
            if not args.json:
                _print_queue(figures)
        if args.json:
            print(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
    finally:
        db.drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
