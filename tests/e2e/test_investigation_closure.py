"""Cases to closure end to end over the real bus (issue 9): intake and investigation in the test
process on one clock the tests move, with their relays and senders; a plain kombu publisher
stands in for aftercare. A remedy above the proposer's authority waits for the right approver;
a promise not kept breaks and escalates; the written result resolves the case; the follow-up's
outcome closes or reopens it; our own fault needs a corrective action first."""
import uuid
from datetime import datetime, timedelta

import pytest

from services.investigation.handlers import ADVERSE_REACTION_CASES
from shared.messaging.envelope import build_event
from shared.testing.fixtures import jsonbody, wait_until
from tests.e2e.test_investigation_cases import FINDINGS, bearer, chain, intake_status, publish_raw, staff_notices

pytestmark = pytest.mark.e2e
__all__ = ["chain"]  # the fixture, shared with test_investigation_cases


def call(chain, case_id, task, body, role="store_manager", branch="SH001", region=None, subject=None):
    token = chain.token(role, branch=None if region else branch, region=region, subject=subject)
    return chain.http.post(chain.investigation.url(f"/v1/cases/{case_id}/tasks/{task}"), json=body,
                           headers=bearer(token), timeout=10)


def done(response) -> dict:
    assert response.status_code == 200, response.text
    return jsonbody(response)


def waiting(case: dict) -> list[str]:
    return [t["name"] for t in case["open_tasks"]]


def to_remedy(chain, responsibility="customer_misuse") -> str:
    """A complaint posted, assigned, answered by phone and investigated: waiting for a remedy."""
    complaint = chain.post_complaint()
    case_id = complaint["id"]
    chain.wait_for_case(case_id)
    done(call(chain, case_id, "assign", {"owner": "INV-7"}))
    done(call(chain, case_id, "respond", {"message": "您好，已收到", "channel": "phone"}))
    case = done(call(chain, case_id, "record_findings", {**FINDINGS, "responsibility": responsibility},
                     role="investigator"))
    assert waiting(case) == ["propose_remedy"]
    return case_id


def resolve(chain, case_id, remedy=None) -> dict:
    done(call(chain, case_id, "propose_remedy", remedy or {"type": "apology", "amount": 0}))
    done(call(chain, case_id, "fulfil", {"note": "店长当面致歉"}))
    return done(call(chain, case_id, "notify_customer", {
        "measures": "店长当面致歉并免费护理一次", "completed_at": chain.clock.now().isoformat(),
        "responsible": "INV-7", "follow_up": "三天后回访"}))


def aftercare(chain, amqp_uri, event_type, payload, branch="SH001", correlation_id=None, occurred_at=None) -> dict:
    """What aftercare will publish, published as it will be: an envelope on aftercare.events."""
    envelope = build_event(event_type, payload, branch_code=branch,
                           correlation_id=correlation_id or payload.get("case_id") or payload["sale_id"],
                           occurred_at=occurred_at or chain.clock.now(), sequence=1, source="aftercare")
    publish_raw(amqp_uri, dict(envelope))
    return dict(envelope)


SALE = {"customer": {"name": "赵女士", "phone": "13700002222", "contact_consent": True, "language": "zh"},
        "sold_at": "2026-11-20T15:00:00+08:00",
        "items": [{"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour", "technician_id": "T-017"}]}


