"""Probes of the archive, the retention of personal data and legal holds, from outside: the
archive's error order, every role and odd purposes; what the archive and a case show once the
retention ran; intake away or silent; an adverse reaction's case; holds kept by both services'
runs and released; a closed case whose corrective action is still open; two runs at once; a
reopened complaint; the scrubbing's reach; the command; the daily timers, and two replicas'.

Tests marked `# Found by the outside probe, fixed:` failed on a defect the probe found."""
import json
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import eventlet
import pytest
import sqlalchemy as sa

from services.intake import handlers as intake_handlers
from services.intake import retention as intake_retention
from services.intake.repository import IntakeStore
from services.investigation import retention as investigation_retention
from services.investigation.repository import InvestigationStore
from shared.calendar.policy import load_policy
from shared.messaging.envelope import build_event
from shared.persistence import anonymisation, db
from shared.persistence.anonymisation import RUN_RECORDS, RUNS
from shared.security.privacy import ANONYMISED as X
from shared.security.privacy import anonymise_text
from shared.testing.fixtures import database_rows, handled, jsonbody, wait_until
from shared.testing.samples import complaint_event
from tests.e2e.test_investigation_cases import FINDINGS, bearer, chain, intake_status, publish_raw
from tests.e2e.test_investigation_closure import adverse_reaction_case, aftercare, call, done, follow_up, waiting
from tests.integration.test_personal_data_retention import (  # its instants: OLD is 3 years and a day before NOW
    NOW, OLD, Investigation, case_event, deliver, post_complaint, record_sale,
)

pytestmark = pytest.mark.e2e
__all__ = ["chain"]
ROOT = Path(__file__).resolve().parents[2]
RETENTION = load_policy().retention.personal_data  # P3Y
NAME, PHONE, EMAIL = "王芳", "13812346138", "wangfang@example.com"


# -- helpers --------------------------------------------------------------------------------------

def text_of(response) -> str:
    """The whole JSON body as text, to search for what must not be in it anywhere."""
    return json.dumps(jsonbody(response), ensure_ascii=False)


def archive(chain, case_id, purpose=None, role="auditor", params=None, **scope):
    token = chain.token(role, subject=f"{role}-probe", **scope)
    query = params if params is not None else ({} if purpose is None else {"purpose": purpose})
    return chain.http.get(chain.investigation.url(f"/v1/archive/cases/{case_id}"), params=query,
                          headers=bearer(token), timeout=20)


def hold(chain, case_id, body, role="hq_admin", **scope):
    return chain.http.put(chain.investigation.url(f"/v1/cases/{case_id}/legal-hold"), json=body,
                          headers=bearer(chain.token(role, subject="hq-probe", **scope)), timeout=10)


def release(chain, case_id, role="hq_admin", **scope):
    return chain.http.delete(chain.investigation.url(f"/v1/cases/{case_id}/legal-hold"),
                             headers=bearer(chain.token(role, subject="hq-probe", **scope)), timeout=10)


def praise_closed(chain, customer=None, note="王女士表扬托尼老师") -> str:
    """A praise posted to intake with a named customer, acknowledged and passed on: its case
    closed, and intake's complaint closed with it."""
    body = {"kind": "praise", "channel": "front_desk", "description": f"王女士表扬托尼老师，电话 {PHONE}",
            "customer": customer or {"name": NAME, "phone": PHONE, "email": EMAIL, "language": "zh"}}
    case_id = chain.post_complaint(body)["id"]
    chain.wait_for_case(case_id)
    done(call(chain, case_id, "acknowledge", {"message": "王女士您好，谢谢您的表扬", "channel": "phone"}))
    closed = done(call(chain, case_id, "pass_on", {"to": ["T-017"], "note": note}))
    assert closed["state"] == "closed", closed
    wait_until(lambda: intake_status(chain, case_id) == "closed", "intake to see the praise closed")
    return case_id


def stores(chain):
    return (IntakeStore(db.make_engine(chain.intake.config["DATABASE_URL"], 2)),
            InvestigationStore(db.make_engine(chain.investigation_db, 2)))


def run_both(chain, now, dry_run=False):
    """Both services' retention at `now`, as their timers or the command run it."""
    intake_store, investigation_store = stores(chain)
    try:
        return (anonymisation.run(intake_store, intake_retention.KINDS, service="intake", retention=RETENTION,
                                  now=now, dry_run=dry_run),
                anonymisation.run(investigation_store, investigation_retention.KINDS, service="investigation",
                                  retention=RETENTION, now=now, dry_run=dry_run))
    finally:
        intake_store.engine.dispose()
        investigation_store.engine.dispose()


def past_retention(chain) -> datetime:
    """The chain's clock moved 3 years and 2 days on: what closed now is due."""
    chain.clock.advance(days=3 * 366 + 2)
    return chain.clock.now()


def intake_complaint(chain, case_id):
    return database_rows(chain.intake.config["DATABASE_URL"],
                sa.text("SELECT * FROM complaints WHERE id = :id").bindparams(id=case_id))[0]


def access_log(chain, record_id) -> list:
    return database_rows(chain.intake.config["DATABASE_URL"], sa.text(
        "SELECT subject, role, purpose, outcome, reason FROM contact_access_log WHERE record_id = :id "
        "ORDER BY id").bindparams(id=record_id))


def written_result_delivered(chain, case_id) -> None:
    """Wait until intake has recorded the written result's outcome: until then its record is
    locked now and then, and a run skips a locked record (it waits for the next run)."""
    wait_until(lambda: "customer_message_sent" in [e["what"] for e in jsonbody(chain.case(case_id))["timeline"]],
               "the written result's outcome on the case")


# -- 1. the archive: error order, roles, purposes -------------------------------------------------

