"""The workflow engine on the real PostgreSQL: instances started, locked, stepped and saved in the
caller's transaction; messages delivered or refused; timers found through the index and fired
with the clock moved, never twice; versions kept; state restored by a new engine."""
import threading
import uuid
from collections import Counter
from datetime import timedelta, timezone
from pathlib import Path

import eventlet
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations

from shared.calendar.clock import ManualClock
from shared.persistence import db
from shared.runtime.config import with_database
from shared.testing.fixtures import RUN_ID, drop_at_exit, wait_until
from shared.workflow import (
    InstanceExists, InstanceNotFound, NotHeld, NoWaitingInstance, ProcessEngine, TaskNotWaiting, WorkflowError,
    load_definition, parse_definition, state, tables,
)
from shared.workflow.instances import due_query

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[1] / "workflow_fixtures" / "example_case.bpmn"
NESTED = EXAMPLE.parent / "nested_case.bpmn"  # subprocess in subprocess, date timers on both
T0 = ManualClock().now()  # where the `clock` fixture (shared.testing.fixtures) starts


@pytest.fixture(scope="module")
def template(infra) -> str:
    """An empty database with the engine's tables as a service's migrations make them."""
    url = with_database(infra.database_url, f"cltest_{RUN_ID}_workflow_tpl")
    db.create_database(url)
    drop_at_exit(url)
    engine = db.make_engine(url, 1)
    with engine.begin() as conn:
        tables.create_tables_v1(migration(conn))
        tables.upgrade_tables_v2(migration(conn))
    engine.dispose()
    return url


def migration(conn) -> Operations:
    return Operations(MigrationContext.configure(conn))


@pytest.fixture
def database(template):
    url = with_database(template, f"cltest_{RUN_ID}_workflow_{uuid.uuid4().hex[:8]}")
    db.create_database(url, template=template.rsplit("/", 1)[-1])
    drop_at_exit(url)
    engine = db.make_engine(url, 6)
    yield engine
    engine.dispose()


class Operators(dict):
    """The service's operators, recording every call (instance, operator, params)."""

    def __init__(self, fail_for=()):
        self.calls, self.lock, self.fail_for = [], threading.Lock(), set(fail_for)
        super().__init__(escalate=self.escalate, notify_staff=self.record, publish=self.record)

    def record(self, call):
        if call.instance_id in self.fail_for:
            raise RuntimeError("the staff directory is down")
        with self.lock:
            self.calls.append((call.instance_id, call.operator, call.params))

    def escalate(self, call):
        self.record(call)
        return {"level": call.params["to_level"]}


@pytest.fixture
def operators():
    return Operators()


@pytest.fixture
def engine(clock, operators):
    return ProcessEngine(operators, clock=clock)


@pytest.fixture(scope="module")
def definition():
    return load_definition(EXAMPLE, required_tasks=("assign", "close"), operators=("escalate", "notify_staff", "publish"))


def start(database, engine, definition, case_id, priority="urgent", **kwargs):
    with database.begin() as conn:
        return engine.start(conn, case_id, definition, {"case_id": case_id, "priority": priority}, **kwargs)


def row(database, case_id):
    with database.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM process_instances WHERE id = :id"), {"id": case_id}).mappings().one()


def test_start_saves_the_instance_referencing_its_definition_stored_once(database, engine, definition):
    first = start(database, engine, definition, "case-1", correlation_keys=["sale-9"])
    start(database, engine, definition, "case-2")

    assert (first.status, first.version, first.definition_hash) == ("running", 1, definition.hash)
    [assign] = first.waiting
    assert (assign.name, assign.title, assign.properties) == ("assign", "Assign an owner", {"role": "store_manager"})
    assert [(t.name, t.due, t.interrupting) for t in assign.timers] == [
        ("assign_warning", T0 + timedelta(minutes=48), False), ("assign_overdue", T0 + timedelta(hours=1), True)]
    assert assign.due == T0 + timedelta(hours=1)
    assert [s.task for s in first.steps] == ["start", "prepare", "to_assign"]
    assert first.data["warn_after"] == "PT48M" and first.next_timer_due == T0 + timedelta(minutes=48)

    saved = row(database, "case-1")
    assert (saved["status"], saved["next_timer_due"], saved["correlation_keys"]) == (
        "running", T0 + timedelta(minutes=48), ["case-1", "sale-9"])
    assert '"spec"' not in saved["state"] and len(saved["state"]) < 16_000  # by reference: tasks only
    with database.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM process_definitions")).scalar() == 1


