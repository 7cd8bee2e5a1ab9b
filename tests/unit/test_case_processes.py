"""Investigation's three processes (services/investigation/processes): they pass `closeloop process
check`, their diagrams (and aftercare's) open tidy, and they run as the service will run them. In memory, no
database: each operation restores the saved state with a fresh script engine, steps and saves
it, as ProcessEngine's operations do; a ManualClock is moved instead of waited for."""
from datetime import datetime, timedelta, timezone
from itertools import combinations
from pathlib import Path

import pytest
from lxml import etree
from SpiffWorkflow.util.task import TaskState

from shared.calendar.clock import ManualClock
from shared.workflow import ProcessEngine, check_file, load_definition, state
from shared.workflow.engine import _waiting, settle, start_workflow
from shared.workflow.scripting import check_data
from shared.workflow.timers import next_due

PROCESSES = Path(__file__).resolve().parents[2] / "services" / "investigation" / "processes"
COMPLAINT, FEEDBACK = PROCESSES / "complaint_case.bpmn", PROCESSES / "feedback_case.bpmn"
INQUIRY = PROCESSES / "inquiry_case.bpmn"
REQUIRED = {COMPLAINT: ("assign", "respond", "record_findings"), FEEDBACK: ("acknowledge", "decide", "pass_on"),
            INQUIRY: ("answer",)}
OPERATORS = ("sla_warning", "sla_breached", "promise_deadline", "corrective_action_deadline")
T0 = datetime(2030, 1, 7, 2, 0, tzinfo=timezone.utc)
BEIJING = timezone(timedelta(hours=8))  # the service sends instants with an offset


def iso(delta: timedelta) -> str:
    return (T0 + delta).astimezone(BEIJING).isoformat()


def clock_at(warning: timedelta, due: timedelta, level1: timedelta, level2: timedelta) -> dict:
    return {"warning_at": iso(warning), "due": iso(due), "escalations": [iso(level1), iso(level2)]}


NEVER = "9999-12-31T23:59:59+00:00"
# What the service merges into the process's data with every step (services/investigation/domain.py).
START_FACTS = {"reopened": 0, "remedy_status": None, "promise_due": NEVER, "needs_corrective_action": False,
               "corrective_action_open": False, "corrective_due": NEVER, "follow_up_outcome": None}
URGENT_CLOCKS = {  # an urgent complaint: answered within the hour, resolved within 7 days
    "first_response": clock_at(timedelta(minutes=48), timedelta(hours=1), timedelta(hours=1), timedelta(hours=2)),
    "resolution": clock_at(timedelta(days=5, hours=14, minutes=24), timedelta(days=7), timedelta(days=7),
                           timedelta(days=14)),
}
FEEDBACK_CLOCKS = {  # feedback: acknowledged within 72 hours
    "first_response": clock_at(timedelta(hours=57, minutes=36), timedelta(hours=72), timedelta(hours=72),
                               timedelta(hours=96)),
    "resolution": clock_at(timedelta(days=11, hours=4), timedelta(days=14), timedelta(days=14), timedelta(days=21)),
}


class Case:
    """One instance of a process file, kept as its saved state, and the operator calls it made."""

    def __init__(self, path: Path, clock: ManualClock, **data):
        definition = load_definition(path, required_tasks=REQUIRED[path], operators=OPERATORS)
        self.calls: list[tuple[str, dict]] = []
        self.engine = ProcessEngine({name: self._recorder(name) for name in OPERATORS}, clock=clock)
        self.clock = clock
        self.spec = self.engine._spec(None, definition.hash, definition.spec)
        data = {"case_id": "case-1", "priority": "urgent", "branch_code": "SH-01", **START_FACTS, **data}
        check_data(data, self.engine.helpers, "start data")  # as the engine's start does
        self.saved = state.dump(start_workflow(*self.spec, self.engine.script_engine("case-1"), data))

    def _recorder(self, name):
        return lambda call: self.calls.append((name, call.params))

    def _restored(self):
        return state.load(self.saved, *self.spec, self.engine.script_engine("case-1"))

    def _step(self, operation) -> list[tuple[str, dict]]:
        """Restore, do `operation`, step, save: the calls it made."""
        before = len(self.calls)
        workflow = self._restored()
        operation(workflow)
        settle(workflow)
        self.saved = state.dump(workflow)
        return self.calls[before:]

    def at(self, delta: timedelta) -> list[tuple[str, dict]]:
        """Move the clock to T0 + delta and fire what is due (the service's timer poll)."""
        self.clock.set(T0 + delta)
        return self._step(lambda workflow: workflow.refresh_timers())

    def complete(self, name: str, **data) -> list[tuple[str, dict]]:
        def run(workflow):
            task = next(t for t in workflow.get_tasks(state=TaskState.READY, manual=True)
                        if t.task_spec.bpmn_id == name)
            task.set_data(**data)
            task.run()
        return self._step(run)

    @property
    def waiting(self):
        return _waiting(self._restored())

    @property
    def waiting_names(self) -> list[str]:
        return [task.name for task in self.waiting]

    @property
    def next_due(self):
        return next_due(self._restored())

    @property
    def completed(self) -> bool:
        return self._restored().completed