def test_the_archive_answers_in_the_api_s_order_to_every_role_and_odd_purpose_and_logs_each_read(chain):
    closed = praise_closed(chain)
    still_open = chain.post_complaint()["id"]
    chain.wait_for_case(still_open)

    # 404: unknown, malformed, or outside the caller's scope (before anything else).
    for bad_id in (str(uuid.uuid4()), "not-a-case", "1", "%00", closed.upper().replace("-", "")[:31]):
        assert archive(chain, bad_id, "年度审计").status_code == 404, bad_id
    assert archive(chain, closed, "年度审计", role="store_manager", branch="SH002").status_code == 404
    assert archive(chain, closed, None, role="auditor", branch="BJ001").status_code == 404
    assert archive(chain, closed, "x", role="hq_admin", region="north").status_code == 404
    # 409: a case not closed, before the role and the purpose.
    assert archive(chain, still_open, "年度审计").status_code == 409
    assert archive(chain, still_open, None, role="front_desk", branch="SH001").status_code == 409
    # 403: every branch or region role, before the purpose.
    for role, scope in (("front_desk", {"branch": "SH001"}), ("store_manager", {"branch": "SH001"}),
                        ("aftercare_agent", {"branch": "SH001"}), ("investigator", {"branch": "SH001"}),
                        ("regional_manager", {"region": "east"}), ("branch_integration", {"branch": "SH001"})):
        refused = archive(chain, closed, None, role=role, **scope)
        assert refused.status_code == 403, (role, refused.text)
    # 400: no purpose, nothing visible, a bidirectional control, NUL, too long; never a 500.
    for purpose in (None, "", "   ", "\u200b\u200b\ufeff", "\u202e年度审计", "审" * 501, "年度\x00审计"):
        refused = archive(chain, closed, purpose)
        assert refused.status_code == 400, (purpose, refused.text)
        assert "purpose" in jsonbody(refused)["error"]["fields"], refused.text
    huge = archive(chain, closed, "审" * 20000)
    assert 400 <= huge.status_code < 500, huge.status_code

    # The three archive roles read it, with the contact; each read is an event and a log row.
    reads = [("auditor", "审" * 500), ("hq_admin", "年度审计"), ("hq_analyst", "\t客诉复盘\n"),
             ("auditor", "审计\x07核对")]
    for role, purpose in reads:
        read = archive(chain, closed, purpose, role=role)
        assert read.status_code == 200, (role, read.text)
        body = jsonbody(read)
        assert body["contact"]["phone"] == PHONE and body["contact"]["name"] == NAME, body["contact"]
        assert body["contact_unavailable"] is None and body["case"]["id"] == closed
        assert body["purpose"] == purpose.strip() and body["accessed_by"] == f"{role}-probe"
    events = chain.events(closed, "archive_accessed", count=len(reads))
    assert [(e["payload"]["actor_role"], e["payload"]["purpose"], e["payload"]["contact_read"]) for e in events] == \
        [(role, purpose.strip(), True) for role, purpose in reads]
    granted = [r for r in access_log(chain, closed) if r.outcome == "granted"]
    assert [(r.role, r.purpose) for r in granted] == [(role, purpose.strip()) for role, purpose in reads]
    timeline = [e for e in jsonbody(chain.case(closed))["timeline"] if e["what"] == "archive_accessed"]
    assert [e["actor"] for e in timeline] == [f"{role}-probe" for role, _ in reads]


# -- 2. what the retention leaves: a case, its complaint, its archive --------------------------------

PERSONAL = (NAME, "王女士", PHONE, "138 1234 6138", "138-1234-6138", "1234 6138", EMAIL, "王**", "138****6138")


def leaks(text: str) -> list[str]:
    return [p for p in PERSONAL if p in text]


def complaint_closed_with_personal_data_everywhere(chain, amqp_uri) -> str:
    body = {"kind": "complaint", "channel": "front_desk",
            "customer": {"name": NAME, "phone": PHONE, "email": EMAIL, "language": "zh"},
            "description": f"王女士 {PHONE} 说染发后头皮过敏红肿，邮箱 {EMAIL}，另一号码 138-1234-6138",
            "category": "safety", "severity_flags": ["allergy"],
            "service": {"code": "HAIR-DYE", "name": "染发", "technician_id": "T-017"},
            "products": [{"sku": "DYE-5N", "batch": "B2026-11-03"}]}
    case_id = chain.post_complaint(body)["id"]
    chain.wait_for_case(case_id)
    done(call(chain, case_id, "assign", {"owner": "INV-7"}))
    done(call(chain, case_id, "respond", {"message": "王女士您好，我们会回电 +86 138 1234 6138", "channel": "phone"}))
    done(call(chain, case_id, "record_findings", {
        **FINDINGS, "facts": f"王女士（王**）称 {PHONE} 是她本人号码，染发前未做皮试", "responsibility": "customer_misuse"},
        role="investigator"))
    done(call(chain, case_id, "propose_remedy", {"type": "refund", "amount": 1500, "currency": "CNY",
                                                  "note": "王女士要求退款，联系 138****6138"}))
    done(call(chain, case_id, "fulfil", {"note": "已退款1500元给王女士"}))
    done(call(chain, case_id, "notify_customer", {
        "measures": "退款1500元，王女士已确认", "completed_at": chain.clock.now().isoformat(),
        "responsible": "INV-7", "follow_up": f"三天后致电 {PHONE} 回访"}))
    aftercare(chain, amqp_uri, "visit_completed", follow_up(case_id, score=5))
    chain.events(case_id, "case_closed")
    wait_until(lambda: intake_status(chain, case_id) == "closed", "intake to see the case closed")
    written_result_delivered(chain, case_id)
    return case_id