def adverse_reaction_case(chain, amqp_uri, sale: dict = SALE, description: str = "染发后头皮红肿") -> tuple[str, str]:
    """A sale posted to intake, then an adverse reaction after it reported as aftercare will:
    (sale id, the id of the case it opened)."""
    answer = chain.http.post(chain.intake.url("/v1/sales"), json=sale,
                             headers=bearer(chain.token("front_desk", branch="SH001")), timeout=10)
    assert answer.status_code == 201, answer.text
    sale_id, visit_id = jsonbody(answer)["id"], str(uuid.uuid4())
    masked = sale["customer"]["name"][0] + "**"
    report = {"visit_id": visit_id, "kind": "return", "case_id": None, "sale_id": sale_id, "customer_ref": None,
              "technician_id": "T-017", "product": None, "description": description, "severity_flags": ["allergy"],
              "reported_at": chain.clock.now().isoformat(), "customer_masked": {"name": masked},
              "customer_language": "zh"}
    aftercare(chain, amqp_uri, "adverse_reaction_reported", report, correlation_id=sale_id)
    case_id = str(uuid.uuid5(ADVERSE_REACTION_CASES, visit_id))
    chain.wait_for_case(case_id)
    return sale_id, case_id


def follow_up(case_id, event_type="visit_completed", **fields) -> dict:
    payload = {"visit_id": str(uuid.uuid4()), "kind": "follow_up", "case_id": case_id, "sale_id": None,
               "customer_ref": None}
    if event_type == "visit_completed":
        payload.update(answers={"satisfaction": fields.get("score", 5), "resolved": fields.get("resolved", True)},
                       score=fields.get("score", 5))
    elif event_type == "dissatisfaction_reported":
        payload.update(score=fields.get("score", 2), resolved=fields.get("resolved"), comment="颜色还是不均匀")
    elif event_type == "visit_abandoned":
        payload.update(attempts=3, reason="no answer")
    return payload


def test_a_refund_of_5000_waits_for_the_regional_manager_of_the_branch_s_region(chain):
    case_id = to_remedy(chain)
    proposed = done(call(chain, case_id, "propose_remedy", {"type": "refund", "amount": 5000, "currency": "CNY",
                                                             "deadline": None, "note": "全额退款"}))
    [approve] = proposed["open_tasks"]
    assert approve["name"] == "approve" and approve["roles"] == ["regional_manager", "hq_admin"]
    assert datetime.fromisoformat(approve["due"]) == chain.clock.now() + timedelta(hours=24)
    [event] = chain.events(case_id, "remedy_proposed")
    assert (event["payload"]["status"], event["payload"]["amount"]) == ("awaiting_approval", 5000)
    wait_until(lambda: staff_notices(chain, "role:regional_manager;region:east"), "the approver's notice")
    queue = jsonbody(chain.http.get(chain.investigation.url("/v1/tasks"),
                                    headers=bearer(chain.token("regional_manager", region="east"))))["items"]
    assert [t["name"] for t in queue if t["case_id"] == case_id] == ["approve"]

    refused = call(chain, case_id, "approve", {"note": "同意"})  # the store manager proposed it: not enough
    assert refused.status_code == 422
    error = jsonbody(refused)["error"]
    assert "regional_manager" in error["message"] and error["fields"]["needed_role"] == ["regional_manager"]
    assert call(chain, case_id, "approve", {}, role="regional_manager", region="north").status_code == 404
    assert call(chain, case_id, "approve", {}, role="investigator").status_code == 403  # no authority at all
    assert call(chain, case_id, "reject", {"reason": "x"}).status_code == 422  # nor may it refuse
    assert call(chain, case_id, "approve", {"note": 5}, role="regional_manager", region="east").status_code == 400

    chain.clock.advance(hours=24)  # the approval's own deadline: the next role up hears of it
    breach = chain.events(case_id, "sla_breached")[0]
    assert breach["payload"]["clock"] == "approval" and breach["payload"]["level"] == 1
    wait_until(lambda: [m for m in staff_notices(chain, "role:hq_admin") if m["subject_id"] == case_id],
               "hq_admin to hear of the overdue approval")

    stale = call(chain, case_id, "approve", {"remedy_id": str(uuid.uuid4())}, role="regional_manager", region="east")
    assert stale.status_code == 409  # not the remedy awaiting approval
    rejected = done(call(chain, case_id, "reject", {"reason": "先按部分退款处理",
                                                     "remedy_id": proposed["remedies"][0]["id"]},
                         role="regional_manager", region="east"))
    assert waiting(rejected) == ["propose_remedy"] and rejected["remedies"][0]["status"] == "rejected"
    assert rejected["sla"]["approval"]["state"] in ("met", "met_late")
    [event] = chain.events(case_id, "remedy_rejected")
    assert event["payload"]["reason"] == "先按部分退款处理"
    again = done(call(chain, case_id, "propose_remedy", {"type": "partial_refund", "amount": 1500}))
    assert waiting(again) == ["fulfil"]  # within the store manager's own 2,000
    [approved] = chain.events(case_id, "remedy_approved")
    assert approved["payload"]["within_authority"] is True and approved["payload"]["amount"] == 1500


