"""The process engine: SpiffWorkflow 3.2.0 instances, one per case or visit, stepped and saved
inside the caller's transaction.

Every operation takes the unit of work's connection, locks the instance's row (so two events
for one instance never interleave), restores its state with this operation's script engine
attached, does its work, steps until nothing automatic is left READY, saves, and returns a
StepResult: the steps taken (for the timeline), the effects the process asked for (for the
service to publish through its outbox in the same transaction), the user tasks now waiting and
the next timer. The engine itself has no side effects beyond the two tables.

An instance's timers can be held (`hold`: waiting for the customer pauses the SLA clocks) and
released (`release`: they are due later by the time held, or computed again from new data)."""
from __future__ import annotations

import copy
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

import sqlalchemy as sa
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.specs.control import BoundaryEventSplit
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.exceptions import WorkflowException
from SpiffWorkflow.util.task import TaskState

from shared.calendar.clock import SystemClock
from shared.workflow import definitions, instances, state, timers
from shared.workflow.definitions import ProcessDefinition
from shared.workflow.errors import (
    InstanceExists, InstanceNotFound, NoWaitingInstance, NotHeld, ProcessLoops, TaskNotWaiting,
)
from shared.workflow.scripting import (
    Effect, OperatorCall, RestrictedEnvironment, ScriptEngine, check_data, default_helpers,
)
from shared.workflow.tables import COMPLETED, RUNNING

log = logging.getLogger(__name__)
MAX_ROUNDS = 100  # engine-step rounds in one operation before the process is deemed looping


@dataclass(frozen=True)
class TimerInfo:
    name: str                # the boundary event's id
    title: str | None
    due: datetime
    interrupting: bool       # False: a warning; the task keeps waiting


@dataclass(frozen=True)
class WaitingTask:
    name: str                # the task's id: what the API completes
    title: str | None
    lane: str | None
    properties: dict         # spiffworkflow:properties of the task (e.g. the role that may complete it)
    timers: tuple[TimerInfo, ...]

    @property
    def due(self) -> datetime | None:
        """When an interrupting timer takes the task away (its deadline), if one does."""
        return min((t.due for t in self.timers if t.interrupting), default=None)


@dataclass(frozen=True)
class Step:
    task: str
    title: str | None
    kind: str                # the BPMN element: UserTask, ServiceTask, BoundaryEvent...
    at: datetime
    actor: str | None = None


@dataclass(frozen=True)
class StepResult:
    instance_id: str
    process_id: str
    definition_hash: str
    status: str              # running | completed
    version: int
    waiting: tuple[WaitingTask, ...]
    next_timer_due: datetime | None
    data: dict               # the data of the task completed last
    steps: tuple[Step, ...] = ()
    effects: tuple[Effect, ...] = ()
    held_since: datetime | None = None  # its timers held since then (see ProcessEngine.hold); None: they run

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED


@dataclass(frozen=True)
class TimerRound:
    fired: tuple[StepResult, ...]
    failed: tuple[tuple[str, str], ...]  # (instance id, error): retried later


@dataclass
class _Operation:
    """One operation on one instance: its script engine (with the engine's clock) and what it recorded."""
    script_engine: ScriptEngine
    steps: list[Step] = field(default_factory=list)

    def record(self, task, actor: str | None = None) -> None:
        spec = task.task_spec
        if spec.bpmn_id is not None:  # SpiffWorkflow's own joins and splits are not steps
            self.steps.append(Step(spec.bpmn_id, spec.bpmn_name, type(spec).__name__,
                                   self.script_engine.clock.now(), actor))