def test_the_retention_scrubs_a_closed_case_everywhere_keeps_what_counts_and_leaves_open_ones(chain, amqp_uri):
    from shared.workflow.tables import INSTANCES

    case_id = complaint_closed_with_personal_data_everywhere(chain, amqp_uri)
    read = archive(chain, case_id, f"回访核实王女士 {PHONE}", role="hq_admin")
    assert read.status_code == 200 and jsonbody(read)["contact"]["email"] == EMAIL
    still_open = chain.post_complaint({**complaint_request_with_phone(), "description": f"王女士 {PHONE} 头皮红肿"})["id"]
    chain.wait_for_case(still_open)
    done(call(chain, still_open, "assign", {"owner": "INV-7"}))
    admin = {"role": "hq_admin", "branch": None}
    # A number typed into the description never reaches the bus (intake masks it); the open
    # case keeps what it got, whatever the retention does to closed ones.
    open_description = jsonbody(chain.case(still_open, **admin))["description"]
    assert PHONE not in open_description and "头皮红肿" in open_description

    now = past_retention(chain)
    before = jsonbody(chain.case(case_id, **admin))
    intake_before = intake_complaint(chain, case_id)
    dry = run_both(chain, now, dry_run=True)
    assert [r.touched for r in dry] == [{"complaint": [case_id], "sale": []}, {"case": [case_id]}]
    assert jsonbody(chain.case(case_id, **admin)) == before and intake_complaint(chain, case_id) == intake_before

    first = run_both(chain, now)
    assert [r.touched for r in first] == [{"complaint": [case_id], "sale": []}, {"case": [case_id]}]
    case = chain.case(case_id, **admin)
    assert case.status_code == 200 and leaks(text_of(case)) == []
    after = jsonbody(case)
    assert after["anonymised_at"] is not None and after["customer"] == {"ref": None, "masked": {}, "language": "zh"}
    for kept in ("kind", "category", "priority", "state", "outcome", "closed_at", "opened_at", "received_at", "owner",
                 "reference", "branch_code", "escalation_level", "reopened", "severity_flags", "products", "service"):
        assert after[kept] == before[kept], kept
    assert [(r["type"], r["amount"], r["status"]) for r in after["remedies"]] == \
        [(r["type"], r["amount"], r["status"]) for r in before["remedies"]] == [("refund", 1500, "fulfilled")]
    assert (after["findings"]["responsibility"], after["findings"]["root_cause"]) == ("customer_misuse", "未做皮肤测试")
    assert after["written_result"]["measures"] == f"退款1500元，{X}已确认"
    assert [(e["what"], e["actor"], e["at"]) for e in after["timeline"]] == \
        [(e["what"], e["actor"], e["at"]) for e in before["timeline"]]
    assert after["sla"] == before["sla"]
    state = database_rows(chain.investigation_db, sa.select(INSTANCES.c.state).where(INSTANCES.c.id == case_id))[0][0]
    assert leaks(state) == []

    complaint = chain.http.get(chain.intake.url(f"/v1/complaints/{case_id}"),
                               headers=bearer(chain.token("front_desk", branch="SH001")))
    assert complaint.status_code == 200 and leaks(text_of(complaint)) == []
    assert (jsonbody(complaint)["status"], jsonbody(complaint)["category"]) == ("closed", "safety")
    row = intake_complaint(chain, case_id)
    assert (row.customer_name, row.customer_phone, row.customer_email, row.customer_ref) == (None,) * 4
    assert all(leaks(r.purpose) == [] for r in access_log(chain, case_id))

    later = archive(chain, case_id, "年度审计", role="auditor")
    assert later.status_code == 200 and leaks(text_of(later)) == []

    again = run_both(chain, now)
    assert [r.touched for r in again] == [{"complaint": [], "sale": []}, {"case": []}]
    assert jsonbody(chain.case(still_open, **admin))["description"] == open_description
    assert intake_complaint(chain, still_open).customer_phone == "13912345678"
    for url, counts in ((chain.intake.config["DATABASE_URL"], {"complaint": 1}),
                        (chain.investigation_db, {"case": 1})):
        log = database_rows(url, sa.select(RUNS.c.dry_run, RUNS.c.counts, RUNS.c.as_of, RUNS.c.finished_at.is_not(None))
                   .order_by(RUNS.c.id))
        assert [tuple(r) for r in log] == [(True, counts, now, True), (False, counts, now, True),
                                           (False, {}, now, True)]


def complaint_request_with_phone() -> dict:
    from shared.testing.samples import complaint_request

    return complaint_request(customer={"name": "李女士", "phone": "13912345678", "language": "zh"})


def test_the_archive_of_an_anonymised_case_says_the_contact_is_gone_rather_than_giving_an_empty_one(chain):
    # Found by the outside probe, fixed: intake's get_archived_contact (services/intake/handlers.py _read_contact) answers an
    # anonymised record's contact as {"name": null, "phone": null, ...} and logs it `granted`, so the
    # archive shows a contact of nulls, `contact_unavailable: null`, and archive_accessed says
    # contact_read: true. A record whose contact is gone should come without one (`contact: null`),
    # `contact_unavailable` saying why (dependencies.archived_contact_reader already words a
    # NotFound as "anonymised or removed"), and contact_read false.
    case_id = praise_closed(chain)
    run_both(chain, past_retention(chain))
    read = archive(chain, case_id, "年度审计", role="auditor")
    assert read.status_code == 200 and leaks(text_of(read)) == []
    body = jsonbody(read)
    assert body["case"]["anonymised_at"] is not None
    assert body["contact"] is None, body["contact"]
    assert body["contact_unavailable"] and "anonymised" in body["contact_unavailable"], body["contact_unavailable"]
    [event] = chain.events(case_id, "archive_accessed")
    assert event["payload"]["contact_read"] is False


# -- 3. legal holds --------------------------------------------------------------------------------

