"""Timer events on the engine's clock (shared.workflow.timers): dates, durations and cycles."""
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from shared.calendar.clock import ManualClock
from shared.workflow import ProcessEngine, TimerExpressionError, parse_definition, state
from shared.workflow.engine import settle, start_workflow
from shared.workflow.timers import cycle_start, duration_after, next_due, parse_date_time

EXAMPLE = (Path(__file__).resolve().parents[1] / "workflow_fixtures" / "example_case.bpmn").read_text()
T0 = datetime(2026, 1, 31, 2, 0, tzinfo=timezone.utc)


def test_iso_texts_become_instants_on_the_given_clock():
    assert duration_after(T0, "PT1H30M") == T0 + timedelta(hours=1, minutes=30)
    assert duration_after(T0, "P1M") == datetime(2026, 3, 3, 2, 0, tzinfo=timezone.utc)  # a calendar month: 28 days
    assert parse_date_time("2026-11-22T18:00:00+08:00") == datetime(2026, 11, 22, 10, 0, tzinfo=timezone.utc)
    assert cycle_start("R3/PT10M", T0) == (3, T0 + timedelta(minutes=10), timedelta(minutes=10))
    for bad, call in [("PT1X", lambda: duration_after(T0, "PT1X")),
                      ("no time zone", lambda: parse_date_time("2026-11-22T18:00:00")),
                      ("repeating", lambda: cycle_start("every hour", T0))]:
        with pytest.raises(TimerExpressionError, match=bad):
            call()


def run(text: str, clock, data=None):
    calls = []  # when the warning's operator was called
    engine = ProcessEngine({"escalate": lambda call: None, "notify_staff": lambda call: calls.append(call.now),
                            "publish": lambda call: None}, clock=clock)
    workflow = start_workflow(*state.spec_from_json(parse_definition(text).spec), engine.script_engine("case-1"),
                              {"case_id": "case-1", "priority": "urgent", **(data or {})})
    return workflow, calls


def test_a_cycle_timer_fires_each_interval_for_its_count():
    clock = ManualClock(T0)
    text = EXAMPLE.replace("<bpmn:timeDuration xsi:type=\"bpmn:tFormalExpression\">warn_after</bpmn:timeDuration>",
                           "<bpmn:timeCycle xsi:type=\"bpmn:tFormalExpression\">\"R2/PT10M\"</bpmn:timeCycle>")
    workflow, calls = run(text, clock)
    assert next_due(workflow) == T0 + timedelta(minutes=10)
    for minutes in (10, 20, 30):
        clock.set(T0 + timedelta(minutes=minutes))
        workflow.refresh_timers()
        settle(workflow)
    assert calls == [T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)]
    assert next_due(workflow) == T0 + timedelta(hours=1)  # only the deadline is left


def test_a_date_timer_computed_by_the_process_is_due_then():
    clock = ManualClock(T0)
    text = EXAMPLE.replace("<bpmn:timeDuration xsi:type=\"bpmn:tFormalExpression\">warn_after</bpmn:timeDuration>",
                           "<bpmn:timeDate xsi:type=\"bpmn:tFormalExpression\">warn_at</bpmn:timeDate>")
    workflow, calls = run(text, clock, {"warn_at": "2026-01-31T10:30:00+08:00"})
    assert next_due(workflow) == datetime(2026, 1, 31, 2, 30, tzinfo=timezone.utc)
    clock.set(datetime(2026, 1, 31, 2, 30, tzinfo=timezone.utc))
    workflow.refresh_timers()
    settle(workflow)
    assert len(calls) == 1


def test_a_timer_expression_that_gives_no_iso_text_says_so():
    text = EXAMPLE.replace(">\"PT1H\"<", ">60<")
    with pytest.raises(TimerExpressionError, match="task 'assign_overdue'.* gave 60"):
        run(text, ManualClock(T0))
