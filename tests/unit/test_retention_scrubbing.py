"""Retention's pure parts: what anonymising leaves of a text, of a case's columns and of its
process data, and how a complaint learns when it closed and whether its case is held."""
import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.intake.domain import Complaint, Sale
from services.investigation.retention import anonymised_case, scrub_json, scrub_process_state, scrubber
from shared.calendar.policy import load_policy
from shared.persistence.anonymisation import RunReport
from shared.security.privacy import ANONYMISED as X
from shared.security.privacy import anonymise_text, surname_from_mask, surname_of
from shared.testing.samples import complaint_request

NOW = datetime(2029, 11, 23, 2, 0, tzinfo=timezone.utc)
POLICY = load_policy()


@pytest.mark.parametrize("text, expected", [
    ("顾客电话13812346138，另一个 +86 139-0000-1234", f"顾客电话{X}，另一个 {X}"),
    ("座机 021-12345678 或 (0755) 1234 5678，国外 0044 20 7946 0958", f"座机 {X} 或 {X}，国外 {X}"),
    ("回电 138****6138，邮箱 w***@example.com 与 li.na@example.cn。", f"回电 {X}，邮箱 {X} 与 {X}。"),
    ("王**来电，A** 也来过", f"{X}来电，{X} 也来过"),
    # What is no personal data stays: batches, times, amounts, references, ids.
    ("批次 B2026-11-03，2026-11-22T02:00:00Z 退款 5000 元，单号 SH001-20261122-0007，T-017",
     "批次 B2026-11-03，2026-11-22T02:00:00Z 退款 5000 元，单号 SH001-20261122-0007，T-017"),
])
def test_any_number_address_or_mask_goes_whoever_it_is(text, expected):
    assert anonymise_text(text) == expected


def test_a_known_customer_goes_by_name_surname_and_honorific_however_written():
    text = "王芳女士说：王女士的电话 138 1234 6138 打不通，王老师请回电；王 芳 也发了邮件 Wang.Fang@Example.com。王府井店照常。"
    assert anonymise_text(text, name="王芳", phone="13812346138", email="wang.fang@example.com") == \
        f"{X}说：{X}的电话 {X} 打不通，{X}请回电；{X} 也发了邮件 {X}。王府井店照常。"
    # A name given with its honorific, as the front desk often types it: one character alone stays.
    assert anonymise_text("王女士来电，王经理已回复", name="王女士") == f"{X}来电，王经理已回复"
    assert anonymise_text("欧阳女士与欧阳娜娜", name="欧阳娜娜") == f"{X}与{X}"
    assert anonymise_text("Dear Ms Smith, Anne rang. Smithson and Annex stay.", name="Anne Smith") == \
        f"Dear Ms {X}, {X} rang. Smithson and Annex stay."


def test_a_service_that_knows_only_the_mask_finds_the_surname_forms():
    scrub = scrubber({"name": "王**", "phone": "138****6138"})
    assert scrub("王女士您好，王先生和王小姐都来过，托尼老师在，王府井店照常") == \
        f"{X}您好，{X}和{X}都来过，托尼老师在，王府井店照常"
    assert scrubber({"name": "A**"})("Ms Smith and A** called") == f"Ms Smith and {X} called"
    assert scrubber({})("13812346138") == X
    assert (surname_from_mask("王**"), surname_from_mask("A**"), surname_from_mask(None)) == ("王", None, None)
    assert (surname_of("王芳"), surname_of("欧阳娜娜"), surname_of("王女士"), surname_of("Anne Smith"),
            surname_of(None)) == ("王", "欧阳", "王", None, None)


def test_a_case_keeps_its_shape_ids_and_amounts_and_loses_its_customer():
    remedy_id = str(uuid.uuid4())
    row = type("Row", (), dict(
        description="王女士染发后过敏，电话13812346138", pause_reason=None,
        first_response={"message": "王女士您好，请回电 021-12345678", "channel": "sms", "by": "INV-7",
                        "at": "2026-11-22T03:00:00Z"},
        findings={"facts": "顾客王女士未做皮肤测试", "root_cause": "流程缺失", "responsibility": "ours",
                  "signed_by": "T-001", "signed_at": "2026-11-22T04:00:00Z"},
        decision=None, written_result={"measures": "退款并致电王女士", "follow_up": "三天后回访"},
        follow_up=None, corrective_action={"action": "皮肤测试上墙", "owner": "S-1", "due": "2026-12-01"},
        remedies=[{"id": remedy_id, "type": "refund", "amount": 5000, "note": "给王女士退款"}],
        origin=None, customer_masked={"name": "王**", "phone": "138****6138"}))()
    values = anonymised_case(row, scrubber(row.customer_masked))
    assert values["customer_ref"] is None and values["customer_masked"] == {}
    assert values["description"] == f"{X}染发后过敏，电话{X}"
    assert values["first_response"] == {**row.first_response, "message": f"{X}您好，请回电 {X}"}
    assert values["findings"] == {**row.findings, "facts": f"顾客{X}未做皮肤测试"}
    assert values["written_result"]["measures"] == f"退款并致电{X}"
    assert values["remedies"] == [{"id": remedy_id, "type": "refund", "amount": 5000, "note": f"给{X}退款"}]
    assert not {"corrective_action", "pause_reason", "decision", "follow_up", "origin"} & set(values)  # untouched