def test_a_legal_hold_keeps_a_closed_case_past_the_retention_in_both_services_until_released(chain):
    case_id = praise_closed(chain)
    other = praise_closed(chain, customer={"name": "李娜", "phone": "13912340000", "language": "zh"})

    # 404 (unknown, malformed, out of scope), 403 (not hq_admin), 400 (the body): in that order.
    assert hold(chain, str(uuid.uuid4()), {"reason": "诉讼"}).status_code == 404
    assert hold(chain, "not-a-uuid", {"reason": "诉讼"}).status_code == 404
    assert hold(chain, case_id, {"reason": "诉讼"}, region="north").status_code == 404
    assert hold(chain, case_id, {}, role="hq_admin", branch="GZ001").status_code == 404
    assert release(chain, case_id, region="south").status_code == 404
    for role, scope in (("auditor", {}), ("hq_analyst", {}), ("store_manager", {"branch": "SH001"}),
                        ("regional_manager", {"region": "east"})):
        assert hold(chain, case_id, {"bad": 1}, role=role, **scope).status_code == 403, role
        assert release(chain, case_id, role=role, **scope).status_code == 403, role
    for body in ({}, {"reason": ""}, {"reason": "  "}, {"reason": 5}, {"reason": None}, {"reason": "诉" * 501},
                 {"reason": "\u202e诉讼"}, {"reason": "诉讼", "until": "2030"}, [], "诉讼", None):
        bad = hold(chain, case_id, body)
        assert bad.status_code == (415 if body is None else 400), (body, bad.status_code, bad.text)
    not_json = chain.http.put(chain.investigation.url(f"/v1/cases/{case_id}/legal-hold"), data=b"\xff{",
                              headers={**bearer(chain.token("hq_admin")), "Content-Type": "application/json"})
    assert not_json.status_code == 400, not_json.text
    hold_url = chain.investigation.url(f"/v1/cases/{case_id}/legal-hold")
    admin = bearer(chain.token("hq_admin"))
    for method in ("GET", "POST", "PATCH"):
        other_method = chain.http.request(method, hold_url, json={"reason": "诉讼"}, headers=admin)
        assert other_method.status_code in (404, 405), (method, other_method.status_code)
    big = chain.http.put(hold_url, json={"reason": "诉" * 600_000}, headers=admin)
    assert big.status_code == 413, big.status_code
    assert release(chain, case_id).status_code == 200  # not held: stays as it is, no event
    assert chain.seen(case_id, "legal_hold_released") == []

    # Held (twice with the same reason: one hold, one event, one timeline entry).
    first = hold(chain, case_id, {"reason": "顾客起诉，保全证据"})
    assert first.status_code == 200, first.text
    assert hold(chain, case_id, {"reason": "顾客起诉，保全证据"}).status_code == 200
    [held] = chain.events(case_id, "legal_hold_set")
    wait_until(lambda: intake_complaint(chain, case_id).legal_hold is not None, "intake to follow the hold")
    changed = hold(chain, case_id, {"reason": "监管调查"})  # another reason: the hold is the new one
    assert changed.status_code == 200 and jsonbody(changed)["legal_hold"]["reason"] == "监管调查"
    held = chain.events(case_id, "legal_hold_set", count=2)[1]
    wait_until(lambda: (intake_complaint(chain, case_id).legal_hold or {}).get("reason") == "监管调查",
               "intake to follow the new reason")
    case = jsonbody(chain.case(case_id))
    assert [e["what"] for e in case["timeline"]].count("legal_hold_set") == 2
    assert case["legal_hold"]["reason"] == "监管调查"

    now = past_retention(chain)
    kept = run_both(chain, now)
    assert [r.touched for r in kept] == [{"complaint": [other], "sale": []}, {"case": [other]}]
    assert [r.held for r in kept] == [{"complaint": 1, "sale": 0}, {"case": 1}]
    read = archive(chain, case_id, "诉讼取证", role="hq_admin")
    assert read.status_code == 200 and jsonbody(read)["contact"]["phone"] == PHONE
    assert jsonbody(chain.case(case_id))["anonymised_at"] is None
    assert intake_complaint(chain, case_id).customer_phone == PHONE

    # Released: intake follows, and the next run of each takes it.
    released = release(chain, case_id)
    assert released.status_code == 200 and jsonbody(released)["legal_hold"] is None
    [event] = chain.events(case_id, "legal_hold_released")
    assert event["sequence"] > held["sequence"]
    wait_until(lambda: intake_complaint(chain, case_id).legal_hold is None, "intake to follow the release")
    gone = run_both(chain, now + timedelta(days=1))
    assert [r.touched for r in gone] == [{"complaint": [case_id], "sale": []}, {"case": [case_id]}]
    assert leaks(text_of(chain.case(case_id))) == []
    assert intake_complaint(chain, case_id).customer_phone is None
    refused = hold(chain, case_id, {"reason": "再次保全"})
    assert refused.status_code == 409, refused.text
    assert release(chain, case_id).status_code == 200
    assert len(chain.seen(case_id, "legal_hold_set")) == 2 and len(chain.seen(case_id, "legal_hold_released")) == 1


# -- 4. an adverse reaction's case: its customer is a sale's ------------------------------------------

SALE = {"customer": {"name": "赵敏", "phone": "13700002222", "contact_consent": True, "language": "zh"},
        "sold_at": "2026-11-20T15:00:00+08:00",
        "items": [{"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour", "technician_id": "T-017"}]}


def reported_adverse_reaction(chain, amqp_uri) -> tuple[str, str]:
    """A sale, and an adverse reaction reported with the customer's name and phone in its text."""
    return adverse_reaction_case(chain, amqp_uri, SALE, "赵女士染发后头皮红肿，电话 13700002222")


