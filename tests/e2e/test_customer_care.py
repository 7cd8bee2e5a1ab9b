"""Issue 13 end to end over the real bus: intake, investigation, aftercare and reporting (with
their relays) run once for the module in the test process on one clock the tests move. One
customer's complaints and sale at two branches make one customer file, scoped by the reader; an
inquiry is answered and closed, another converted into a complaint keeps its received time for
its deadlines; standard answers come back ranked by their category's complaints; a case closed
after its follow-up reaches the training library without the customer's name or phone.

The tests run in file order and share the chain: each works on records of its own (its own
phone, branch or category), and the last one moves the clock days ahead."""
from __future__ import annotations

import csv
import io
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from shared.calendar.clock import ManualClock
from shared.security import auth
from shared.testing.fixtures import jsonbody, purge_queues_of, services_in_process, wait_until
from shared.testing.samples import complaint_request

pytestmark = pytest.mark.e2e
START = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai, a Sunday
SERVICES = ("intake", "investigation", "aftercare", "reporting")


def phone() -> str:
    return "139" + "".join(random.choice("0123456789") for _ in range(8))


class Chain:
    def __init__(self, services: dict, clock: ManualClock):
        self.services, self.clock, self.http = services, clock, requests.Session()

    def headers(self, role: str, branch: str | None = "SH001", subject: str | None = None) -> dict:
        token = auth.issue_token(role=role, subject=subject or f"{role}-1", branch=branch)
        return {"Authorization": f"Bearer {token}"}

    def call(self, method: str, service: str, path: str, role: str, branch: str | None = "SH001", **kwargs):
        return self.http.request(method, self.services[service].url(path), headers=self.headers(role, branch),
                                 timeout=10, **kwargs)

    def ok(self, method: str, service: str, path: str, role: str, branch: str | None = "SH001",
           status: int = 200, **kwargs) -> dict:
        answer = self.call(method, service, path, role, branch, **kwargs)
        assert answer.status_code == status, answer.text
        return jsonbody(answer)

    def post(self, body: dict, branch: str = "SH001") -> dict:
        return self.ok("POST", "intake", "/v1/complaints", "front_desk", branch, status=201, json=body)

    def case(self, case_id: str, branch: str = "SH001", when=lambda case: True, what: str = "the case") -> dict:
        def found():
            answer = self.call("GET", "investigation", f"/v1/cases/{case_id}", "store_manager", branch)
            return jsonbody(answer) if answer.status_code == 200 and when(jsonbody(answer)) else None
        return wait_until(found, what)

    def task(self, case_id: str, task: str, body: dict, branch: str = "SH001", role: str = "store_manager") -> dict:
        return self.ok("POST", "investigation", f"/v1/cases/{case_id}/tasks/{task}", role, branch, json=body)

    def customer_file(self, ref: str, role: str, branch: str | None):
        return self.call("GET", "reporting", f"/v1/customers/{ref}", role, branch)


@pytest.fixture(scope="module")
def chain(amqp_uri, database_factory):
    for name in SERVICES[1:]:  # what tests without these services left in their queues is not ours
        purge_queues_of(amqp_uri, name)
    clock = ManualClock(START)
    with services_in_process(amqp_uri, database_factory, SERVICES, clock) as services:
        yield Chain(services, clock)


def test_one_customer_s_complaints_and_sale_at_two_branches_make_one_file_that_each_reader_sees_in_scope(chain):
    number = phone()
    customer = {"name": "王女士", "phone": number, "language": "zh"}
    allergy = chain.post(complaint_request(customer=customer, description="昨天染发后头皮过敏红肿",
                                           products=[{"sku": "DYE-5N", "batch": "B2026-11-03"}]))
    booking = chain.post(complaint_request(customer=customer, description="预约了还要排队一小时", category="booking",
                                           severity_flags=[], products=[], service=None))
    beijing = chain.post(complaint_request(customer={**customer, "phone": f"+86 {number}"}, category="hygiene_environment",
                                           description="毛巾不干净", severity_flags=[], products=[], service=None),
                         branch="BJ001")
    sale = chain.ok("POST", "intake", "/v1/sales", "front_desk", "BJ001", status=201, json={
        "customer": {"name": "王女士", "phone": number, "contact_consent": True}, "sold_at": "2026-11-21T15:00:00+08:00",
        "items": [{"type": "product", "sku": "SK-01", "name": "保湿面霜", "product_type": "skincare", "batch": "S1"}]})
    found = chain.ok("POST", "intake", "/v1/customers/lookup", "hq_admin", "*",
                     json={"phone": number, "purpose": "customer file test"})
    ref = found["customer_ref"]

    def whole():
        answer = chain.customer_file(ref, "hq_analyst", "*")
        body = jsonbody(answer) if answer.status_code == 200 else {}
        return body if len(body.get("cases", [])) == 3 and len(body.get("sales", [])) == 1 else None
    hq = wait_until(whole, "the customer's three complaints and sale in reporting")
    assert {c["case_id"] for c in hq["cases"]} == {allergy["id"], booking["id"], beijing["id"]}
    assert hq["sales"][0]["sale_id"] == sale["id"] and hq["contact_consent"] is True
    assert number not in str(hq) and "王女士" not in str(hq)  # masks and refs only
    assert hq["summary"]["complaints"] == 3 and hq["summary"]["sales"] == 1
    assert [a["batch"] for a in hq["summary"]["allergies"]] == ["B2026-11-03"]

    shanghai = jsonbody(chain.customer_file(ref, "store_manager", "SH001"))
    assert {c["case_id"] for c in shanghai["cases"]} == {allergy["id"], booking["id"]} and shanghai["sales"] == []
    beijing_view = jsonbody(chain.customer_file(ref, "front_desk", "BJ001"))
    assert [c["case_id"] for c in beijing_view["cases"]] == [beijing["id"]]
    assert [s["sale_id"] for s in beijing_view["sales"]] == [sale["id"]]
    assert chain.customer_file(ref, "store_manager", "GZ001").status_code == 404  # nothing of theirs
    assert chain.customer_file("not-a-ref", "hq_analyst", "*").status_code == 400