def test_a_redye_promised_within_10_days_and_not_given_breaks_and_escalates(chain):
    case_id = to_remedy(chain)
    promised = done(call(chain, case_id, "propose_remedy", {"type": "redye", "amount": 0}))
    [fulfil] = promised["open_tasks"]
    deadline = chain.clock.now() + timedelta(days=10)
    assert fulfil["name"] == "fulfil" and datetime.fromisoformat(fulfil["due"]) == deadline
    [made] = chain.events(case_id, "promise_made")
    assert datetime.fromisoformat(made["payload"]["deadline"]) == deadline

    chain.clock.advance(days=7)  # the resolution target passes first: level 1
    chain.events(case_id, "case_escalated")
    chain.clock.advance(days=3)
    [broken] = chain.events(case_id, "promise_broken")
    assert broken["payload"]["type"] == "redye"
    escalated = [e for e in chain.events(case_id, "case_escalated", count=2)
                 if e["payload"].get("reason") == "promise_broken"]
    assert escalated and escalated[0]["payload"]["to_role"] == "hq_admin"  # the resolution breach took level 1
    case = done(call(chain, case_id, "fulfil", {}))
    assert case["remedies"][0]["promise"] == "broken" and waiting(case) == ["notify_customer"]
    [fulfilled] = chain.events(case_id, "remedy_fulfilled")
    assert fulfilled["payload"]["promise"] == "broken" and chain.seen(case_id, "promise_kept") == []


def test_the_written_result_resolves_an_unsatisfied_follow_up_reopens_higher_and_a_satisfied_one_closes(
        chain, amqp_uri):
    case_id = to_remedy(chain)
    resolved = resolve(chain, case_id)
    assert resolved["state"] == "resolved" and waiting(resolved) == ["await_follow_up"]
    assert resolved["written_result"]["responsible"] == "INV-7"
    assert resolved["sla"]["resolution"]["state"] == "met"
    [event] = chain.events(case_id, "case_resolved")
    assert (event["payload"]["record_type"], event["payload"]["record_id"]) == ("complaint", case_id)
    wait_until(lambda: [m for m in chain.customers.notifier.sent if "店长当面致歉并免费护理一次" in m["body"]],
               "the written result to reach the customer")
    wait_until(lambda: intake_status(chain, case_id) == "resolved", "intake to see the case resolved")
    forbidden = call(chain, case_id, "await_follow_up", {})
    assert forbidden.status_code == 403 and "aftercare" in jsonbody(forbidden)["error"]["message"]

    unsatisfied = follow_up(case_id, "dissatisfaction_reported", score=2)
    aftercare(chain, amqp_uri, "dissatisfaction_reported", unsatisfied)
    [reopened] = chain.events(case_id, "case_reopened")
    assert reopened["payload"]["escalation_level"] == 1 and reopened["payload"]["score"] == 2
    case = jsonbody(chain.case(case_id))
    assert case["state"] == "reopened" and case["owner"] == "INV-7" and waiting(case) == ["propose_remedy"]
    assert case["escalation_level"] == 1 and case["reopened"] == 1
    assert case["sla"]["resolution"]["state"] == "running"  # a new resolution clock
    wait_until(lambda: intake_status(chain, case_id) == "investigating", "intake to see it reopened")
    # The same follow-up told again (a visit_completed with the low score) changes nothing.
    aftercare(chain, amqp_uri, "visit_completed", {**follow_up(case_id, score=2),
                                                    "visit_id": unsatisfied["visit_id"]})

    chain.clock.advance(hours=1)
    resolve(chain, case_id, {"type": "voucher", "amount": 300})
    # A follow-up answered before this resolution (a late copy from the first round) is not this one's.
    aftercare(chain, amqp_uri, "visit_completed", follow_up(case_id, score=5),
              occurred_at=chain.clock.now() - timedelta(minutes=30))
    wait_until(lambda: [e for e in jsonbody(chain.case(case_id))["timeline"]
                        if e["what"] == "follow_up_ignored" and e["detail"].get("stale")], "the stale one ignored")
    assert jsonbody(chain.case(case_id))["state"] == "resolved"
    aftercare(chain, amqp_uri, "visit_completed", follow_up(case_id, score=5))
    [closed] = chain.events(case_id, "case_closed")
    assert closed["payload"]["outcome"] == "satisfied"
    case = jsonbody(chain.case(case_id))
    assert case["state"] == "closed" and case["open_tasks"] == [] and case["reopened"] == 1
    assert len(chain.seen(case_id, "case_reopened")) == 1
    wait_until(lambda: intake_status(chain, case_id) == "closed", "intake to see it closed")


