"""Cases end to end over the real bus: intake and investigation run in the test process on one
clock the tests move (never wait out), with their relays and notification senders. A complaint
posted to intake opens its case; the case process's timers warn, breach and escalate; staff
work the tasks over HTTP; the customer's first response goes out through intake."""
import json
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from shared.messaging.relay import Publisher
from shared.testing.fixtures import jsonbody, wait_until
from shared.testing.samples import COMPLAINT_REQUEST, complaint_request

pytestmark = pytest.mark.e2e
SHANGHAI = ZoneInfo("Asia/Shanghai")
FINDINGS = {"facts": "染发剂批次 B2026-11-03 与顾客头皮红肿时间吻合", "service_log_checked": True,
            "product_batch_checked": True, "root_cause": "未做皮肤测试", "responsibility": "ours",
            "signed_by": "T-001"}


def bearer(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


class Chain:
    """Intake and investigation, their relays and senders, one clock."""

    def __init__(self, http, token, intake, investigation, staff, customers, cases_bus, clock):
        self.http, self.token, self.intake, self.investigation = http, token, intake, investigation
        self.staff, self.customers, self.bus, self.clock = staff, customers, cases_bus, clock

    def post_complaint(self, body=None, branch="SH001") -> dict:
        response = self.http.post(self.intake.url("/v1/complaints"), json=body or COMPLAINT_REQUEST,
                                  headers=bearer(self.token("front_desk", branch=branch)), timeout=10)
        assert response.status_code == 201, response.text
        return response.json()

    def case(self, case_id, role="store_manager", branch="SH001", **kwargs):
        return self.http.get(self.investigation.url(f"/v1/cases/{case_id}"),
                             headers=bearer(self.token(role, branch=branch, **kwargs)), timeout=10)

    def wait_for_case(self, case_id) -> dict:
        return wait_until(lambda: self.case(case_id).status_code == 200 and jsonbody(self.case(case_id)),
                          f"case {case_id} to open")

    def task(self, case_id, task, body, role="store_manager", branch="SH001", subject=None):
        return self.http.post(self.investigation.url(f"/v1/cases/{case_id}/tasks/{task}"), json=body,
                              headers=bearer(self.token(role, branch=branch, subject=subject)), timeout=10)

    def events(self, case_id, event_type, count=1, timeout=15):
        return [m["body"] for m in self.bus.wait_for(
            lambda m: m["body"]["correlation_id"] == case_id and m["body"]["type"] == event_type, timeout, count)]

    def seen(self, case_id, event_type) -> list[dict]:
        return [m["body"] for m in self.bus.messages
                if m["body"]["correlation_id"] == case_id and m["body"]["type"] == event_type]


@pytest.fixture
def chain(http, token, clock, start_service, start_relay, start_sender, database_factory, bus_listener):
    from services.intake.service import IntakeService

    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))  # 10:00 in Shanghai
    cases_bus = bus_listener("investigation.events")
    investigation_db = database_factory("investigation")
    investigation = start_service("investigation", clock=clock, database_url=investigation_db)
    start_relay(investigation_db)
    staff = start_sender(investigation_db, service="investigation")
    intake_db = database_factory("intake")
    intake = start_service("intake", clock=clock, database_url=intake_db)
    start_relay(intake_db)
    customers = start_sender(intake_db, service="intake", on_outcome=IntakeService.message_outcome)
    chain = Chain(http, token, intake, investigation, staff, customers, cases_bus, clock)
    chain.investigation_db = investigation_db
    return chain


def staff_notices(chain, address_part: str) -> list[dict]:
    return [m for m in chain.staff.notifier.sent if m["audience"] == "staff" and address_part in m["recipient"]]


