"""A visit worked to its outcome (issue 10), in memory: the visit process as the service runs it
(services/aftercare/processes/return_visit.bpmn, on a ManualClock), and the Visit aggregate's
rules: calls a day apart, the message after the third call not answered, a call back within the
rules, the questionnaire's answers, an adverse reaction, a follow-up's dissatisfaction."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from SpiffWorkflow.util.task import TaskState

from services.aftercare.dependencies import OPERATORS, PROCESS_DIR, REQUIRED_TASKS, load_process
from services.aftercare.domain import Actor, Visit, plan_follow_up, plan_return_visits
from services.aftercare.exceptions import VisitRuleBroken, VisitStateConflict
from shared.calendar.clock import ManualClock
from shared.calendar.policy import load_policy
from shared.workflow import check_file, state
from shared.workflow.engine import _waiting, settle, start_workflow

POLICY = load_policy()
RULES, BRANCH = POLICY.sections["aftercare"], POLICY.branch("SH001")
SHANGHAI = ZoneInfo("Asia/Shanghai")
SALE_ID, CASE_ID = "0d8c6a3e-1f0b-4c7e-9a55-2f4b8e6c1d01", "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
DUE = datetime(2026, 11, 22, 15, 0, tzinfo=SHANGHAI)
AGENT = Actor("A-1", "aftercare_agent")
ANSWERS = {"met_expectations": True, "discomfort": False, "packaging_ok": None, "satisfaction": 5}


def return_visit(*types: str) -> Visit:
    sale = {"sale_id": SALE_ID, "sold_at": (DUE - timedelta(days=2)).isoformat(), "contact_consent": True,
            "customer_ref": "c-1", "customer_masked": {"name": "王**"}, "customer_language": "en",
            "items": [{"type": "service", "code": f"S-{t}", "product_type": t, "technician_id": "T-017",
                       "batch": f"B-{t}"} for t in types or ("hair_colour",)]}
    [planned] = plan_return_visits(sale, branch=BRANCH, rules=RULES)
    visit = Visit.schedule(planned, DUE - timedelta(days=2), RULES)
    visit.pull_events()
    return visit


def follow_up() -> Visit:
    planned = plan_follow_up({"case_id": CASE_ID, "resolved_at": (DUE - timedelta(days=3)).isoformat(),
                              "reopened": 0, "record_type": "complaint", "record_id": CASE_ID},
                             branch=BRANCH, rules=RULES)
    visit = Visit.schedule(planned, DUE - timedelta(days=3), RULES)
    visit.pull_events()
    return visit


def events(visit: Visit) -> list[tuple[str, dict]]:
    return [(e.type, e.fields) for _, e in visit.pull_events()]


def attempt(visit: Visit, now: datetime, **data):
    visit.record_attempt({"channel": "phone", **data}, AGENT, now, BRANCH, RULES)


# --- the process ---------------------------------------------------------------------------

class Instance:
    """One visit process, kept as its saved state, and the operator calls it made."""

    def __init__(self, visit: Visit, clock: ManualClock):
        process = load_process(None, clock)
        self.calls: list[str] = []
        self.engine = process.engine
        self.engine.operators.update({name: self._recorder(name) for name in OPERATORS})
        self.spec = self.engine._spec(None, process.definition.hash, process.definition.spec)
        self.clock = clock
        self.saved = state.dump(start_workflow(*self.spec, self.engine.script_engine("v"), visit.process_data(RULES)))

    def _recorder(self, name):
        return lambda call: self.calls.append(name)

    def _step(self, operation) -> list[str]:
        before = len(self.calls)
        workflow = state.load(self.saved, *self.spec, self.engine.script_engine("v"))
        operation(workflow)
        settle(workflow)
        self.saved = state.dump(workflow)
        self.completed = workflow.completed
        self.waiting = [t.name for t in _waiting(workflow)]
        return self.calls[before:]

    def at(self, when: datetime) -> list[str]:
        self.clock.set(when)
        return self._step(lambda workflow: workflow.refresh_timers())

    def call(self, facts: dict) -> list[str]:
        def run(workflow):
            task = next(t for t in workflow.get_tasks(state=TaskState.READY, manual=True)
                        if t.task_spec.bpmn_id == "call")
            task.set_data(**facts)
            task.run()
        return self._step(run)


def test_the_visit_process_passes_the_check_with_its_task_and_operators():
    report = check_file(PROCESS_DIR / "return_visit.bpmn", REQUIRED_TASKS, set(OPERATORS))
    assert report.problems == [] and report.process_ids == ["return_visit"]


def test_the_process_waits_until_due_messages_once_after_the_third_call_and_gives_up_at_abandon_at():
    visit = return_visit()
    process = Instance(visit, ManualClock(DUE - timedelta(days=2)))
    assert process.at(DUE - timedelta(seconds=1)) == [] and process.waiting == []
    assert process.at(DUE) == [] and process.waiting == ["call"]
    for day in range(3):
        attempt(visit, DUE + timedelta(days=day), outcome="not_reached")
        calls = process.call(visit.process_facts())
        assert calls == (["message_customer"] if day == 2 else []), day
        if calls:
            assert visit.message_customer(DUE + timedelta(days=day), BRANCH)
    attempt(visit, DUE + timedelta(days=3), outcome="not_reached")  # after the message: no second one
    assert process.call(visit.process_facts()) == [] and process.waiting == ["call"]
    assert process.at(DUE + timedelta(days=7)) == ["visit_abandoned"]
    assert process.completed and process.waiting == []


def test_a_call_back_and_then_the_customer_reached_end_the_process_without_a_message():
    visit = return_visit()
    process = Instance(visit, ManualClock(DUE))
    process.at(DUE)
    attempt(visit, DUE, outcome="call_back", call_back_at=DUE + timedelta(days=1))
    assert process.call(visit.process_facts()) == [] and process.waiting == ["call"]
    attempt(visit, DUE + timedelta(days=1), outcome="reached", answers=ANSWERS)
    assert process.call(visit.process_facts()) == [] and process.completed


# --- the visit's rules -----------------------------------------------------------------------

def test_calls_not_reached_are_a_day_apart_in_contact_hours_and_the_message_is_in_the_customer_s_language():
    visit = return_visit()
    with pytest.raises(VisitStateConflict, match="not due"):
        attempt(visit, DUE - timedelta(minutes=1), outcome="reached", answers=ANSWERS)
    late_evening = DUE.replace(hour=20, minute=30)
    attempt(visit, late_evening, outcome="not_reached")
    assert visit.call_at == DUE.replace(hour=20, minute=30) + timedelta(days=1) and visit.status == "in_progress"
    with pytest.raises(VisitStateConflict, match="next call"):
        attempt(visit, late_evening + timedelta(hours=1), outcome="not_reached")
    [(kind, fields)] = events(visit)
    assert kind == "visit_attempted" and fields == {"channel": "phone", "reached": False, "attempt": 1,
                                                    "outcome": "not_reached", "standard_answer": None}
    assert visit.message_customer(DUE, BRANCH) and not visit.message_customer(DUE, BRANCH)  # once
    [(kind, request)] = events(visit)
    assert kind == "customer_message_requested" and request["language"] == "en"
    assert (request["record_type"], request["record_id"]) == ("sale", SALE_ID) and "Thank you" in request["text"]
    assert visit.process_facts() == {"outcome": "not_reached", "unreached": 1, "messaged": True}


def test_a_call_back_moves_into_contact_hours_and_must_come_before_the_visit_is_given_up():
    visit = return_visit()
    attempt(visit, DUE, outcome="call_back", call_back_at=datetime(2026, 11, 23, 23, 0, tzinfo=SHANGHAI))
    assert visit.call_at == datetime(2026, 11, 24, 9, 0, tzinfo=SHANGHAI)
    for asked, field in ((DUE - timedelta(hours=1), "must be in the future"), (DUE + timedelta(days=7), "before")):
        with pytest.raises(VisitRuleBroken) as refused:
            attempt(visit, DUE + timedelta(minutes=1), outcome="call_back", call_back_at=asked)
        assert field in refused.value.fields["call_back_at"][0]
    attempt(visit, DUE + timedelta(minutes=2), outcome="call_back", call_back_at=DUE + timedelta(hours=2))
    assert len(visit.attempts) == 2 and visit.unreached == 0  # a call back is an answer


def test_discomfort_reports_an_adverse_reaction_on_the_item_the_customer_names():
    visit = return_visit("perm", "hair_colour")  # both due 2 days later: one visit
    with pytest.raises(VisitRuleBroken) as refused:
        attempt(visit, DUE, outcome="reached", answers={**ANSWERS, "discomfort": True, "item": "nope"})
    assert set(refused.value.fields) == {"answers.discomfort_description", "answers.item"}
    attempt(visit, DUE, outcome="reached", answers={**ANSWERS, "discomfort": True, "satisfaction": 1,
                                                     "discomfort_description": "头皮红肿", "item": "S-hair_colour"})
    kinds = events(visit)
    assert [k for k, _ in kinds] == ["visit_attempted", "visit_completed", "adverse_reaction_reported"]
    report = kinds[2][1]
    assert report["product"]["batch"] == "B-hair_colour" and report["technician_id"] == "T-017"
    assert report["description"] == "头皮红肿" and report["customer_language"] == "en"
    assert visit.status == "completed" and visit.outcome["adverse_reaction"] is True
    with pytest.raises(VisitStateConflict, match="completed"):
        attempt(visit, DUE, outcome="not_reached")


def test_a_follow_up_asks_whether_it_was_resolved_and_a_low_score_or_not_resolved_is_dissatisfaction():
    for answers, unhappy in (({"satisfaction": 2, "resolved": True}, True), ({"satisfaction": 4, "resolved": False},
                                                                             True),
                             ({"satisfaction": 3, "resolved": True}, False)):
        visit = follow_up()
        assert visit.planned.record_type == "complaint" and visit.planned.correlation_id == CASE_ID
        with pytest.raises(VisitRuleBroken, match="incomplete"):
            attempt(visit, visit.planned.due_at, outcome="reached", answers={**ANSWERS, "satisfaction": 2})
        attempt(visit, visit.planned.due_at, outcome="reached", answers={**ANSWERS, **answers})
        kinds = [k for k, _ in events(visit)]
        assert ("dissatisfaction_reported" in kinds) is unhappy, answers
        assert "adverse_reaction_reported" not in kinds


def test_abandoning_and_cancelling_finish_an_open_visit_once():
    visit = return_visit()
    attempt(visit, DUE, outcome="not_reached")
    events(visit)
    assert visit.abandon(DUE + timedelta(days=7)) and not visit.abandon(DUE + timedelta(days=7))
    assert events(visit) == [("visit_abandoned", {"attempts": 1, "reason": "no answer"})]
    assert not visit.cancel("case_reopened", DUE) and visit.status == "abandoned"
    assert return_visit().view(DUE + timedelta(days=1), BRANCH)["overdue"] is True
    assert return_visit().view(DUE + timedelta(hours=1), BRANCH)["overdue"] is False