class ProcessEngine:
    """`operators`: the service tasks' operators by name (each takes an OperatorCall and returns
    a JSON value the process keeps as the task's result). `helpers`: more functions expressions
    may call (trusted code of the service). `clock`: production's SystemClock unless a test
    moves one."""

    def __init__(self, operators: Mapping[str, Callable[[OperatorCall], Any]] | None = None, *,
                 clock=None, helpers: Mapping[str, Callable] | None = None, spec_cache_size: int = 64):
        self.clock = clock or SystemClock()
        self.operators = dict(operators or {})
        self.helpers = {**default_helpers(self.clock), **(helpers or {})}
        self.environment = RestrictedEnvironment(self.helpers)
        self._specs: OrderedDict[str, tuple] = OrderedDict()
        self._specs_lock = threading.Lock()
        self._spec_cache_size = spec_cache_size
        self._stored: set[str] = set()  # definitions known committed (see `registered`)

    # --- operations ---------------------------------------------------------------------

    def register(self, conn: sa.Connection, definition: ProcessDefinition) -> None:
        """Store a definition (a service does it at start; `start` does it too when needed)."""
        definitions.store(conn, definition)

    def registered(self, database: sa.Engine, *defined: ProcessDefinition) -> None:
        """Store definitions in a transaction of their own, committed: `start` then skips its
        look-up for them (a definition stored in a caller's transaction that rolled back would
        not be there)."""
        missing = [d for d in defined if d.hash not in self._stored]
        if not missing:  # the usual case: a set look-up, no database
            return
        with database.begin() as conn:
            for definition in missing:
                definitions.store(conn, definition)
        self._stored.update(d.hash for d in missing)

    def start(self, conn: sa.Connection, instance_id: str, definition: ProcessDefinition,
              data: Mapping | None = None, correlation_keys: Iterable[str] = ()) -> StepResult:
        """A new instance of `definition`, stepped until it waits. InstanceExists if the id is taken."""
        data = dict(data or {})
        check_data(data, self.helpers, "start data")
        workflow, op = self._new_run(conn, instance_id, definition, data)
        row = instances.Row(instance_id, definition.process_id, definition.hash, RUNNING, "", 0)
        keys = list(dict.fromkeys([instance_id, *correlation_keys]))
        return self._save(conn, row, workflow, op, keys=keys)

    def complete_task(self, conn: sa.Connection, instance_id: str, task_name: str, data: Mapping | None = None,
                      actor: str | None = None) -> StepResult:
        """Complete the waiting user task `task_name` with `data`, done by `actor`.
        InstanceNotFound; TaskNotWaiting when it is not waiting now (done, not reached, unknown)."""
        data = dict(data or {})
        check_data(data, self.helpers, f"the data of task {task_name!r}")
        row = self._lock(conn, instance_id)
        workflow, op = self._restore(conn, row)
        task = next((t for t in workflow.get_tasks(state=TaskState.READY, manual=True)
                     if t.task_spec.bpmn_id == task_name), None)
        if task is None:
            raise TaskNotWaiting(instance_id, task_name, [w.name for w in _waiting(workflow)])
        if hasattr(task.task_spec, "add_data_from_form"):  # the spiff user task: into its variable, if it names one
            task.task_spec.add_data_from_form(task, data)
        else:
            task.set_data(**data)
        task.run()
        op.record(task, actor)
        settle(workflow, op.record)
        return self._save(conn, row, workflow, op)

    def deliver_message(self, conn: sa.Connection, name: str, key: str,
                        payload: Mapping | None = None) -> tuple[StepResult, ...]:
        """Deliver message `name` to the running instances with correlation key `key` that wait
        for it (the payload's fields join the catching task's data). NoWaitingInstance when none
        does, so the consumer parks the message instead of dropping it."""
        payload = dict(payload or {})
        check_data(payload, self.helpers, f"the payload of message {name!r}")
        results, seen = [], {}
        for row in instances.lock_by_key(conn, key):
            workflow, op = self._restore(conn, row)
            seen[row.id] = _waiting_messages(workflow)
            if name not in seen[row.id]:
                continue
            if send_message(workflow, name, payload):
                settle(workflow, op.record)
                results.append(self._save(conn, row, workflow, op))
            else:
                seen[row.id] = [f"{n} (the payload's correlation does not match)" if n == name else n
                                for n in seen[row.id]]
        if not results:
            raise NoWaitingInstance(name, key, seen)
        return tuple(results)

    def read(self, conn: sa.Connection, instance_id: str) -> StepResult:
        """The instance as it is now (no lock, nothing stepped)."""
        row = instances.read(conn, instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        workflow, _ = self._restore(conn, row)
        return self._unchanged(row, workflow)

    def waiting_tasks(self, conn: sa.Connection, instance_id: str) -> tuple[WaitingTask, ...]:
        return self.read(conn, instance_id).waiting

    def add_correlation_key(self, conn: sa.Connection, instance_id: str, key: str) -> None:
        """Let messages name the instance by `key` too."""
        instances.add_correlation_key(conn, instance_id, key)

    def cancel(self, conn: sa.Connection, instance_id: str) -> StepResult:
        """End the instance where it stands (a visit no longer wanted): its waiting tasks and
        timers are cancelled and it leaves the timer poll. A completed instance stays as it is.
        InstanceNotFound."""
        row = self._lock(conn, instance_id)
        workflow, op = self._restore(conn, row)
        if workflow.completed:
            return self._unchanged(row, workflow)
        workflow.cancel()
        return self._save(conn, row, workflow, op)

    def restart(self, conn: sa.Connection, instance_id: str, definition: ProcessDefinition,
                data: Mapping | None = None) -> StepResult:
        """Replace the instance's process, where it stands, by a new run of `definition` started
        with `data` (an inquiry's case that became a complaint): the old run's tasks and timers
        go, its timers are no longer held, its id and correlation keys stay, and the new run
        steps until it waits (a timer due by now fires at once). InstanceNotFound."""
        data = dict(data or {})
        check_data(data, self.helpers, "start data")
        row = self._lock(conn, instance_id)
        workflow, op = self._new_run(conn, instance_id, definition, data)
        instances.replace_definition(conn, instance_id, definition.process_id, definition.hash)
        row = instances.Row(row.id, definition.process_id, definition.hash, row.status, row.state, row.version)
        return self._save(conn, row, workflow, op)

    def _new_run(self, conn: sa.Connection, instance_id: str, definition: ProcessDefinition,
                 data: dict) -> tuple[BpmnWorkflow, _Operation]:
        """A run of `definition` started with `data` (checked by the caller) and stepped until it
        waits (start, restart); the definition stored first if this engine has not stored it yet."""
        if definition.hash not in self._stored:
            definitions.store(conn, definition)
        spec, subprocess_specs = self._spec(conn, definition.hash, definition.spec)
        op = self._operation(instance_id)
        return start_workflow(spec, subprocess_specs, op.script_engine, data, op.record), op

    # --- timers --------------------------------------------------------------------------

    def hold(self, conn: sa.Connection, instance_id: str) -> StepResult:
        """Hold the instance's timers (waiting for the customer pauses its SLA clocks): until
        `release`, every operation on it (complete_task, deliver_message, fire_timers...) steps
        its timers on the time frozen at this instant, so none falls due, and it leaves the
        timer poll (next_timer_due NULL). Steps and now() keep the clock's time. A timer due by
        now fires first, in this operation. Holding a held instance changes nothing.
        InstanceNotFound."""
        row = self._lock(conn, instance_id)
        if row.held_since is not None:
            return self._unchanged(row, self._restore(conn, row)[0])

        def hold_timers(workflow: BpmnWorkflow, op: _Operation) -> None:
            op.script_engine.held_since = self.clock.now()

        return self._fire(conn, row, hold_timers)

    def release(self, conn: sa.Connection, instance_id: str, data: Mapping | None = None) -> StepResult:
        """Release a held instance's timers: `data` joins the data of every unfinished task (see
        `merge_data`: top-level keys replaced, as a completed task's form does), each waiting
        duration or cycle timer is due later by the time held, each date timer evaluates its
        expression again on the data as it is now; then what is due fires and the instance
        steps on. InstanceNotFound; NotHeld when its timers are not held."""
        data = dict(data or {})
        check_data(data, self.helpers, "the release data")
        row = self._lock(conn, instance_id)
        if row.held_since is None:
            raise NotHeld(instance_id)

        def resume(workflow: BpmnWorkflow, op: _Operation) -> None:
            merge_data(workflow, data)
            timers.rearm(workflow, max(self.clock.now() - row.held_since, timedelta(0)))
            op.script_engine.held_since = None

        return self._fire(conn, row, resume)

    def claim_due(self, conn: sa.Connection, limit: int = 100) -> list[str]:
        """Instances with a timer due by the clock's now, locked (SKIP LOCKED: another replica's
        are left to it), earliest first."""
        return instances.claim_due(conn, self.clock.now(), limit)

    def overdue(self, conn: sa.Connection) -> tuple[int, datetime | None]:
        """(instances with a timer due by the clock's now, the earliest due among them)."""
        return instances.overdue(conn, self.clock.now())

    def fire_timers(self, conn: sa.Connection, instance_id: str) -> StepResult:
        """Fire what is due on one instance and step it."""
        return self._fire(conn, self._lock(conn, instance_id))

    def fire_due(self, conn: sa.Connection, limit: int = 100,
                 on_fired: Callable[[StepResult], None] | None = None) -> TimerRound:
        """One round of the service's timer poll: claim up to `limit` due instances and fire
        each in a savepoint. One that fails is rolled back alone and retried later.
        `on_fired(result)`: the service's own writes for a fired instance (its outbox events),
        made inside that instance's savepoint, so they commit or roll back with the step; when
        it raises, the instance fails as a failing step does."""
        fired, failed = [], []
        for row in instances.claim_due_rows(conn, self.clock.now(), limit):  # locked: no second read
            savepoint = conn.begin_nested()
            try:
                result = self._fire(conn, row)
                if on_fired is not None:
                    on_fired(result)
            except Exception as exc:
                savepoint.rollback()
                error = f"{type(exc).__name__}: {exc}"
                retry_at = instances.record_failure(conn, row.id, error, self.clock.now())
                log.warning("timer step of %s failed, retried at %s: %s", row.id, retry_at.isoformat(), error)
                failed.append((row.id, error))
            else:
                savepoint.commit()
                fired.append(result)
        return TimerRound(tuple(fired), tuple(failed))

    # --- mechanics -----------------------------------------------------------------------

    def script_engine(self, instance_id: str, held_since: datetime | None = None) -> ScriptEngine:
        """A fresh script engine for one operation on one instance (what every restore attaches)."""
        return ScriptEngine(self.environment, self.clock, self.operators, instance_id, held_since)

    def _operation(self, instance_id: str, held_since: datetime | None = None) -> _Operation:
        return _Operation(self.script_engine(instance_id, held_since))

    def _spec(self, conn: sa.Connection, digest: str, spec_json: str | None = None) -> tuple:
        """The restored spec of a definition, shared by its instances (an LRU of restored specs)."""
        with self._specs_lock:
            if digest in self._specs:
                self._specs.move_to_end(digest)
                return self._specs[digest]
        restored = state.spec_from_json(spec_json if spec_json is not None else definitions.spec_text(conn, digest))
        with self._specs_lock:
            self._specs[digest] = restored
            while len(self._specs) > self._spec_cache_size:
                self._specs.popitem(last=False)
        return restored

    def _restore(self, conn: sa.Connection, row: instances.Row) -> tuple[BpmnWorkflow, _Operation]:
        spec, subprocess_specs = self._spec(conn, row.definition_hash)
        op = self._operation(row.id, row.held_since)
        return state.load(row.state, spec, subprocess_specs, op.script_engine), op

    def _lock(self, conn: sa.Connection, instance_id: str) -> instances.Row:
        row = instances.lock(conn, instance_id)
        if row is None:
            raise InstanceNotFound(instance_id)
        return row

    def _fire(self, conn: sa.Connection, row: instances.Row,
              prepare: Callable[[BpmnWorkflow, _Operation], None] | None = None) -> StepResult:
        """Fire what is due on a locked instance and step it (after `prepare`, if given, has
        changed the restored workflow or its operation)."""
        workflow, op = self._restore(conn, row)
        if prepare is not None:
            prepare(workflow, op)
        workflow.refresh_timers()
        settle(workflow, op.record)
        return self._save(conn, row, workflow, op)

    def _save(self, conn: sa.Connection, row: instances.Row, workflow: BpmnWorkflow, op: _Operation,
              keys: list[str] | None = None) -> StepResult:
        now = self.clock.now()
        for event in workflow.get_events():  # thrown and caught by nothing in this process
            kind = type(event.event_definition).__name__.replace("EventDefinition", "").lower()
            op.script_engine.effects.append(Effect(kind, event.event_definition.name, None, {
                "payload": event.payload, "correlations": event.correlations}, None, now))
        status = COMPLETED if workflow.completed else RUNNING
        held_since = op.script_engine.held_since
        due = _next_due(workflow, held_since)
        text = state.dump(workflow)
        if keys is not None:
            saved = instances.Row(row.id, row.process_id, row.definition_hash, status, text, 1)
            if not instances.insert(conn, saved, due, keys, now):
                raise InstanceExists(row.id)
            version = 1
        else:
            version = instances.save(conn, row, status, text, due, now, held_since)
        return self._result(row, status, version, workflow, due, held_since, op)

    def _unchanged(self, row: instances.Row, workflow: BpmnWorkflow) -> StepResult:
        """The instance as its row and restored workflow say it is (nothing stepped or saved)."""
        return self._result(row, row.status, row.version, workflow, _next_due(workflow, row.held_since),
                            row.held_since)

    @staticmethod
    def _result(row, status: str, version: int, workflow: BpmnWorkflow, due: datetime | None,
                held_since: datetime | None, op: _Operation | None = None) -> StepResult:
        return StepResult(row.id, row.process_id, row.definition_hash, status, version, _waiting(workflow), due,
                          _latest_data(workflow), tuple(op.steps) if op else (),
                          tuple(op.script_engine.effects) if op else (), held_since)


def start_workflow(spec, subprocess_specs: dict, script_engine: ScriptEngine, data: Mapping,
                   on_step: Callable | None = None) -> BpmnWorkflow:
    """A new workflow of `spec` in memory, `data` given to its start task, stepped until it waits."""
    workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=script_engine)
    for task in workflow.get_tasks(state=TaskState.READY):  # the start task: its data flows on
        task.set_data(**data)
    settle(workflow, on_step)
    return workflow