def test_the_archive_of_a_closed_adverse_reaction_case_gives_the_contact_of_its_sale(chain, amqp_uri):
    sale_id, case_id = reported_adverse_reaction(chain, amqp_uri)
    done(call(chain, case_id, "assign", {"owner": "INV-7"}))
    done(call(chain, case_id, "respond", {"message": "赵女士您好，已收到", "channel": "phone"}))
    done(call(chain, case_id, "record_findings", {**FINDINGS, "responsibility": "customer_misuse"},
              role="investigator"))
    done(call(chain, case_id, "propose_remedy", {"type": "apology", "amount": 0}))
    done(call(chain, case_id, "fulfil", {}))
    done(call(chain, case_id, "notify_customer", {"measures": "致歉", "completed_at": chain.clock.now().isoformat(),
                                                  "responsible": "INV-7", "follow_up": "回访"}))
    aftercare(chain, amqp_uri, "visit_completed", follow_up(case_id, score=4))
    chain.events(case_id, "case_closed")
    written_result_delivered(chain, case_id)

    read = archive(chain, case_id, "不良反应复盘", role="hq_analyst")
    assert read.status_code == 200, read.text
    contact = jsonbody(read)["contact"]
    assert (contact["record_type"], contact["record_id"], contact["phone"], contact["name"]) == \
        ("sale", sale_id, "13700002222", "赵敏")
    assert contact["contact_consent"] is True
    assert [(r.role, r.purpose, r.outcome) for r in access_log(chain, sale_id)] == \
        [("hq_analyst", "不良反应复盘", "granted")]

    run_both(chain, past_retention(chain))  # the sale and the case, each on its own clock
    later = archive(chain, case_id, "年度审计", role="auditor")
    assert later.status_code == 200
    assert "13700002222" not in text_of(later) and "赵敏" not in text_of(later) and "赵女士" not in text_of(later)


def test_a_legal_hold_on_an_adverse_reaction_case_keeps_its_sale_s_contact_in_intake(chain, amqp_uri):
    # Found by the outside probe, fixed: a hold "keeps the case's personal data (and its complaint's, in intake)", but the
    # customer of an adverse reaction's case is a sale's: legal_hold_set carries complaint_id
    # null and no sale id, intake's follow_legal_hold (services/intake/handlers.py _follow)
    # drops it, and Sales.held_past_retention is 0 by design (services/intake/repository.py),
    # so the next run past the sale's 3 years anonymises the contact of a case held for a lawsuit
    # (an allergy or a burn: the cases most likely to be held). The sale should be kept while the
    # case is held (and counted as held).
    sale_id, case_id = reported_adverse_reaction(chain, amqp_uri)
    assert hold(chain, case_id, {"reason": "顾客过敏起诉"}).status_code == 200
    [event] = chain.events(case_id, "legal_hold_set")
    wait_until(lambda: handled(chain.intake.config["DATABASE_URL"], event["event_id"]), "intake to take the hold's event")

    intake_report, _ = run_both(chain, past_retention(chain))
    sale = database_rows(chain.intake.config["DATABASE_URL"],
                sa.text("SELECT customer_phone, anonymised_at FROM sales WHERE id = :id").bindparams(id=sale_id))[0]
    assert sale.customer_phone == "13700002222" and sale.anonymised_at is None, (sale, intake_report.touched)
    assert intake_report.held["sale"] == 1


# -- 5. a closed case whose process still runs ------------------------------------------------------

def test_a_closed_case_with_its_corrective_action_open_is_anonymised_and_the_action_still_closes(chain, amqp_uri):
    from tests.e2e.test_investigation_closure import resolve, to_remedy

    case_id = to_remedy(chain, responsibility="ours")
    resolve(chain, case_id)
    aftercare(chain, amqp_uri, "visit_abandoned", follow_up(case_id, "visit_abandoned"))
    wait_until(lambda: (jsonbody(chain.case(case_id))["follow_up"] or {}).get("pending"), "the outcome heard")
    due = chain.clock.now() + timedelta(days=30)
    closed = done(call(chain, case_id, "open_corrective_action", {
        "action": "王女士投诉后：染发前必须做皮肤测试，回电 13812346138", "owner": "SM-1", "due": due.isoformat()}))
    assert closed["state"] == "closed" and waiting(closed) == ["close_corrective_action"]

    _, investigation = run_both(chain, past_retention(chain))
    assert investigation.touched == {"case": [case_id]}
    case = jsonbody(chain.case(case_id))
    assert leaks(json.dumps(case, ensure_ascii=False)) == [] and waiting(case) == ["close_corrective_action"]
    assert case["corrective_action"]["owner"] == "SM-1"
    finished = call(chain, case_id, "close_corrective_action", {"note": "已培训全体技师"})
    assert finished.status_code == 200, finished.text
    assert jsonbody(finished)["corrective_action"]["status"] == "done" and jsonbody(finished)["open_tasks"] == []
    assert jsonbody(finished)["anonymised_at"] is not None


# -- 6. runs at once, a reopened complaint, the command ------------------------------------------------

def two_runs_at_once(url, kinds, service, batch):
    """Two runs of one service's retention at the same time (two stores, two connections), a
    second apart on their clocks so that each record tells which run anonymised it."""
    engines = [db.make_engine(url, 2) for _ in range(2)]
    store_class = IntakeStore if service == "intake" else InvestigationStore
    try:
        runs = [eventlet.spawn(anonymisation.run, store_class(engine), kinds, service=service, retention=RETENTION,
                               now=NOW + timedelta(seconds=i), batch=batch) for i, engine in enumerate(engines)]
        return [r.wait() for r in runs]
    finally:
        for engine in engines:
            engine.dispose()


def check_shared_work(url, reports, table, kinds, due):
    """Each due record anonymised once, by the run that logged it; each run's log adds up."""
    for kind in kinds:
        touched = [rid for r in reports for rid in r.touched[kind]]
        assert sorted(touched) == sorted(due[kind]), kind  # all of them, none twice
    log = {r.id: r for r in database_rows(url, sa.select(RUNS).order_by(RUNS.c.id))}
    records = database_rows(url, sa.select(RUN_RECORDS))
    for report in reports:
        mine = [r for r in records if r.run_id == report.run_id]
        assert log[report.run_id].finished_at is not None
        assert log[report.run_id].counts == {k: len(v) for k, v in report.touched.items() if v}
        assert sorted((r.record_type, r.record_id) for r in mine) == \
            sorted((k, rid) for k, ids in report.touched.items() for rid in ids)
    by_run = {r.record_id: log[r.run_id].as_of for r in records}
    anonymised = database_rows(url, sa.text(f"SELECT id::text, anonymised_at FROM {table} WHERE anonymised_at IS NOT NULL"))
    assert dict(anonymised) == {rid: by_run[rid] for rid in by_run if rid in dict(anonymised)}
    return by_run