def test_an_urgent_allergy_case_waits_for_the_store_manager_then_escalates_to_the_region_and_hq(chain):
    complaint = chain.post_complaint()
    assert complaint["priority"] == "urgent"
    case = chain.wait_for_case(complaint["id"])
    received = datetime.fromisoformat(complaint["received_at"])
    [assign] = case["open_tasks"]
    assert assign["name"] == "assign" and "store_manager" in assign["roles"] and "front_desk" not in assign["roles"]
    assert datetime.fromisoformat(assign["due"]) == received + timedelta(hours=1)
    assert case["sla"]["first_response"]["state"] == "running" and case["escalation_level"] == 0

    chain.clock.advance(minutes=48)
    [warning] = chain.events(complaint["id"], "sla_warning")
    assert warning["payload"]["clock"] == "first_response"
    wait_until(lambda: staff_notices(chain, "role:store_manager;branch:SH001"), "the store manager's warning")

    chain.clock.advance(minutes=12)  # 1 hour: the deadline
    [escalated] = chain.events(complaint["id"], "case_escalated")
    assert escalated["payload"]["level"] == 1 and escalated["payload"]["to_role"] == "regional_manager"
    assert escalated["payload"]["to_region"] == "east"
    wait_until(lambda: staff_notices(chain, "role:regional_manager;region:east"), "the regional manager's notice")

    chain.clock.advance(hours=1)  # one more target's length: the next level
    escalations = chain.events(complaint["id"], "case_escalated", count=2)
    assert escalations[1]["payload"]["level"] == 2 and escalations[1]["payload"]["to_role"] == "hq_admin"
    wait_until(lambda: [m for m in staff_notices(chain, "role:hq_admin") if complaint["id"] == m["subject_id"]],
               "hq_admin's notice")
    case = jsonbody(chain.case(complaint["id"]))
    assert case["escalation_level"] == 2 and case["overdue"] is True
    assert case["sla"]["first_response"]["state"] == "breached"
    assert [e["what"] for e in case["timeline"]][:1] == ["case_opened"]
    assert {"sla_warning", "sla_breached", "case_escalated"} <= {e["what"] for e in case["timeline"]}
    assert len(chain.seen(complaint["id"], "sla_warning")) == 1  # once, however many timers
    # Operators see the polls at work: timers fired, none left due.
    replica = chain.http.get(chain.investigation.url("/metrics")).text
    assert 'closeloop_process_timers_total{outcome="fired"}' in replica
    shared = chain.http.get(chain.investigation.url("/metrics/shared")).text
    assert 'closeloop_process_timers_due{service="investigation"} 0' in shared


def test_a_general_complaint_posted_half_an_hour_before_closing_gets_its_deadlines_in_opening_hours(chain):
    from shared.calendar.policy import load_policy

    branch = load_policy().branch("SH001")
    chain.clock.set(datetime(2026, 11, 22, 21, 30, tzinfo=SHANGHAI))
    complaint = chain.post_complaint(complaint_request(description="前台接待态度冷淡", severity_flags=[],
                                                       category="staff_attitude", service=None, products=[]))
    assert complaint["priority"] == "general"
    case = chain.wait_for_case(complaint["id"])
    clocks = case["sla"]
    for name in ("first_response", "resolution"):
        for key in ("due", "warning_at"):
            instant = datetime.fromisoformat(clocks[name][key])
            assert branch.is_open(instant), (name, key, instant.astimezone(SHANGHAI))
    due = datetime.fromisoformat(clocks["first_response"]["due"]).astimezone(SHANGHAI)
    assert due == datetime(2026, 11, 23, 21, 30, tzinfo=SHANGHAI)
    # Of the 24 hours the branch is open 12 (21:30-22:00, then 10:00-21:30): the warning comes
    # after 80% of those, at 19:06 next day.
    assert datetime.fromisoformat(clocks["first_response"]["warning_at"]).astimezone(SHANGHAI) == \
        datetime(2026, 11, 23, 19, 6, tzinfo=SHANGHAI)
    # Nothing fires overnight: the warning comes when the clock reaches it, not before.
    chain.clock.set(datetime(2026, 11, 23, 19, 5, tzinfo=SHANGHAI))
    chain.clock.advance(minutes=2)
    chain.events(complaint["id"], "sla_warning")
    assert chain.seen(complaint["id"], "case_escalated") == []


