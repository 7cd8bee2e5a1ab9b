"""Held timers in memory (shared.workflow.timers, engine.merge_data): what a held instance's timers
see, and how release moves them on: durations and cycles later by the hold, dates computed again
from the data as it is then, that data reaching the tasks of nested subprocesses. Through the
engine and PostgreSQL: tests/integration/test_workflow_engine.py."""
from datetime import datetime, timedelta, timezone
from pathlib import Path

from SpiffWorkflow.bpmn.specs.control import BoundaryEventSplit
from SpiffWorkflow.util.task import TaskState

from shared.calendar.clock import ManualClock
from shared.workflow import ProcessEngine, load_definition, parse_definition, state
from shared.workflow.engine import merge_data, settle, start_workflow
from shared.workflow.timers import next_due, rearm

FIXTURES = Path(__file__).resolve().parents[1] / "workflow_fixtures"
EXAMPLE = (FIXTURES / "example_case.bpmn").read_text()
NESTED = load_definition(FIXTURES / "nested_case.bpmn", required_tasks=("assign", "respond", "record_findings"),
                         operators=("notify_staff",))
T0 = datetime(2026, 1, 31, 2, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
WARN_AFTER = '<bpmn:timeDuration xsi:type="bpmn:tFormalExpression">warn_after</bpmn:timeDuration>'


def workflow_of(definition, clock, data, fired=None):
    """A new workflow of `definition` on `clock`, its operators recording (task, when) in `fired`."""
    fired = [] if fired is None else fired
    engine = ProcessEngine({name: lambda call: fired.append((call.task, call.now))
                            for name in ("escalate", "notify_staff", "publish")}, clock=clock)
    return start_workflow(*state.spec_from_json(definition.spec), engine.script_engine("case-1"), data)


def step_timers(workflow):
    workflow.refresh_timers()
    settle(workflow)


def clocks(first_warning, first_breach, handling_breach) -> dict:
    """The nested process's `clocks`: ISO texts with an offset (+08:00), as a service writes them."""
    def text(at):
        return at.astimezone(timezone(timedelta(hours=8))).isoformat()

    return {"first_response": {"warning_at": text(first_warning), "breach_at": text(first_breach)},
            "handling": {"breach_at": text(handling_breach)}}


def test_a_held_workflows_timers_see_the_instant_of_the_hold_and_nothing_else_does():
    clock, fired = ManualClock(T0), []
    workflow = workflow_of(parse_definition(EXAMPLE), clock, {"case_id": "case-1", "priority": "urgent"}, fired)
    engine = workflow.script_engine
    engine.held_since = T0 + timedelta(minutes=10)
    clock.set(T0 + 5 * HOUR)
    assert engine.timer_now() == T0 + timedelta(minutes=10) and engine.clock.now() == T0 + 5 * HOUR
    step_timers(workflow)
    assert fired == []  # the warning (48 minutes) and the deadline (1 hour) are not due at the instant held

    engine.held_since = None
    assert engine.timer_now() == T0 + 5 * HOUR
    step_timers(workflow)
    assert fired == [("warn", T0 + 5 * HOUR), ("escalate_case", T0 + 5 * HOUR)]  # operators keep the clock's time


def test_rearming_moves_durations_and_cycles_later_by_the_hold_and_forgets_dates():
    clock = ManualClock(T0)
    cycle = EXAMPLE.replace(WARN_AFTER, '<bpmn:timeCycle xsi:type="bpmn:tFormalExpression">"R2/PT10M"</bpmn:timeCycle>')
    date = EXAMPLE.replace(WARN_AFTER, '<bpmn:timeDate xsi:type="bpmn:tFormalExpression">warn_at</bpmn:timeDate>')
    data = {"case_id": "case-1", "priority": "urgent", "warn_at": "2026-01-31T10:30:00+08:00"}

    def dues(workflow):
        return {t.task_spec.bpmn_id: t.task_spec.event_definition.due(t)
                for t in workflow.event_manager.tasks.values()}

    workflows = {kind: workflow_of(parse_definition(text), clock, data)
                 for kind, text in (("duration", EXAMPLE), ("cycle", cycle), ("date", date))}
    for workflow in workflows.values():
        rearm(workflow, 2 * HOUR)
    assert dues(workflows["duration"]) == {"assign_warning": T0 + timedelta(hours=2, minutes=48),
                                           "assign_overdue": T0 + 3 * HOUR}
    assert dues(workflows["cycle"]) == {"assign_warning": T0 + timedelta(hours=2, minutes=10),
                                        "assign_overdue": T0 + 3 * HOUR}
    assert dues(workflows["date"]) == {"assign_warning": None, "assign_overdue": T0 + 3 * HOUR}  # computed anew...

    merge_data(workflows["date"], {"warn_at": "2026-01-31T12:00:00+08:00"})
    step_timers(workflows["date"])  # ...at the next refresh, from the data as it is then
    assert next_due(workflows["date"]) == T0 + 2 * HOUR

    cycle_fired = []
    workflow = workflow_of(parse_definition(cycle), clock, data, cycle_fired)
    rearm(workflow, HOUR)
    for minutes in (10, 70, 80, 90):  # the second cycle follows the first one moved
        clock.set(T0 + timedelta(minutes=minutes))
        step_timers(workflow)
    assert [at for task, at in cycle_fired if task == "warn"] == [T0 + timedelta(minutes=70),
                                                                  T0 + timedelta(minutes=80)]


def test_release_data_reaches_every_task_that_holds_data_in_nested_subprocesses():
    clock = ManualClock(T0)
    workflow = workflow_of(NESTED, clock, {"clocks": clocks(T0 + HOUR, T0 + 2 * HOUR, T0 + 5 * HOUR)})
    moved = clocks(T0 + 3 * HOUR, T0 + 4 * HOUR, T0 + 6 * HOUR)
    merge_data(workflow, {"clocks": moved})

    by_state = {}
    for task in workflow.get_tasks():
        if task.task_spec.bpmn_id or isinstance(task.task_spec, BoundaryEventSplit):
            by_state.setdefault(TaskState.get_name(task.state), {})[task.task_spec.name] = task.data.get("clocks")
    assert by_state["STARTED"] == {"handling": moved, "first_response": moved}  # the subprocess tasks
    assert by_state["READY"] == {"assign": moved}
    assert by_state["WAITING"] == {name: moved for name in ("first_response_warning", "first_response_breach",
                                                            "handling_breach")}
    splits = {name: clocks_ for name, clocks_ in by_state["COMPLETED"].items() if "BoundaryEventSplit" in name}
    assert splits == {"handling.BoundaryEventSplit": moved, "first_response.BoundaryEventSplit": moved}
    assert set(by_state["FUTURE"].values()) == {None}  # not reached: they take their parent's data then

    rearm(workflow, timedelta(0))
    step_timers(workflow)
    assert next_due(workflow) == T0 + 3 * HOUR  # every date timer computed again, on both levels
    clock.set(T0 + 4 * HOUR)
    step_timers(workflow)
    assert next_due(workflow) == T0 + 6 * HOUR