def settle(workflow: BpmnWorkflow, on_step: Callable | None = None) -> None:
    """Step until nothing automatic is READY. SpiffWorkflow's do_engine_steps() ends with a timer
    refresh that makes READY the timers due by then (one that fell due while the steps ran, or
    since the state was saved) and returns without running them; a saved instance must never
    hold work that nobody runs."""
    for _ in range(MAX_ROUNDS):
        workflow.do_engine_steps(did_complete_task=on_step)
        if not any(not t.task_spec.manual for t in workflow.get_tasks(state=TaskState.READY)):
            return
    raise ProcessLoops(f"still stepping after {MAX_ROUNDS} rounds: the process loops without waiting")


def _next_due(workflow: BpmnWorkflow, held_since: datetime | None) -> datetime | None:
    """What the row's next_timer_due says: none for a completed instance or a held one (the
    timer poll never picks it), else the earliest timer."""
    return None if workflow.completed or held_since is not None else timers.next_due(workflow)


def merge_data(workflow: BpmnWorkflow, data: Mapping) -> None:
    """`data` (its top-level keys replaced) into every task that holds the instance's data now:
    the unfinished ones that have taken their data (READY, WAITING, STARTED: user tasks,
    subprocess tasks, boundary and other catching events, in the top workflow and in every
    subprocess), and the parent of each waiting one. SpiffWorkflow makes a waiting event
    inherit its parent's data again at every refresh, the parent's values winning: a boundary
    timer given only the new data would evaluate its expression on its BoundaryEventSplit's old
    data. Tasks not reached yet (FUTURE, LIKELY, MAYBE) hold no data: they take it from their
    parent when reached. A subprocess task's own data is replaced, when its subprocess ends, by
    the data of the subprocess's last task."""
    if not data:
        return
    holders = {}
    for task in workflow.get_tasks(state=TaskState.READY | TaskState.WAITING | TaskState.STARTED):
        holders[task.id] = task
        if task.state == TaskState.WAITING and task.parent is not None:
            holders.setdefault(task.parent.id, task.parent)
    for task in holders.values():
        task.set_data(**copy.deepcopy(dict(data)))