def warning(clock: str):
    return ("sla_warning", {"clock": clock})


def breached(clock: str, level: int):
    return ("sla_breached", {"clock": clock, "level": level})


@pytest.mark.parametrize("path", [COMPLAINT, FEEDBACK, INQUIRY], ids=["complaint_case", "feedback_case",
                                                                     "inquiry_case"])
def test_each_process_passes_the_check_with_its_tasks_and_operators(path):
    report = check_file(path, REQUIRED[path], set(OPERATORS))
    assert report.problems == [] and report.process_ids == [path.stem]


# --- the complaint case ---------------------------------------------------------------------

def test_an_urgent_complaint_waits_at_assign_and_its_first_response_timers_fire_at_their_times():
    case = Case(COMPLAINT, ManualClock(T0), kind="complaint", clocks=URGENT_CLOCKS)
    [assign] = case.waiting
    assert (assign.name, assign.title) == ("assign", "Assign an owner")
    assert assign.properties == {"roles": "store_manager,regional_manager,hq_admin", "owner_may_complete": "false",
                                 "clock": "first_response"}
    assert case.next_due == T0 + timedelta(minutes=48)

    assert case.at(timedelta(minutes=47)) == []
    assert case.at(timedelta(minutes=48)) == [warning("first_response")]
    assert case.at(timedelta(minutes=59)) == []
    assert case.at(timedelta(hours=1)) == [breached("first_response", 1)]
    assert case.at(timedelta(hours=2)) == [breached("first_response", 2)]
    assert case.waiting_names == ["assign"]  # non-interrupting: the task is still there

    assert case.complete("assign", owner="u-store-manager") == []
    [respond] = case.waiting
    assert respond.name == "respond" and respond.properties == {
        "roles": "store_manager,regional_manager,hq_admin,investigator", "owner_may_complete": "true",
        "clock": "first_response"}
    case.complete("respond")
    [findings] = case.waiting
    assert findings.name == "record_findings" and findings.properties == {
        "roles": "investigator,store_manager,regional_manager,hq_admin", "owner_may_complete": "true",
        "clock": "resolution"}
    assert case.next_due == T0 + timedelta(days=5, hours=14, minutes=24)  # the resolution warning

    assert case.at(timedelta(days=1)) == []
    assert case.at(timedelta(days=5, hours=14, minutes=24)) == [warning("resolution")]
    assert case.at(timedelta(days=7)) == [breached("resolution", 1)]
    assert case.at(timedelta(days=14)) == [breached("resolution", 2)]
    assert case.next_due is None
    assert case.calls.count(warning("first_response")) == 1  # each timer fired once, and only once

    case.complete("record_findings", findings="the towel was not changed")
    [remedy] = case.waiting
    assert remedy.name == "propose_remedy" and remedy.properties["clock"] == "resolution"
    case.complete("propose_remedy", remedy_status="approved")
    assert case.waiting_names == ["fulfil"]


def test_a_first_response_in_time_cancels_the_first_response_timers_and_a_closed_case_its_resolution_timers():
    case = Case(COMPLAINT, ManualClock(T0), kind="complaint", clocks=URGENT_CLOCKS)
    case.at(timedelta(minutes=10))
    case.complete("assign", owner="u-store-manager")
    assert case.at(timedelta(minutes=30)) == []
    assert case.complete("respond") == []
    assert case.waiting_names == ["record_findings"]
    assert case.next_due == T0 + timedelta(days=5, hours=14, minutes=24)  # no first-response timer is left
    for delta in (timedelta(minutes=48), timedelta(hours=1), timedelta(hours=2), timedelta(days=1)):
        assert case.at(delta) == []  # nothing fires for the first-response clock as the clock moves on

    assert case.at(timedelta(days=5, hours=14, minutes=24)) == [warning("resolution")]  # the resolution clock runs on
    case.complete("record_findings")
    case.complete("propose_remedy", remedy_status="approved")
    case.complete("fulfil")
    case.complete("notify_customer")
    assert case.waiting_names == ["await_follow_up"] and case.next_due is None
    assert case.at(timedelta(days=30)) == []
    assert case.calls == [warning("resolution")]


