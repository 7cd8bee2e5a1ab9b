"""The console's case page (`/cases/{id}`) and its task forms against a real investigation service:
the store manager opens the case from "my work", assigns it and responds; the owner records
findings (investigation's refusals shown beside the fields they name) and proposes a refund above
their authority; the regional manager approves it. With htmx (partial swaps, a refused form
retargeted) and without (POST, 303). Another branch's case is the console's 404, a role that may
not read cases its 403; HTML in the complaint, names and notes is inert; investigation away keeps
what was typed."""
from __future__ import annotations

import re

import pytest
import requests

from shared.testing.fixtures import wait_until
from tests.e2e import test_console
from tests.e2e.test_console import complaint_at, publish

pytestmark = pytest.mark.e2e
console = test_console.console  # the console fixture, shared
SCRIPT = '<script>alert("x")</script>'


def opened(investigation, token, *events) -> None:
    hq = {"Authorization": f"Bearer {token('hq_admin', branch='*')}"}
    for event in events:
        url = f"{investigation.base_url}/v1/cases/{event['correlation_id']}"
        wait_until(lambda: requests.get(url, headers=hq, timeout=5).status_code == 200, "the case to open")


def csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def htmx(browser, path: str, data: dict, page: str) -> requests.Response:
    """What htmx sends for a form: its fields, the HX-Request header and the CSRF header."""
    return browser.post(path, data, headers={"HX-Request": "true", "X-CSRF-Token": csrf(page)})


def field_error(page: str, form: str, name: str) -> str:
    found = re.search(rf'id="{form}-{name}-error" data-field="{name}">([^<]*)<', page)
    assert found, f"no error beside {form}.{name}: {page[:3000]}"
    return found.group(1)


@pytest.fixture
def chain(console, start_service, amqp_uri, clock, token):
    """Investigation with a case at SH001 (HTML in its text) and one at SH002; the console with
    SH001's store manager, an investigator of SH001 and the east's regional manager."""
    investigation = start_service("investigation", clock=clock)
    c = console(INVESTIGATION_URL=investigation.base_url)
    mine = complaint_at("SH001", "SH001-20261122-0001", "east")
    mine["payload"]["description"] = f"毛巾很脏 {SCRIPT}"
    theirs = complaint_at("SH002", "SH002-20261122-0002", "east")
    for event in (mine, theirs):
        publish(amqp_uri, event)
    opened(investigation, token, mine, theirs)
    c.add("amy", branch="SH001", name=f"{SCRIPT}王店长")
    c.add("ivan", role="investigator", branch="SH001", name="李调查")
    assert c.staff("add", "rita", "--name", "Rita", "--role", "regional_manager", "--region", "east") == 0
    return c, mine["correlation_id"], theirs["correlation_id"]