def publish_raw(amqp_uri, envelope):
    publisher = Publisher(amqp_uri)
    try:
        publisher.publish_batch([(f"{envelope['source']}.events", envelope["type"], json.dumps(envelope),
                                  envelope["event_id"])])
    finally:
        publisher.close()


def test_a_duplicated_complaint_registered_opens_one_case(chain, amqp_uri, bus_listener):
    registered_bus = bus_listener("intake.events", "complaint_registered")
    complaint = chain.post_complaint()
    [registered] = [m["body"] for m in registered_bus.wait_for(
        lambda m: m["body"]["payload"]["complaint_id"] == complaint["id"])]
    chain.wait_for_case(complaint["id"])
    publish_raw(amqp_uri, registered)  # delivered again, same event id
    publish_raw(amqp_uri, {**registered, "event_id": str(uuid.uuid4())})  # replayed under a new id
    later = chain.post_complaint()  # handled after both copies: the queue is in order
    chain.wait_for_case(later["id"])
    chain.events(later["id"], "case_opened")
    assert len(chain.seen(complaint["id"], "case_opened")) == 1


def test_staff_work_the_case_in_the_error_order_and_the_first_response_reaches_the_customer(chain):
    complaint = chain.post_complaint()
    case_id = complaint["id"]
    chain.wait_for_case(case_id)
    # 404 before anything for another branch's staff; 409 before any body check.
    assert chain.task(case_id, "assign", {"owner": "S-1"}, branch="SH002").status_code == 404
    not_waiting = chain.task(case_id, "record_findings", {"nonsense": True})
    assert not_waiting.status_code == 409 and "assign" in jsonbody(not_waiting)["error"]["message"]
    forbidden = chain.task(case_id, "assign", {"owner": "FD-1"}, role="front_desk")
    assert forbidden.status_code == 403
    bad = chain.task(case_id, "assign", {"owner": "", "extra": 1})
    assert bad.status_code == 400 and set(jsonbody(bad)["error"]["fields"]) == {"owner", "extra"}

    tasks = chain.http.get(chain.investigation.url("/v1/tasks"), headers=bearer(chain.token("store_manager",
                                                                                             branch="SH001")))
    assert [t["name"] for t in jsonbody(tasks)["items"] if t["case_id"] == case_id] == ["assign"]

    assigned = chain.task(case_id, "assign", {"owner": "INV-7"})
    assert assigned.status_code == 200, assigned.text
    assert jsonbody(assigned)["owner"] == "INV-7" and [t["name"] for t in jsonbody(assigned)["open_tasks"]] == [
        "respond"]
    # The owner responds, whatever their role; another investigator of the branch may too, a front desk not.
    assert chain.task(case_id, "respond", {"message": "x", "channel": "sms"}, role="front_desk").status_code == 403
    owner_tasks = jsonbody(chain.http.get(chain.investigation.url("/v1/tasks"), headers=bearer(
        chain.token("front_desk", branch="SH001", subject="INV-7"))))["items"]
    assert [t["name"] for t in owner_tasks if t["case_id"] == case_id] == ["respond"]
    responded = chain.task(case_id, "respond", {"message": "王女士您好，我们已收到您的反馈，店长今天会联系您。",
                                                "channel": "sms"}, role="front_desk", subject="INV-7")
    assert responded.status_code == 200, responded.text
    assert jsonbody(responded)["sla"]["first_response"]["state"] == "met"
    [acknowledged] = chain.events(case_id, "case_acknowledged")
    assert acknowledged["payload"]["within_sla"] is True and acknowledged["payload"]["actor"] == "INV-7"
    # Intake, the contact holder, sent it; its outcome is on the case's timeline.
    wait_until(lambda: [m for m in chain.customers.notifier.sent if "店长今天会联系您" in m["body"]],
               "the first response to reach the customer")
    wait_until(lambda: "customer_message_sent" in [e["what"] for e in jsonbody(chain.case(case_id))["timeline"]],
               "the message's outcome on the timeline")
    wait_until(lambda: intake_status(chain, case_id) == "acknowledged", "intake to follow the case")

    missing = chain.task(case_id, "record_findings", {"facts": "x"}, role="investigator")
    assert missing.status_code == 400
    assert {"service_log_checked", "product_batch_checked", "root_cause", "responsibility",
            "signed_by"} <= set(jsonbody(missing)["error"]["fields"])
    found = chain.task(case_id, "record_findings", FINDINGS, role="investigator")
    assert found.status_code == 200, found.text
    body = jsonbody(found)
    assert body["state"] == "investigated" and body["findings"]["responsibility"] == "ours"
    assert [t["name"] for t in body["open_tasks"]] == ["propose_remedy"]
    [recorded] = chain.events(case_id, "findings_recorded")
    assert recorded["payload"]["signed_by"] == "T-001"
    assert [e["actor"] for e in body["timeline"] if e["what"] == "findings_recorded"] != []
    wait_until(lambda: intake_status(chain, case_id) == "investigating", "intake to see the investigation")


