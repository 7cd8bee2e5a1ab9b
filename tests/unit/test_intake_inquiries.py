"""Inquiries (consultations, 咨询) at intake, on a fixed clock: registered low and due within the
policy's `intake.deadlines.inquiry` (24 hours, moved to the branch's next opening), acknowledged as
an inquiry, published as feedback_registered; a policy file from before inquiries still loads. An
inquiry converted into a complaint (handlers.convert_complaint on the in-memory store): triaged
as a complaint from its ORIGINAL receipt, registered again as complaint_registered (the same id,
the next sequence, converted_from); refused in the API's order (404, 409, 403, 400)."""
import copy
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from services.intake import events, handlers
from services.intake.domain import Complaint
from services.intake.schemas import ComplaintIn
from shared.calendar.policy import DEFAULT_POLICY_PATH, check_policy, load_policy
from shared.messaging.envelope import build_event, parse_event
from shared.security.auth import Identity
from shared.testing.samples import complaint_request
from shared.web.errors import ApiError, Forbidden, NotFound, ValidationFailed
from tests.unit.intake_fakes import FakeIntakeStore

POLICY = load_policy()
RULES = POLICY.section("intake")
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai, SH001 open 10:00-22:00
LATE = datetime(2026, 11, 22, 15, 0, tzinfo=timezone.utc)  # 23:00 in Shanghai: closed
KEY = b"k" * 32
FRONT_DESK = Identity(subject="fd-1", role="front_desk", branches=frozenset({"SH001"}), scope={"branch": "SH001"})
ANALYST = Identity(subject="an-1", role="hq_analyst", branches=None, scope={"hq": True})
ELSEWHERE = Identity(subject="fd-9", role="front_desk", branches=frozenset({"BJ001"}), scope={"branch": "BJ001"})
# A question about after-care that reads like a reaction: classified safety, but an inquiry is low.
QUESTION = "请问染发后头皮红肿要怎么护理？"


def inquiry_body(**changes) -> dict:
    return complaint_request(**{"kind": "inquiry", "description": QUESTION, "severity_flags": None,
                                "occurred_at": None, **changes})


def test_an_inquiry_is_low_due_within_24_hours_at_the_next_opening_and_acknowledged_as_an_inquiry():
    def register(received_at, language="zh"):
        body = inquiry_body(customer={"name": "王女士", "phone": "13812346138", "language": language})
        return Complaint.register(ComplaintIn().load(body), branch=POLICY.branch("SH001"), rules=RULES,
                                  received_at=received_at, number=1, recorded_by="fd-1", recorded_by_role="front_desk",
                                  ref_key=KEY)

    c = register(NOW)
    assert (c.kind, c.category, c.category_source, c.priority) == ("inquiry", "safety", "automatic", "low")
    assert c.first_response_due == c.resolution_due == NOW + timedelta(hours=24)  # 10:00 the next day: open
    assert "咨询" in c.acknowledgement and "投诉" not in c.acknowledgement
    [envelope] = events.envelopes(c, causation_id=None)
    event = parse_event(envelope)
    assert (event["type"], event["sequence"], event["payload"]["kind"]) == ("feedback_registered", 1, "inquiry")
    assert "converted_from" not in event["payload"]
    # 23:00 + 24 h is 23:00 the next day, closed: both move to the opening after, 10:00 on the 24th.
    late = register(LATE, language="en")
    assert late.first_response_due == late.resolution_due == datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
    assert "your inquiry" in late.acknowledgement


def test_a_policy_file_without_inquiries_still_loads_and_a_wrong_inquiry_deadline_is_named(tmp_path):
    doc = yaml.safe_load(DEFAULT_POLICY_PATH.read_text(encoding="utf-8"))

    def written(change) -> str:
        changed = copy.deepcopy(doc)
        change(changed["intake"])
        path = tmp_path / "policy.yaml"
        path.write_text(yaml.safe_dump(changed, allow_unicode=True), encoding="utf-8")
        return str(path)

    def without_inquiries(intake):
        del intake["deadlines"]["inquiry"]
        for template in intake["acknowledgement"].values():
            del template["kinds"]["inquiry"]
        intake["acknowledgement"]["fr"] = {**intake["acknowledgement"]["en"], "kinds": {
            "complaint": "réclamation", "suggestion": "suggestion", "praise": "compliment"}}

    old = load_policy(written(without_inquiries)).section("intake")
    assert old.inquiry == timedelta(hours=24)
    assert {lang: t["kinds"]["inquiry"] for lang, t in old.acknowledgements.items()} == {
        "zh": "咨询", "en": "inquiry", "fr": "inquiry"}
    assert load_policy(written(lambda i: i["deadlines"].update(inquiry="PT8H"))).section("intake").inquiry == \
        timedelta(hours=8)
    assert [p for p in check_policy(written(lambda i: i["deadlines"].update(inquiry="soon")))
            if p.startswith("intake.deadlines.inquiry: ")]


