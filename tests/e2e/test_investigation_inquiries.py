"""Standard answers and inquiries end to end over the real bus: investigation and its relay run once
for the module in the test process on one clock the tests move; intake's registrations are
published as intake would publish them. The standard answers come back ranked by their category's
complaints in the caller's scope, filled with a case's facts; the answer used is on the events; an
inquiry is answered and closed; an inquiry converted into a complaint keeps its received time (its
deadlines, already passed, escalate at once), in either order of the events and heard twice."""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
import requests

from shared.calendar.clock import ManualClock, isoformat
from shared.messaging.envelope import build_event
from shared.messaging.relay import Publisher
from shared.security import auth
from shared.testing.fixtures import (
    BusListener, handled, jsonbody, purge_queues_of, services_in_process, wait_until,
)

pytestmark = pytest.mark.e2e
START = datetime.fromisoformat("2026-11-22T10:00:00+08:00")
GUANGZHOU = "GZ001"  # the inquiries' branch (region south), out of the ranking's scopes


class Desk:
    """Investigation's HTTP API, intake's side of the bus, investigation's events, one clock."""

    def __init__(self, url: str, database: str, publisher: Publisher, cases_bus: BusListener, clock: ManualClock):
        self.url, self.database, self.publisher, self.bus, self.clock = url, database, publisher, cases_bus, clock
        self.http = requests.Session()
        self.numbers = iter(range(1, 10_000))

    def headers(self, role: str, branch: str | None = "SH001", region: str | None = None) -> dict:
        token = auth.issue_token(role=role, subject=f"{role}-1", branch=None if region else branch, region=region)
        return {"Authorization": f"Bearer {token}"}

    def register(self, category: str = "hygiene_environment", branch: str = "SH001", kind: str = "complaint",
                 received: datetime | None = None, complaint_id: str | None = None, **changes) -> dict:
        """Publish intake's registration of a complaint (or feedback); its payload (the event: `last_event`)."""
        received = received or self.clock.now()
        priority = changes.pop("priority", "low" if kind != "complaint" else "general")
        first = timedelta(hours=24) if kind != "complaint" or priority == "general" else timedelta(hours=1)
        complaint_id = complaint_id or str(uuid.uuid4())
        payload = {
            "complaint_id": complaint_id, "reference": f"{branch}-20261122-{next(self.numbers):04d}", "kind": kind,
            "channel": "front_desk", "category": category, "category_source": "manual", "priority": priority,
            "severity_flags": [], "description": "毛巾很脏", "occurred_at": None, "received_at": isoformat(received),
            "region": "east", "service": None, "products": [], "customer_ref": None,
            "customer_masked": {"name": "王**"}, "customer_language": "zh",
            "first_response_due": isoformat(received + first),
            "resolution_due": isoformat(received + (first if kind == "inquiry" else timedelta(days=7))), **changes}
        self.last_event = self.publish("complaint_registered" if kind == "complaint" else "feedback_registered",
                                       payload, branch)
        return payload

    def publish(self, event_type: str, payload: dict, branch: str, event_id: str | None = None) -> dict:
        event = build_event(event_type, payload, branch_code=branch, correlation_id=payload["complaint_id"],
                            sequence=2 if payload.get("converted_from") else 1, occurred_at=self.clock.now(),
                            event_id=event_id, source="intake")
        self.publisher.publish_batch([("intake.events", event_type, json.dumps(event), event["event_id"])])
        return event

    def case(self, case_id: str, role: str = "hq_admin") -> requests.Response:
        return self.http.get(self.url + f"/v1/cases/{case_id}", headers=self.headers(role, "*"), timeout=10)

    def wait_for_case(self, case_id: str, check=lambda case: True) -> dict:
        def ready():
            answer = self.case(case_id)
            return answer.status_code == 200 and check(jsonbody(answer)) and jsonbody(answer)
        return wait_until(ready, f"case {case_id}")

    def task(self, case_id: str, task: str, body: dict, role: str = "store_manager", branch: str = "SH001"):
        return self.http.post(self.url + f"/v1/cases/{case_id}/tasks/{task}", json=body,
                              headers=self.headers(role, branch), timeout=10)

    def answers(self, role: str = "store_manager", branch: str | None = "SH001", region: str | None = None,
                **query) -> requests.Response:
        return self.http.get(self.url + "/v1/standard-answers", params=query,
                             headers=self.headers(role, branch, region), timeout=10)

    def events(self, case_id: str, event_type: str, count: int = 1) -> list[dict]:
        return [m["body"] for m in self.bus.wait_for(
            lambda m: m["body"]["correlation_id"] == case_id and m["body"]["type"] == event_type, 15, count)]

    def seen(self, case_id: str, event_type: str) -> list[dict]:
        return [m["body"] for m in self.bus.messages
                if m["body"]["correlation_id"] == case_id and m["body"]["type"] == event_type]