def test_an_inquiry_is_answered_and_closed_and_another_converted_keeps_its_received_time(chain):
    asked = chain.post(complaint_request(kind="inquiry", description="烫发后多久可以洗头？", category="after_sales",
                                         severity_flags=[], products=[], service=None))
    assert asked["priority"] == "low"
    received = datetime.fromisoformat(asked["received_at"])
    assert datetime.fromisoformat(asked["first_response_due"]) == received + timedelta(hours=24)
    case = chain.case(asked["id"], what="the inquiry's case")
    assert case["kind"] == "inquiry" and [t["name"] for t in case["open_tasks"]] == ["answer"]
    answers = chain.ok("GET", "investigation", "/v1/standard-answers", "front_desk",
                       params={"purpose": "inquiry", "language": "zh", "category": "after_sales",
                               "case_id": asked["id"]})["answers"]
    chosen = answers[0]
    assert chosen["filled"] and "{" not in chosen["filled"]
    chain.task(asked["id"], "answer", {"message": chosen["filled"], "channel": "phone",
                                       "standard_answer": chosen["id"]}, role="front_desk")
    closed = chain.case(asked["id"], when=lambda c: c["state"] == "closed", what="the answered inquiry closed")
    assert closed["outcome"] == "answered" and closed["first_response"]["standard_answer"] == chosen["id"]

    complaint = chain.post(complaint_request(kind="inquiry", description="染发后头皮有点痒，正常吗？", category="after_sales",
                                             severity_flags=[], products=[], service=None))
    received = datetime.fromisoformat(complaint["received_at"])
    chain.case(complaint["id"], what="the second inquiry's case")
    chain.clock.advance(timedelta(hours=3))
    converted = chain.ok("POST", "intake", f"/v1/complaints/{complaint['id']}/convert", "store_manager",
                         json={"category": "service_quality", "severity_flags": []})
    assert (converted["kind"], converted["converted_from"]) == ("complaint", "inquiry")
    assert datetime.fromisoformat(converted["received_at"]) == received
    assert datetime.fromisoformat(converted["first_response_due"]) == received + timedelta(hours=24)
    case = chain.case(complaint["id"], when=lambda c: c["kind"] == "complaint", what="the case converted")
    assert datetime.fromisoformat(case["sla"]["first_response"]["due"]) == received + timedelta(hours=24)
    assert datetime.fromisoformat(case["received_at"]) == received
    assert [t["name"] for t in case["open_tasks"]] == ["assign"]
    again = chain.call("POST", "intake", f"/v1/complaints/{complaint['id']}/convert", "store_manager", json={})
    assert again.status_code == 409 and jsonbody(again)["error"]["code"] == "not_an_inquiry"

    def counted():  # the module's only inquiries: counted apart from the complaints
        figures = chain.ok("GET", "reporting", "/v1/kpis", "hq_analyst", "*")["totals"]["inquiries"]
        return figures if figures["converted"] == 1 and figures["answered"] == 1 else None
    inquiries = wait_until(counted, "reporting to count the inquiries")
    assert (inquiries["received"], inquiries["answered_in_time"]) == (2, 1)


def test_standard_answers_come_ranked_by_how_often_their_category_was_complained_about_in_scope(chain):
    for category, times in (("price", 3), ("staff_attitude", 1)):
        for _ in range(times):
            chain.post(complaint_request(customer={"name": "李先生", "phone": phone(), "language": "zh"},
                                         category=category, description="收费和说的不一样", severity_flags=[],
                                         products=[], service=None), branch="GZ001")

    def ranked():
        listed = chain.ok("GET", "investigation", "/v1/standard-answers", "store_manager", "GZ001",
                          params={"purpose": "first_response", "language": "zh"})["answers"]
        return listed if listed and listed[0]["complaints"] == 3 and listed[1]["complaints"] == 1 else None
    answers = wait_until(ranked, "the four complaints counted")
    assert [(a["category"], a["complaints"]) for a in answers[:2]] == [("price", 3), ("staff_attitude", 1)]
    assert all(a["complaints"] == 0 for a in answers[2:]) and len(answers) == 8  # one per category
    assert {a["purpose"] for a in answers} == {"first_response"} and {a["language"] for a in answers} == {"zh"}
    refused = chain.call("GET", "investigation", "/v1/standard-answers", "store_manager", "GZ001",
                         params={"purpose": "sonnet", "language": "fr"})
    assert refused.status_code == 400 and set(jsonbody(refused)["error"]["fields"]) == {"purpose", "language"}