# -- conversion ------------------------------------------------------------------------------------

def register(store, body=None, now=NOW, key=None):
    return handlers.register_complaint(store, identity=FRONT_DESK, body=body or inquiry_body(), policy=POLICY,
                                       rules=RULES, now=now, ref_key=KEY, idempotency_key=key)


def convert(store, complaint_id, body=None, who=FRONT_DESK, now=NOW + timedelta(hours=5), key=None):
    def read_body():
        if body is Exception:  # a body that must not be read yet
            raise AssertionError("the body was read before the checks that come first")
        return {} if body is None else body
    return handlers.convert_complaint(store, identity=who, complaint_id=complaint_id, read_body=read_body,
                                      policy=POLICY, rules=RULES, now=now, idempotency_key=key,
                                      causation_id="req-convert")


def refused(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    return caught.value


def test_a_converted_inquiry_is_triaged_as_a_complaint_from_its_original_receipt_and_registered_again():
    store = FakeIntakeStore()
    _, inquiry = register(store)
    converted = convert(store, inquiry["id"], {"note": "顾客说头皮已经起泡，要求处理"}, key="conv-1")
    assert (converted["id"], converted["kind"], converted["converted_from"]) == (inquiry["id"], "complaint", "inquiry")
    assert (converted["category"], converted["priority"]) == ("safety", "urgent")  # reclassified: urgent
    assert converted["received_at"] == "2026-11-22T02:00:00Z" and converted["converted_at"] == "2026-11-22T07:00:00Z"
    # From the receipt, not from the conversion: urgent is 1 hour, already past.
    assert (converted["first_response_due"], converted["resolution_due"]) == (
        "2026-11-22T03:00:00Z", "2026-11-29T02:00:00Z")
    first, again = store.published
    assert (first["type"], first["sequence"]) == ("feedback_registered", 1)
    assert (again["type"], again["sequence"], again["correlation_id"], again["causation_id"]) == (
        "complaint_registered", 2, inquiry["id"], "req-convert")
    assert again["event_id"] != first["event_id"] and again["occurred_at"] == "2026-11-22T07:00:00Z"
    payload = again["payload"]
    assert (payload["kind"], payload["converted_from"], payload["converted_at"], payload["received_at"]) == (
        "complaint", "inquiry", "2026-11-22T07:00:00Z", "2026-11-22T02:00:00Z")
    assert (payload["priority"], payload["first_response_due"]) == ("urgent", "2026-11-22T03:00:00Z")
    assert payload["conversion_note"] == "顾客说头皮已经起泡，要求处理" and store.complaint(inquiry["id"]).sequence == 2
    assert handlers.get_complaint(store, identity=FRONT_DESK, complaint_id=inquiry["id"]) == converted
    # A retry with the key gets the first answer; without it, the conflict says when.
    assert convert(store, inquiry["id"], {"note": "顾客说头皮已经起泡，要求处理"}, key="conv-1") == converted
    again = refused(lambda: convert(store, inquiry["id"]))
    assert (again.status, again.code) == (409, "not_an_inquiry") and "2026-11-22T07:00:00Z" in again.message
    assert len(store.published) == 2


def test_a_category_given_or_chosen_by_staff_is_kept_and_the_flags_given_count():
    store = FakeIntakeStore()
    _, chosen = register(store, inquiry_body(category="after_sales", description="请问怎么退卡？"))
    general = convert(store, chosen["id"])  # the desk's choice stays; no flag: general, 24 h, in hours
    assert (general["category"], general["category_source"], general["priority"]) == (
        "after_sales", "manual", "general")
    assert general["first_response_due"] == "2026-11-23T02:00:00Z"
    _, other = register(store, inquiry_body(description="请问怎么退卡？"))
    urgent = convert(store, other["id"], {"category": "price", "severity_flags": ["legal_threat"]})
    assert (urgent["category"], urgent["category_source"], urgent["priority"], urgent["severity_flags"]) == (
        "price", "manual", "urgent", ["legal_threat"])


def test_conversion_is_refused_in_the_api_s_order():
    store = FakeIntakeStore()
    _, inquiry = register(store)
    _, complaint = register(store, complaint_request())
    assert isinstance(refused(lambda: convert(store, "not-an-id")), NotFound)
    assert isinstance(refused(lambda: convert(store, inquiry["id"], Exception, who=ELSEWHERE)), NotFound)
    # A complaint: 409 before the role (403) and the body.
    conflict = refused(lambda: convert(store, complaint["id"], Exception, who=ANALYST))
    assert (conflict.status, conflict.code) == (409, "not_an_inquiry") and "converted" not in conflict.message
    assert isinstance(refused(lambda: convert(store, inquiry["id"], Exception, who=ANALYST)), Forbidden)
    wrong = refused(lambda: convert(store, inquiry["id"], {"category": "weather", "severity_flags": ["sunburn"],
                                                          "note": "x" * 2001, "priority": "urgent"}, key="bad key"))
    assert isinstance(wrong, ValidationFailed)
    assert set(wrong.fields) == {"category", "severity_flags", "note", "priority", "Idempotency-Key"}
    assert len(store.published) == 2 and store.complaint(inquiry["id"]).kind == "inquiry"


def test_an_answered_inquiry_shows_closed_and_is_no_longer_converted():
    store = FakeIntakeStore()
    _, inquiry = register(store)
    closed = parse_event(build_event("case_closed", {"case_id": inquiry["id"], "complaint_id": inquiry["id"],
                                                     "outcome": "answered"}, branch_code="SH001",
                                     correlation_id=inquiry["id"], occurred_at=NOW + timedelta(hours=2), sequence=3))
    assert handlers.follow_case(store.for_event("intake.follow_case", closed["event_id"]), event=closed)
    shown = handlers.get_complaint(store, identity=FRONT_DESK, complaint_id=inquiry["id"])
    assert (shown["kind"], shown["status"], shown["closed_at"]) == ("inquiry", "closed", "2026-11-22T04:00:00Z")
    conflict = refused(lambda: convert(store, inquiry["id"], Exception, who=ANALYST))
    assert (conflict.status, conflict.code) == (409, "closed")


def test_a_conversion_that_crossed_the_inquiry_s_answer_is_followed_back_to_received():
    """The inquiry was answered (its case closed) while intake converted it: investigation then
    converts the closed case in place (case_converted, the next sequence): the complaint is
    received again, its retention clock (closed_at) cleared."""
    store = FakeIntakeStore()
    _, inquiry = register(store)
    convert(store, inquiry["id"], {"category": "safety"})

    def follow(event_type: str, sequence: int, **payload) -> bool:
        event = parse_event(build_event(event_type, {"case_id": inquiry["id"], "complaint_id": inquiry["id"],
                                                     **payload}, branch_code="SH001", correlation_id=inquiry["id"],
                                        occurred_at=NOW + timedelta(hours=sequence), sequence=sequence))
        return handlers.follow_case(store.for_event("intake.follow_case", event["event_id"]), event=event)

    assert follow("case_closed", 3, outcome="answered")
    assert store.complaint(inquiry["id"]).status == "closed"
    assert follow("case_converted", 4, from_kind="inquiry", kind="complaint", category="safety", priority="urgent",
                  received_at="2026-11-22T02:00:00Z", first_response_due="2026-11-22T03:00:00Z",
                  resolution_due="2026-11-29T02:00:00Z")
    shown = handlers.get_complaint(store, identity=FRONT_DESK, complaint_id=inquiry["id"])
    assert (shown["kind"], shown["status"], shown["closed_at"]) == ("complaint", "received", None)


def test_a_key_used_for_another_request_is_a_conflict_before_the_body_is_judged():
    """The Idempotency-Key of the inquiry's own registration, sent again with its conversion: 409
    (the API's order: before the body's 400), and nothing converted."""
    store = FakeIntakeStore()
    _, inquiry = register(store, key="till-7-0001")
    for body in ({"category": "weather"}, {"category": "safety"}):
        conflict = refused(lambda: convert(store, inquiry["id"], body, key="till-7-0001"))
        assert conflict.status == 409 and list(conflict.fields) == ["Idempotency-Key"], conflict.fields
    assert store.complaint(inquiry["id"]).kind == "inquiry" and len(store.published) == 1