def _to_remedy(case: "Case") -> None:
    case.complete("assign", owner="u-1")
    case.complete("respond")
    case.complete("record_findings", needs_corrective_action=True)


def test_a_remedy_above_authority_waits_for_approval_under_its_own_clock_and_a_rejection_asks_again():
    case = Case(COMPLAINT, ManualClock(T0), kind="complaint", clocks=URGENT_CLOCKS)
    _to_remedy(case)
    approval_clock = clock_at(timedelta(hours=20), timedelta(days=1), timedelta(days=1), timedelta(days=2))
    case.complete("propose_remedy", remedy_status="awaiting_approval",
                  clocks={**URGENT_CLOCKS, "approval": approval_clock})
    [approve] = case.waiting
    assert approve.name == "approve" and approve.properties["approval"] == "true"
    assert approve.properties["clock"] == "approval"
    assert case.at(timedelta(hours=20)) == [warning("approval")]
    assert case.at(timedelta(days=1)) == [breached("approval", 1)]
    case.complete("approve", remedy_status="rejected")  # rejected: a new proposal
    assert case.waiting_names == ["propose_remedy"]
    assert case.at(timedelta(days=2)) == []  # the approval's timers went with it
    second = clock_at(timedelta(days=2, hours=20), timedelta(days=3), timedelta(days=3), timedelta(days=4))
    case.complete("propose_remedy", remedy_status="awaiting_approval",
                  clocks={**URGENT_CLOCKS, "approval": second})
    assert case.waiting_names == ["approve"]
    assert case.at(timedelta(days=2, hours=20)) == [warning("approval")]  # a new clock, a new warning
    case.complete("approve", remedy_status="approved")
    assert case.waiting_names == ["fulfil"]


def test_a_promise_not_kept_by_its_deadline_fires_once_and_the_task_stays():
    case = Case(COMPLAINT, ManualClock(T0), kind="complaint", clocks=URGENT_CLOCKS)
    _to_remedy(case)
    case.complete("propose_remedy", remedy_status="approved", promise_due=iso(timedelta(days=3)))
    [fulfil] = case.waiting
    assert [t.name for t in fulfil.timers] == ["promise_deadline_passed"]
    assert case.at(timedelta(days=2)) == [] and case.at(timedelta(days=3)) == [("promise_deadline", {})]
    assert case.waiting_names == ["fulfil"]
    case.complete("fulfil")
    assert case.waiting_names == ["notify_customer"]


def test_resolved_our_fault_needs_a_corrective_action_then_an_unsatisfied_follow_up_reopens_at_the_remedy():
    case = Case(COMPLAINT, ManualClock(T0), kind="complaint", clocks=URGENT_CLOCKS)
    _to_remedy(case)
    case.complete("propose_remedy", remedy_status="approved")
    case.complete("fulfil")
    case.complete("notify_customer")
    assert case.waiting_names == ["open_corrective_action"] and case.next_due is None  # resolution timers gone
    case.complete("open_corrective_action", corrective_action_open=True, corrective_due=iso(timedelta(days=30)))
    [follow_up] = case.waiting
    assert follow_up.name == "await_follow_up" and follow_up.properties["system"] == "true"
    reopened = {**URGENT_CLOCKS, "resolution": clock_at(timedelta(days=12), timedelta(days=13), timedelta(days=13),
                                                        timedelta(days=20))}
    case.complete("await_follow_up", follow_up_outcome="reopen", reopened=1, clocks=reopened)
    assert case.waiting_names == ["propose_remedy"]  # back to the owner, past the first response and findings
    assert case.next_due == T0 + timedelta(days=12)  # a new resolution clock
    assert case.at(timedelta(days=13)) == [warning("resolution"), breached("resolution", 1)]
    case.complete("propose_remedy", remedy_status="approved")
    case.complete("fulfil")
    case.complete("notify_customer", needs_corrective_action=False)  # opened already
    assert case.waiting_names == ["await_follow_up"]
    case.complete("await_follow_up", follow_up_outcome="close")
    [action] = case.waiting
    assert action.name == "close_corrective_action" and not case.completed  # the case closes; the action goes on
    assert case.at(timedelta(days=30)) == [("corrective_action_deadline", {})]
    case.complete("close_corrective_action", corrective_action_open=False)
    assert case.completed