def _waiting(workflow: BpmnWorkflow) -> tuple[WaitingTask, ...]:
    waiting = []
    for task in workflow.get_tasks(state=TaskState.READY, manual=True):
        spec = task.task_spec
        timer_infos = []
        if task.parent is not None and isinstance(task.parent.task_spec, BoundaryEventSplit):
            for sibling in task.parent.children:
                definition = getattr(sibling.task_spec, "event_definition", None)
                if sibling.state == TaskState.WAITING and isinstance(definition, timers.CLOCKED):
                    due = definition.due(sibling)
                    if due is not None:
                        timer_infos.append(TimerInfo(sibling.task_spec.bpmn_id, sibling.task_spec.bpmn_name, due,
                                                     getattr(sibling.task_spec, "cancel_activity", True)))
        waiting.append(WaitingTask(spec.bpmn_id, spec.bpmn_name, spec.lane,
                                   dict(getattr(spec, "extensions", {}).get("properties", {})),
                                   tuple(sorted(timer_infos, key=lambda t: t.due))))
    return tuple(waiting)


def _latest_data(workflow: BpmnWorkflow) -> dict:
    done = workflow.get_tasks(state=TaskState.COMPLETED)
    latest = max(done, key=lambda t: t.last_state_change, default=None)
    return dict(latest.data) if latest is not None else {}


def _waiting_messages(workflow: BpmnWorkflow) -> list[str]:
    return sorted({t.task_spec.event_definition.name for t in workflow.event_manager.tasks.values()
                   if isinstance(t.task_spec.event_definition, MessageEventDefinition)})


def send_message(workflow: BpmnWorkflow, name: str, payload: dict) -> bool:
    """Send message `name` into the workflow as the waiting catch event's own definition (the
    spiff parser's class, with its correlation properties): SpiffWorkflow matches events by
    class and name, and by the correlations computed from the payload. False: nothing caught it."""
    for task in list(workflow.event_manager.tasks.values()):
        definition = task.task_spec.event_definition
        if not (isinstance(definition, MessageEventDefinition) and definition.name == name):
            continue
        try:
            correlations = definition.calculate_correlations(workflow.script_engine, definition.correlation_properties,
                                                             payload)
        except Exception:  # the payload lacks what the correlation reads: it is not this instance's message
            continue
        try:
            workflow.send_event(BpmnEvent(definition, payload, correlations))
            return True
        except WorkflowException:
            continue
    return False