def test_a_case_closed_after_its_follow_up_reaches_the_training_library_without_names_or_phones(chain):
    number = phone()
    complaint = chain.post(complaint_request(
        customer={"name": "赵女士", "phone": number, "language": "zh"}, category="service_quality",
        description=f"赵女士说刘海剪坏了，请回电 {number[:3]}-{number[3:7]}-{number[7:]} 或 zhao@example.com",
        severity_flags=[], products=[], service={"code": "CUT", "name": "剪发", "technician_id": "T-042"}))
    case_id = complaint["id"]
    chain.case(case_id, what="the complaint's case")
    chain.task(case_id, "assign", {"owner": "INV-7"})
    chain.task(case_id, "respond", {"message": "您好，已收到", "channel": "phone"})
    chain.task(case_id, "record_findings", {
        "facts": f"赵女士的刘海比约定短了 2 厘米，技师 T-042 未确认长度；顾客手机 {number}", "service_log_checked": True,
        "product_batch_checked": False, "root_cause": "剪前未与顾客确认长度", "responsibility": "ours",
        "signed_by": "INV-7"}, role="investigator")
    chain.task(case_id, "propose_remedy", {"type": "redo_service", "amount": 0})
    chain.task(case_id, "fulfil", {"note": "三天内免费修剪"})
    chain.task(case_id, "notify_customer", {"measures": "为赵女士免费修剪并致歉", "completed_at": chain.clock.now().isoformat(),
                                            "responsible": "INV-7", "follow_up": "三天后回访"})
    chain.task(case_id, "open_corrective_action", {"action": "剪前复述长度并请顾客确认",
                                                   "owner": "SM-1", "due": (chain.clock.now() + timedelta(days=14)).isoformat()})
    chain.clock.advance(timedelta(days=3, hours=1))

    def follow_up():
        listed = chain.ok("GET", "aftercare", "/v1/visits", "aftercare_agent", params={"limit": 200})["items"]
        return next((v["id"] for v in listed if v.get("case_id") == case_id), None)
    visit_id = wait_until(follow_up, "the case's follow-up visit")
    call = {"outcome": "reached", "answers": {"met_expectations": True, "discomfort": False, "satisfaction": 5,
                                              "resolved": True}}
    unknown = chain.call("POST", "aftercare", f"/v1/visits/{visit_id}/attempts", "aftercare_agent",
                         json={**call, "standard_answer": "no-such-answer"})
    assert unknown.status_code == 400 and set(jsonbody(unknown)["error"]["fields"]) == {"standard_answer"}
    chain.ok("POST", "aftercare", f"/v1/visits/{visit_id}/attempts", "aftercare_agent",
             json={**call, "standard_answer": "service-quality-visit-follow-up-zh"})
    chain.case(case_id, when=lambda c: c["state"] == "closed", what="the case closed satisfied")

    def exported():
        answer = chain.call("GET", "reporting", "/v1/exports/case-library.csv", "hq_admin", "*",
                            params={"category": "service_quality"})
        assert answer.status_code == 200, answer.text
        rows = list(csv.DictReader(io.StringIO(answer.content.decode("utf-8-sig"))))
        return next((r for r in rows if r["case_id"] == case_id), None)
    row = wait_until(exported, "the closed case in the case library")
    text = " ".join(row.values())
    for personal in (number, number[3:7], "赵女士", "zhao@example.com", "INV-7", "T-042", "SM-1"):
        assert personal not in text, personal
    assert "刘海" in text and "剪前未与顾客确认长度" in text and "免费修剪" in text
    assert row["outcome"] == "satisfied" and row["follow_up_score"] == "5"
    xlsx = chain.call("GET", "reporting", "/v1/exports/case-library.xlsx", "hq_admin", "*",
                      params={"category": "service_quality"})
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert chain.call("GET", "reporting", "/v1/exports/case-library.csv", "front_desk").status_code == 403

    def used():  # the visit's answer, and the satisfaction that followed it
        listed = chain.ok("GET", "reporting", "/v1/kpis/standard-answers", "hq_analyst", "*")["answers"]
        return next((a for a in listed if a["standard_answer"] == "service-quality-visit-follow-up-zh"), None)
    usage = wait_until(used, "reporting to count the visit's standard answer")
    assert (usage["used"], usage["followed_up"], usage["mean_score"]) == (1, 1, 5)
    assert uuid.UUID(case_id)
