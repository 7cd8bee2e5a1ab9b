"""The console's customer file, summary line, standard answers and inquiry forms without servers:
what reporting's file and investigation's answers become on the pages (labels, links by role,
escaping, "earlier" meaning other than the case shown), and that a service away leaves them out."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from services.console import cases, customer_summary, customers, rendering, standard_answers
from services.console.clients import ServiceDown
from services.console.policy import RULES
from services.console.repository import StaffMember
from shared.calendar.policy import load_policy

REF = "c_0123456789abcdef0123456789abcdef"
CASE, OTHER, VISIT = ("11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222",
                      "33333333-3333-4333-8333-333333333333")
XSS = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def staff(role: str) -> StaffMember:
    return StaffMember(id="1", login="amy", display_name="Amy", role=role, scope_kind="branch", scope_value="SH001",
                       active=True, password_hash="")


def a_file(**changes) -> dict:
    file = {
        "customer_ref": REF, "customer_masked": {"name": f"王{XSS}", "phone": "138****6138"}, "contact_consent": True,
        "summary": {"complaints": 3, "inquiries": 1, "open_cases": 1, "sales": 1, "visits": 1, "last_visit_score": 2,
                    "last_visit_at": "2026-11-20T06:00:00Z",
                    "allergies": [{"at": "2026-11-03T02:00:00Z", "batch": "B2026-11-03", "sku": "DYE-1",
                                   "source": "complaint", "record_id": OTHER},
                                  {"at": "2026-11-22T02:00:00Z", "batch": "B-THIS", "sku": None, "source": "complaint",
                                   "record_id": CASE}]},
        "satisfaction": [{"at": "2026-11-20T06:00:00Z", "score": 2, "kind": "return", "visit_id": VISIT,
                          "case_id": None}],
        "cases": [{"case_id": CASE, "reference": "SH001-20261122-0001", "kind": "complaint", "branch_code": "SH001",
                   "category": "safety", "priority": "urgent", "severity_flags": ["allergy"],
                   "received_at": "2026-11-22T02:00:00Z", "state": "open", "outcome": None, "closed_at": None,
                   "responsibility": None, "remedies": [], "follow_up_score": None, "batches": ["B-THIS"]},
                  {"case_id": OTHER, "reference": f"SH002-{XSS}", "kind": "complaint", "branch_code": "SH002",
                   "category": "product_quality", "priority": "general", "severity_flags": [],
                   "received_at": "2026-11-03T02:00:00Z", "state": "closed", "outcome": "satisfied",
                   "closed_at": "2026-11-10T02:00:00Z", "responsibility": "ours",
                   "remedies": [{"type": "refund", "amount": 199, "status": "fulfilled", "promise": "kept"}],
                   "follow_up_score": 4, "batches": ["B2026-11-03"]}],
        "sales": [{"sale_id": "s1", "branch_code": "SH001", "sold_at": "2026-11-01T07:00:00Z", "contact_consent": True,
                   "items": [{"type": "service", "sku": None, "code": "HAIR-DYE", "name": "染发",
                              "product_type": "hair_colour", "batch": "B2026-11-03", "technician_id": "T-017"}]}],
        "visits": [{"visit_id": VISIT, "kind": "return", "branch_code": "SH001", "due_at": "2026-11-20T01:00:00Z",
                    "status": "completed", "finished_at": "2026-11-20T06:00:00Z", "score": 2,
                    "answers": {"met_expectations": False, "satisfaction": 2, "suggestions": XSS},
                    "adverse_reaction": False, "sale_id": "s1", "case_id": None}],
        "more": {"cases": False, "sales": True, "visits": False}}
    file.update(changes)
    return file


def test_the_summary_counts_complaints_other_than_the_case_shown_in_chinese_and_english():
    zh = customer_summary.line(a_file(), "zh", this_case=CASE)
    assert zh == {"text": "以往投诉 2 次，上次回访评分 2/5，对 B2026-11-03 有过敏反应", "path": f"/customers/{REF}"}
    en = customer_summary.line(a_file(), "en", this_case=CASE)["text"]
    assert en == "2 earlier complaints, last visit score 2/5, allergic reaction to B2026-11-03"
    # From a visit (no case of its own): every complaint and every allergy is earlier.
    assert customer_summary.line(a_file(), "en")["text"].startswith("3 earlier complaints")
    assert "B-THIS" in customer_summary.line(a_file(), "en")["text"]
    alone = a_file(summary={"complaints": 1, "allergies": [], "last_visit_score": None}, cases=[a_file()["cases"][0]])
    assert customer_summary.line(alone, "en", this_case=CASE)["text"] == "No earlier complaints"
    assert customer_summary.line(None, "zh") is None
    assert customer_summary.line(a_file(customer_ref="../x"), "zh") is None


class _Reporting:
    def __init__(self, fail=None):
        self.fail, self.calls = fail, []

    def get(self, path, token, *, timeout=None, **params):
        self.calls.append((path, timeout))
        if self.fail:
            raise self.fail
        return a_file()


class _Services:
    def __init__(self, reporting=None, investigation=None):
        self.reporting, self.investigation = reporting, investigation


def test_the_summary_waits_a_short_while_and_is_left_out_when_reporting_is_away():
    reporting = _Reporting()
    found = customer_summary.read_aside(staff("store_manager"), _Services(reporting), "t", REF)
    assert found["customer_ref"] == REF and reporting.calls == [(f"/v1/customers/{REF}", 1.5)]
    away = _Reporting(ServiceDown("reporting", "no answer within 1.5 s"))
    assert customer_summary.read_aside(staff("store_manager"), _Services(away), "t", REF) is None
    assert customer_summary.read_aside(staff("auditor"), _Services(reporting), "t", REF) is None  # no files
    assert customer_summary.read_aside(staff("store_manager"), _Services(reporting), "t", None) is None


@pytest.mark.parametrize("role, case_links, visit_links", [("front_desk", True, False), ("aftercare_agent", True, True),
                                                         ("hq_analyst", True, False)])
def test_the_file_page_labels_its_records_escapes_data_and_links_what_the_role_opens(policy, role, case_links,
                                                                                     visit_links):
    view = customers.file_view(a_file(), staff(role), "zh", policy)
    page = rendering.render("customer.html", "zh", staff=staff(role), csrf_token="t", file=view, here="/")
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert "同意接受联系" in page and "过敏记录" in page and "满意度变化" in page and "仅显示最新的 200 条。" in page
    assert "2026年11月3日 10:00" in page and "已结案 · 顾客满意" in page and "退款 ¥199.00 · 已兑现" in page
    assert "染发 <code>HAIR-DYE</code> · 批号 B2026-11-03 · 技师 T-017" in page
    assert '达到预期 <span class="case-text">否</span>' in page and "严重情形 过敏" in page
    assert 'class="file-bar file-score-2"' in page
    assert (f'href="/cases/{OTHER}"' in page) == case_links
    assert (f'href="/visits/{VISIT}"' in page) == visit_links


class _Investigation:
    def __init__(self, answer=None, fail=None):
        self.answer, self.fail, self.calls, self.timeouts = answer, fail, [], []

    def get(self, path, token, *, timeout=None, **params):
        self.calls.append((path, params))
        self.timeouts.append(timeout)
        if self.fail:
            raise self.fail
        return self.answer


ANSWERS = {"window_days": 90, "as_of": "2026-11-22T02:00:00Z", "answers": [
    {"id": "safety-visit_follow_up-zh", "category": "safety", "purpose": "visit_follow_up", "language": "zh",
     "title": "安全回访", "text": "{customer}您好，我是{branch}的回访专员。", "complaints": 5, "filled": None},
    {"id": "price-visit_follow_up-zh", "category": "price", "purpose": "visit_follow_up", "language": "zh",
     "title": f"价格{XSS}", "text": "{customer}您好（{reference}）", "complaints": 0, "filled": "已填好"}]}


def test_standard_answers_keep_investigation_s_ranking_with_counts_and_the_console_fills_a_visit_s(policy):
    investigation = _Investigation(ANSWERS)
    offered = standard_answers.offered(_Services(investigation=investigation), "t", purpose="visit_follow_up",
                                       language="fr", policy=policy, page_language="en", category="safety",
                                       facts={"customer": "王女士", "branch": "上海一店", "reference": ""})
    assert investigation.calls == [("/v1/standard-answers", {"purpose": "visit_follow_up", "language": "zh",
                                                             "case_id": None, "category": "safety"})]
    assert [a["id"] for a in offered] == ["safety-visit_follow_up-zh", "price-visit_follow_up-zh"]
    assert offered[0]["text"] == "王女士您好，我是上海一店的回访专员。" and offered[0]["count"] == "5 complaints in 90 days"
    assert offered[0]["category"] == "Safety" and offered[1]["text"] == "已填好"  # investigation's filling wins
    down = _Investigation(fail=ServiceDown("investigation", "unreachable"))
    assert standard_answers.offered(_Services(investigation=down), "t", purpose="first_response", language="zh",
                                    policy=policy, page_language="zh") is None


def test_a_task_form_lists_the_answers_to_choose_and_an_open_inquiry_offers_conversion_to_its_roles(policy):
    answers = standard_answers.offered(_Services(investigation=_Investigation(ANSWERS)), "t", purpose="inquiry",
                                       language="zh", policy=policy, page_language="zh")
    form = cases.form_view("answer", CASE, "zh", values={"standard_answer": "price-visit_follow_up-zh"},
                           answers=answers)
    page = rendering.render("_case_task.html", "zh", form=form, csrf_token="t")
    assert 'data-fills="answer-message"' in page and 'id="answer-message"' in page
    assert 'value="price-visit_follow_up-zh" data-text="answer-standard_answer-2" checked' in page
    assert "近 90 天投诉 5 起" in page and "价格&lt;script&gt;" in page and "<script>alert" not in page
    without = rendering.render("_case_task.html", "zh", csrf_token="t", form=cases.form_view(
        "respond", CASE, "zh", values={"standard_answer": "x-zh"}, answers=None))
    assert "标准应答语暂时无法读取" in without and '<input type="hidden" name="standard_answer" value="x-zh">' in without
    assert "standard_answer" not in rendering.render("_case_task.html", "zh", csrf_token="t",
                                                     form=cases.form_view("acknowledge", CASE, "zh"))

    inquiry = {"id": CASE, "kind": "inquiry", "state": "open", "category": "after_sales", "severity_flags": []}
    form = cases.convert_view(inquiry, staff("front_desk"), "zh", policy)
    assert form["category"] == "after_sales" and ("allergy", "过敏", False) in form["flags"]
    assert cases.convert_view(inquiry, staff("aftercare_agent"), "zh", policy) is None
    assert cases.convert_view({**inquiry, "kind": "complaint"}, staff("front_desk"), "zh", policy) is None
    assert cases.convert_view({**inquiry, "state": "closed"}, staff("front_desk"), "zh", policy) is None
    view = cases.case_view({**inquiry, "reference": "R", "open_tasks": []}, staff=staff("front_desk"), language="zh",
                           policy=policy, now=datetime(2026, 11, 22, 2, tzinfo=timezone.utc))
    assert view["kind"] == "咨询" and view["kind_code"] == "inquiry"


def test_a_call_given_a_shorter_deadline_gives_up_at_it_and_the_service_then_rests():
    import socket
    import time

    from services.console.clients import ServiceClient

    silent = socket.socket()  # accepts connections (the backlog), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        client = ServiceClient("reporting", f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=5, rest=10)
        started = time.monotonic()
        with pytest.raises(ServiceDown, match="no answer within 0.3 s"):
            client.get(f"/v1/customers/{REF}", "t", timeout=0.3)
        assert time.monotonic() - started < 2
        with pytest.raises(ServiceDown, match="not asked again yet"):  # resting: the next page's line does not wait
            client.get(f"/v1/customers/{REF}", "t", timeout=0.3)
    finally:
        silent.close()


def test_a_follow_up_visit_is_offered_the_answers_of_its_case_s_category_filled_by_the_console(policy):
    from services.console import call_list

    visit = {"id": VISIT, "kind": "follow_up", "status": "scheduled", "branch_code": "SH001", "case_id": OTHER,
             "customer_ref": REF, "customer_masked": {"name": "王**"}, "customer_language": "zh",
             "follows": {"type": "case", "id": OTHER, "reference": "SH002-20261103-0001"}}
    investigation = _Investigation(ANSWERS)
    shown = call_list._shown(visit, policy, "zh")
    offered = call_list._answers(visit, shown, a_file(), _Services(investigation=investigation), "t", policy, "zh")
    assert investigation.calls[0][1]["category"] == "product_quality"  # the case's, as the file knows it
    assert offered[0]["text"] == "王**您好，我是上海静安店的回访专员。"
    assert offered[1]["text"] == "已填好"
    call_list._answers(visit, shown, None, _Services(investigation=investigation), "t", policy, "zh")
    assert investigation.calls[1][1]["category"] is None  # no file: every category's
    after_sale = {**visit, "kind": "return", "case_id": None, "sale_id": VISIT}
    assert call_list._answers(after_sale, shown, a_file(), _Services(investigation=investigation), "t", policy,
                              "zh") == []  # a return visit after a sale: no answers about a reported problem
    assert len(investigation.calls) == 2
    # beside the visit (aftercare's): the summary's short deadline, then the form goes without them
    assert investigation.timeouts == [RULES.aside_timeout_seconds] * 2 == [1.5, 1.5]