@pytest.fixture(scope="module")
def desk(amqp_uri, database_factory):
    purge_queues_of(amqp_uri, "investigation")  # registrations other modules left: not this module's cases
    clock = ManualClock(START)
    cases_bus = BusListener(amqp_uri, "investigation.events")
    publisher = Publisher(amqp_uri)
    with services_in_process(amqp_uri, database_factory, ["investigation"], clock) as running:
        investigation = running["investigation"]
        desk = Desk(investigation.base_url, investigation.database_url, publisher, cases_bus, clock)
        yield desk
        desk.http.close()
    publisher.close()
    cases_bus.close()


def ranked(answer: requests.Response) -> list[tuple[str, int]]:
    assert answer.status_code == 200, answer.text
    return [(a["category"], a["complaints"]) for a in jsonbody(answer)["answers"]]


def test_standard_answers_rank_by_their_category_s_complaints_in_the_caller_s_scope_and_fill_a_case(desk):
    sh001 = [desk.register("hygiene_environment") for _ in range(3)] + [desk.register("price")]
    sh002 = [desk.register("price", branch="SH002") for _ in range(2)]
    beijing = [desk.register("booking", branch="BJ001") for _ in range(4)]
    old = desk.register("safety", received=START - timedelta(days=91))  # outside the 90 days
    suggestion = desk.register("price", kind="suggestion")  # not a complaint
    for payload in (*sh001, *sh002, *beijing, old, suggestion):
        desk.wait_for_case(payload["complaint_id"])

    mine = ranked(desk.answers(purpose="first_response", language="zh"))
    assert mine == [("hygiene_environment", 3), ("price", 1), ("safety", 0), ("product_quality", 0),
                    ("staff_attitude", 0), ("booking", 0), ("after_sales", 0), ("service_quality", 0)]
    # The region (SH001 and SH002): price and hygiene tie at 3, hygiene first in the policy's order.
    region = ranked(desk.answers("regional_manager", region="east", purpose="first_response", language="en"))
    assert region[:3] == [("hygiene_environment", 3), ("price", 3), ("safety", 0)]
    everything = jsonbody(desk.answers("aftercare_agent", category="price"))
    assert [(a["id"], a["complaints"], a["filled"]) for a in everything["answers"]][:2] == [
        ("price-first-response-en", 1, None), ("price-first-response-zh", 1, None)]
    assert everything["window_days"] == 90 and everything["as_of"] == isoformat(desk.clock.now())

    case_id = sh001[0]["complaint_id"]
    [filled] = jsonbody(desk.answers(category="hygiene_environment", purpose="first_response", language="zh",
                                     case_id=case_id))["answers"]
    assert filled["filled"].startswith("王**，您好！感谢您指出上海静安店的卫生问题")
    assert f"（编号{sh001[0]['reference']}）" in filled["filled"] and "在2026-11-29 10:00前" in filled["filled"]

    assert desk.answers(case_id=beijing[0]["complaint_id"]).status_code == 404  # not in SH001's scope
    assert desk.answers(case_id="not-a-case").status_code == 404
    refused = desk.answers(category="massage", purpose="gossip", language="fr", colour="red")
    assert refused.status_code == 400
    assert set(jsonbody(refused)["error"]["fields"]) == {"category", "purpose", "language", "colour"}
    assert desk.answers("auditor", branch="*").status_code == 403


def test_the_standard_answer_used_is_recorded_on_the_case_and_its_events(desk):
    payload = desk.register("safety", priority="urgent", severity_flags=["allergy"])
    case_id = payload["complaint_id"]
    desk.wait_for_case(case_id)
    assert desk.task(case_id, "assign", {"owner": "INV-7"}).status_code == 200
    unknown = desk.task(case_id, "respond", {"message": "您好", "channel": "phone", "standard_answer": "no-such"})
    assert unknown.status_code == 400 and list(jsonbody(unknown)["error"]["fields"]) == ["standard_answer"]
    responded = desk.task(case_id, "respond", {"message": "王**，您好！", "channel": "phone",
                                               "standard_answer": "safety-first-response-zh"})
    assert jsonbody(responded)["first_response"]["standard_answer"] == "safety-first-response-zh"
    findings = {"facts": "批次 B2026-11-03 与红肿时间吻合", "service_log_checked": True, "product_batch_checked": True,
                "root_cause": "未做皮肤测试", "responsibility": "customer_misuse", "signed_by": "T-001"}
    for task, body in (("record_findings", findings), ("propose_remedy", {"type": "apology", "amount": 0}),
                       ("fulfil", {}), ("notify_customer", {
                           "measures": "已致歉并讲解护理方法", "completed_at": isoformat(desk.clock.now()),
                           "responsible": "SM-1", "follow_up": "三天后回访",
                           "standard_answer": "safety-written-result-zh"})):
        answer = desk.task(case_id, task, body)
        assert answer.status_code == 200, (task, answer.text)
    [acknowledged] = desk.events(case_id, "case_acknowledged")
    assert acknowledged["payload"]["standard_answer"] == "safety-first-response-zh"
    [recorded] = desk.events(case_id, "findings_recorded")
    assert recorded["payload"]["facts"] == findings["facts"]
    [notified] = desk.events(case_id, "customer_notified")
    assert {k: notified["payload"][k] for k in ("measures", "follow_up", "standard_answer")} == {
        "measures": "已致歉并讲解护理方法", "follow_up": "三天后回访", "standard_answer": "safety-written-result-zh"}


