"""Per-instance costs of the workflow engine (shared.workflow); `make bench` calls `measure` (its
step `engine`, beside investigation's cases and timers in bench/cases.py):

    python -m bench.workflow_engine [--instances 2000] [--waiting 100000] [--due 1000]

`measure(database_url)` returns the figures: stepping and (de)serializing one instance in
memory, a whole event through the database (lock, load, complete a task, step, save, commit),
and among many waiting instances, finding the due ones and firing them. Uses a database
`closeloop_bench_workflow` of its own on DATABASE_URL's server."""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from shared.calendar.clock import ManualClock
from shared.persistence import db
from shared.runtime.config import server_url, with_database
from shared.workflow import ProcessEngine, load_definition, state, tables
from shared.workflow.engine import start_workflow

EXAMPLE = Path(__file__).resolve().parents[1] / "tests" / "workflow_fixtures" / "example_case.bpmn"
OPERATORS = {"escalate": lambda call: {"level": call.params["to_level"]}, "notify_staff": lambda call: None,
             "publish": lambda call: None}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def measure(database_url: str, instances: int = 2000, waiting: int = 100_000, due: int = 1000) -> dict:
    definition = load_definition(EXAMPLE)
    clock = ManualClock()
    engine = ProcessEngine(OPERATORS, clock=clock)
    spec_pair = state.spec_from_json(definition.spec)
    figures: dict = {}

    # In memory: one instance from its start to its first wait; its state out and back.
    step, dump, load, sizes = [], [], [], []
    for n in range(200):
        script_engine = engine.script_engine(f"m-{n}")
        started = time.perf_counter()
        workflow = start_workflow(*spec_pair, script_engine, {"case_id": f"m-{n}", "priority": "urgent"})
        step.append(time.perf_counter() - started)
        started = time.perf_counter()
        text = state.dump(workflow)
        dump.append(time.perf_counter() - started)
        started = time.perf_counter()
        state.load(text, *spec_pair, script_engine)
        load.append(time.perf_counter() - started)
        sizes.append(len(text.encode()))
    figures.update(step_ms=_ms(statistics.median(step)), serialize_ms=_ms(statistics.median(dump)),
                   restore_ms=_ms(statistics.median(load)), state_bytes=int(statistics.median(sizes)))

    url = with_database(database_url, "closeloop_bench_workflow")
    db.drop_database(url)  # what an interrupted run left
    db.create_database(url)
    pool = db.make_engine(url, 2)
    try:
        with pool.begin() as conn:
            operations = Operations(MigrationContext.configure(conn))
            tables.create_tables_v1(operations)
            tables.upgrade_tables_v2(operations)
        started = time.perf_counter()
        for n in range(instances):
            with pool.begin() as conn:
                engine.start(conn, f"case-{n}", definition, {"case_id": f"case-{n}", "priority": "urgent"})
        figures["start_per_s"] = round(instances / (time.perf_counter() - started))
        started = time.perf_counter()
        for n in range(instances):
            with pool.begin() as conn:
                engine.complete_task(conn, f"case-{n}", "assign", {"owner": "s-1"}, actor="bench")
        elapsed = time.perf_counter() - started
        figures.update(event_ms=_ms(elapsed / instances), events_per_s=round(instances / elapsed))

        # Many waiting instances, a few of them due: copies of one real state, indexed by due time.
        with pool.begin() as conn:
            engine.start(conn, "model", definition, {"case_id": "model", "priority": "urgent"})
            conn.execute(sa.text(
                "INSERT INTO process_instances (id, process_id, definition_hash, status, state, next_timer_due, "
                "correlation_keys, version, created_at, updated_at, timer_failures) "
                "SELECT 'w-' || n, process_id, definition_hash, status, state, "
                "       CASE WHEN n <= :due THEN next_timer_due ELSE next_timer_due + interval '30 days' END, "
                "       ARRAY['w-' || n], 1, created_at, updated_at, 0 "
                "FROM process_instances, generate_series(1, :waiting) AS n WHERE id = 'model'"),
                {"due": due, "waiting": waiting})
            conn.execute(sa.text("DELETE FROM process_instances WHERE id = 'model'"))
            conn.execute(sa.text("ANALYZE process_instances"))
        clock.advance(minutes=50)
        with pool.begin() as conn:
            started = time.perf_counter()
            found = engine.claim_due(conn, limit=due)
            figures["find_due_ms"] = _ms(time.perf_counter() - started)
        assert len(found) == due, len(found)
        started, fired = time.perf_counter(), 0
        while True:
            with pool.begin() as conn:
                batch = engine.fire_due(conn, limit=100)
            fired += len(batch.fired)
            if not batch.fired:
                break
        figures["fire_per_s"] = round(fired / (time.perf_counter() - started))
        figures["fired"] = fired
    finally:
        pool.dispose()
        db.drop_database(url)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--due", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(measure(server_url(), args.instances, args.waiting, args.due), indent=2))


if __name__ == "__main__":
    main()