def test_a_satisfied_follow_up_without_a_corrective_action_ends_the_process():
    case = Case(COMPLAINT, ManualClock(T0), kind="complaint", clocks=URGENT_CLOCKS)
    case.complete("assign", owner="u-1")
    case.complete("respond")
    case.complete("record_findings")
    for task in ("propose_remedy", "fulfil", "notify_customer"):
        case.complete(task, remedy_status="approved")
    case.complete("await_follow_up", follow_up_outcome="close")
    assert case.completed and case.next_due is None


# --- the feedback case ----------------------------------------------------------------------

def test_a_suggestion_is_acknowledged_then_decided_and_the_acknowledge_timers_fire_at_their_times():
    case = Case(FEEDBACK, ManualClock(T0), kind="suggestion", priority="general", clocks=FEEDBACK_CLOCKS)
    [acknowledge] = case.waiting
    assert acknowledge.name == "acknowledge" and acknowledge.properties == {
        "roles": "front_desk,store_manager,regional_manager,hq_admin", "owner_may_complete": "false",
        "clock": "first_response"}
    assert [(t.name, t.due, t.interrupting) for t in acknowledge.timers] == [
        ("acknowledge_warning", T0 + timedelta(hours=57, minutes=36), False),
        ("acknowledge_breached", T0 + timedelta(hours=72), False),
        ("acknowledge_breached_again", T0 + timedelta(hours=96), False)]

    assert case.at(timedelta(hours=57)) == []
    assert case.at(timedelta(hours=57, minutes=36)) == [warning("first_response")]
    assert case.at(timedelta(hours=72)) == [breached("first_response", 1)]
    assert case.at(timedelta(hours=96)) == [breached("first_response", 2)]
    assert case.waiting_names == ["acknowledge"]

    case.complete("acknowledge")
    [decide] = case.waiting
    assert decide.name == "decide" and decide.properties == {
        "roles": "store_manager,regional_manager,hq_admin", "owner_may_complete": "false", "clock": "resolution"}
    case.complete("decide", decision="adopted")
    assert case.completed


def test_praise_is_acknowledged_then_passed_on_and_an_acknowledgement_in_time_stops_its_timers():
    case = Case(FEEDBACK, ManualClock(T0), kind="praise", priority="low", clocks=FEEDBACK_CLOCKS)
    case.at(timedelta(hours=3))
    case.complete("acknowledge")
    [pass_on] = case.waiting
    assert pass_on.name == "pass_on" and pass_on.properties == {
        "roles": "store_manager,regional_manager,hq_admin", "owner_may_complete": "false", "clock": "resolution"}
    assert case.next_due is None
    assert case.at(timedelta(hours=100)) == []
    case.complete("pass_on", staff=["s-7"])
    assert case.completed and case.calls == []


# --- the inquiry case ----------------------------------------------------------------------

INQUIRY_CLOCKS = {  # an inquiry: answered within 24 hours (first response and resolution alike)
    "first_response": clock_at(timedelta(hours=19, minutes=12), timedelta(hours=24), timedelta(hours=24),
                               timedelta(hours=48)),
    "resolution": clock_at(timedelta(hours=19, minutes=12), timedelta(hours=24), timedelta(hours=24),
                           timedelta(hours=48)),
}


def test_an_inquiry_waits_for_its_answer_under_the_first_response_timers_then_the_process_ends():
    case = Case(INQUIRY, ManualClock(T0), kind="inquiry", priority="low", clocks=INQUIRY_CLOCKS)
    [answer] = case.waiting
    assert (answer.name, answer.title) == ("answer", "Answer the inquiry")
    assert answer.properties == {"roles": "front_desk,investigator,store_manager,regional_manager,hq_admin",
                                 "owner_may_complete": "true", "clock": "first_response"}
    assert [(t.name, t.due, t.interrupting) for t in answer.timers] == [
        ("answer_warning", T0 + timedelta(hours=19, minutes=12), False),
        ("answer_breached", T0 + timedelta(hours=24), False),
        ("answer_breached_again", T0 + timedelta(hours=48), False)]
    assert case.at(timedelta(hours=19, minutes=12)) == [warning("first_response")]
    assert case.at(timedelta(hours=24)) == [breached("first_response", 1)]
    assert case.waiting_names == ["answer"]  # late, still to answer
    assert case.complete("answer") == []
    assert case.completed and case.next_due is None
    assert case.at(timedelta(hours=48)) == []  # the last timer went with the task


