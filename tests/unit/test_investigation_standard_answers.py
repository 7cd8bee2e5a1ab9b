"""Standard answers (标准应答语) in plain Python: the policy section and what `closeloop policy check`
says of a bad one, the bundled set, the ranking by complaints, the case's facts filled in; and
what the answers' ids and the findings' facts add to the case's events."""
from datetime import datetime, timedelta, timezone
from itertools import product

from services.investigation import standard_answers
from services.investigation.domain import Actor, Case
from services.investigation.policy import ANSWER_LANGUAGES, ANSWER_PURPOSES, StandardAnswer, placeholder_problems
from shared.calendar.policy import check_policy, load_policy
from shared.testing.samples import complaint_event, edited_policy

POLICY = load_policy()
RULES = POLICY.sections["investigation"]
SH001 = POLICY.branch("SH001")
T0 = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
MANAGER = Actor("SM-1", "store_manager")


def opened(**changes) -> Case:
    payload = {**complaint_event()["payload"], "received_at": T0.isoformat(),
               "first_response_due": (T0 + timedelta(hours=24)).isoformat(),
               "resolution_due": (T0 + timedelta(days=7)).isoformat(), **changes}
    return Case.open(payload, branch=SH001, rules=RULES, now=T0, process="complaint_case@abc")


def test_the_bundled_policy_has_a_zh_and_an_en_answer_for_every_category_and_purpose_that_fill():
    assert RULES.categories == tuple(POLICY.section("intake").categories)
    have = {(a.category, a.purpose, a.language) for a in RULES.standard_answers}
    assert have == set(product(RULES.categories, ANSWER_PURPOSES, ANSWER_LANGUAGES))
    facts = opened().answer_facts(SH001)
    for answer in RULES.standard_answers:
        text = standard_answers.filled(answer, facts)
        assert "{" not in text and len(text) <= 2000, answer.id
    assert RULES.standard_answer("safety-first-response-zh").title == "过敏或受伤：首次回复"


def test_the_policy_check_names_every_problem_of_the_standard_answers(tmp_path):
    good = {"id": "x-1", "category": "safety", "purpose": "inquiry", "language": "zh", "title": "t", "text": "您好"}

    def edit(doc):
        doc["investigation"]["standard_answers"] = [
            good, dict(good),                                        # [1] the same id again
            {**good, "id": "Bad Id", "category": "massage"},         # [2]
            {**good, "id": "x-3", "purpose": "gossip", "language": "fr"},
            {**good, "id": "x-4", "text": "{customer}，{phone} {branch!r} {reference:>9} {"},
            {**good, "id": "x-5", "text": "x" * 2001, "title": "", "colour": "red"},
            "an answer",
        ]
    problems = check_policy(edited_policy(tmp_path, "answers.yaml", edit))
    where = "investigation.standard_answers"
    expected = [
        f"{where}[1] (x-1).id: 'x-1' is the id of answer [0] too",
        f"{where}[2] (Bad Id).id: 'Bad Id' is not an id",
        f"{where}[2] (Bad Id).category: unknown category 'massage'",
        f"{where}[3] (x-3).purpose: unknown purpose 'gossip'",
        f"{where}[3] (x-3).language: unknown language 'fr'",
        f"{where}[4] (x-4).text: a brace is not closed",
        f"{where}[5] (x-5).colour: unknown key",
        f"{where}[5] (x-5).title: missing",
        f"{where}[5] (x-5).text: 2001 characters: at most 2000",
        f"{where}[6]: must be a mapping",
    ]
    for start in expected:
        assert any(p.startswith(start) for p in problems), (start, problems)
    assert len(problems) == len(expected)
    assert placeholder_problems("{customer}，{phone} {branch!r} {reference:>9}") == [
        "unknown placeholder {phone} (placeholders: {customer}, {branch}, {reference}, {first_response_due}, "
        "{resolution_due})", "the placeholder {branch} takes no format or conversion",
        "the placeholder {reference} takes no format or conversion"]
    assert placeholder_problems("{{literal}} {resolution_due}") == []


def test_answers_rank_by_their_category_s_complaints_then_the_policy_s_category_order_then_id():
    answer = lambda i, category: StandardAnswer(i, category, "first_response", "zh", "t", "x")  # noqa: E731
    answers = [answer("b", "price"), answer("a", "price"), answer("c", "booking"), answer("d", "safety"),
               answer("e", "hygiene_environment")]
    ranked = standard_answers.ranked(answers, {"price": 3, "booking": 3, "hygiene_environment": 1},
                                     RULES.categories)
    # price and booking tie at 3: booking comes first in the policy; within price, by id.
    assert [(a.id, n) for a, n in ranked] == [("c", 3), ("a", 3), ("b", 3), ("e", 1), ("d", 0)]
    assert [a.id for a in standard_answers.selected(answers, category="price")] == ["b", "a"]
    assert standard_answers.selected(answers, purpose="inquiry", language="zh") == []


def test_a_case_s_facts_fill_the_placeholders_in_the_branch_s_time_and_an_anonymous_customer_is_greeted_so():
    answer = StandardAnswer("x", "safety", "first_response", "zh", "t",
                            "{customer}：{branch} {reference} 回复 {first_response_due} 结果 {resolution_due}")
    case = opened()
    assert standard_answers.filled(answer, case.answer_facts(SH001)) == (
        "王**：上海静安店 SH001-20261122-0001 回复 2026-11-23 10:00 结果 2026-11-29 10:00")
    anonymous = opened(customer_masked={}).answer_facts(None)  # and a branch the policy no longer has: UTC
    assert standard_answers.filled(answer, anonymous).startswith("顾客：SH001 SH001-20261122-0001 回复 2026-11-23 02:00")
    english = StandardAnswer("y", "safety", "first_response", "en", "t", "Dear {customer},")
    assert standard_answers.filled(english, anonymous) == "Dear customer,"


def test_the_answer_used_the_findings_facts_and_the_written_result_s_measures_go_on_the_events():
    case = opened()
    case.complete("respond", {"message": "您好", "channel": "phone", "standard_answer": "safety-first-response-zh"},
                  MANAGER, T0)
    case.complete("record_findings", {"facts": "批次 B1 与红肿吻合", "service_log_checked": True,
                                      "product_batch_checked": True, "root_cause": "未做皮肤测试",
                                      "responsibility": "ours", "signed_by": "T-1"}, MANAGER, T0)
    case.complete("notify_customer", {"measures": "退款", "completed_at": T0, "responsible": "SM-1",
                                      "follow_up": "三天后回访"}, MANAGER, T0, RULES, SH001)
    fields = {e.type: e.fields for _, e in case.pull_events() if hasattr(e, "fields")}
    assert fields["case_acknowledged"]["standard_answer"] == "safety-first-response-zh"
    assert case.first_response["standard_answer"] == "safety-first-response-zh"
    assert fields["findings_recorded"]["facts"] == "批次 B1 与红肿吻合"
    notified = fields["customer_notified"]
    assert (notified["measures"], notified["follow_up"], notified["standard_answer"]) == ("退款", "三天后回访", None)
    assert case.written_result["standard_answer"] is None