def test_our_fault_does_not_close_without_a_corrective_action_and_no_answer_closes_without_feedback(
        chain, amqp_uri):
    case_id = to_remedy(chain, responsibility="ours")
    resolved = resolve(chain, case_id)
    assert waiting(resolved) == ["open_corrective_action"]
    aftercare(chain, amqp_uri, "visit_abandoned", follow_up(case_id, "visit_abandoned"))
    wait_until(lambda: (jsonbody(chain.case(case_id))["follow_up"] or {}).get("pending"), "the outcome heard")
    case = jsonbody(chain.case(case_id))
    assert case["state"] == "resolved" and chain.seen(case_id, "case_closed") == []  # not without the action

    bad = call(chain, case_id, "open_corrective_action", {"action": "染发前必须做皮肤测试", "owner": "SM-1",
                                                           "due": (chain.clock.now() - timedelta(days=1)).isoformat()})
    assert bad.status_code == 422 and "due" in jsonbody(bad)["error"]["fields"]
    due = chain.clock.now() + timedelta(days=30)
    case = done(call(chain, case_id, "open_corrective_action", {"action": "染发前必须做皮肤测试", "owner": "SM-1",
                                                                 "due": due.isoformat()}))
    assert case["state"] == "closed" and case["outcome"] == "no_feedback"
    assert waiting(case) == ["close_corrective_action"]  # tracked to done after the case closed
    [closed] = chain.events(case_id, "case_closed")
    assert closed["payload"] == {**closed["payload"], "outcome": "no_feedback", "corrective_action": "open"}
    chain.clock.advance(days=31)
    wait_until(lambda: "corrective_action_overdue" in [e["what"] for e in jsonbody(chain.case(case_id))["timeline"]],
               "the overdue action chased")
    case = done(call(chain, case_id, "close_corrective_action", {"note": "已培训全体技师"}))
    assert case["corrective_action"]["status"] == "done" and case["open_tasks"] == []
    [action] = chain.events(case_id, "corrective_action_closed")
    assert action["payload"]["on_time"] is False


