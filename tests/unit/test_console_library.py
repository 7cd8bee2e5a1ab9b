"""The console's case library page without servers: the period and the download's fields (the
last 90 days by default, every wrong field named), the standard answers in use joined with their
titles by id and sorted most used first, escaped, with investigation or reporting away; the nav
link for the roles reporting lets read exports; the patterns that check input take no trailing
newline."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from werkzeug.datastructures import MultiDict

from services.console import customer_summary, library, rendering, schemas, sessions
from services.console.clients import ServiceDown
from tests.unit import test_console_customer_file as file_tests

XSS, staff = file_tests.XSS, file_tests.staff
policy = file_tests.policy  # the chain policy, a module's fixture

NOW = datetime(2026, 11, 21, 17, 0, tzinfo=timezone.utc)  # 01:00 on the 22nd in Shanghai


def test_the_period_is_the_last_90_days_of_the_chain_s_calendar_unless_given_and_wrong_fields_are_named(policy):
    typed, errors = library.period(MultiDict(), policy, NOW)
    assert typed == {"from": "2026-08-25", "to": "2026-11-22"} and errors == {}  # Shanghai's day, today included
    assert library.period(MultiDict({"from": "2026-02-30", "to": "22/11/2026"}), policy, NOW)[1] == {
        "from": [library.NOT_A_DATE], "to": [library.NOT_A_DATE]}
    assert library.period(MultiDict({"from": "2026-11-22", "to": "2026-11-21"}), policy, NOW)[1] == {
        "to": [library.TO_BEFORE_FROM]}
    assert library.period(MultiDict({"from": "2023-11-20", "to": "2026-11-22"}), policy, NOW)[1] == {
        "from": [library.TOO_LONG]}
    assert library.period(MultiDict({"from": "2023-11-21", "to": "2026-11-22"}), policy, NOW)[1] == {}  # 1098 days

    typed, errors = library.download_form(MultiDict({"category": "price", "format": "xlsx"}), policy, NOW)
    assert typed["category"] == "price" and typed["format"] == "xlsx" and errors == {}
    assert library.download_form(MultiDict(), policy, NOW)[0]["format"] == "csv"
    _, errors = library.download_form(MultiDict({"category": "poetry", "format": "pdf"}), policy, NOW)
    assert errors == {"category": [library.UNKNOWN_CATEGORY], "format": [library.UNKNOWN_FORMAT]}
    assert ("price", "价格") in library.categories(policy, "zh") and ("price", "Price") in library.categories(policy, "en")


USED = {"answers": [
    {"standard_answer": "price-first-response-zh", "purpose": "first_response", "used": 2, "followed_up": 1,
     "mean_score": 4.5, "satisfied": 100.0},
    {"standard_answer": "safety-visit-follow-up-zh", "purpose": "visit_follow_up", "used": 7, "followed_up": 3,
     "mean_score": 3.6667, "satisfied": 66.7},
    {"standard_answer": "gone-from-the-policy", "purpose": "inquiry", "used": 2, "followed_up": 0, "mean_score": None,
     "satisfied": None},
    {"standard_answer": XSS, "purpose": XSS, "used": "many", "followed_up": None}, "not a use"]}
TITLES = {"answers": [{"id": "price-first-response-zh", "title": "价格首次响应"},
                      {"id": "safety-visit-follow-up-zh", "title": f"安全回访{XSS}"}, {"id": XSS, "title": None}]}


def test_the_answers_in_use_are_joined_with_their_titles_by_id_most_used_first_and_shown_escaped():
    rows = library.usage_rows(USED, TITLES, "zh")
    assert [(r["id"], r["used"]) for r in rows] == [("safety-visit-follow-up-zh", 7), ("gone-from-the-policy", 2),
                                                    ("price-first-response-zh", 2), (XSS, 0)]
    assert rows[0] == {"id": "safety-visit-follow-up-zh", "title": f"安全回访{XSS}", "purpose": "回访跟进", "used": 7,
                       "followed_up": 3, "mean_score": "3.67", "satisfied": "66.7%"}
    assert rows[1]["title"] == "" and rows[1]["mean_score"] == "" and rows[1]["satisfied"] == ""
    assert rows[2]["mean_score"] == "4.5" and rows[2]["satisfied"] == "100%" and rows[2]["purpose"] == "首次响应"
    assert library.usage_rows(USED, None, "en")[2]["title"] == "" and library.usage_rows({}, None, "en") == []

    page = rendering.render("library.html", "zh", staff=staff("store_manager"), csrf_token="t", here="/library",
                            typed={"from": "2026-08-25", "to": "2026-11-22", "category": "", "format": "csv"},
                            errors={}, categories=[("price", "价格")], formats=[("csv", "CSV"), ("xlsx", "XLSX")],
                            rows=rows, problem=None, titles_note="")
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert '<tr data-answer="safety-visit-follow-up-zh">' in page and "<td>回访跟进</td>" in page
    assert 'id="f-from" name="from" type="date" value="2026-08-25"' in page and "培训案例库" in page
    assert '<a href="/library" id="nav-library" aria-current="page">案例库</a>' in page


class _Service:
    def __init__(self, answer=None, fail=None):
        self.answer, self.fail, self.calls = answer, fail, []

    def get(self, path, token, *, timeout=None, **params):
        self.calls.append((path, params))
        if self.fail:
            raise self.fail
        return self.answer


class _Services:
    def __init__(self, reporting, investigation):
        self.reporting, self.investigation = reporting, investigation


def test_the_use_is_asked_of_reporting_for_the_period_and_goes_without_titles_when_investigation_is_away():
    reporting, investigation = _Service(USED), _Service(TITLES)
    period = {"from": "2026-08-25", "to": "2026-11-22"}
    rows, problem, titles = library._usage(_Services(reporting, investigation), "t", period, "en")
    assert reporting.calls == [("/v1/kpis/standard-answers", period)]
    assert investigation.calls == [("/v1/standard-answers", {})]  # every answer, once
    assert rows[0]["title"] == f"安全回访{XSS}" and problem is None and titles is None
    down = _Service(fail=ServiceDown("investigation", "unreachable"))
    rows, problem, titles = library._usage(_Services(reporting, down), "t", period, "en")
    assert rows[0]["title"] == "" and titles == library.TITLES_DOWN and problem is None
    rows, problem, titles = library._usage(_Services(_Service(fail=ServiceDown("reporting", "x")), investigation), "t",
                                           period, "en")
    assert rows == [] and problem == library.USE_DOWN


@pytest.mark.parametrize("role, linked", [("front_desk", False), ("aftercare_agent", False), ("auditor", False),
                                          ("store_manager", True), ("investigator", True), ("regional_manager", True),
                                          ("hq_analyst", True), ("hq_admin", True)])
def test_the_nav_links_the_library_for_the_roles_reporting_lets_read_exports(role, linked):
    page = rendering.render("notifications.html", "en", staff=staff(role), csrf_token="t", notices=[], more=None,
                            problem=None, older=False, here="/notifications")
    assert ('href="/library"' in page) == linked == (role in library.LIBRARY_ROLES)


def test_the_patterns_that_check_input_take_no_trailing_newline():
    assert schemas.StaffIn().validate({"login": "amy\n", "name": "Amy", "role": "store_manager"}) == {
        "login": [schemas._LOGIN_RULE]}
    assert schemas.StaffIn().validate({"login": "amy", "name": "Amy", "role": "store_manager"}) == {}
    assert customer_summary.REF.match("c_" + "0" * 32 + "\n") is None
    assert not sessions.well_formed("a" * 30 + "\n")