def test_an_instance_id_starts_once(database, engine, definition, operators):
    start(database, engine, definition, "case-1")
    with pytest.raises(InstanceExists):
        start(database, engine, definition, "case-1")
    assert row(database, "case-1")["version"] == 1


def test_completing_a_task_steps_on_and_says_what_to_publish(database, engine, definition):
    start(database, engine, definition, "case-1")
    with database.begin() as conn:
        result = engine.complete_task(conn, "case-1", "assign", {"owner": "s-17"}, actor="manager-3")
    assert result.steps[0].task == "assign" and result.steps[0].actor == "manager-3"
    assert [s.task for s in result.steps] == ["assign", "route", "notify_owner", "routed"]
    assert [(e.kind, e.name, e.task, e.params) for e in result.effects] == [
        ("operator", "publish", "notify_owner", {"event": "urgent_case_assigned", "owner": "s-17"})]
    assert result.waiting == () and result.next_timer_due is None and result.version == 2
    assert row(database, "case-1")["next_timer_due"] is None  # waiting for a message now


def test_a_task_that_is_not_waiting_or_an_unknown_instance_is_refused(database, engine, definition):
    start(database, engine, definition, "case-1")
    with database.begin() as conn:
        with pytest.raises(TaskNotWaiting) as refused:
            engine.complete_task(conn, "case-1", "close", {}, actor="manager-3")
    assert refused.value.waiting == ["assign"]
    with database.begin() as conn:
        engine.complete_task(conn, "case-1", "assign", {"owner": "s-17"})
    with database.begin() as conn, pytest.raises(TaskNotWaiting):
        engine.complete_task(conn, "case-1", "assign", {"owner": "s-18"})
    with database.begin() as conn, pytest.raises(InstanceNotFound):
        engine.complete_task(conn, "no-such-case", "assign", {})
    assert row(database, "case-1")["version"] == 2


def test_two_events_for_one_instance_never_interleave(database, engine, definition):
    start(database, engine, definition, "case-1")
    first = database.connect()
    tx = first.begin()
    engine.complete_task(first, "case-1", "assign", {"owner": "s-17"})  # holds the row until it commits
    outcome = {}

    def second():
        with database.begin() as conn:
            try:
                engine.complete_task(conn, "case-1", "assign", {"owner": "s-99"})
            except TaskNotWaiting as exc:
                outcome["refused"] = exc

    thread = threading.Thread(target=second)
    thread.start()
    with database.connect() as observer:
        wait_until(lambda: observer.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )).scalar() == 1, "the second event waiting on the row lock")
    tx.commit()
    first.close()
    thread.join(15)
    assert "refused" in outcome  # it saw the first one's result, not the state before it
    with database.connect() as conn:
        assert engine.read(conn, "case-1").data["owner"] == "s-17"


def test_a_message_reaches_the_instance_that_waits_for_it(database, engine, definition):
    start(database, engine, definition, "case-1", correlation_keys=["sale-9"])
    with database.begin() as conn, pytest.raises(NoWaitingInstance, match="case-1 waits for no message"):
        engine.deliver_message(conn, "visit_completed", "case-1", {"case_id": "case-1"})
    with database.begin() as conn:
        engine.complete_task(conn, "case-1", "assign", {"owner": "s-17"})

    with database.begin() as conn, pytest.raises(NoWaitingInstance, match="no running instance has that key"):
        engine.deliver_message(conn, "visit_completed", "case-404", {"case_id": "case-404"})
    with database.begin() as conn, pytest.raises(NoWaitingInstance, match="correlation does not match"):
        engine.deliver_message(conn, "visit_completed", "case-1", {"case_id": "case-2", "score": 5})
    with database.begin() as conn:
        [result] = engine.deliver_message(conn, "visit_completed", "sale-9", {"case_id": "case-1", "score": 2})
    assert [s.task for s in result.steps] == ["wait_visit"]
    assert result.data["visit"] == {"case_id": "case-1", "score": 2}
    assert [w.name for w in result.waiting] == ["close"]

    with database.begin() as conn:
        done = engine.complete_task(conn, "case-1", "close", {}, actor="manager-3")
    assert done.completed and row(database, "case-1")["status"] == "completed"
    with database.begin() as conn, pytest.raises(NoWaitingInstance):
        engine.deliver_message(conn, "visit_completed", "case-1", {"case_id": "case-1"})