# --- the diagrams ---------------------------------------------------------------------------

NS = {"bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL", "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
      "dc": "http://www.omg.org/spec/DD/20100524/DC", "di": "http://www.omg.org/spec/DD/20100524/DI"}


def _box(element):
    bounds = element.find("dc:Bounds", NS)
    return tuple(float(bounds.get(k)) for k in ("x", "y", "width", "height"))


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(inner, outer) -> bool:
    return (outer[0] <= inner[0] and inner[0] + inner[2] <= outer[0] + outer[2]
            and outer[1] <= inner[1] and inner[1] + inner[3] <= outer[1] + outer[3])


def _on_border(point, box, tolerance=1.0) -> bool:
    x, y = point
    left, top, right, bottom = box[0], box[1], box[0] + box[2], box[1] + box[3]
    within = left - tolerance <= x <= right + tolerance and top - tolerance <= y <= bottom + tolerance
    return within and min(abs(x - left), abs(x - right), abs(y - top), abs(y - bottom)) <= tolerance


RETURN_VISIT = PROCESSES.parents[1] / "aftercare" / "processes" / "return_visit.bpmn"


@pytest.mark.parametrize("path", [COMPLAINT, FEEDBACK, INQUIRY, RETURN_VISIT],
                         ids=["complaint_case", "feedback_case", "inquiry_case", "return_visit"])
def test_each_diagram_opens_tidy(path):
    """What a process owner sees in bpmn.io: subprocesses expanded around their content, boundary
    events on their host's border, no shapes or labels on top of each other, and every flow
    drawn from its source's border to its target's."""
    root = etree.parse(str(path)).getroot()
    elements = {e.get("id"): e for e in root.iterfind(".//bpmn:process//*[@id]", NS)}
    shapes = {s.get("bpmnElement"): s for s in root.iterfind(".//bpmndi:BPMNShape", NS)}
    box = {name: _box(shape) for name, shape in shapes.items()}
    container = {name: (elements[name].getparent().get("id") if etree.QName(elements[name].getparent()).localname
                        == "subProcess" else None) for name in box}

    for name, element in elements.items():
        kind = etree.QName(element).localname
        if kind == "subProcess":
            assert shapes[name].get("isExpanded") == "true", name
        if kind == "boundaryEvent":
            host = box[element.get("attachedToRef")]
            centre = (box[name][0] + box[name][2] / 2, box[name][1] + box[name][3] / 2)
            assert _on_border(centre, host), f"{name} is not on its host's border"
        elif name in box and container[name] is not None:
            assert _inside(box[name], box[container[name]]), f"{name} is not drawn inside {container[name]}"

    def nested(a, b) -> bool:  # a subprocess and what it holds, a boundary event and its host
        def holds(outer, inner):
            parent = container[inner]
            while parent is not None and parent != outer:
                parent = container[parent]
            return parent == outer or elements[inner].get("attachedToRef") == outer
        return holds(a, b) or holds(b, a)

    for a, b in combinations(box, 2):
        assert nested(a, b) or not _overlap(box[a], box[b]), f"{a} and {b} overlap"

    labels = [(name, _box(label)) for name, label in
              ((s.get("bpmnElement"), s.find("bpmndi:BPMNLabel", NS)) for s in
               [*shapes.values(), *root.iterfind(".//bpmndi:BPMNEdge", NS)]) if label is not None]
    for (a, label_a), (b, label_b) in combinations(labels, 2):
        assert not _overlap(label_a, label_b), f"the labels of {a} and {b} overlap"
    for name, label in labels:
        for other, other_box in box.items():
            assert etree.QName(elements[other]).localname == "subProcess" or not _overlap(label, other_box), (
                f"the label of {name} covers {other}")

    for edge in root.iterfind(".//bpmndi:BPMNEdge", NS):
        flow = elements[edge.get("bpmnElement")]
        points = [(float(p.get("x")), float(p.get("y"))) for p in edge.iterfind("di:waypoint", NS)]
        assert len(points) >= 2
        assert _on_border(points[0], box[flow.get("sourceRef")]), f"{flow.get('id')} does not leave its source"
        assert _on_border(points[-1], box[flow.get("targetRef")]), f"{flow.get('id')} does not reach its target"
        assert all(x1 == x2 or y1 == y2 for (x1, y1), (x2, y2) in zip(points, points[1:])), (
            f"{flow.get('id')} has a slanted segment")