def intake_status(chain, complaint_id) -> str:
    return jsonbody(chain.http.get(chain.intake.url(f"/v1/complaints/{complaint_id}"),
                                   headers=bearer(chain.token("front_desk", branch="SH001"))))["status"]


def test_waiting_for_the_customer_stops_the_clocks_and_moves_the_deadlines_on_by_the_pause(chain):
    complaint = chain.post_complaint()
    case_id = complaint["id"]
    chain.wait_for_case(case_id)
    assert chain.task(case_id, "assign", {"owner": "INV-7"}).status_code == 200
    pause_url = chain.investigation.url(f"/v1/cases/{case_id}/pause")
    early = chain.http.post(pause_url, json={"reason": "顾客出差"}, headers=bearer(chain.token("store_manager",
                                                                                                branch="SH001")))
    assert early.status_code == 422  # no first response yet
    assert chain.task(case_id, "respond", {"message": "已电话联系", "channel": "phone"}).status_code == 200
    resolution_due = datetime.fromisoformat(jsonbody(chain.case(case_id))["sla"]["resolution"]["due"])
    paused = chain.http.post(pause_url, json={"reason": "等顾客到店复查"},
                             headers=bearer(chain.token("investigator", branch="SH001")))
    assert paused.status_code == 200, paused.text
    assert jsonbody(paused)["sla"]["resolution"]["paused"] is True
    again = chain.http.post(pause_url, json={}, headers=bearer(chain.token("investigator", branch="SH001")))
    assert again.status_code == 409  # before the body check

    chain.clock.advance(days=10)  # past the resolution deadline, and its warning, while waiting
    case = jsonbody(chain.case(case_id))
    assert case["overdue"] is False and case["sla"]["resolution"]["state"] != "breached"
    resumed = chain.http.post(chain.investigation.url(f"/v1/cases/{case_id}/resume"), json={"note": "顾客回来了"},
                              headers=bearer(chain.token("investigator", branch="SH001")))
    assert resumed.status_code == 200, resumed.text
    after = datetime.fromisoformat(jsonbody(resumed)["sla"]["resolution"]["due"])
    assert after - resolution_due >= timedelta(days=10)
    [resumed_event] = chain.events(case_id, "sla_resumed")
    assert resumed_event["payload"]["paused_seconds"] == 10 * 86400
    assert chain.seen(case_id, "sla_warning") == []  # nothing fell due during the wait
    chain.clock.set(after)
    chain.events(case_id, "sla_breached")