def test_two_runs_at_once_share_the_records_each_anonymised_once_and_logged_by_its_run(database_factory):
    intake_url = database_factory("intake")
    store = IntakeStore(db.make_engine(intake_url, 2))
    complaints = [post_complaint(store, 100 + n, received=OLD - timedelta(days=9), closed=OLD) for n in range(24)]
    sales = [record_sale(store, 200 + n, OLD) for n in range(12)]
    store.engine.dispose()
    reports = two_runs_at_once(intake_url, intake_retention.KINDS, "intake", batch=3)
    assert all(r.touched["complaint"] for r in reports), [r.touched for r in reports]  # both took a share
    by_run = check_shared_work(intake_url, reports, "complaints", ("complaint", "sale"),
                               {"complaint": complaints, "sale": sales})
    assert set(by_run) == set(complaints) | set(sales)
    sold = database_rows(intake_url, sa.text("SELECT id::text, anonymised_at FROM sales"))
    assert all(by_run[sid] == at for sid, at in sold)

    inv = Investigation(database_factory("investigation"))
    cases = [inv.praised_and_closed(OLD) for _ in range(10)]
    inv.engine.dispose()
    url = inv.engine.url.render_as_string(hide_password=False)
    reports = two_runs_at_once(url, investigation_retention.KINDS, "investigation", batch=2)
    assert all(r.touched["case"] for r in reports), [r.touched for r in reports]
    by_run = check_shared_work(url, reports, "cases", ("case",), {"case": cases})
    assert set(by_run) == set(cases)


def test_a_complaint_whose_case_reopened_is_kept_whatever_order_the_events_came_in(database_factory):
    store = IntakeStore(db.make_engine(database_factory("intake"), 2))
    try:
        reopened_late = post_complaint(store, 301, received=OLD - timedelta(days=9), closed=OLD,
                                       reopened=OLD + timedelta(days=1))
        # The reopening (sequence 9) heard before the closure (sequence 8) it follows.
        early = post_complaint(store, 302, received=OLD - timedelta(days=9))
        deliver(store, case_event("case_reopened", early, 9, OLD + timedelta(days=1), escalation_level=1),
                intake_handlers.follow_case)
        deliver(store, case_event("case_closed", early, 8, OLD, outcome="satisfied"), intake_handlers.follow_case)
        closed = post_complaint(store, 303, received=OLD - timedelta(days=9), closed=OLD)
        report = anonymisation.run(store, intake_retention.KINDS, service="intake", retention=RETENTION, now=NOW)
        assert report.touched["complaint"] == [closed]
        with store.unit_of_work() as uow:
            for kept in (reopened_late, early):
                complaint = uow.complaints.get(kept)
                assert (complaint.status, complaint.closed_at, complaint.customer.phone is not None) == \
                    ("investigating", None, True), kept
    finally:
        store.engine.dispose()