def test_due_timers_are_found_through_the_index_among_many_waiting_instances(database, engine, definition):
    start(database, engine, definition, "case-1")
    with database.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO process_instances (id, process_id, definition_hash, status, state, next_timer_due, "
            "correlation_keys, version, created_at, updated_at) "
            "SELECT 'bulk-' || n, 'example_case', :hash, 'running', '{}', "
            "       CASE WHEN n % 10 = 0 THEN NULL ELSE :t0 + n * interval '1 minute' END, "
            "       ARRAY['bulk-' || n], 1, :t0, :t0 FROM generate_series(1, 50000) AS n"),
            {"hash": definition.hash, "t0": T0 + timedelta(days=1)})
        conn.execute(sa.text("ANALYZE process_instances"))
    for columns in ((), (tables.INSTANCES,)):  # the ids (claim_due), the rows whole (fire_due)
        with database.connect() as conn:
            query = due_query(T0 + timedelta(hours=1), 100, *columns).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            plan = "\n".join(conn.execute(sa.text(f"EXPLAIN {query}")).scalars())
        assert "Index Scan using ix_process_instances_next_timer_due" in plan, plan
    with database.begin() as conn:
        assert engine.claim_due(conn) == []


def test_timers_fire_when_the_clock_is_moved_past_them(database, engine, definition, clock, operators):
    start(database, engine, definition, "case-1")
    clock.advance(minutes=47)
    with database.begin() as conn:
        assert engine.fire_due(conn).fired == ()
    clock.advance(minutes=1)
    with database.connect() as conn:  # what operators see until a poll fires it
        assert engine.overdue(conn) == (1, T0 + timedelta(minutes=48))
    with database.begin() as conn:
        [warned] = engine.fire_due(conn).fired
        assert engine.overdue(conn) == (0, None)
    assert [(e.name, e.params) for e in warned.effects] == [("notify_staff", {"kind": "sla_warning", "role": "store_manager"})]
    assert warned.next_timer_due == T0 + timedelta(hours=1) and [w.name for w in warned.waiting] == ["assign"]

    clock.set(T0 + timedelta(hours=1))
    with database.begin() as conn:
        [escalated] = engine.fire_due(conn).fired
    assert [(e.name, e.params, e.result) for e in escalated.effects] == [("escalate", {"to_level": 1}, {"level": 1})]
    assert escalated.data["escalation_level"] == 1
    [assign] = escalated.waiting  # back to the store manager's queue with fresh clocks
    assert [t.due for t in assign.timers] == [T0 + timedelta(hours=1, minutes=48), T0 + timedelta(hours=2)]
    assert row(database, "case-1")["next_timer_due"] == T0 + timedelta(hours=1, minutes=48)


def test_two_firers_never_fire_the_same_timer_twice(database, engine, definition, clock, operators):
    cases = [f"case-{n}" for n in range(12)]
    for case_id in cases:
        start(database, engine, definition, case_id)
    clock.advance(minutes=50)

    holder = database.connect()  # one replica claims 4 and is still working on them...
    tx = holder.begin()
    held = engine.claim_due(holder, limit=4)
    with database.begin() as conn:  # ...another skips them and fires the rest
        others = {r.instance_id for r in engine.fire_due(conn, limit=100).fired}
    assert len(held) == 4 and others == set(cases) - set(held)
    for case_id in held:
        engine.fire_timers(holder, case_id)
    tx.commit()
    holder.close()

    clock.advance(minutes=15)  # the deadlines: now two replicas in threads, small batches
    barrier = threading.Barrier(2)

    def replica():
        barrier.wait()
        while True:
            with database.begin() as conn:
                if not engine.fire_due(conn, limit=3).fired:
                    return
            eventlet.sleep(0)

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    fired = Counter((instance, name) for instance, name, _ in operators.calls)
    assert fired == Counter({**{(c, "notify_staff"): 1 for c in cases}, **{(c, "escalate"): 1 for c in cases}})