def test_a_case_is_assigned_answered_investigated_and_a_refund_above_authority_approved(chain):
    c, case_id, other_id = chain
    path = f"/cases/{case_id}"

    # The store manager: from my work to the case.
    amy = c.browser()
    assert amy.sign_in("amy").status_code == 303
    work = amy.get("/").text
    assert f'href="{path}"' in work
    page = amy.get(path)
    assert page.status_code == 200, page.text[:2000]
    text = page.text
    assert "SH001-20261122-0001" in text and "待处理" in text and "2026年11月22日 10:00" in text  # received, Shanghai
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text and SCRIPT not in text
    assert 'id="form-assign"' in text and 'id="form-respond"' not in text  # only what is waiting
    assert 'data-due="2026-11-23T02:00:00Z"' in text and "剩余 1天0小时0分" in text  # first response clock
    assert '<option value="ivan">李调查</option>' in text  # the branch's staff suggested as owners

    # Assign with htmx: the case's part comes back, updated.
    assigned = htmx(amy, f"{path}/tasks/assign", {"owner": "ivan", "note": "<b>请尽快</b>"}, text)
    assert assigned.status_code == 200 and "<html" not in assigned.text and 'id="case"' in assigned.text
    assert "已保存" in assigned.text and "已指派" in assigned.text and 'id="form-respond"' in assigned.text
    assert "<b>请尽快" not in assigned.text  # (investigation keeps an assignment's note to itself)

    # Respond without JS: a plain POST, then 303 to the page.
    page = amy.get(path).text
    answered = amy.post(f"{path}/tasks/respond", {"message": "已致电顾客 <i>道歉</i>", "channel": "phone",
                                                  "csrf_token": csrf(page)})
    assert answered.status_code == 303 and answered.headers["Location"] == f"{path}?done=respond"
    page = amy.get(answered.headers["Location"]).text
    assert "已保存" in page and "已首次响应" in page and "已致电顾客 &lt;i&gt;道歉&lt;/i&gt;" in page
    assert 'id="form-record_findings"' in page  # a store manager may record findings too; here the owner does

    # The owner: findings refused by investigation, shown beside the field; the typed text kept.
    ivan = c.browser()
    assert ivan.sign_in("ivan").status_code == 303
    page = ivan.get(path).text
    assert 'id="form-record_findings"' in page
    findings = {"facts": "毛巾未消毒 <u>属实</u>", "service_log_checked": "true", "root_cause": "消毒柜故障",
                "responsibility": "ours", "signed_by": "ivan li"}
    refused = htmx(ivan, f"{path}/tasks/record_findings", findings, page)
    assert refused.status_code == 200 and refused.headers["HX-Retarget"] == "#form-record_findings"
    assert refused.headers["HX-Reswap"] == "outerHTML" and "<html" not in refused.text
    assert "staff id" in field_error(refused.text, "record_findings", "signed_by")
    assert "毛巾未消毒 &lt;u&gt;属实&lt;/u&gt;" in refused.text and 'value="ivan li"' in refused.text
    # Without JS: the whole page, the form as typed, the message beside its field.
    plain = ivan.post(f"{path}/tasks/record_findings", {**findings, "csrf_token": csrf(page)})
    assert plain.status_code == 400 and "staff id" in field_error(plain.text, "record_findings", "signed_by")
    assert "SH001-20261122-0001" in plain.text and "调查服务拒绝了此操作" in plain.text

    done = htmx(ivan, f"{path}/tasks/record_findings", {**findings, "signed_by": "ivan"}, page)
    assert "已调查" in done.text and "消毒柜故障" in done.text and "我方责任" in done.text
    assert 'id="form-propose_remedy"' in done.text

    # A refund: an amount the console cannot read, a deadline investigation refuses, then 5,000 CNY.
    page = ivan.get(path).text
    remedy = {"type": "refund", "amount": "五千", "note": "退还 <em>全部</em> 费用"}
    bad = htmx(ivan, f"{path}/tasks/propose_remedy", remedy, page)
    assert "请填写人民币金额" in field_error(bad.text, "propose_remedy", "amount")
    past = htmx(ivan, f"{path}/tasks/propose_remedy", {**remedy, "amount": "5000", "deadline": "2026-11-21T10:00"},
                page)
    assert "must be after now" in field_error(past.text, "propose_remedy", "deadline")
    proposed = htmx(ivan, f"{path}/tasks/propose_remedy", {**remedy, "amount": "5000"}, page)
    assert "待审批" in proposed.text and "¥5,000.00" in proposed.text and "区域经理" in proposed.text
    assert "退还 &lt;em&gt;全部&lt;/em&gt; 费用" in proposed.text
    assert 'id="form-approve"' not in proposed.text  # an investigator has no authority

    # The store manager's 2,000 CNY do not cover it: no form, and a forged post is refused.
    page = amy.get(path).text
    assert 'id="form-approve"' not in page and "等待：" in page
    forged = htmx(amy, f"{path}/tasks/approve", {"note": "ok"}, page)
    assert forged.headers["HX-Retarget"] == "#form-approve" and "regional_manager" in forged.text

    # The regional manager approves it.
    rita = c.browser()
    assert rita.sign_in("rita").status_code == 303
    page = rita.get(path).text
    assert 'id="form-approve"' in page and 'id="form-reject"' in page
    remedy_id = re.search(r'id="form-approve".*?name="remedy_id" value="([^"]+)"', page, re.S).group(1)
    approved = htmx(rita, f"{path}/tasks/approve", {"remedy_id": remedy_id, "note": "同意 <b>退款</b>"}, page)
    assert approved.status_code == 200 and "已批准" in approved.text
    assert "由 rita 于 2026年11月22日 10:00 决定" in approved.text and "&lt;b&gt;退款&lt;/b&gt;" in approved.text
    assert 'id="form-fulfil"' in approved.text and 'id="form-approve"' not in approved.text
    # The task is no longer waiting: a second approval says the case moved on.
    again = htmx(rita, f"{path}/tasks/approve", {"remedy_id": remedy_id}, page)
    assert again.status_code == 200 and "此任务已不在等待" in again.text

    # In English: ISO-like times, the same case.
    assert rita.post("/language", {"language": "en", "next": path, "csrf_token": csrf(page)}).status_code == 303
    english = rita.get(path).text
    assert "Remedies and approvals" in english and "2026-11-22 10:00" in english and "Approved" in english

    # Another branch's case is not reachable by URL, for amy; a well-formed unknown id neither.
    assert c.browser().get(f"/cases/{other_id}").status_code == 303  # signed out: the sign-in form
    for missing in (f"/cases/{other_id}", "/cases/00000000-0000-0000-0000-000000000000", "/cases/not-a-case"):
        refused = amy.get(missing)
        assert refused.status_code == 404 and "没有这个页面" in refused.text and "SH002-20261122" not in refused.text
    assert amy.post(f"/cases/{other_id}/tasks/assign", {"owner": "amy", "csrf_token": csrf(amy.get(path).text)}
                    ).status_code == 404
    assert "SH002-20261122-0002" in rita.get(f"/cases/{other_id}").text  # the region's manager sees it