def test_an_adverse_reaction_opens_an_urgent_case_of_its_own_linked_to_the_sale(chain, amqp_uri):
    sale_id, visit_id = str(uuid.uuid4()), str(uuid.uuid4())
    report = {"visit_id": visit_id, "kind": "return", "case_id": None, "sale_id": sale_id, "customer_ref": "c-ref-1",
              "technician_id": "T-017", "product": {"sku": "DYE-5N", "name": "染发剂", "product_type": "hair_colour",
                                                    "batch": "B2026-11-03"},
              "description": "染发后第二天头皮发痒红肿", "severity_flags": ["allergy"],
              "reported_at": chain.clock.now().isoformat(), "customer_masked": {"name": "王**"},
              "customer_language": "zh"}
    aftercare(chain, amqp_uri, "adverse_reaction_reported", report, correlation_id=sale_id)
    case_id = str(uuid.uuid5(ADVERSE_REACTION_CASES, visit_id))
    case = chain.wait_for_case(case_id)
    assert case["priority"] == "urgent" and case["complaint_id"] is None and case["category"] == "safety"
    assert case["origin"] == {"type": "adverse_reaction", "visit_id": visit_id, "sale_id": sale_id,
                              "technician_id": "T-017", "product": report["product"]}
    assert datetime.fromisoformat(case["sla"]["first_response"]["due"]) == chain.clock.now() + timedelta(hours=1)
    assert waiting(case) == ["assign"] and case["reference"].startswith("SH001-AR-")
    aftercare(chain, amqp_uri, "adverse_reaction_reported", report, correlation_id=sale_id)  # told twice
    [opened] = chain.events(case_id, "case_opened")
    assert opened["payload"]["origin"]["sale_id"] == sale_id
    later = to_remedy(chain)  # handled after the copy: the queue is in order
    assert later and len(chain.seen(case_id, "case_opened")) == 1


def test_the_archive_gives_hq_and_auditors_a_closed_case_with_the_contact_and_logs_the_read(chain, amqp_uri):
    case_id = to_remedy(chain)
    archive = chain.investigation.url(f"/v1/archive/cases/{case_id}")
    auditor = bearer(chain.token("auditor", subject="AUD-1"))
    open_case = chain.http.get(archive, params={"purpose": "年度审计"}, headers=auditor, timeout=10)
    assert open_case.status_code == 409  # the archive holds closed cases
    resolve(chain, case_id)
    aftercare(chain, amqp_uri, "visit_completed", follow_up(case_id, score=4))
    chain.events(case_id, "case_closed")
    wait_until(lambda: intake_status(chain, case_id) == "closed", "intake to see the case closed")

    branch = chain.http.get(archive, params={"purpose": "看看"}, headers=bearer(chain.token("store_manager",
                                                                                             branch="SH001")))
    assert branch.status_code == 403
    other = chain.http.get(archive, params={"purpose": "x"}, headers=bearer(chain.token("store_manager",
                                                                                         branch="SH002")))
    assert other.status_code == 404
    no_purpose = chain.http.get(archive, headers=auditor, timeout=10)
    assert no_purpose.status_code == 400 and "purpose" in jsonbody(no_purpose)["error"]["fields"]
    assert chain.http.get(archive, params={"purpose": "  "}, headers=auditor).status_code == 400

    read = chain.http.get(archive, params={"purpose": "年度审计"}, headers=auditor, timeout=15)
    assert read.status_code == 200, read.text
    body = jsonbody(read)
    assert body["case"]["state"] == "closed" and body["contact"]["phone"] == "13812346138"
    assert body["contact_unavailable"] is None and body["accessed_by"] == "AUD-1"
    [accessed] = chain.events(case_id, "archive_accessed")
    assert accessed["payload"]["purpose"] == "年度审计" and accessed["payload"]["actor"] == "AUD-1"
    assert accessed["payload"]["actor_role"] == "auditor" and accessed["payload"]["contact_read"] is True
    hq = chain.http.get(archive, params={"purpose": "客诉复盘"}, headers=bearer(chain.token("hq_analyst")))
    assert hq.status_code == 200 and len(chain.events(case_id, "archive_accessed", count=2)) == 2