def test_ids_are_never_taken_for_numbers():
    case_id = "13812346-1381-4234-8138-123461381234"  # digits a phone pattern could match in part
    assert scrub_json({"case_id": case_id, "at": [1, None, True]}, scrubber({"name": "王**"})) == \
        {"case_id": case_id, "at": [1, None, True]}


def test_the_process_state_loses_the_texts_its_tasks_were_given_and_keeps_its_structure():
    task_id = str(uuid.uuid4())
    state = json.dumps({"spec": "complaint_case@abc", "data": {"respond": {"message": "王女士 13812346138"}},
                        "tasks": {task_id: {"id": task_id, "task_spec": "respond", "state": 64, "delta": {
                            "updates": {"record_findings": {"facts": "王女士", "signed_by": "T-001"}}}}}},
                       ensure_ascii=False)
    scrubbed = json.loads(scrub_process_state(state, scrubber({"name": "王**"})))
    assert scrubbed["data"]["respond"]["message"] == f"{X} {X}"
    task = scrubbed["tasks"][task_id]
    assert task["delta"]["updates"]["record_findings"] == {"facts": X, "signed_by": "T-001"}
    assert (scrubbed["spec"], task["id"], task["task_spec"], task["state"]) == ("complaint_case@abc", task_id,
                                                                                "respond", 64)


def register() -> Complaint:
    complaint = Complaint.register(
        complaint_request(occurred_at=None, customer={"name": "王芳", "phone": "13812346138",
                                                      "email": "wang.fang@example.com", "language": "zh"},
                          description="王芳在静安店染发后过敏，请回电 13812346138"),
        branch=POLICY.branch("SH001"), rules=POLICY.section("intake"), received_at=NOW - timedelta(days=1200),
        number=1, recorded_by="fd-1", recorded_by_role="front_desk", ref_key=b"k")
    complaint.pull_events()
    return complaint


def test_a_complaint_closes_with_its_case_and_a_reopened_case_clears_it():
    c = register()
    closed_at = NOW - timedelta(days=1100)
    assert c.follow_case("case_closed", 6, closed_at) and (c.status, c.closed_at) == ("closed", closed_at)
    assert not c.follow_case("case_resolved", 5, NOW)  # older: nothing moves
    assert c.closed_at == closed_at
    assert c.follow_case("case_reopened", 7, NOW) and (c.status, c.closed_at) == ("investigating", None)


def test_a_legal_hold_follows_the_newest_hold_event():
    c = register()
    hold = {"reason": "诉讼", "by": "hq-1", "at": "2029-01-01T00:00:00Z"}
    assert c.follow_legal_hold("legal_hold_released", 9, None) and c.legal_hold is None
    assert not c.follow_legal_hold("legal_hold_set", 8, hold)  # older than the release: it stays released
    assert c.follow_legal_hold("legal_hold_set", 10, hold) and c.legal_hold == hold
    assert not c.follow_legal_hold("case_closed", 11, None) and c.legal_hold == hold


def test_an_anonymised_complaint_keeps_what_counts():
    c = register()
    before = c.view()
    c.anonymise(NOW)
    after = c.view()
    assert c.customer.name is c.customer.phone is c.customer.email is c.customer_ref is None
    assert after["customer"] == {"name": None, "phone": None, "email": None, "language": "zh"}
    assert after["description"] == f"{X}在静安店染发后过敏，请回电 {X}"
    assert "王" not in after["acknowledgement"] and X in after["acknowledgement"]
    assert after["anonymised_at"] == "2029-11-23T02:00:00Z"
    kept = ("id", "reference", "kind", "status", "branch_code", "channel", "category", "priority",
            "severity_flags", "received_at", "first_response_due", "resolution_due", "service", "products")
    assert {k: after[k] for k in kept} == {k: before[k] for k in kept}


def test_an_anonymised_sale_keeps_its_items_and_consent():
    sale = Sale.register({"customer": {"name": "Anne Smith", "phone": "13812346138", "contact_consent": True},
                          "sold_at": NOW, "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare"}]},
                         branch=POLICY.branch("SH001"), recorded_at=NOW, recorded_by="fd-1", ref_key=b"k")
    sale.anonymise(NOW)
    view = sale.view()
    assert view["customer"]["name"] is None and view["items"][0]["sku"] == "SK-01" and view["contact_consent"]


def test_a_run_says_one_line_per_record_type():
    closed_before = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
    report = RunReport("intake", True, NOW, closed_before, 7, {"complaint": ["c1", "c2"], "sale": []},
                       {"complaint": 1, "sale": 0})
    assert report.lines() == [
        "intake: would anonymise 2 complaint(s) closed before 2026-11-23T02:00:00+00:00, 1 kept under a legal "
        "hold: c1 c2",
        "intake: would anonymise 0 sale(s) closed before 2026-11-23T02:00:00+00:00"]
    assert report.lines(ids=False)[0].endswith("legal hold")


def test_phones_typed_with_dots_or_full_width_digits_are_found_and_amounts_stay():
    from shared.security.privacy import ANONYMISED, anonymise_text

    text = "回电138.1234.6138或１３８１２３４６１３８，退款1380.00元，订单SH001-20261122-0007，批次B2026-11-03"
    assert anonymise_text(text) == (f"回电{ANONYMISED}或{ANONYMISED}，退款1380.00元，订单SH001-20261122-0007，"
                                    "批次B2026-11-03")