def test_a_failing_timer_step_is_rolled_back_alone_and_retried_later(database, definition, clock):
    operators = Operators(fail_for={"case-bad"})
    engine = ProcessEngine(operators, clock=clock)
    for case_id in ("case-bad", "case-good"):
        start(database, engine, definition, case_id)
    clock.advance(minutes=50)
    with database.begin() as conn:
        fired = engine.fire_due(conn)
    assert [r.instance_id for r in fired.fired] == ["case-good"]
    assert fired.failed == (("case-bad", "RuntimeError: the staff directory is down"),)
    bad = row(database, "case-bad")
    assert (bad["version"], bad["timer_failures"], bad["next_timer_due"]) == (1, 1, clock.now() + timedelta(minutes=1))
    assert "staff directory" in bad["last_error"]

    operators.fail_for.clear()
    clock.advance(minutes=1)
    with database.begin() as conn:
        assert [r.instance_id for r in engine.fire_due(conn).fired] == ["case-bad"]
    assert (row(database, "case-bad")["timer_failures"], row(database, "case-bad")["last_error"]) == (0, None)


def test_a_changed_process_file_leaves_running_instances_on_their_version(database, engine, definition, clock):
    start(database, engine, definition, "case-old")
    changed = parse_definition(EXAMPLE.read_text().replace('>"PT1H"<', '>"PT2H"<'))  # the deadline moved
    start(database, engine, changed, "case-new")
    assert row(database, "case-old")["definition_hash"] == definition.hash
    assert row(database, "case-new")["definition_hash"] == changed.hash != definition.hash

    restarted = ProcessEngine(Operators(), clock=clock)  # a new process: specs come from the database
    clock.set(T0 + timedelta(hours=1))
    with database.begin() as conn:
        fired = {r.instance_id: [e.name for e in r.effects] for r in restarted.fire_due(conn).fired}
    assert fired == {"case-old": ["notify_staff", "escalate"], "case-new": ["notify_staff"]}
    with database.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM process_definitions")).scalar() == 2


def test_an_engine_made_after_a_restart_resumes_every_instance_with_its_timers(database, engine, definition, clock):
    start(database, engine, definition, "case-1")
    start(database, engine, definition, "case-2", priority="general")  # warned after 19h12m

    operators = Operators()
    restarted = ProcessEngine(operators, clock=clock)
    with database.connect() as conn:
        assert [w.name for w in restarted.read(conn, "case-1").waiting] == ["assign"]
    clock.advance(minutes=50)
    with database.begin() as conn:
        assert [r.instance_id for r in restarted.fire_due(conn).fired] == ["case-1"]
    assert [(i, name) for i, name, _ in operators.calls] == [("case-1", "notify_staff")]
    clock.set(T0 + timedelta(hours=1))
    with database.begin() as conn:
        assert sorted(r.instance_id for r in restarted.fire_due(conn).fired) == ["case-1", "case-2"]
    with database.connect() as conn:
        assert restarted.read(conn, "case-2").next_timer_due == T0 + timedelta(hours=2)  # the next deadline
def test_pitfall_jsonb_loses_task_data_on_restore_so_the_state_is_text(database, engine, definition):
    cases = ["case-1", "case-2", "case-3"]
    for case_id in cases:
        start(database, engine, definition, case_id)
    with database.connect() as conn:
        assert conn.execute(sa.text(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'process_instances' "
            "AND column_name = 'state'")).scalar() == "text"
        stored = conn.execute(sa.text("SELECT id, state, CAST(state AS jsonb)::text FROM process_instances "
                                      "ORDER BY id")).all()
    spec_pair = state.spec_from_json(definition.spec)

    def task_data(case_id, text):
        workflow = state.load(text, *spec_pair, None)  # read only: no script engine needed
        return {str(task.id): task.data for task in workflow.get_tasks()}

    lost = 0
    for case_id, as_text, as_jsonb in stored:
        kept = task_data(case_id, as_text)
        assert kept[next(k for k, v in kept.items() if v.get("warn_after"))]["case_id"] == case_id
        assert kept == task_data(case_id, state.dump(state.load(as_text, *spec_pair, None)))  # a text round trip
        lost += task_data(case_id, as_jsonb) != kept
    # JSONB orders keys by length, then bytes: the tasks' ids come back in an order unrelated to
    # the tree, a task restored before its parent gets no data (all three keeping theirs by
    # chance: well under one in a million).
    assert lost >= 1


