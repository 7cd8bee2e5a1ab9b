"""The SpiffWorkflow 3.2.0 pitfalls of DESIGN.md ("The workflow engine"), one test each: what the
library does on its own, and that the engine's wrapper handles it. In memory, with the real
library; the ones that need PostgreSQL (JSONB, versions, the timer index) are in
tests/integration/test_workflow_engine.py."""
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.parser import BpmnParser
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.serializer.workflow import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition as PlainMessage
from SpiffWorkflow.exceptions import WorkflowException
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState

from shared.calendar.clock import ManualClock
from shared.workflow import ScriptRefused, check_text, load_definition, state
from shared.workflow.engine import merge_data, send_message, settle, start_workflow
from shared.workflow.scripting import RestrictedEnvironment, ScriptEngine, default_helpers
from shared.workflow.timers import next_due

EXAMPLE = Path(__file__).resolve().parents[1] / "workflow_fixtures" / "example_case.bpmn"
DEFINITION = load_definition(EXAMPLE)
T0 = datetime(2030, 1, 7, 2, 0, tzinfo=timezone.utc)  # far from the machine's clock on purpose


class Recorder(dict):
    """Operators that record their calls."""

    def __init__(self):
        super().__init__({name: self._record(name) for name in ("escalate", "notify_staff", "publish")})
        self.calls = []

    def _record(self, name):
        return lambda call: self.calls.append((name, call.params)) or None


def script_engine(clock, operators=None) -> ScriptEngine:
    return ScriptEngine(RestrictedEnvironment(default_helpers(clock)), clock, operators or Recorder(), "case-1")


def started(spec_pair, engine, **data) -> BpmnWorkflow:
    return start_workflow(*spec_pair, engine, {"case_id": "case-1", "priority": "urgent", **data})


def complete(workflow, name, **data):
    task = next(t for t in workflow.get_tasks(state=TaskState.READY, manual=True) if t.task_spec.bpmn_id == name)
    task.set_data(**data)
    task.run()
    settle(workflow)


def waiting_names(workflow) -> set[str]:
    return {t.task_spec.bpmn_id for t in workflow.get_tasks(state=TaskState.READY | TaskState.WAITING)
            if t.task_spec.bpmn_id}


def test_pitfall_the_plain_bpmn_parser_ignores_service_tasks_so_the_engine_parses_with_the_spiff_parser():
    plain = BpmnParser()
    plain.add_bpmn_file(str(EXAMPLE))
    operators = Recorder()
    workflow = started((plain.get_spec("example_case"), {}), script_engine(ManualClock(T0), operators))
    complete(workflow, "assign", owner="s-1")
    stuck = workflow.get_next_task(spec_name="notify_owner")
    assert stuck.state == TaskState.STARTED and operators.calls == []  # nothing called, and it never moves on
    assert waiting_names(workflow) == set()

    operators = Recorder()
    workflow = started(state.spec_from_json(DEFINITION.spec), script_engine(ManualClock(T0), operators))
    complete(workflow, "assign", owner="s-1")
    assert operators.calls == [("publish", {"event": "urgent_case_assigned", "owner": "s-1"})]


def test_pitfall_a_message_sent_in_with_the_plain_bpmn_event_class_is_not_caught():
    workflow = started(state.spec_from_json(DEFINITION.spec), script_engine(ManualClock(T0)))
    complete(workflow, "assign", owner="s-1")
    with pytest.raises(WorkflowException, match="not waiting for visit_completed"):
        workflow.send_event(BpmnEvent(PlainMessage("visit_completed"), {"case_id": "case-1"}))
    # The engine sends it as the waiting event's own (spiff) definition, correlations included.
    assert not send_message(workflow, "visit_completed", {"case_id": "another case"})
    assert send_message(workflow, "visit_completed", {"case_id": "case-1", "score": 5})
    settle(workflow)
    assert waiting_names(workflow) == {"close"}


def test_pitfall_a_restored_workflow_runs_spiffs_default_engine_unless_the_script_engine_is_reattached():
    engine = script_engine(ManualClock(T0))
    workflow = started(state.spec_from_json(DEFINITION.spec), engine)
    task = next(t for t in workflow.get_tasks(state=TaskState.READY, manual=True))

    stock = BpmnWorkflowSerializer(state.REGISTRY)
    restored = stock.deserialize_json(stock.serialize_json(workflow))
    assert type(restored.script_engine) is PythonScriptEngine  # full builtins, no operators, the machine's clock
    stock_task = restored.get_task_from_id(task.id)
    assert isinstance(restored.script_engine.evaluate(stock_task, "__import__('os').getpid()"), int)

    again = script_engine(ManualClock(T0))
    ours = state.load(state.dump(workflow), *state.spec_from_json(DEFINITION.spec), again)
    assert ours.script_engine is again
    with pytest.raises(ScriptRefused, match="task 'assign'"):
        ours.script_engine.evaluate(ours.get_task_from_id(task.id), "__import__('os').getpid()")


