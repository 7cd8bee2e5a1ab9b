"""Timer events on the engine's clock. SpiffWorkflow 3.2.0's timer definitions read
`datetime.now(timezone.utc)` themselves, so a test could only wait; these subclasses read the
clock of the script engine attached to the workflow (production: the system clock; tests: a
ManualClock they move). They are registered under SpiffWorkflow's own type names, so a stored
spec stays plain SpiffWorkflow and restores into them.

A timer fires once its due time is reached (SpiffWorkflow waits until it is passed), so that a
timer found due through the `next_timer_due` column always fires when it is stepped.

While an instance is held (ProcessEngine.hold), its timers read the instant it was held
instead of the clock (ScriptEngine.timer_now), so none falls due; `rearm` moves them on at
release."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from SpiffWorkflow.bpmn.serializer.default.event_definition import TimerConditionalEventDefinitionConverter
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimeDateEventDefinition,
    TimerEventDefinition,
)

from shared.workflow.errors import TimerExpressionError


def _now(my_task) -> datetime:
    return my_task.workflow.script_engine.timer_now()


def _evaluated(my_task, expression: str):
    value = my_task.workflow.script_engine.evaluate(my_task, expression)
    if isinstance(value, datetime):
        value = value.isoformat()
    if not isinstance(value, str):
        raise TimerExpressionError(f"task {my_task.task_spec.bpmn_id!r}: the timer expression {expression!r} gave "
                                   f"{value!r}; it must give an ISO 8601 text, quoted in the file: \"PT1H\"")
    return value


def parse_date_time(text: str, where: str = "timer") -> datetime:
    """An ISO 8601 date-time with its zone (SpiffWorkflow would read a naive one in the
    machine's local zone: a replica elsewhere would fire it at another hour)."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimerExpressionError(f"{where}: {text!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise TimerExpressionError(f"{where}: {text!r} has no time zone (write Z or +08:00)")
    return value.astimezone(timezone.utc)


def duration_after(start: datetime, text: str, where: str = "timer") -> datetime:
    """The instant an ISO 8601 duration ("PT1H", "P3D") after `start`."""
    try:
        parsed = TimerEventDefinition.parse_iso_duration(text)
        return start + TimerEventDefinition.get_timedelta_from_start(parsed, start)
    except Exception:
        raise TimerExpressionError(f"{where}: {text!r} is not an ISO 8601 duration such as \"PT1H\"") from None


def cycle_start(text: str, now: datetime, where: str = "timer") -> tuple[int, datetime, timedelta]:
    """(cycles, first due, interval) of an ISO 8601 repeating interval ("R3/PT1H")."""
    try:
        parts = text.upper().replace("--", "/").strip("R").split("/")
        if len(parts) == 2 and parts[1].startswith("P"):  # no start given: the first one an interval from now
            cycles = int(parts[0]) if parts[0] else -1
            first = duration_after(now, parts[1], where)
            return cycles, first, first - now
        return TimerEventDefinition.parse_iso_recurring_interval(text)
    except TimerExpressionError:
        raise
    except Exception:
        raise TimerExpressionError(f"{where}: {text!r} is not an ISO 8601 repeating interval such as \"R3/PT1H\"") from None


class _OnTheClock:
    """A one-off timer on the engine's clock: the expression, evaluated when the timer starts,
    gives its due time (kept as `event_value`, as SpiffWorkflow keeps it)."""

    def has_fired(self, my_task):
        now = _now(my_task)
        if my_task._get_internal_data("event_value") is None:
            where = f"task {my_task.task_spec.bpmn_id!r}"
            my_task._set_internal_data(event_value=self._due_text(_evaluated(my_task, self.expression), now, where))
        if self.due(my_task) <= now:
            my_task._set_internal_data(event_fired=True)
        return my_task._get_internal_data("event_fired", False)

    def due(self, my_task) -> datetime | None:
        value = my_task._get_internal_data("event_value")
        return None if value is None else parse_date_time(value)

    def rearm(self, my_task, held_for: timedelta) -> None:
        """After a hold of `held_for`: due that much later."""
        due = self.due(my_task)
        if due is not None:
            my_task._set_internal_data(event_value=(due + held_for).isoformat())


class ClockedTimeDate(_OnTheClock, TimeDateEventDefinition):
    @staticmethod
    def _due_text(value: str, now: datetime, where: str) -> str:
        parse_date_time(value, where)
        return value

    def rearm(self, my_task, held_for: timedelta) -> None:
        """After a hold: a date is the process's to say again, so the timer forgets the one it
        computed and evaluates its expression anew, on the data as it is then, at the next refresh."""
        my_task.internal_data.pop("event_value", None)


class ClockedDuration(_OnTheClock, DurationTimerEventDefinition):
    @staticmethod
    def _due_text(value: str, now: datetime, where: str) -> str:
        return duration_after(now, value, where).isoformat()


class ClockedCycle(CycleTimerEventDefinition):
    def cycle_complete(self, my_task):
        now = _now(my_task)
        event_value = my_task._get_internal_data("event_value")
        if event_value is None:
            cycles, start, interval = cycle_start(_evaluated(my_task, self.expression), now,
                                                  f"task {my_task.task_spec.bpmn_id!r}")
            event_value = {"cycles": cycles, "next": start.isoformat(), "duration": interval.total_seconds()}
        ready = False
        if event_value["cycles"] != 0:
            next_due = datetime.fromisoformat(event_value["next"])
            if next_due <= now:
                event_value["next"] = (next_due + timedelta(seconds=event_value["duration"])).isoformat()
                event_value["cycles"] -= 1
                ready = True
        else:
            my_task.internal_data.pop("event_value", None)
            my_task.internal_data["event_fired"] = True
        my_task._set_internal_data(event_value=event_value)
        return ready

    def due(self, my_task) -> datetime | None:
        value = my_task._get_internal_data("event_value")
        if not value or value["cycles"] == 0:
            return None
        return datetime.fromisoformat(value["next"])

    def rearm(self, my_task, held_for: timedelta) -> None:
        """After a hold of `held_for`: the next cycle that much later (and the ones after it)."""
        due = self.due(my_task)
        if due is not None:
            my_task._set_internal_data(event_value={**my_task._get_internal_data("event_value"),
                                                    "next": (due + held_for).isoformat()})


SPIFF_NAMES = {ClockedTimeDate: "TimeDateEventDefinition", ClockedDuration: "DurationTimerEventDefinition",
               ClockedCycle: "CycleTimerEventDefinition"}
CLOCKED = tuple(SPIFF_NAMES)


def register(registry) -> None:
    """Restore SpiffWorkflow's timer definitions as the clocked ones (same type names)."""
    for clocked, typename in SPIFF_NAMES.items():
        TimerConditionalEventDefinitionConverter(clocked, registry, typename=typename)


def _waiting_timers(workflow):
    """(task, definition) of each timer the workflow waits on, in every subprocess too (one
    event manager, the top workflow's, holds the waiting events of all)."""
    for task in workflow.event_manager.tasks.values():
        definition = task.task_spec.event_definition
        if isinstance(definition, CLOCKED):
            yield task, definition


def next_due(workflow) -> datetime | None:
    """The earliest due time of the timers the workflow waits on (None: it waits on none)."""
    dues = [definition.due(task) for task, definition in _waiting_timers(workflow)]
    return min((due for due in dues if due is not None), default=None)


def rearm(workflow, held_for: timedelta) -> None:
    """The waiting timers after a hold of `held_for`: durations and cycles due that much later,
    dates evaluated again at the next refresh (see each class's `rearm`)."""
    for task, definition in _waiting_timers(workflow):
        definition.rearm(task, held_for)