def test_praise_is_acknowledged_passed_on_and_closed(chain):
    praise = chain.post_complaint(complaint_request(kind="praise", description="托尼老师剪得很好", severity_flags=[],
                                                    category=None, products=[]))
    case = chain.wait_for_case(praise["id"])
    assert [t["name"] for t in case["open_tasks"]] == ["acknowledge"]
    assert chain.task(praise["id"], "acknowledge", {"message": "谢谢您的表扬", "channel": "in_person"},
                      role="front_desk").status_code == 200
    passed = chain.task(praise["id"], "pass_on", {"to": ["T-017"], "note": "表扬托尼"})
    assert passed.status_code == 200, passed.text
    assert jsonbody(passed)["state"] == "closed" and jsonbody(passed)["open_tasks"] == []
    [closed] = chain.events(praise["id"], "case_closed")
    assert closed["payload"]["outcome"] == "passed_on"


def test_a_changed_process_file_leaves_a_running_case_on_its_old_version(chain, start_service, tmp_path):
    from services.investigation.dependencies import PROCESS_DIR

    first = chain.post_complaint()
    old = chain.wait_for_case(first["id"])
    chain.investigation.runner.stop()
    edited = tmp_path / "processes"
    shutil.copytree(PROCESS_DIR, edited)
    path = edited / "complaint_case.bpmn"
    path.write_text(path.read_text().replace('name="Assign an owner"', 'name="Name the owner"'))
    chain.investigation = start_service("investigation", clock=chain.clock, database_url=chain.investigation_db,
                                        PROCESS_DIR=str(edited))
    second = chain.post_complaint()
    new = chain.wait_for_case(second["id"])
    assert new["process"] != old["process"] and new["open_tasks"][0]["title"] == "Name the owner"
    assert jsonbody(chain.case(first["id"]))["process"] == old["process"]
    assert chain.task(first["id"], "assign", {"owner": "S-1"}).status_code == 200
    chain.clock.advance(minutes=48)  # the old case's timers still run
    chain.events(second["id"], "sla_warning")
    assert chain.seen(first["id"], "sla_warning") != []


def test_a_service_killed_mid_case_resumes_every_case_with_its_timers(chain, start_service):
    complaints = [chain.post_complaint() for _ in range(3)]
    for c in complaints:
        chain.wait_for_case(c["id"])
    chain.investigation.runner.kill()
    chain.clock.advance(minutes=61)  # warnings and breaches fell due while it was down
    chain.investigation = start_service("investigation", clock=chain.clock, database_url=chain.investigation_db)
    for c in complaints:
        chain.events(c["id"], "case_escalated")
        assert len(chain.seen(c["id"], "sla_warning")) == 1


def test_two_replicas_fire_each_timer_once(chain, start_service):
    """A second replica on the same database polls side by side: every case is warned and
    escalated exactly once."""
    start_service("investigation", clock=chain.clock, database_url=chain.investigation_db)
    complaints = [chain.post_complaint() for _ in range(6)]
    for c in complaints:
        chain.wait_for_case(c["id"])
    chain.clock.advance(minutes=61)
    for c in complaints:
        chain.events(c["id"], "case_escalated")
    later = chain.post_complaint()  # by the time its case opens, both replicas had their rounds
    chain.wait_for_case(later["id"])
    for c in complaints:
        assert len(chain.seen(c["id"], "sla_warning")) == 1
        assert len(chain.seen(c["id"], "case_escalated")) == 1
        assert len([m for m in chain.staff.notifier.sent if m["subject_id"] == c["id"]
                    and "role:regional_manager" in m["recipient"]]) == 1


def tasks_of(chain, role="store_manager", branch="SH001", **params) -> dict:
    response = chain.http.get(chain.investigation.url("/v1/tasks"), params=params,
                              headers=bearer(chain.token(role, branch=branch)), timeout=10)
    assert response.status_code == 200, response.text
    return jsonbody(response)