def retention_command(*args, intake_url, investigation_url):
    env = {"PATH": "/usr/bin:/bin", "CLOSELOOP_DEV_KEYS": "1", "INTAKE_DATABASE_URL": intake_url,
           "INVESTIGATION_DATABASE_URL": investigation_url}
    services = ("--service", "intake", "--service", "investigation")  # aftercare's: test_aftercare_retention
    return subprocess.run([sys.executable, "-m", "shared.cli", "retention", "run", *services, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_the_command_s_dry_run_changes_nothing_and_a_database_away_is_a_line_and_exit_1(database_factory):
    from services.intake import models

    intake_url, investigation_url = database_factory("intake"), database_factory("investigation")
    closed = datetime.now(timezone.utc) - timedelta(days=4 * 366)
    store = IntakeStore(db.make_engine(intake_url, 2))
    due = post_complaint(store, 401, received=closed - timedelta(days=9), closed=closed)
    held = post_complaint(store, 402, received=closed - timedelta(days=9), closed=closed, held=True)
    store.engine.dispose()
    table = sa.select(models.complaints).order_by(models.complaints.c.id)
    before = [tuple(r) for r in database_rows(intake_url, table)]

    dry = retention_command("--dry-run", intake_url=intake_url, investigation_url=investigation_url)
    assert dry.returncode == 0, dry.stderr
    [line] = [line for line in dry.stdout.splitlines() if "complaint(s)" in line]
    assert line.startswith("intake: would anonymise 1 complaint(s) closed before ") and line.endswith(f": {due}")
    assert "1 kept under a legal hold" in line and held not in line
    assert [tuple(r) for r in database_rows(intake_url, table)] == before

    away = "postgresql://postgres@127.0.0.1:9/closeloop_away"
    both = retention_command(intake_url=away, investigation_url=away)
    assert (both.returncode, both.stdout) == (1, "")
    lines = both.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("closeloop: intake: database unavailable") and \
        lines[1].startswith("closeloop: investigation: database unavailable"), both.stderr
    one = retention_command(intake_url=away, investigation_url=investigation_url)
    assert one.returncode == 1 and len(one.stderr.strip().splitlines()) == 1, one.stderr
    assert "investigation: anonymised 0 case(s)" in one.stdout
    assert [tuple(r) for r in database_rows(intake_url, table)] == before


# -- 7. the scrubbing's reach ------------------------------------------------------------------------

def investigation_scrub(text: str) -> str:
    """What investigation's retention does to a case's text: it knows the customer only by the mask."""
    return investigation_retention.scrubber({"name": "王**", "phone": "138****6138"})(text)


def intake_scrub(text: str) -> str:
    """What intake's does to a complaint's text: it knows the customer's contact."""
    return anonymise_text(text, name=NAME, phone=PHONE, email=EMAIL)


@pytest.mark.parametrize("scrub", [investigation_scrub, intake_scrub], ids=["investigation", "intake"])
def test_the_scrubbing_takes_names_numbers_and_addresses_and_leaves_what_counts(scrub):
    assert scrub(f"王女士 {PHONE} 说染发后头皮红肿") == f"{X} {X} 说染发后头皮红肿"
    for written in (PHONE, "138 1234 6138", "138-1234-6138", "+86 138 1234 6138", "+8613812346138",
                    "(021) 1234-5678", "0755-12345678", "138****6138", EMAIL, "王**"):
        assert scrub(f"电话：{written}。") == f"电话：{X}。", written
    assert scrub("王女士、王先生、王小姐、王老师、王太太") == "、".join([X] * 5)
    for counts in ("退款1500元，共3次", "金额 5000.00 元", "价格 ¥1,380", "SH001-20261122-0007",
                   "批次 B2026-11-03", "2026-11-22T10:00:00+08:00", "时间 09:00-21:00，技师 T-017",
                   "SH001-AR-20261122-6f1c2a44", "DYE-5N", "满意度 4/5"):
        assert scrub(counts) == counts, counts


@pytest.mark.parametrize("scrub", [investigation_scrub, intake_scrub], ids=["investigation", "intake"])
def test_a_phone_typed_in_full_width_digits_is_scrubbed_too(scrub):
    # Found by the outside probe, fixed: Chinese input methods in full-width mode type digits as U+FF10-FF19 (１３８…), common
    # in texts staff write. shared/security/privacy.py's _ANY_PHONE starts a mobile with ASCII
    # `1[3-9]` and _loose_phone escapes the customer's ASCII digits, so "电话１３８１２３４６１３８"
    # survives the retention in both services (one full-width digit at the end is caught, as
    # `\d` takes it). "any phone number" and "this phone however written" should include it.
    full_width = PHONE.translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    assert scrub(f"请回电{full_width}") == f"请回电{X}"


# -- 8. the daily timer --------------------------------------------------------------------------------

def test_two_replicas_whose_timers_tick_together_run_the_day_s_retention_once(database_factory):
    # Found by the outside probe, fixed: scheduled_run (shared/persistence/anonymisation.py) reads the last *finished* run,
    # then runs, with nothing claiming the day in between: two replicas started together (compose
    # `--scale`) tick at the same phase every hour, both find no run of the day, and both run it,
    # each logged: the README promises "replicas and restarts neither skip nor repeat a day".
    # (Records are not anonymised twice: SKIP LOCKED shares them.) One tick should run the day and
    # the other find it taken (an advisory lock or a claimed row).
    url = database_factory("intake")
    store = IntakeStore(db.make_engine(url, 2))
    post_complaint(store, 501, received=OLD - timedelta(days=9), closed=OLD)
    store.engine.dispose()
    engines = [db.make_engine(url, 2) for _ in range(2)]
    try:
        ticks = [eventlet.spawn(anonymisation.scheduled_run, IntakeStore(engine), intake_retention.KINDS,
                                service="intake", retention=RETENTION, now=NOW, every=timedelta(days=1))
                 for engine in engines]
        reports = [tick.wait() for tick in ticks]
    finally:
        for engine in engines:
            engine.dispose()
    logged = database_rows(url, sa.select(RUNS.c.id, RUNS.c.as_of, RUNS.c.counts))
    assert len(logged) == 1 and sum(r is not None for r in reports) == 1, [tuple(r) for r in logged]


@pytest.fixture
def timed(http, token, clock, start_service, start_relay, database_factory, bus_listener):
    """Intake and investigation with their relays, the retention's timer ticking every 0.2 s."""
    from tests.e2e.test_investigation_cases import Chain

    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))
    bus = bus_listener("investigation.events")
    investigation_db, intake_db = database_factory("investigation"), database_factory("intake")
    investigation = start_service("investigation", clock=clock, database_url=investigation_db,
                                  RETENTION_INTERVAL_SECONDS=0.2)
    start_relay(investigation_db)
    intake = start_service("intake", clock=clock, database_url=intake_db, RETENTION_INTERVAL_SECONDS=0.2)
    start_relay(intake_db)
    timed = Chain(http, token, intake, investigation, None, None, bus, clock)
    timed.investigation_db = investigation_db
    return timed


def test_each_service_s_timer_anonymises_what_is_due_once_per_clock_day_and_keeps_the_held(timed):
    chain = timed
    due = praise_closed(chain)
    held = praise_closed(chain, customer={"name": "李娜", "phone": "13912340000", "language": "zh"})
    assert hold(chain, held, {"reason": "监管调查"}).status_code == 200
    wait_until(lambda: intake_complaint(chain, held).legal_hold is not None, "intake to follow the hold")
    still_open = chain.post_complaint()["id"]
    chain.wait_for_case(still_open)

    later = past_retention(chain)
    wait_until(lambda: jsonbody(chain.case(due))["anonymised_at"] and intake_complaint(chain, due).anonymised_at,
               "both timers to anonymise the closed praise", timeout=20)
    assert jsonbody(chain.case(held))["anonymised_at"] is None and intake_complaint(chain, held).customer_phone
    assert jsonbody(chain.case(still_open))["anonymised_at"] is None
    assert intake_complaint(chain, still_open).customer_phone == PHONE

    assert release(chain, held).status_code == 200
    wait_until(lambda: intake_complaint(chain, held).legal_hold is None, "intake to follow the release")
    chain.clock.advance(seconds=1)  # the next tick's run
    wait_until(lambda: jsonbody(chain.case(held))["anonymised_at"] and intake_complaint(chain, held).anonymised_at,
               "both timers to anonymise the released praise", timeout=20)
    for url in (chain.intake.config["DATABASE_URL"], chain.investigation_db):
        as_of = [r.as_of for r in database_rows(url, sa.select(RUNS.c.as_of).where(RUNS.c.dry_run.is_(False)))]
        assert as_of.count(later) == 1, as_of  # a tick at each instant of the clock, once