def test_an_inquiry_is_answered_within_its_day_and_closes_answered(desk):
    payload = desk.register("product_quality", branch=GUANGZHOU, kind="inquiry", description="面膜多久用一次？")
    case_id = payload["complaint_id"]
    case = desk.wait_for_case(case_id)
    [answer] = case["open_tasks"]
    assert (case["kind"], answer["name"], answer["clock"]) == ("inquiry", "answer", "first_response")
    assert answer["due"] == payload["first_response_due"] and "front_desk" in answer["roles"]
    answered = desk.task(case_id, "answer", {"message": "每周两到三次", "channel": "sms",
                                             "standard_answer": "product-quality-inquiry-zh"},
                         role="front_desk", branch=GUANGZHOU)
    assert answered.status_code == 200, answered.text
    closed = jsonbody(answered)
    assert (closed["state"], closed["outcome"], closed["open_tasks"]) == ("closed", "answered", [])
    assert all(clock["state"] == "met" for clock in closed["sla"].values())
    [acknowledged] = desk.events(case_id, "case_acknowledged")
    assert acknowledged["payload"]["standard_answer"] == "product-quality-inquiry-zh"
    assert desk.events(case_id, "customer_message_requested")[0]["payload"]["text"] == "每周两到三次"
    assert desk.events(case_id, "case_closed")[0]["payload"]["outcome"] == "answered"
    assert desk.seen(case_id, "case_resolved") == []


def test_an_inquiry_converted_into_a_complaint_keeps_its_received_time_and_is_breached_at_once(desk):
    received = desk.clock.now() - timedelta(hours=3)
    inquiry = desk.register("service_quality", branch=GUANGZHOU, kind="inquiry", received=received)
    case_id = inquiry["complaint_id"]
    desk.wait_for_case(case_id)
    converted = {**inquiry, "kind": "complaint", "category": "safety", "priority": "urgent",
                 "severity_flags": ["allergy"], "first_response_due": isoformat(received + timedelta(hours=1)),
                 "resolution_due": isoformat(received + timedelta(days=7)), "converted_from": "inquiry",
                 "converted_at": isoformat(desk.clock.now()), "conversion_note": "顾客说头皮红肿"}
    event = desk.publish("complaint_registered", converted, GUANGZHOU)
    case = desk.wait_for_case(case_id, lambda c: c["kind"] == "complaint")
    [assign] = case["open_tasks"]
    assert (assign["name"], assign["due"]) == ("assign", isoformat(received + timedelta(hours=1)))
    assert (case["received_at"], case["converted_from"], case["state"]) == (isoformat(received), "inquiry", "open")
    assert case["sla"]["first_response"]["state"] == "breached" and case["escalation_level"] == 2
    [changed] = desk.events(case_id, "case_converted")
    assert {k: changed["payload"][k] for k in ("from_kind", "kind", "category", "priority", "received_at")} == {
        "from_kind": "inquiry", "kind": "complaint", "category": "safety", "priority": "urgent",
        "received_at": isoformat(received)}
    assert [e["payload"]["level"] for e in desk.events(case_id, "case_escalated", 2)] == [1, 2]

    # Heard again under a new event id: nothing changes. Out of order: the complaint first opens it, its
    # inquiry's registration later opens nothing.
    again = desk.publish("complaint_registered", {**converted, "category": "price"}, GUANGZHOU,
                         event_id=str(uuid.uuid4()))
    later_id = str(uuid.uuid4())
    desk.publish("complaint_registered", {**converted, "complaint_id": later_id}, GUANGZHOU)
    desk.wait_for_case(later_id)
    desk.register("service_quality", branch=GUANGZHOU, kind="inquiry", received=received, complaint_id=later_id)
    for event_id in (again["event_id"], desk.last_event["event_id"]):
        wait_until(lambda: handled(desk.database, event_id), f"investigation to take {event_id}")
    desk.events(later_id, "case_opened")  # the relay published what the case did
    assert len(desk.seen(case_id, "case_converted")) == 1 and jsonbody(desk.case(case_id))["category"] == "safety"
    later = jsonbody(desk.case(later_id))
    assert (later["kind"], later["converted_from"], later["received_at"]) == ("complaint", "inquiry",
                                                                             isoformat(received))
    assert [e["payload"]["kind"] for e in desk.seen(later_id, "case_opened")] == ["complaint"]
    assert event["payload"]["converted_from"] == "inquiry"
