"""Inquiries (咨询) in investigation's domain, in plain Python: an inquiry's case answered and closed
(outcome answered, no case_resolved), and one converted in place into the complaint intake made of
it, its clocks counted from the inquiry's receipt; a conversion heard again changes nothing."""
from datetime import datetime, timedelta, timezone

from services.investigation.domain import Actor, Case, OpenTask
from shared.calendar.clock import isoformat
from shared.calendar.policy import load_policy
from shared.testing.samples import complaint_event

POLICY = load_policy()
RULES = POLICY.sections["investigation"]
SH001 = POLICY.branch("SH001")
T0 = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
DESK = Actor("FD-1", "front_desk")
ANSWER = OpenTask.from_properties("answer", "Answer the inquiry", {
    "roles": "front_desk,investigator,store_manager,regional_manager,hq_admin", "owner_may_complete": "true",
    "clock": "first_response"})


def inquiry() -> Case:
    payload = {**complaint_event("染发后多久可以洗头？")["payload"], "kind": "inquiry", "priority": "low",
               "category": "service_quality", "received_at": T0.isoformat(),
               "first_response_due": (T0 + timedelta(hours=24)).isoformat(),
               "resolution_due": (T0 + timedelta(hours=24)).isoformat()}
    case = Case.open(payload, branch=SH001, rules=RULES, now=T0, process="inquiry_case@abc")
    case.process_moved((ANSWER,), False, T0)
    return case


def converted(case: Case, **changes) -> dict:
    """complaint_registered as intake publishes it for the converted inquiry."""
    return {**complaint_event()["payload"], "complaint_id": case.id, "kind": "complaint", "category": "safety",
            "priority": "urgent", "severity_flags": ["allergy"], "received_at": T0.isoformat(),
            "first_response_due": (T0 + timedelta(hours=1)).isoformat(),
            "resolution_due": (T0 + timedelta(days=7)).isoformat(), "converted_from": "inquiry",
            "converted_at": (T0 + timedelta(hours=3)).isoformat(), "conversion_note": "顾客说头皮红肿", **changes}


def test_an_answered_inquiry_stops_both_clocks_and_closes_answered_without_a_resolution():
    case = inquiry()
    assert case.may_complete(ANSWER, DESK, RULES)
    at = T0 + timedelta(hours=2)
    case.complete("answer", {"message": "染发后48小时再洗头", "channel": "sms", "standard_answer": "x"}, DESK, at)
    case.process_moved((), True, at)  # the process ends after the answer
    assert (case.state, case.outcome, case.closed_at) == ("closed", "answered", at)
    assert all(c.stopped_at == at and c.state(at) == "met" for c in case.clocks.values())
    events = [e for _, e in case.pull_events()]
    assert [getattr(e, "type", "message") for e in events] == [
        "case_opened", "message", "case_acknowledged", "case_closed"]
    assert events[1].purpose == "first_response" and events[1].text == "染发后48小时再洗头"
    assert events[2].fields["standard_answer"] == "x" and events[2].fields["within_sla"] is True
    assert events[3].fields["outcome"] == "answered"


def test_a_converted_inquiry_becomes_the_complaint_with_its_clocks_from_the_original_receipt():
    case = inquiry()
    case.pull_events()
    now = T0 + timedelta(hours=3)
    assert case.convert(converted(case), branch=SH001, rules=RULES, now=now, process="complaint_case@def")
    assert (case.kind, case.category, case.priority, case.severity_flags, case.state) == (
        "complaint", "safety", "urgent", ["allergy"], "open")
    assert (case.converted_from, case.converted_at, case.received_at, case.open_tasks) == (
        "inquiry", now, T0, ())
    first = case.clocks["first_response"]
    assert (first.started_at, first.due, first.escalations) == (T0, T0 + timedelta(hours=1),
                                                               (T0 + timedelta(hours=1), T0 + timedelta(hours=2)))
    assert first.state(now) == "breached"  # the complaint's timers fire at once when its process starts
    assert case.process_data()["kind"] == "complaint" and case.process == "complaint_case@def"
    [(_, event)] = case.pull_events()
    assert event.type == "case_converted" and event.fields == {
        "from_kind": "inquiry", "kind": "complaint", "category": "safety", "priority": "urgent",
        "severity_flags": ["allergy"], "received_at": isoformat(T0), "converted_at": isoformat(now),
        "first_response_due": isoformat(T0 + timedelta(hours=1)), "resolution_due": isoformat(T0 + timedelta(days=7)),
        "process": "complaint_case@def"}
    assert case.timeline[-1].detail["note"] == "顾客说头皮红肿"
    assert case.view(now)["converted_from"] == "inquiry"
    # Heard again (a replay), or about a case that is a complaint already: nothing changes.
    assert not case.convert(converted(case, category="price"), branch=SH001, rules=RULES, now=now,
                            process="complaint_case@def")
    assert case.category == "safety" and case.pull_events() == []


def test_an_answered_and_closed_inquiry_converted_later_opens_again_as_the_complaint():
    case = inquiry()
    case.complete("answer", {"message": "您好", "channel": "phone"}, DESK, T0 + timedelta(hours=1))
    case.process_moved((), True, T0 + timedelta(hours=1))
    case.convert(converted(case, priority="general", severity_flags=[], category="product_quality",
                           first_response_due=(T0 + timedelta(hours=24)).isoformat()),
                 branch=SH001, rules=RULES, now=T0 + timedelta(hours=2), process="complaint_case@def")
    assert (case.state, case.outcome, case.closed_at, case.first_response) == ("open", None, None, None)
    assert all(c.running for c in case.clocks.values())
    assert case.timeline[-1].detail["from"]["first_response"]["message"] == "您好"  # the inquiry's answer is kept


def test_a_converted_complaint_heard_before_its_inquiry_opens_as_the_complaint_saying_so():
    payload = converted(inquiry())
    case = Case.open(payload, branch=SH001, rules=RULES, now=T0 + timedelta(hours=3), process="complaint_case@def")
    assert (case.kind, case.converted_from, case.converted_at) == ("complaint", "inquiry", T0 + timedelta(hours=3))
    [(_, opened)] = case.pull_events()
    assert opened.fields["converted_from"] == "inquiry" and opened.fields["received_at"] == isoformat(T0)