# -- 9. investigation alone, intake not running (last: its calls stay queued for the next intake) --

class Lone:
    """Investigation and its relay without intake: cases opened by events published as intake
    would, worked over HTTP."""

    def __init__(self, http, token, service, bus, clock, amqp_uri):
        self.http, self.token, self.investigation, self.bus = http, token, service, bus
        self.clock, self.amqp_uri = clock, amqp_uri

    def case(self, case_id, role="store_manager", branch="SH001", **kwargs):
        return self.http.get(self.investigation.url(f"/v1/cases/{case_id}"),
                             headers=bearer(self.token(role, branch=branch, **kwargs)), timeout=10)

    def events(self, case_id, event_type, count=1, timeout=15):
        return [m["body"] for m in self.bus.wait_for(
            lambda m: m["body"]["correlation_id"] == case_id and m["body"]["type"] == event_type, timeout, count)]

    def open(self, kind="complaint") -> str:
        event = complaint_event("王女士说毛巾很脏，电话 13812346138")
        if kind != "complaint":
            payload = {**event["payload"], "kind": kind, "priority": "low", "category": "service_quality"}
            event = build_event("feedback_registered", payload, branch_code="SH001", sequence=1,
                                occurred_at=self.clock.now(), correlation_id=payload["complaint_id"])
        publish_raw(self.amqp_uri, dict(event))
        case_id = event["payload"]["complaint_id"]
        wait_until(lambda: self.case(case_id).status_code == 200, f"case {case_id} to open")
        return case_id

    def praise_closed(self) -> str:
        case_id = self.open("praise")
        done(call(self, case_id, "acknowledge", {"message": "谢谢您的表扬", "channel": "phone"}))
        assert done(call(self, case_id, "pass_on", {"to": ["T-017"]}))["state"] == "closed"
        return case_id


@pytest.fixture
def lone(http, token, clock, start_service, start_relay, database_factory, bus_listener, amqp_uri):
    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))
    bus = bus_listener("investigation.events")
    url = database_factory("investigation")
    service = start_service("investigation", clock=clock, database_url=url)
    start_relay(url)
    return Lone(http, token, service, bus, clock, amqp_uri)


def test_with_intake_away_the_archive_answers_within_seconds_without_the_contact_and_still_logs_the_read(lone):
    case_id = lone.praise_closed()
    started = time.monotonic()
    read = archive(lone, case_id, "年度审计", role="hq_admin")
    took = time.monotonic() - started
    assert read.status_code == 200, read.text
    assert took < 7.5, took  # intake's 5 s at most, and the rest
    body = jsonbody(read)
    assert body["contact"] is None and isinstance(body["contact_unavailable"], str) and body["contact_unavailable"]
    assert body["case"]["state"] == "closed" and body["purpose"] == "年度审计"
    [event] = lone.events(case_id, "archive_accessed")
    assert (event["payload"]["purpose"], event["payload"]["contact_read"], event["payload"]["actor_role"]) == \
        ("年度审计", False, "hq_admin")
    whats = [e["what"] for e in jsonbody(lone.case(case_id))["timeline"]]
    assert whats.count("archive_accessed") == 1

    # An intake that takes the call and never answers: the user waits 5 s, not for ever.
    from nameko.runners import ServiceRunner

    runner = ServiceRunner({"AMQP_URI": lone.amqp_uri})
    runner.add_service(SilentIntake)
    runner.start()
    try:
        started = time.monotonic()
        read = archive(lone, case_id, "复核", role="auditor")
        took = time.monotonic() - started
    finally:
        with eventlet.Timeout(15, False):
            runner.kill()
    assert read.status_code == 200, read.text
    assert 4.5 < took < 8, took
    body = jsonbody(read)
    assert body["contact"] is None and "did not answer" in body["contact_unavailable"], body["contact_unavailable"]
    assert lone.events(case_id, "archive_accessed", count=2)[1]["payload"]["contact_read"] is False


class SilentIntake:
    """A stand-in for an intake that takes the archive's call and never answers."""
    name = "intake"

    from nameko.rpc import rpc

    @rpc
    def get_archived_contact(self, grant, record_id, purpose):
        eventlet.sleep(60)


def test_a_purpose_given_twice_is_checked_after_the_case_exists_and_is_closed(lone):
    # Found by the outside probe, fixed: query_args() runs before the handler (services/investigation/service.py read_archive),
    # so a repeated (or NUL-bearing) purpose answers 400 before the 404 of an unknown case and the
    # 409 of an open one; the API's order is 401, 404, 409, 403, 400.
    still_open = lone.open()
    twice = {"purpose": ["年度审计", "客诉复盘"]}
    unknown = archive(lone, str(uuid.uuid4()), params=twice)
    assert unknown.status_code == 404, unknown.text
    assert archive(lone, still_open, params=twice).status_code == 409
    assert archive(lone, still_open, params=twice, role="front_desk", branch="SH001").status_code == 409


def test_a_purpose_without_two_letters_is_refused_as_intake_refuses_it(lone):
    # Found by the outside probe, fixed: the archive takes any visible character as a purpose (ArchiveQuery.purpose is
    # Text(500), services/investigation/schemas.py), while intake's contact rule needs two
    # letters: "1" or "。。" reads the whole closed record (logged as archive_accessed) and only
    # the contact is refused. The archive should answer 400 naming `purpose`, as for no purpose.
    case_id = lone.praise_closed()
    for purpose in ("1", "。。", "--"):
        refused = archive(lone, case_id, params={"purpose": purpose})
        assert refused.status_code == 400, (purpose, refused.status_code, refused.text[:300])
        assert "purpose" in jsonbody(refused)["error"]["fields"]
