"""Reporting's issue-13 folds, pure: the scrubber the case library's texts go through (no name,
number, address or messaging id kept), the texts, an inquiry's conversion and the standard
answers used folded in any order, the inquiries counted apart."""
import random
import uuid

import pytest

from services.reporting import facts, kpis
from services.reporting.scrub import scrub_text
from shared.security.privacy import ANONYMISED as X
from tests.unit.test_reporting_facts import CASE, T0, at, event, fold


@pytest.mark.parametrize("text, expected", [
    # mobiles however written, with or without +86, landlines, masked numbers
    ("电话13812346138，或 138 1234 6138、138-1234-6138、+86 139 0000 1234、+8613900001234",
     f"电话{X}，或 {X}、{X}、{X}、{X}"),
    ("座机 021-12345678，(0755) 1234 5678，010 8765 4321，回电 138****6138", f"座机 {X}，{X}，{X}，回电 {X}"),
    ("邮箱 wang.fang@example.com 或 W_F@qq.com", f"邮箱 {X} 或 {X}"),
    # messaging ids after their label: the label stays
    ("加微信：wang_fang88，微信号 fangfang2026，WeChat ID: Fang-88，qq 12345678",
     f"加微信：{X}，微信号 {X}，WeChat ID: {X}，qq {X}"),
    ("I told her via WeChat yesterday", "I told her via WeChat yesterday"),
    # English titles and the name after them; "miss" and "ms" as words stay
    ("Mr Smith and Ms. Anne Lee called; Mrs Wang too. We miss 200 ms",
     f"{X} and {X} called; {X} too. We miss 200 ms"),
    # what is no personal data stays: batches, amounts, references, times
    ("批次 B2026-11-03 退款 5000 元，单号 SH001-20261122-0007，2026-11-22 10:00",
     "批次 B2026-11-03 退款 5000 元，单号 SH001-20261122-0007，2026-11-22 10:00"),
])
def test_the_scrubber_takes_out_numbers_addresses_ids_and_titled_names(text, expected):
    assert scrub_text(text) == expected
    assert scrub_text(expected) == expected  # twice: nothing more


def test_the_customer_s_surname_goes_with_any_honorific_and_other_names_stay():
    text = "王女士、王芳女士、王姐、王阿姨、王哥、王先生、王太太和王小姐都说过；王** 也来过。王府井店照常，王经理已回复，李女士另案"
    assert scrub_text(text, "王**") == (f"{X}、{X}、{X}、{X}、{X}、{X}、{X}和{X}都说过；{X} 也来过。"
                                        "王府井店照常，王经理已回复，李女士另案")
    # without the mask only the numbers and masks go; learning it later gives what knowing it first gives
    early = scrub_text("王姐的电话 13812346138", None)
    assert early == f"王姐的电话 {X}" and scrub_text(early, "王**") == scrub_text("王姐的电话 13812346138", "王**")
    assert scrub_text("Anne rang", "A**") == "Anne rang" and scrub_text(None) is None and scrub_text("") == ""


REGISTERED = event("intake", "complaint_registered", 1, 0, kind="complaint", reference="R1", channel="phone",
                   category="safety", priority="urgent", severity_flags=["allergy"], received_at=at(0), region="east",
                   first_response_due=at(1), resolution_due=at(168), customer_ref="c_" + "a" * 32,
                   customer_masked={"name": "王**", "phone": "138****6138"},
                   description="王姐染发后过敏，电话 13812346138，微信 wangjie_88",
                   service={"code": "HAIR-DYE", "technician_id": "T-017"},
                   products=[{"sku": "DYE-5N", "name": "染发剂", "batch": "B2026-11-03"}])
WORKED = [
    REGISTERED,
    event("investigation", "case_acknowledged", 2, 1, within_sla=True, standard_answer="safety-first-response-zh"),
    event("investigation", "findings_recorded", 3, 20, root_cause="未做皮肤测试（王女士说）", responsibility="ours",
          signed_by="T-001", signed_at=at(20), facts="T-017 未做皮肤测试；顾客 138-1234-6138"),
    event("investigation", "corrective_action_opened", 4, 21, action="全店培训皮肤测试，联系 王**", owner="M-1", due=at(300)),
    event("investigation", "customer_notified", 5, 30, request_event_id=str(uuid.uuid4()), measures="退款，王阿姨已接受",
          standard_answer="safety-written-result-zh"),
    event("investigation", "customer_notified", 7, 40, request_event_id=str(uuid.uuid4()), measures="补偿护理",
          standard_answer=None),
    event("aftercare", "visit_completed", 2, 100, kind="follow_up", visit_id=str(uuid.uuid4()), score=4, answers={}),
]