def test_pitfall_scripts_run_with_full_builtins_so_the_engine_restricts_them():
    text = EXAMPLE.read_text().replace("escalation_level = 0", "escalation_level = __import__('os').getpid()")
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(text.encode())
    stock = BpmnWorkflow(parser.get_spec("example_case"))
    for task in stock.get_tasks(state=TaskState.READY):
        task.set_data(priority="urgent")
    stock.do_engine_steps()
    assert isinstance(next(t for t in stock.get_tasks(state=TaskState.READY, manual=True)).data["escalation_level"], int)

    assert check_text(text.encode()).problems == [
        "prepare (script): the name __import__ is not allowed (no names starting with '__')"]
    with pytest.raises(ScriptRefused, match="task 'prepare': the name __import__ is not allowed"):
        started(state.spec_from_json(state.spec_to_json(parser.get_spec("example_case"), {})),
                script_engine(ManualClock(T0)))


def test_pitfall_timers_read_the_machines_clock_so_the_engines_timers_read_the_injected_one():
    clock = ManualClock(T0)
    parser = SpiffBpmnParser()
    parser.add_bpmn_file(str(EXAMPLE))
    stock = started((parser.get_spec("example_case"), {}), script_engine(clock))
    stock_due = datetime.fromisoformat(stock.get_next_task(spec_name="assign_overdue").internal_data["event_value"])
    assert abs(stock_due - (datetime.now(timezone.utc) + timedelta(hours=1))) < timedelta(minutes=5)

    ours = started(state.spec_from_json(DEFINITION.spec), script_engine(clock))
    overdue = ours.get_next_task(spec_name="assign_overdue")
    assert overdue.task_spec.event_definition.due(overdue) == T0 + timedelta(hours=1)
    clock.advance(minutes=59, seconds=59)
    ours.refresh_timers()
    assert overdue.state == TaskState.WAITING
    clock.advance(seconds=1)  # due at its due time, not a tick after it
    ours.refresh_timers()
    assert overdue.state == TaskState.READY


def test_pitfall_do_engine_steps_leaves_a_due_timer_ready_so_the_engine_steps_until_nothing_is():
    clock, operators = ManualClock(T0), Recorder()
    workflow = started(state.spec_from_json(DEFINITION.spec), script_engine(clock, operators))
    clock.advance(minutes=50)  # the warning (48 minutes) fell due since the last step

    workflow.do_engine_steps()
    warning = workflow.get_next_task(spec_name="assign_warning")
    assert warning.state == TaskState.READY and operators.calls == []  # left for a next call that may never come

    settle(workflow)
    assert operators.calls == [("notify_staff", {"kind": "sla_warning", "role": "store_manager"})]
    assert not [t for t in workflow.get_tasks(state=TaskState.READY) if not t.task_spec.manual]


def test_pitfall_an_operator_named_like_a_task_breaks_parsing_and_the_check_says_why():
    text = EXAMPLE.read_text().replace('"escalate_case"', '"escalate"')  # the task now has its operator's name
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(text.encode())
    with pytest.raises(Exception, match="no support implemented for this task type"):  # misleading
        parser.get_spec("example_case")
    assert check_text(text.encode()).problems == [
        "the id 'escalate' is used by serviceTask 'escalate' and the operator 'escalate' of service task "
        "'escalate': ids must be unique (SpiffWorkflow's parser takes one for the other)"]


def test_pitfall_timer_expressions_are_python_so_an_unquoted_duration_fails_when_the_timer_starts():
    text = EXAMPLE.read_text().replace('>"PT1H"<', ">PT1H<")
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(text.encode())  # parses
    with pytest.raises(WorkflowException, match="PT1H"):
        started(state.spec_from_json(state.spec_to_json(parser.get_spec("example_case"), {})),
                script_engine(ManualClock(T0)))
    assert check_text(text.encode()).problems == [
        'assign_overdue (timeDuration): PT1H is read as Python; quote it: "PT1H"']


def test_pitfall_a_waiting_event_takes_its_parents_data_again_at_every_refresh_so_release_data_goes_there_too():
    nested = load_definition(EXAMPLE.parent / "nested_case.bpmn")

    def clocks(at):  # a new object each time: SpiffWorkflow's merge writes into nested dicts in place
        return {"first_response": {"warning_at": at, "breach_at": at}, "handling": {"breach_at": at}}

    old, new = "2030-01-07T11:00:00+08:00", "2030-01-07T18:00:00+08:00"  # 03:00 and 10:00 UTC
    workflow = start_workflow(*state.spec_from_json(nested.spec), script_engine(ManualClock(T0)),
                              {"clocks": clocks(old)})
    for task in workflow.get_tasks(state=TaskState.WAITING):  # the boundary timers alone
        task.set_data(clocks=clocks(new))
        task.internal_data.pop("event_value")
    workflow.refresh_timers()
    assert {t.data["clocks"]["handling"]["breach_at"] for t in workflow.get_tasks(state=TaskState.WAITING)} == {old}
    assert next_due(workflow) == T0 + timedelta(hours=1)  # computed again, on their BoundaryEventSplit's old data

    merge_data(workflow, {"clocks": clocks(new)})  # the engine's release: into their parents too
    for task in workflow.get_tasks(state=TaskState.WAITING):
        task.internal_data.pop("event_value")
    workflow.refresh_timers()
    assert next_due(workflow) == T0 + timedelta(hours=8)
