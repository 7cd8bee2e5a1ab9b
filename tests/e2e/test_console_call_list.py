"""The console's call list and a visit (issue 12, the aftercare agents' part) against real
intake, investigation and aftercare services with their relays, on one clock the test moves: an
agent signs in, sees the call list with the allergy check first, "next" opens it, the contact on
request, "not reached" then "reached" with answers (aftercare's refusals beside their fields, what
was typed kept), the allergy answer shows the urgent case investigation opened; another branch's
visit answers 404, a role that does not call answers 403, HTML typed is shown inert, a POST without
the CSRF token is refused; with aftercare's claims, two agents pressing "next" open different visits
and a colleague's visit opens read-only."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import eventlet
import pytest

from shared.testing.fixtures import jsonbody, wait_until
from tests.e2e import test_aftercare_visits, test_console
from tests.e2e.test_aftercare_visits import SALE, scheduled_visit
from tests.e2e.test_investigation_cases import bearer

pytestmark = pytest.mark.e2e
chain = test_aftercare_visits.chain  # intake, investigation, aftercare, relays: the fixtures, shared
console = test_console.console
ALLERGY_DUE = datetime.fromisoformat("2026-11-24T09:00:00+08:00")  # SALE's hair colour: 2 days, next contact hour
SKINCARE = {"customer": {"name": "钱女士", "phone": "13700003333", "contact_consent": True, "language": "zh"},
            "sold_at": "2026-11-16T15:00:00+08:00",  # due 7 days later: 2026-11-23 15:00, overdue on the 24th
            "items": [{"type": "product", "sku": "SK-01", "name": "保湿精华", "product_type": "skincare",
                       "batch": "S-2026-10"}]}
INJECTED = '<img src=x onerror=alert(1)>'


def sale(chain, body, branch="SH001") -> str:
    answer = chain.http.post(chain.intake.url("/v1/sales"), json=body,
                             headers=bearer(chain.token("front_desk", branch=branch)), timeout=10)
    assert answer.status_code == 201, answer.text
    return jsonbody(answer)["id"]


def csrf(page_text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page_text).group(1)


@pytest.fixture
def working(chain, console):
    """Three sales (an allergy check and an overdue skincare visit at SH001, one at SH002), the
    clock at 10:00 on the day the allergy check is due, the console on the three services, and
    agent ann of SH001 signed in."""
    allergy_sale, skincare_sale = sale(chain, SALE), sale(chain, SKINCARE)
    other_sale = sale(chain, {**SKINCARE, "customer": {**SKINCARE["customer"], "phone": "13700004444"}}, "SH002")
    ids = {name: scheduled_visit(chain, sale_id)["visit_id"]
           for name, sale_id in (("allergy", allergy_sale), ("skincare", skincare_sale), ("other", other_sale))}
    chain.clock.set(ALLERGY_DUE + timedelta(hours=1))
    c = console(INTAKE_URL=chain.intake.base_url, INVESTIGATION_URL=chain.investigation.base_url,
                AFTERCARE_URL=chain.aftercare.base_url)
    c.add("ann", role="aftercare_agent", branch="SH001", name="安 回访")
    agent = c.browser()
    assert agent.sign_in("ann").status_code == 303
    return chain, c, agent, ids


def test_an_agent_works_the_call_list_from_next_to_an_allergy_answer_and_its_urgent_case(working):
    chain, c, agent, ids = working

    page = agent.get("/visits")
    assert page.status_code == 200, page.text[:500]
    text = page.text
    assert ids["allergy"] in text and ids["skincare"] in text and ids["other"] not in text
    assert text.index(ids["allergy"]) < text.index(ids["skincare"])  # allergy checks first, though due later
    assert "过敏回访" in text and "已逾期" in text and "2026年11月24日 09:00" in text and "2026年11月23日 15:00" in text
    assert 'hx-trigger="every 20s"' in text and "/static/call_list.js" in text

    poll = agent.get("/visits?branch=SH001", headers={"HX-Request": "true"})  # the refresh: the list alone
    assert poll.status_code == 200 and "<html" not in poll.text and ids["allergy"] in poll.text
    filtered = agent.get("/visits?status=completed&branch=SH001")
    assert filtered.status_code == 200 and ids["allergy"] not in filtered.text
    assert 'hx-get="/visits?status=completed&amp;branch=SH001"' in filtered.text  # the filters stay in the URL

    token = csrf(text)
    assert agent.post("/visits/next", {}).status_code == 403  # no CSRF token
    opened = agent.post("/visits/next", {"csrf_token": token})
    assert opened.status_code == 303 and opened.headers["Location"] == f"/visits/{ids['allergy']}"

    visit = agent.get(opened.headers["Location"])
    assert visit.status_code == 200, visit.text[:500]
    assert "染发" in visit.text and "B2026-11-03" in visit.text and "T-017" in visit.text
    assert "13700002222" not in visit.text  # the contact only on request
    # "Show the contact" sends the purpose chosen (the visit's kind first) with the CSRF header.
    assert 'hx-get="/visits/%s/contact"' % ids["allergy"] in visit.text and "售后回访" in visit.text
    contact = agent.get(f"/visits/{ids['allergy']}/contact", params={"purpose_choice": "return"},
                        headers={"HX-Request": "true", "X-CSRF-Token": csrf(visit.text)})
    assert contact.status_code == 200 and "13700002222" in contact.text and "赵女士" in contact.text

    # Not reached, with HTML in the note: saved and shown as text.
    attempt = f"/visits/{ids['allergy']}/attempts"
    assert agent.post(attempt, {"outcome": "not_reached", "note": INJECTED}).status_code == 403  # no CSRF
    saved = agent.post(attempt, {"csrf_token": token, "outcome": "not_reached", "channel": "phone",
                                 "note": INJECTED, "branch": "SH001"})
    assert saved.status_code == 303 and saved.headers["Location"] == f"/visits/{ids['allergy']}?saved=not_reached"
    after = agent.get(saved.headers["Location"]).text
    assert "已保存：未接通" in after and "<img src=x" not in after and "&lt;img src=x onerror=alert(1)&gt;" in after
    assert "2026年11月24日 10:00</time> · 未接通" in after

    # Reached, the answers incomplete: aftercare's refusals beside their fields, what was typed kept.
    answers = {"csrf_token": token, "outcome": "reached", "branch": "SH001", "met_expectations": "no",
               "discomfort": "yes", "packaging_ok": "", "suggestions": "下次<b>慢一点</b>"}
    missing = agent.post(attempt, answers)
    assert missing.status_code == 400, missing.text[:500]
    assert 'id="satisfaction-error"' in missing.text and "下次&lt;b&gt;慢一点&lt;/b&gt;" in missing.text
    assert 'value="reached" checked' in missing.text and 'name="discomfort" value="yes" checked' in missing.text
    undescribed = agent.post(attempt, {**answers, "satisfaction": "2"},
                             headers={"HX-Request": "true"})  # htmx: the form alone, refusals in place
    assert undescribed.status_code == 200 and "<html" not in undescribed.text
    assert 'id="discomfort_description-error"' in undescribed.text and "say what the discomfort" in undescribed.text
    assert 'name="satisfaction" value="2" checked' in undescribed.text

    done = agent.post(attempt, {**answers, "satisfaction": "2", "discomfort_description": "头皮红肿<script>x</script>"},
                      headers={"HX-Request": "true"})
    assert done.status_code == 200 and done.headers["HX-Redirect"] == f"/visits/{ids['allergy']}?saved=reached"
    shown = agent.get(done.headers["HX-Redirect"]).text
    assert "已上报不良反应：正在开立紧急案件。" in shown and 'id="urgent-case"' in shown
    assert "头皮红肿&lt;script&gt;" in shown and "<script>x" not in shown and "2 / 5" in shown
    assert 'id="visit-attempt"' not in shown  # completed: no more form

    def urgent():
        answer = agent.get(f"/visits/{ids['allergy']}/urgent-case?branch=SH001", headers={"HX-Request": "true"})
        assert answer.status_code == 200
        return answer.text if "已开立紧急案件" in answer.text else None
    case = wait_until(urgent, "the urgent case investigation opens")
    assert re.search(r'href="/cases/[0-9a-f-]{36}">SH001-AR-20261124-', case) and "首次响应截止 2026年11月24日 11:00" in case
    assert "hx-trigger" not in case  # found: no more polling

    # Saving again on a finished visit: aftercare's 409, said on the page.
    again = agent.post(attempt, {"csrf_token": token, "outcome": "not_reached", "branch": "SH001"})
    assert again.status_code == 409 and "售后服务现在不接受这次通话记录" in again.text

    # Next now opens the skincare visit; another branch's visit is not reachable by URL.
    assert agent.post("/visits/next", {"csrf_token": token}).headers["Location"] == f"/visits/{ids['skincare']}"
    for path in (f"/visits/{ids['other']}", f"/visits/{ids['other']}/contact", "/visits/not-a-visit"):
        refused = agent.get(path, params={"purpose_choice": "return"}, headers={"X-CSRF-Token": token})
        assert refused.status_code == 404 and "没有这个回访" in refused.text and "13700004444" not in refused.text
    foreign = agent.post(f"/visits/{ids['other']}/attempts", {"csrf_token": token, "outcome": "not_reached"})
    assert foreign.status_code == 404


def test_call_back_in_english_a_role_that_does_not_call_and_an_empty_queue(working):
    chain, c, agent, ids = working
    token = csrf(agent.get("/visits").text)
    assert agent.post("/language", {"language": "en", "csrf_token": token}).status_code == 303
    page = agent.get(f"/visits/{ids['skincare']}")
    assert page.status_code == 200 and "2026-11-23 15:00" in page.text and "Overdue" in page.text
    path = f"/visits/{ids['skincare']}/attempts"
    late = agent.post(path, {"csrf_token": token, "outcome": "call_back", "call_back_at": "2026-12-30T10:00",
                             "branch": "SH001", "note": "晚点"})
    assert late.status_code == 422 and 'id="call_back_at-error"' in late.text and "must be before" in late.text
    assert 'value="2026-12-30T10:00"' in late.text and ">晚点</textarea>" in late.text
    bad = agent.post(path, {"csrf_token": token, "outcome": "call_back", "call_back_at": "tomorrow", "branch": "SH001"})
    assert bad.status_code == 400 and 'id="call_back_at-error"' in bad.text
    ok = agent.post(path, {"csrf_token": token, "outcome": "call_back", "call_back_at": "2026-11-25T14:30",
                           "branch": "SH001"})
    assert ok.status_code == 303
    shown = agent.get(ok.headers["Location"]).text
    assert "Saved: Call back." in shown and "Call back at 2026-11-25 14:30" in shown

    # The allergy check is left: next opens it; a front desk may not see the call list.
    assert agent.post("/visits/next", {"csrf_token": token}).headers["Location"] == f"/visits/{ids['allergy']}"
    c.add("fay", role="front_desk", branch="SH001")
    desk = c.browser()
    desk.sign_in("fay")
    for path in ("/visits", f"/visits/{ids['allergy']}"):
        refused = desk.get(path)
        assert refused.status_code == 403 and "您的角色不处理回访列表" in refused.text

    # The SH002 agent's queue, once its one visit is called back, is empty: next says so.
    c.add("bo", role="aftercare_agent", branch="SH002")
    bo = c.browser()
    bo.sign_in("bo")
    bo_token = csrf(bo.get("/visits").text)
    assert bo.post(f"/visits/{ids['other']}/attempts", {"csrf_token": bo_token, "outcome": "not_reached",
                                                         "branch": "SH002"}).status_code == 303
    empty = bo.post("/visits/next", {"csrf_token": bo_token})
    assert empty.status_code == 303 and empty.headers["Location"] == "/visits?empty=1"
    assert "目前没有到期的回访" in bo.get("/visits?empty=1").text


def test_two_agents_pressing_next_open_different_visits_a_colleague_s_is_read_only_and_saving_frees_it(working):
    """Visit claims (aftercare's): "next" claims the visit it opens, so two agents pressing it
    together open different visits; a visit a colleague calls opens read-only, saying who until
    when, and the call list tags it; saving a call, "put it back" and "next" from the page free it."""
    chain, c, ann, ids = working
    c.add("bo", role="aftercare_agent", branch="SH001", name="博 回访")
    bo = c.browser()
    assert bo.sign_in("bo").status_code == 303
    tokens = {ann: csrf(ann.get("/visits").text), bo: csrf(bo.get("/visits").text)}
    pressed = list(eventlet.GreenPool(2).imap(lambda b: b.post("/visits/next", {"csrf_token": tokens[b]}), (ann, bo)))
    assert [p.status_code for p in pressed] == [303, 303]
    opened = [p.headers["Location"] for p in pressed]
    assert sorted(opened) == sorted([f"/visits/{ids['allergy']}", f"/visits/{ids['skincare']}"])
    ann_visit, bo_visit = (path.rsplit("/", 1)[1] for path in opened)

    def claimed_by(visit_id):
        answer = chain.http.get(chain.aftercare.url(f"/v1/visits/{visit_id}"),
                                headers=bearer(chain.token("hq_admin", branch="*")), timeout=10)
        return jsonbody(answer)["claimed_by"]
    assert (claimed_by(ann_visit), claimed_by(bo_visit)) == ("ann", "bo")

    mine = ann.get(f"/visits/{ann_visit}").text  # opened again: still hers, extended
    assert 'id="visit-attempt"' in mine and 'id="visit-release"' in mine and "放回回访列表" in mine
    held = ann.get(f"/visits/{bo_visit}")  # bo's: read-only, saying who until when
    assert held.status_code == 200 and "博 回访 正在回访这位顾客，至 10:10。" in held.text and 'id="visit-held"' in held.text
    assert 'id="visit-attempt"' not in held.text and 'id="contact"' not in held.text
    assert 'id="visit-release"' not in held.text and '<a href="/visits">返回回访列表</a>' in held.text
    assert claimed_by(bo_visit) == "bo"  # looking did not take it
    listed = ann.get("/visits").text
    assert listed.count("博 回访 正在回访") == 1 and listed.count("您正在回访") == 1
    assert listed.index("博 回访 正在回访") > listed.index(bo_visit) and listed.index("您正在回访") > listed.index(ann_visit)

    # bo saves his call: aftercare ends his claim; the page it leads back to does not claim it again.
    saved = bo.post(f"/visits/{bo_visit}/attempts", {"csrf_token": tokens[bo], "outcome": "not_reached",
                                                     "branch": "SH001"})
    assert saved.status_code == 303 and claimed_by(bo_visit) is None
    assert 'id="visit-release"' not in bo.get(saved.headers["Location"]).text and claimed_by(bo_visit) is None
    free = ann.get(f"/visits/{bo_visit}").text  # free now: ann's to work
    assert 'id="visit-held"' not in free and 'id="visit-attempt"' in free and claimed_by(bo_visit) == "ann"
    assert ann.post(f"/visits/{bo_visit}/release", {"csrf_token": tokens[ann]}).headers["Location"] == "/visits"

    # ann puts hers back: bo's next opens it; from its page, his next puts it back and finds nothing else due.
    assert bo.post(f"/visits/{ann_visit}/release", {"csrf_token": tokens[bo]}).status_code == 303  # not his: left
    assert claimed_by(ann_visit) == "ann"
    assert ann.post(f"/visits/{ann_visit}/release", {"csrf_token": tokens[ann]}).status_code == 303
    assert claimed_by(ann_visit) is None
    taken = bo.post("/visits/next", {"csrf_token": tokens[bo]})
    assert taken.headers["Location"] == f"/visits/{ann_visit}" and claimed_by(ann_visit) == "bo"
    left = bo.post("/visits/next", {"csrf_token": tokens[bo], "from": ann_visit})
    assert left.headers["Location"] == "/visits?empty=1" and claimed_by(ann_visit) is None