def test_the_tables_migrations_make_what_add_tables_describes_and_v2_comes_off_again(database):
    def assert_made(described):
        inspector = sa.inspect(database)
        for name, table in described.items():
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
            assert columns == {c.name: c.nullable for c in table.columns}, name
            assert {i["name"] for i in inspector.get_indexes(name)} == {i.name for i in table.indexes}, name

    assert_made(tables.add_tables(sa.MetaData()))  # create_tables_v1, upgrade_tables_v2 (the template)
    with database.begin() as conn:
        tables.downgrade_tables_v2(migration(conn))
    assert_made(tables.add_tables(sa.MetaData(), held_since=False))
    with database.begin() as conn:
        tables.upgrade_tables_v2(migration(conn))
    assert_made(tables.add_tables(sa.MetaData()))


def test_held_since_is_not_dropped_while_an_instance_is_held(database, engine, definition):
    start(database, engine, definition, "case-1")
    with database.begin() as conn:
        engine.hold(conn, "case-1")
    with database.begin() as conn, pytest.raises(WorkflowError, match="1 process instance"):
        tables.downgrade_tables_v2(migration(conn))
    assert row(database, "case-1")["held_since"] == T0


# --- held timers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nested():
    return load_definition(NESTED, required_tasks=("assign", "respond", "record_findings"), operators=("notify_staff",))


def clocks(first_warning, first_breach, handling_breach) -> dict:
    """The nested process's `clocks` (hours after T0): ISO texts with an offset, as a service writes them."""
    def text(hours):
        return (T0 + timedelta(hours=hours)).astimezone(timezone(timedelta(hours=8))).isoformat()

    return {"first_response": {"warning_at": text(first_warning), "breach_at": text(first_breach)},
            "handling": {"breach_at": text(handling_breach)}}


def timer_columns(database, case_id):
    saved = row(database, case_id)
    return saved["held_since"], saved["next_timer_due"]


def fire_due(database, engine, **kwargs):
    with database.begin() as conn:
        return engine.fire_due(conn, **kwargs)


def fired_steps(result) -> list[str]:
    return [s.task for s in result.steps if s.kind in ("BoundaryEvent", "ServiceTask")]


def test_a_held_instance_fires_nothing_until_released_then_its_timers_are_due_later_by_the_hold(
        database, engine, definition, clock, operators):
    start(database, engine, definition, "case-1")
    held_at = T0 + timedelta(minutes=50)  # the warning (48 minutes) is due, not polled yet
    clock.set(held_at)
    with database.begin() as conn:
        hold = engine.hold(conn, "case-1")
    assert [e.name for e in hold.effects] == ["notify_staff"]  # what was due before the hold fires first
    assert (hold.held_since, hold.next_timer_due, hold.version) == (held_at, None, 2)
    assert timer_columns(database, "case-1") == (held_at, None)
    with database.begin() as conn:
        again = engine.hold(conn, "case-1")  # changes nothing
    assert (again.held_since, again.next_timer_due, again.version, again.effects) == (held_at, None, 2, ())

    clock.set(T0 + timedelta(hours=3))  # the deadline (1 hour) passes during the hold
    assert fire_due(database, engine).fired == ()
    with database.begin() as conn:
        assert engine.fire_timers(conn, "case-1").effects == ()  # even when asked to
    with database.connect() as conn:
        read = engine.read(conn, "case-1")
    assert (read.held_since, read.next_timer_due, [w.name for w in read.waiting]) == (held_at, None, ["assign"])
    assert timer_columns(database, "case-1") == (held_at, None)

    with database.begin() as conn:
        released = engine.release(conn, "case-1")
    deadline = T0 + timedelta(hours=1) + (clock.now() - held_at)  # later by the 2h10m held
    assert (released.held_since, released.next_timer_due, released.effects) == (None, deadline, ())
    assert [t.due for t in released.waiting[0].timers] == [deadline]
    assert timer_columns(database, "case-1") == (None, deadline)
    clock.set(deadline - timedelta(seconds=1))
    assert fire_due(database, engine).fired == ()
    clock.set(deadline)
    [escalated] = fire_due(database, engine).fired
    assert [e.name for e in escalated.effects] == ["escalate"]
    assert [(i, name) for i, name, _ in operators.calls] == [("case-1", "notify_staff"), ("case-1", "escalate")]

    with database.begin() as conn, pytest.raises(NotHeld):
        engine.release(conn, "case-1")
    with database.begin() as conn:
        for operation in (engine.hold, engine.release):
            with pytest.raises(InstanceNotFound):
                operation(conn, "no-such-case")