def test_the_task_list_counts_and_lists_the_breaching_soon_and_the_breached_tasks_with_filters(chain):
    urgent = chain.post_complaint()
    general = chain.post_complaint(complaint_request(severity_flags=[], description="毛巾不干净"))
    for complaint in (urgent, general):
        chain.wait_for_case(complaint["id"])
    warned = datetime.fromisoformat(jsonbody(chain.case(urgent["id"]))["sla"]["first_response"]["warning_at"])
    assert tasks_of(chain)["counts"] == {"waiting": 2, "soon": 0, "breached": 0}
    [first] = tasks_of(chain, limit=1)["items"]
    assert first["case_id"] == urgent["id"] and datetime.fromisoformat(first["warning_at"]) == warned

    chain.clock.set(warned)  # the urgent case's first response is breaching soon
    listed = tasks_of(chain, deadline="soon")
    assert listed["counts"] == {"waiting": 2, "soon": 1, "breached": 0}
    assert [t["case_id"] for t in listed["items"]] == [urgent["id"]]
    assert tasks_of(chain, deadline="breached")["items"] == []

    chain.clock.set(datetime.fromisoformat(first["due"]))  # due now: breached
    assert tasks_of(chain)["counts"] == {"waiting": 2, "soon": 0, "breached": 1}
    assert [t["case_id"] for t in tasks_of(chain, deadline="breached")["items"]] == [urgent["id"]]
    # the filters narrow the list and its counts; the deadline narrows the list only
    assert tasks_of(chain, priority="general", deadline="breached") == {
        "items": [], "next_cursor": None, "counts": {"waiting": 1, "soon": 0, "breached": 0}}
    assert tasks_of(chain, branch="SH002")["counts"]["waiting"] == 0
    assert tasks_of(chain, task="assign")["counts"]["waiting"] == 2
    # escalated to HQ (the first response an hour late): HQ's list has it among the breached
    assert urgent["id"] in [t["case_id"] for t in tasks_of(chain, role="hq_admin", branch=None,
                                                            deadline="breached")["items"]]
    bad = chain.http.get(chain.investigation.url("/v1/tasks"), params={"deadline": "late", "priority": "x"},
                         headers=bearer(chain.token("store_manager", branch="SH001")))
    assert bad.status_code == 400 and set(jsonbody(bad)["error"]["fields"]) == {"deadline", "priority"}


def test_reads_are_scoped_and_the_query_is_checked(chain):
    complaint = chain.post_complaint()
    chain.wait_for_case(complaint["id"])
    assert chain.case(complaint["id"], branch="BJ001").status_code == 404
    assert chain.case(complaint["id"], role="auditor").status_code == 403
    assert chain.case("not-a-uuid").status_code == 404
    listed = chain.http.get(chain.investigation.url("/v1/cases"), params={"overdue": "true"},
                            headers=bearer(chain.token("regional_manager", region="east")))
    assert listed.status_code == 200 and complaint["id"] not in [c["id"] for c in jsonbody(listed)["items"]]
    chain.clock.advance(minutes=61)
    chain.events(complaint["id"], "sla_breached")
    listed = chain.http.get(chain.investigation.url("/v1/cases"), params={"overdue": "true", "limit": 1},
                            headers=bearer(chain.token("regional_manager", region="east")))
    assert [c["id"] for c in jsonbody(listed)["items"]] == [complaint["id"]]
    bad = chain.http.get(chain.investigation.url("/v1/cases"), params={"state": "lost", "limit": "0", "x": "1"},
                         headers=bearer(chain.token("hq_admin")))
    assert bad.status_code == 400 and set(jsonbody(bad)["error"]["fields"]) == {"state", "limit", "x"}
    cursor = chain.http.get(chain.investigation.url("/v1/tasks"), params={"cursor": "garbage"},
                            headers=bearer(chain.token("hq_admin")))
    assert cursor.status_code == 400 and "cursor" in jsonbody(cursor)["error"]["fields"]
    no_token = chain.http.get(chain.investigation.url(f"/v1/cases/{complaint['id']}"))
    assert no_token.status_code == 401
    document = jsonbody(chain.http.get(chain.investigation.url("/openapi.json")))
    assert {"/v1/cases", "/v1/tasks", "/v1/cases/{case_id}/tasks/{task}"} <= set(document["paths"])