def test_the_case_keeps_its_texts_scrubbed_with_the_surname_in_any_order():
    expected = fold(WORKED)
    assert expected["texts"] == {
        "description": f"{X}染发后过敏，电话 {X}，微信 {X}", "root_cause": f"未做皮肤测试（{X}说）",
        "findings": f"T-017 未做皮肤测试；顾客 {X}", "action": f"全店培训皮肤测试，联系 {X}", "measures": "补偿护理"}
    assert expected["products"] == [{"sku": "DYE-5N", "batch": "B2026-11-03"}]
    # the first response's answer; the newest written result used none
    assert expected["standard_answers"] == {"first_response": {"id": "safety-first-response-zh", "at": at(1)}}
    assert facts.answer_uses(expected) == [
        {"record_id": CASE, "purpose": "first_response", "standard_answer": "safety-first-response-zh",
         "branch_code": "SH001", "used_at": at(1), "score": 4}]
    rng = random.Random(4)
    for _ in range(100):
        assert fold(rng.sample(WORKED, len(WORKED)) + rng.sample(WORKED, 2)) == expected


INQUIRY = event("intake", "feedback_registered", 1, 0, kind="inquiry", reference="R9", channel="phone",
                category="product_quality", priority="low", severity_flags=[], received_at=at(0), region="east",
                first_response_due=at(24), resolution_due=at(24), customer_ref=None, customer_masked={},
                description="这款精华孕妇能用吗", service=None, products=[])
CONVERTED = [
    INQUIRY,
    event("investigation", "case_opened", 1, 0.01, kind="inquiry", category="product_quality", priority="low",
          received_at=at(0), first_response_due=at(24), resolution_due=at(24)),
    event("intake", "complaint_registered", 2, 5, **{**INQUIRY["payload"], "kind": "complaint", "category": "safety",
                                                     "priority": "urgent", "severity_flags": ["allergy"],
                                                     "first_response_due": at(1), "resolution_due": at(168),
                                                     "converted_from": "inquiry", "converted_at": at(5)}),
    event("investigation", "case_converted", 2, 5.01, from_kind="inquiry", kind="complaint", category="safety",
          priority="urgent", severity_flags=["allergy"], received_at=at(0), first_response_due=at(1),
          resolution_due=at(168)),
]


def test_an_inquiry_converted_is_a_complaint_whichever_event_comes_first():
    expected = fold(CONVERTED)
    assert (expected["kind"], expected["category"], expected["priority"], expected["converted_from"],
            expected["converted_at"], expected["received_at"], expected["first_response_due"]) == (
        "complaint", "safety", "urgent", "inquiry", at(5), at(0), at(1))
    for seed in range(60):
        shuffled = random.Random(seed).sample(CONVERTED, len(CONVERTED))
        assert fold(shuffled) == expected, [e["type"] for e in shuffled]
    # intake's events alone, the conversion heard first
    alone = fold([CONVERTED[2], INQUIRY])
    assert (alone["kind"], alone["category"], alone["converted_from"]) == ("complaint", "safety", "inquiry")


def test_inquiries_are_counted_apart_and_a_converted_one_counts_as_a_complaint():
    answered = fold([INQUIRY, event("investigation", "case_acknowledged", 2, 3, within_sla=True,
                                    standard_answer="product-inquiry-zh")])
    late = fold([{**INQUIRY, "payload": {**INQUIRY["payload"], "complaint_id": "i2"}},
                 event("investigation", "case_acknowledged", 2, 30)])
    waiting = fold([INQUIRY])
    converted = fold(CONVERTED)
    figures = kpis.case_kpis([answered, late, waiting, converted], T0)
    assert figures["inquiries"] == {"received": 4, "answered": 2, "answered_in_time": 1, "converted": 1,
                                    "answered_in_time_pct": 50.0}
    assert figures["volume"]["complaints"] == 1 and figures["volume"]["by_kind"] == {"complaint": 1, "inquiry": 3}
    assert facts.answer_uses(answered)[0]["purpose"] == "inquiry"


def test_a_visit_keeps_its_customer_answers_and_the_newest_call_s_standard_answer():
    visit = str(uuid.uuid4())

    def call(kind, seq, hours, **payload):
        return {"event_id": str(uuid.uuid4()), "source": "aftercare", "type": kind, "sequence": seq,
                "occurred_at": at(hours), "branch_code": "SH001", "correlation_id": "s",
                "payload": {"visit_id": visit, "kind": "return", "sale_id": "s", "case_id": None,
                            "customer_ref": "c_" + "b" * 32, **payload}}
    life = [call("visit_scheduled", 1, 0, due_at=at(48)),
            call("visit_attempted", 2, 49, attempt=1, outcome="not_reached", standard_answer="visit-a"),
            call("visit_attempted", 3, 50, attempt=2, outcome="reached", standard_answer="visit-b"),
            call("visit_completed", 4, 50, score=5, answers={"satisfaction": 5, "suggestions": "很好"},
                 standard_answer="visit-b")]
    expected = None
    for seed in range(30):
        state = facts.new_visit(visit)
        for e in random.Random(seed).sample(life, len(life)):
            state = facts.apply_visit(state, e)
        expected = expected or state
        assert state == expected
    assert expected["customer_ref"] == "c_" + "b" * 32 and expected["answers"]["suggestions"] == "很好"
    [use] = facts.answer_uses(expected)
    assert (use["standard_answer"], use["purpose"], use["score"], use["used_at"]) == ("visit-b", "visit_follow_up",
                                                                                    5, at(50))