def test_a_role_that_may_not_read_cases_gets_the_403_page_and_csrf_is_required(chain):
    c, case_id, _ = chain
    assert c.staff("add", "audrey", "--name", "Audrey", "--role", "auditor", "--branch", "*") == 0
    auditor = c.browser()
    assert auditor.sign_in("audrey").status_code == 303
    page = auditor.get(f"/cases/{case_id}")
    assert page.status_code == 403 and "您的角色无权查看案件" in page.text

    amy = c.browser()
    amy.sign_in("amy")
    assert amy.post(f"/cases/{case_id}/tasks/assign", {"owner": "amy"}).status_code == 403  # no CSRF token
    assert "已指派" not in amy.get(f"/cases/{case_id}").text


def test_investigation_away_shows_a_clear_message_and_keeps_what_was_typed(console):
    c = console()  # investigation unreachable
    c.add("amy")
    amy = c.browser()
    amy.sign_in("amy")
    case = "/cases/6f1c2a44-52a9-4a53-9d0e-2b7c1f0e7a11"
    page = amy.get(case)
    assert page.status_code == 503 and "案件暂时无法读取" in page.text
    typed = {"message": "已致电顾客，<b>明天</b>回访", "channel": "wechat", "csrf_token": amy.csrf("/")}
    plain = amy.post(f"{case}/tasks/respond", typed)
    assert plain.status_code == 503 and "调查服务无响应：未保存任何内容" in plain.text
    assert "已致电顾客，&lt;b&gt;明天&lt;/b&gt;回访</textarea>" in plain.text
    assert '<option value="wechat" selected>' in plain.text
    with_htmx = htmx(amy, f"{case}/tasks/respond", typed, amy.get("/").text)
    assert with_htmx.status_code == 200 and with_htmx.headers["HX-Retarget"] == "#form-respond"
    assert "已致电顾客，&lt;b&gt;明天&lt;/b&gt;回访" in with_htmx.text