def test_what_the_service_writes_for_a_fired_instance_commits_or_rolls_back_with_its_step(
        database, engine, definition, clock):
    with database.begin() as conn:
        conn.execute(sa.text("CREATE TABLE outbox_probe (instance_id text, event text)"))
    for case_id in ("case-bad", "case-good"):
        start(database, engine, definition, case_id)
    clock.advance(minutes=50)
    refusing = {"case-bad"}

    def published():
        with database.connect() as conn:
            return sorted(map(tuple, conn.execute(sa.text("SELECT instance_id, event FROM outbox_probe"))))

    with database.begin() as conn:
        def publish(result):  # the service's outbox events, on the poll's connection
            for effect in result.effects:
                conn.execute(sa.text("INSERT INTO outbox_probe VALUES (:instance, :event)"),
                             {"instance": result.instance_id, "event": effect.name})
            if result.instance_id in refusing:
                raise RuntimeError("the outbox refused it")

        fired = engine.fire_due(conn, on_fired=publish)
    assert [r.instance_id for r in fired.fired] == ["case-good"]
    assert fired.failed == (("case-bad", "RuntimeError: the outbox refused it"),)
    assert published() == [("case-good", "notify_staff")]  # case-bad's insert went with its step
    bad = row(database, "case-bad")
    assert (bad["version"], bad["timer_failures"], bad["next_timer_due"]) == (1, 1, clock.now() + timedelta(minutes=1))

    refusing.clear()
    clock.advance(minutes=1)
    with database.begin() as conn:
        assert [r.instance_id for r in engine.fire_due(conn, on_fired=publish).fired] == ["case-bad"]
    assert published() == [("case-bad", "notify_staff"), ("case-good", "notify_staff")]
    assert row(database, "case-bad")["timer_failures"] == 0


