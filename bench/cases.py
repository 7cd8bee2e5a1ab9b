"""Investigation's cases under load, for the steps `cases` and `timers` of `python -m bench.run`:

- cases: the complaint_registered events one `closeloop serve investigation` process turns into
  open cases a second (bench.run starts the process and counts; this module makes the database,
  the events, and the engine-alone ceiling beside them);
- timers: among many waiting cases (the real complaint_case process, opened through
  handlers.open_case, then cloned in SQL), finding the due ones and firing them through
  handlers.fire_timers, each fire with its case's change, events and staff notices.

By hand (DATABASE_URL's server; a database `closeloop_bench_investigation` of its own):

    python -m bench.cases timers [--waiting 100000] [--due 1000]
    python -m bench.cases profile [--cases 500] [--fire]   where opening (or firing) a case spends its time
    python -m bench.cases lifecycle [--cases 200]   whole cases, opened to closed: case events a second

- lifecycle: cases worked through the whole complaint process by its handlers (no HTTP, no
  bus: what one worker does per step), a remedy above authority approved, fulfilled, the written
  result sent, a satisfied follow-up closing it: the case events written a second, and each
  step's mean time.
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
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

# Opening hours in Shanghai (10:00), a Monday: due times fall inside them.
T0 = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
TEMPLATES = 50  # real cases opened per set (due, waiting) before cloning
ENGINE_ALONE_FIRES = 300  # the ceiling's sample: fires of the engine alone


def database_url(env=os.environ) -> str:
    return settings.service_database_url("investigation", env)


def fresh_database(env=os.environ) -> str:
    """closeloop_bench_investigation (with the bench's prefix), dropped, created and migrated."""
    return storage.fresh(database_url(env), "investigation")


def registration(received_at: datetime, *, priority: str = "general") -> dict:
    """A complaint_registered envelope received at `received_at`: its first response due a day
    later (an hour when urgent), its resolution a week later (a day)."""
    from shared.testing.samples import complaint_event

    payload = complaint_event()["payload"]
    urgent = priority == "urgent"
    payload.update(priority=priority, received_at=isoformat(received_at),
                   first_response_due=isoformat(received_at + timedelta(hours=1 if urgent else 24)),
                   resolution_due=isoformat(received_at + timedelta(days=1 if urgent else 7)))
    return build_event("complaint_registered", payload, branch_code="SH001", correlation_id=payload["complaint_id"],
                       sequence=1, occurred_at=received_at)


def distinct(template: dict, n: int) -> dict:
    """A copy of a registration with its own event id and complaint id (and so its own case)."""
    complaint_id = str(uuid.uuid4())
    payload = {**template["payload"], "complaint_id": complaint_id,
               "reference": f"SH001-{template['payload']['received_at'][:10].replace('-', '')}-{n % 10000:04d}"}
    return {**template, "event_id": str(uuid.uuid4()), "correlation_id": complaint_id, "payload": payload}


def registrations(count: int, received_at: datetime) -> list[tuple[str, str, str, str]]:
    """`count` distinct registrations as Publisher.publish_batch takes them."""
    template = registration(received_at)
    messages = []
    for n in range(count):
        event = distinct(template, n + 1)
        messages.append(("intake.events", "complaint_registered", json.dumps(event, ensure_ascii=False),
                         event["event_id"]))
    return messages


@dataclass
class Investigation:
    """What handlers need, as the service's dependencies give it, on a clock the bench moves."""
    clock: ManualClock
    store: object
    processes: object
    policy: object
    rules: object

    @classmethod
    def at(cls, url: str, start: datetime = T0, policy_file: str | None = None) -> "Investigation":
        from services.investigation.dependencies import load_processes
        from services.investigation.repository import InvestigationStore
        from shared.calendar.policy import load_policy

        clock = ManualClock(start)
        policy = load_policy(policy_file or os.environ.get("CLOSELOOP_POLICY_FILE") or None)
        return cls(clock, InvestigationStore(db.make_engine(url, 2)), load_processes(None, clock), policy,
                   policy.sections["investigation"])

    def open_case(self, event: dict) -> bool:
        from services.investigation import handlers

        return handlers.open_case(self.store, event=event, processes=self.processes, policy=self.policy,
                                  rules=self.rules, now=self.clock.now())

    def fire_timers(self, limit: int = 100):
        from services.investigation import handlers

        return handlers.fire_timers(self.store, processes=self.processes, rules=self.rules, now=self.clock.now(),
                                    limit=limit)

    def close(self) -> None:
        self.store.engine.dispose()


def engine_starts(inv: Investigation, count: int = 200) -> float:
    """Starts a second of the complaint_case process alone (engine.start, one connection, no case
    rows, no bus), rolled back: the ceiling of opening a case."""
    definition = inv.processes.for_kind("complaint")
    data = _case_data(inv, registration(inv.clock.now()))
    with inv.store.engine.connect() as conn:
        with conn.begin() as tx:
            inv.processes.engine.start(conn, str(uuid.uuid4()), definition, data)  # warm: the spec cached
            started = time.perf_counter()
            for _ in range(count):
                inv.processes.engine.start(conn, str(uuid.uuid4()), definition, data)
            elapsed = time.perf_counter() - started
            tx.rollback()
    return round(count / elapsed, 1)


def _case_data(inv: Investigation, event: dict) -> dict:
    from services.investigation.domain import Case

    case = Case.open(event["payload"], branch=inv.policy.branch("SH001"), rules=inv.rules, now=inv.clock.now(),
                     process="bench")
    return case.process_data()


# --- many waiting cases -------------------------------------------------------------------------

def _clone(conn, templates: list[str], count: int, rename_state: bool) -> None:
    """`count` copies of the template cases (round robin), each under a new id: its process
    instance (next_timer_due as the template's: the same timers), case and tasks (not its
    timeline: firing only appends to it).
    `rename_state`: the copies' process data names their own case id (the due ones, which fire),
    else the template's (nothing reads it until a timer fires: cheaper for the many)."""
    from services.investigation import models
    from shared.workflow.tables import INSTANCES

    if count <= 0:
        return
    conn.execute(sa.text("DROP TABLE IF EXISTS clone_of"))
    conn.execute(sa.text(
        "CREATE TEMP TABLE clone_of AS "
        "SELECT gen_random_uuid()::text AS id, t.id AS template "
        "FROM generate_series(0, :count - 1) AS n "
        "JOIN unnest(CAST(:templates AS text[])) WITH ORDINALITY AS t(id, k) ON t.k - 1 = n % :many"),
        {"count": count, "templates": templates, "many": len(templates)})

    def copy(table: sa.Table, key: str, replaced: dict[str, str], cast: str = "") -> None:
        columns = [c.name for c in table.columns if not (c.identity is not None)]
        picked = ", ".join(replaced.get(name, f"t.{name}") for name in columns)
        conn.execute(sa.text(f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {picked} "
                             f"FROM clone_of c JOIN {table.name} t ON t.{key} = c.template{cast}"))

    state = "replace(t.state, t.id, c.id)" if rename_state else "t.state"
    copy(INSTANCES, "id", {"id": "c.id", "state": state, "correlation_keys": "ARRAY[c.id]"})
    new_id = "c.id::uuid"
    copy(models.cases, "id", {"id": new_id, "complaint_id": new_id}, "::uuid")
    copy(models.case_tasks, "case_id", {"case_id": new_id}, "::uuid")


def seed(inv: Investigation, waiting: int, due: int, templates: int = TEMPLATES) -> dict:
    """`waiting` open complaint cases, `due` of them with a timer due at the time returned (the
    first-response warning of urgent cases opened at T0); the others opened later, over 30
    days, due days later. A few real cases of each kind (handlers.open_case), then copies."""
    due_templates = min(templates, due)
    later_templates = min(templates, waiting - due)
    started = time.perf_counter()
    inv.clock.set(T0)
    due_ids = []
    for _ in range(due_templates):
        event = distinct(registration(T0, priority="urgent"), len(due_ids) + 1)
        inv.open_case(event)
        due_ids.append(event["payload"]["complaint_id"])
    later_ids = []
    for n in range(later_templates):
        inv.clock.set(T0 + timedelta(days=1) + n * timedelta(days=30) / max(later_templates, 1))
        event = distinct(registration(inv.clock.now()), n + 1)
        inv.open_case(event)
        later_ids.append(event["payload"]["complaint_id"])
    opened = time.perf_counter() - started
    with inv.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE outbox SET sent_at = now()"))  # as a relay would have
        _clone(conn, due_ids, due - due_templates, rename_state=True)
        _clone(conn, later_ids, waiting - due - later_templates, rename_state=False)
        fire_at = conn.execute(sa.text("SELECT max(next_timer_due) FROM process_instances WHERE id = ANY(:ids)"),
                               {"ids": due_ids}).scalar_one()
        conn.execute(sa.text("ANALYZE process_instances, cases, case_tasks"))
    _checkpoint(inv.store.engine)
    return {"fire_at": fire_at, "templates": due_templates + later_templates, "open_s": round(opened, 2),
            "seed_s": round(time.perf_counter() - started, 2)}


def _checkpoint(engine) -> None:
    """The seeding's writes flushed now rather than by a checkpoint in the middle of the
    measure (where the server lets this user; else left to the server's schedule)."""
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CHECKPOINT"))
    except sa.exc.DBAPIError:
        pass


def _counts(conn) -> dict:
    return dict(conn.execute(sa.text(
        "SELECT (SELECT count(*) FROM outbox) AS events, (SELECT count(*) FROM notifications) AS notices, "
        "(SELECT count(*) FROM cases) AS cases")).one()._mapping)


def find_due(inv: Investigation, due: int, repeat: int = 5) -> dict:
    """engine.claim_due(limit=due) among the waiting: the first call and the median of `repeat`,
    each in a transaction rolled back."""
    times = []
    for _ in range(repeat):
        with inv.store.engine.connect() as conn:
            with conn.begin() as tx:
                started = time.perf_counter()
                found = inv.processes.engine.claim_due(conn, limit=due)
                times.append(time.perf_counter() - started)
                tx.rollback()
        if len(found) != due:
            raise RuntimeError(f"claim_due found {len(found)} due instances, not {due}")
    return {"find_due_ms": round(1000 * statistics.median(times), 2), "find_due_first_ms": round(1000 * times[0], 2)}


def fire_engine_alone(inv: Investigation, count: int, limit: int = 100, timeout: float = 60) -> float:
    """engine.fire_due without the case's part (no on_fired) on `count` due instances, rounds in
    one transaction rolled back, so they are still due for handlers.fire_timers: its ceiling."""
    fired = 0
    with inv.store.engine.connect() as conn:
        with conn.begin() as tx:
            started = time.perf_counter()
            while fired < count and time.perf_counter() - started < timeout:
                done = inv.processes.engine.fire_due(conn, limit)
                fired += len(done.fired)
                if len(done.fired) + len(done.failed) < limit:
                    break
            elapsed = time.perf_counter() - started
            tx.rollback()
    return round(fired / elapsed, 1)


def fire(inv: Investigation, due: int, limit: int = 100, timeout: float = 120) -> dict:
    """The timer poll's rounds (handlers.fire_timers, `limit` a transaction, as the service
    fires them) until none is due: fires a second, CPU of this process a fire, and what each
    fire wrote."""
    with inv.store.engine.connect() as conn:
        before = _counts(conn)
    fired, failed, effects = 0, 0, {}
    cpu = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        done = inv.fire_timers(limit)
        fired, failed = fired + len(done.fired), failed + len(done.failed)
        for result in done.fired:
            for effect in result.effects:
                effects[effect.name] = effects.get(effect.name, 0) + 1
        if len(done.fired) + len(done.failed) < limit:
            break
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    with inv.store.engine.connect() as conn:
        after = _counts(conn)
    return {"fired": fired, "failed": failed, "seconds": round(elapsed, 2),
            "fire_per_s": round(fired / elapsed, 1) if elapsed else 0.0,
            "bench_cpu_ms_per_fire": round(1000 * cpu / fired, 2) if fired else None,
            "events_per_fire": round((after["events"] - before["events"]) / fired, 2) if fired else None,
            "notices_per_fire": round((after["notices"] - before["notices"]) / fired, 2) if fired else None,
            "timers": effects}


def measure_timers(url: str, waiting: int = 100_000, due: int = 1000, policy_file: str | None = None) -> dict:
    """Seed `waiting` cases, `due` of them due; find them, fire them (engine alone, rolled
    back; then through handlers.fire_timers). `url`: a migrated investigation database."""
    inv = Investigation.at(url, policy_file=policy_file)
    try:
        figures = {"waiting": waiting, "due": due, **seed(inv, waiting, due)}
        with inv.store.engine.connect() as conn:
            figures["cases"] = _counts(conn)["cases"]
        inv.clock.set(figures.pop("fire_at") + timedelta(seconds=1))
        figures.update(find_due(inv, due))
        figures["engine_fire_per_s"] = fire_engine_alone(inv, min(due, ENGINE_ALONE_FIRES))
        figures.update(fire(inv, due))
    finally:
        inv.close()
    return figures


# --- where the time goes ------------------------------------------------------------------------

def profile(url: str, cases: int = 500, fire_timers: bool = False, top: int = 30) -> None:
    """cProfile of handlers.open_case (or, `fire_timers`, of handlers.fire_timers on as many due
    cases), one connection, after a warm-up: the wall and CPU time per case unprofiled first."""
    inv = Investigation.at(url)
    try:
        if fire_timers:
            figures = seed(inv, cases * 2, cases, templates=min(TEMPLATES, cases))
            inv.clock.set(figures["fire_at"] + timedelta(seconds=1))
            inv.fire_timers(10)  # warm
            work, label = lambda: inv.fire_timers(100), "fire"
            runs = max(1, (cases - 10) // 100)
        else:
            template = registration(T0)
            for n in range(20):
                inv.open_case(distinct(template, n))
            events = iter([distinct(template, n) for n in range(2 * cases)])
            work, label, runs = lambda: inv.open_case(next(events)), "case", cases
        per_run = 100 if fire_timers else 1
        half = max(1, runs // 2)
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(half):
            work()
        print(f"per {label}, unprofiled: {1000 * (time.perf_counter() - started) / (half * per_run):.2f} ms wall, "
              f"{1000 * (time.process_time() - cpu) / (half * per_run):.2f} ms CPU")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(runs - half):
            work()
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stdout)
        print(f"\n--- cumulative, the project's functions ({(runs - half) * per_run} {label}s) ---")
        stats.sort_stats("cumulative").print_stats(r"(services|shared)/", top)
        print("--- own time, everything ---")
        stats.sort_stats("tottime").print_stats(top)
    finally:
        inv.close()


# --- whole cases ---------------------------------------------------------------------------------

LIFECYCLE = [  # (task, role, body): a store manager's case, a refund the regional manager approves
    ("assign", "store_manager", {"owner": "INV-7"}),
    ("respond", "store_manager", {"message": "您好，已收到您的反馈", "channel": "phone"}),
    ("record_findings", "investigator", {"facts": "未做皮肤测试", "service_log_checked": True,
                                         "product_batch_checked": True, "root_cause": "流程疏漏",
                                         "responsibility": "customer_misuse", "signed_by": "T-001"}),
    ("propose_remedy", "store_manager", {"type": "refund", "amount": 5000}),
    ("approve", "regional_manager", {"note": "同意"}),
    ("fulfil", "store_manager", {"note": "已退款"}),
    ("notify_customer", "store_manager", {"measures": "全额退款并致歉", "completed_at": None,
                                          "responsible": "INV-7", "follow_up": "三天后回访"}),
]


def lifecycle(url: str, count: int = 200) -> dict:
    """`count` cases opened, worked to resolved and closed by a satisfied follow-up, through
    the handlers the service calls: case events written a second, and mean ms per step."""
    from services.investigation import handlers
    from shared.security.auth import Identity

    inv = Investigation.at(url, datetime.now(timezone.utc))
    people = {role: Identity(f"{role}-1", role, None, {"branch": "*"}) for role in
              ("store_manager", "investigator", "regional_manager")}
    steps: dict[str, float] = {}
    try:
        template = registration(inv.clock.now())
        events = [distinct(template, n + 1) for n in range(count)]
        started = time.perf_counter()
        for event in events:
            begun = time.perf_counter()
            inv.open_case(event)
            steps["open"] = steps.get("open", 0) + time.perf_counter() - begun
            case_id = event["payload"]["complaint_id"]
            for task, role, body in LIFECYCLE:
                if task == "notify_customer":
                    body = {**body, "completed_at": inv.clock.now().isoformat()}
                begun = time.perf_counter()
                handlers.complete_task(inv.store, identity=people[role], case_id=case_id, task=task,
                                       read_body=lambda body=body: body, processes=inv.processes, policy=inv.policy,
                                       rules=inv.rules, now=inv.clock.now())
                steps[task] = steps.get(task, 0) + time.perf_counter() - begun
            begun = time.perf_counter()
            closed = {"event_id": str(uuid.uuid4()), "type": "visit_completed", "branch_code": "SH001",
                      "payload": {"visit_id": str(uuid.uuid4()), "kind": "follow_up", "case_id": case_id,
                                  "answers": {"satisfaction": 5, "resolved": True}, "score": 5}}
            assert handlers.follow_up_outcome(inv.store, event=closed, processes=inv.processes, policy=inv.policy,
                                              rules=inv.rules, now=inv.clock.now())
            steps["follow_up"] = steps.get("follow_up", 0) + time.perf_counter() - begun
        elapsed = time.perf_counter() - started
        with inv.store.engine.connect() as conn:
            written = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar()
            closed_cases = conn.execute(sa.text("SELECT count(*) FROM cases WHERE state = 'closed'")).scalar()
    finally:
        inv.close()
    return {"cases": count, "closed": closed_cases, "events": written, "seconds": round(elapsed, 2),
            "case_events_per_s": round(written / elapsed, 1), "cases_per_s": round(count / elapsed, 1),
            "events_per_case": round(written / count, 1),
            "step_ms": {name: round(total / count * 1000, 2) for name, total in steps.items()}}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench.cases", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    timers = sub.add_parser("timers", help="seed waiting cases, find and fire the due ones")
    timers.add_argument("--waiting", type=int, default=100_000)
    timers.add_argument("--due", type=int, default=1000)
    prof = sub.add_parser("profile", help="cProfile of opening cases (or firing their timers)")
    prof.add_argument("--cases", type=int, default=500)
    prof.add_argument("--fire", action="store_true", help="profile handlers.fire_timers instead")
    whole = sub.add_parser("lifecycle", help="whole cases, opened to closed: case events a second")
    whole.add_argument("--cases", type=int, default=200)
    args = parser.parse_args(argv)
    env = {**os.environ, "CLOSELOOP_DB_PREFIX": os.environ.get("CLOSELOOP_DB_PREFIX", "closeloop_bench")}
    url = fresh_database(env)
    try:
        if args.command == "timers":
            print(json.dumps(measure_timers(url, args.waiting, args.due), indent=2, default=str))
        elif args.command == "lifecycle":
            print(json.dumps(lifecycle(url, args.cases), indent=2))
        else:
            profile(url, args.cases, args.fire)
    finally:
        db.drop_database(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
