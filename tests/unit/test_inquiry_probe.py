"""What the probe of issue 13's inquiries found, pinned without servers: a converted inquiry's
timeline entry (what the inquiry was) reads as words on the case page, not as a Python dict; an
aftercare attempt's standard answer id ends where it seems to (no trailing newline)."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from services.aftercare.schemas import AttemptIn
from services.console import cases, standard_answers
from shared.web.requests import load

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_what_a_converted_inquiry_was_reads_as_labelled_words_on_its_timeline():
    detail = {"from": {"kind": "inquiry", "category": "service_quality", "priority": "low", "state": "closed",
                       "outcome": "answered", "first_response": {"message": "<b>正常</b>", "channel": "phone",
                                                                 "at": "2026-11-22T02:10:00Z"}},
              "note": "顾客说头皮红肿"}
    [(key, text), note] = cases._detail_items(detail, SHANGHAI, "zh")
    assert key == "from" and "{" not in text and "None" not in text and "'" not in text
    assert text.startswith("kind: 咨询; category: 服务质量; priority: 低; state: 已结案; outcome: 已答复; first_response: ")
    assert "message: <b>正常</b>" in text and "2026年11月22日 10:10" in text  # escaped by the template
    assert note == ("note", "顾客说头皮红肿")


def test_an_aftercare_attempt_s_standard_answer_id_takes_no_trailing_newline():
    for wrong in ("price-visit-follow-up-zh\n", "\nprice", "a\nb"):
        _, errors = load(AttemptIn(), {"outcome": "not_reached", "standard_answer": wrong})
        assert list(errors) == ["standard_answer"], repr(wrong)
    assert load(AttemptIn(), {"outcome": "not_reached", "standard_answer": "price-visit-follow-up-zh"})[1] == {}


def test_a_visit_s_standard_answer_is_filled_as_a_template_by_the_console():
    """A literal brace is written {{ in the policy: the agent sees one; what the console does not
    know stays a placeholder to fill by hand; a fact is put in once, never read as a template."""
    text = "{{会员}} {customer}，您在{branch}的服务（{reference}）{first_response_due}"
    assert standard_answers.fill(text, {"customer": "{branch}**", "branch": "静安店", "reference": ""}) == (
        "{会员} {branch}**，您在静安店的服务（{reference}）{first_response_due}")
    assert standard_answers.fill("a { b", {"customer": "王**"}) == "a { b"  # no template: as it is