def test_nested_subprocess_timers_fire_are_cancelled_with_their_subprocess_and_are_held_on_both_levels(
        database, engine, nested, clock, operators):
    with database.begin() as conn:
        started = engine.start(conn, "case-1", nested, {"clocks": clocks(1, 2, 5)})
    assert [w.name for w in started.waiting] == ["assign"]
    assert timer_columns(database, "case-1") == (None, T0 + timedelta(hours=1))  # the inner warning

    clock.set(T0 + timedelta(hours=1))
    [warned] = fire_due(database, engine).fired  # found through next_timer_due, two subprocesses down
    assert fired_steps(warned) == ["first_response_warning", "warn_first_response"]
    assert [(e.name, e.params) for e in warned.effects] == [("notify_staff", {"kind": "first_response_warning"})]
    assert timer_columns(database, "case-1") == (None, T0 + timedelta(hours=2))  # the inner breach

    held_at = T0 + timedelta(hours=1, minutes=30)
    clock.set(held_at)
    with database.begin() as conn:
        assert engine.hold(conn, "case-1").effects == ()
    clock.set(T0 + timedelta(hours=6))  # past the inner breach (2h) and the outer one (5h)
    assert fire_due(database, engine).fired == ()
    with database.begin() as conn:
        assigned = engine.complete_task(conn, "case-1", "assign", {"owner": "s-17"}, actor="manager-3")
    assert [(s.task, s.at) for s in assigned.steps] == [("assign", clock.now())]  # no timer; steps on the clock
    assert (assigned.effects, assigned.next_timer_due, assigned.held_since) == ((), None, held_at)
    assert [w.name for w in assigned.waiting] == ["respond"]
    assert timer_columns(database, "case-1") == (held_at, None)

    with database.begin() as conn:  # the service's new clocks: its deadlines moved by the pause
        released = engine.release(conn, "case-1", {"clocks": clocks(1, 8, 10)})
    assert (released.steps, released.held_since, released.next_timer_due) == ((), None, T0 + timedelta(hours=8))
    assert timer_columns(database, "case-1") == (None, T0 + timedelta(hours=8))

    clock.set(T0 + timedelta(hours=7))
    with database.begin() as conn:
        responded = engine.complete_task(conn, "case-1", "respond", {})
    assert [w.name for w in responded.waiting] == ["record_findings"]
    assert responded.data["clocks"] == clocks(1, 8, 10) and responded.data["owner"] == "s-17"
    assert timer_columns(database, "case-1") == (None, T0 + timedelta(hours=10))  # the inner breach is gone
    clock.set(T0 + timedelta(hours=8))
    assert fire_due(database, engine).fired == ()

    clock.set(T0 + timedelta(hours=10))
    [breached] = fire_due(database, engine).fired
    assert fired_steps(breached) == ["handling_breach", "report_breach"]
    assert [e.params for e in breached.effects] == [{"kind": "handling_breach"}]
    assert timer_columns(database, "case-1") == (None, None)
    assert [params["kind"] for _, _, params in operators.calls] == ["first_response_warning", "handling_breach"]


def test_a_release_whose_new_dates_have_passed_fires_them_at_once_on_both_levels(database, engine, nested, clock):
    with database.begin() as conn:
        engine.start(conn, "case-1", nested, {"clocks": clocks(1, 2, 5)})
        engine.hold(conn, "case-1")
    clock.set(T0 + timedelta(minutes=30))
    with database.begin() as conn:
        released = engine.release(conn, "case-1", {"clocks": clocks(0.25, 3, 0.5)})
    assert sorted(fired_steps(released)) == ["first_response_warning", "handling_breach", "report_breach",
                                             "warn_first_response"]
    assert sorted(e.params["kind"] for e in released.effects) == ["first_response_warning", "handling_breach"]
    assert timer_columns(database, "case-1") == (None, T0 + timedelta(hours=3))


def test_a_restart_replaces_the_instance_s_process_where_it_stands_and_fires_what_its_new_data_made_due(
        database, engine, definition, nested, clock):
    """An inquiry's case converted into a complaint: the same instance (id, correlation keys) runs
    another process from its start; the old run's tasks and timers go, a hold ends, and a date
    already past fires in the restart itself."""
    start(database, engine, definition, "case-1", correlation_keys=["sale-9"])
    clock.set(T0 + timedelta(minutes=30))
    with database.begin() as conn:
        engine.hold(conn, "case-1")
    clock.set(T0 + timedelta(hours=3))  # past the new process's first warning (1h), not its breach (4h)
    with database.begin() as conn:
        restarted = engine.restart(conn, "case-1", nested, {"clocks": clocks(1, 4, 9)})
    assert (restarted.process_id, restarted.definition_hash, restarted.version) == ("nested_case", nested.hash, 3)
    assert [w.name for w in restarted.waiting] == ["assign"]
    assert [(e.name, e.params) for e in restarted.effects] == [("notify_staff", {"kind": "first_response_warning"})]
    assert (restarted.held_since, restarted.next_timer_due) == (None, T0 + timedelta(hours=4))
    saved = row(database, "case-1")
    assert (saved["process_id"], saved["definition_hash"], saved["correlation_keys"], saved["held_since"]) == (
        "nested_case", nested.hash, ["case-1", "sale-9"], None)
    clock.set(T0 + timedelta(hours=4))
    [breached] = fire_due(database, engine).fired  # the new run's timer; the old run's (escalate at 1h) are gone
    assert (fired_steps(breached), breached.effects) == (["first_response_breach"], ())
    with database.begin() as conn, pytest.raises(InstanceNotFound):
        engine.restart(conn, "no-such-case", nested, {})
