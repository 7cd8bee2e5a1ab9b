"""The customer's contact on request, with a purpose (issue 12), against real intake, investigation,
aftercare and console services: investigation's `GET /v1/cases/{id}/contact?purpose=` asks intake
with the caller's identity and intake logs the read with the purpose (400 naming `purpose`
without one, 404 out of scope, 403 a role that does not work cases, 503 when intake does not
answer); aftercare's `GET /v1/visits/{id}` reads no contact unless `contact=true&purpose=`; the
console's case page shows the contact after its form (HTML in the purpose inert) and its visit
page logs nothing at intake until the agent asks."""
from __future__ import annotations

import re
import time

import pytest
import sqlalchemy as sa

from shared.testing.fixtures import database_rows, jsonbody, wait_until
from tests.e2e import test_aftercare_visits, test_console
from tests.e2e.test_aftercare_visits import SALE, post_sale, scheduled_visit
from tests.e2e.test_console import complaint_at, publish
from tests.e2e.test_console_cases import csrf, opened
from tests.e2e.test_investigation_cases import bearer

pytestmark = pytest.mark.e2e
chain = test_aftercare_visits.chain  # intake, investigation, aftercare, relays: the fixtures, shared
console = test_console.console
SCRIPT = '<script>alert("x")</script>'
DUE = test_aftercare_visits.DUE


def access_log(chain, record_id: str) -> list[tuple]:
    return [tuple(r) for r in database_rows(chain.databases["intake"], sa.text(
        "SELECT subject, role, purpose, outcome FROM contact_access_log WHERE record_id = :id ORDER BY id"
    ).bindparams(id=record_id))]


def case_contact(chain, case_id, role="store_manager", branch="SH001", subject=None, **query):
    return chain.http.get(chain.investigation.url(f"/v1/cases/{case_id}/contact"), params=query, timeout=15,
                          headers=bearer(chain.token(role, branch=branch, subject=subject)))


def test_the_contact_is_read_on_request_with_a_purpose_and_intake_logs_each_read(chain, console):
    mine = chain.post_complaint()["id"]
    theirs = chain.post_complaint(branch="SH002")["id"]
    for case_id in (mine, theirs):
        wait_until(lambda: chain.case(case_id, role="hq_admin", branch="*").status_code == 200, "the case to open")

    # investigation: the store manager of the branch, with a purpose; intake logs who and why.
    answer = case_contact(chain, mine, subject="SM-1", purpose="回访顾客，确认过敏情况")
    assert answer.status_code == 200, answer.text
    body = jsonbody(answer)
    assert body["contact"]["phone"] == "13812346138" and body["contact"]["name"] == "王女士"
    assert body["purpose"] == "回访顾客，确认过敏情况" and body["read_by"] == "SM-1"
    assert access_log(chain, mine) == [("SM-1", "store_manager", "回访顾客，确认过敏情况", "granted")]
    # No purpose, an empty one, one without 2 letters, one too long: 400 naming purpose, nothing read.
    for query in ({}, {"purpose": ""}, {"purpose": "1"}, {"purpose": "查" * 501}):
        refused = case_contact(chain, mine, **query)
        assert refused.status_code == 400 and "purpose" in jsonbody(refused)["error"]["fields"], (query, refused.text)
    # Another branch's case: 404; a role that reads cases but does not work them: 403. Nothing read.
    assert case_contact(chain, theirs, purpose="回访顾客").status_code == 404
    assert case_contact(chain, mine, role="front_desk", purpose="回访顾客").status_code == 403
    assert case_contact(chain, mine, role="investigator", purpose="处理投诉").status_code == 200
    assert len(access_log(chain, mine)) == 2 and access_log(chain, theirs) == []

    # aftercare: the visit alone reads nothing at intake; contact=true needs a purpose.
    sale_id = post_sale(chain)
    visit_id = scheduled_visit(chain, sale_id)["visit_id"]
    chain.clock.set(DUE)
    agent = bearer(chain.token("aftercare_agent", branch="SH001", subject="AG-1"))
    url = chain.aftercare.url(f"/v1/visits/{visit_id}")
    plain = chain.http.get(url, headers=agent, timeout=15)
    assert plain.status_code == 200 and jsonbody(plain)["contact"] is None
    assert jsonbody(plain)["contact_unavailable"] is None and access_log(chain, sale_id) == []
    for query in ({"contact": "true"}, {"contact": "true", "purpose": ""}, {"purpose": "回访"}, {"contact": "1"}):
        refused = chain.http.get(url, params=query, headers=agent, timeout=15)
        assert refused.status_code == 400, (query, refused.text)
        assert set(jsonbody(refused)["error"]["fields"]) & {"purpose", "contact"}, refused.text
    asked = chain.http.get(url, params={"contact": "true", "purpose": "过敏回访"}, headers=agent, timeout=15)
    assert asked.status_code == 200 and jsonbody(asked)["contact"]["phone"] == SALE["customer"]["phone"]
    assert access_log(chain, sale_id) == [("AG-1", "aftercare_agent", "过敏回访", "granted")]

    # The console: the case page shows the masked customer and a form; the contact after it.
    c = console(INTAKE_URL=chain.intake.base_url, INVESTIGATION_URL=chain.investigation.base_url,
                AFTERCARE_URL=chain.aftercare.base_url)
    c.add("amy", branch="SH001")
    c.add("ann", role="aftercare_agent", branch="SH001")
    amy = c.browser()
    assert amy.sign_in("amy").status_code == 303
    page = amy.get(f"/cases/{mine}").text
    assert 'id="form-contact"' in page and "13812346138" not in page and "处理投诉" in page
    path = f"/cases/{mine}/contact"
    htmx = {"HX-Request": "true", "X-CSRF-Token": csrf(page)}
    assert amy.post(path, {"purpose_choice": "complaint"}).status_code == 403  # no CSRF token
    bad = amy.post(path, {"purpose_choice": "", "purpose": "x"}, headers=htmx)  # investigation's 400, beside it
    assert bad.status_code == 200 and "<html" not in bad.text
    assert re.search(r'id="contact-purpose-error" data-field="purpose">[^<]*2 letters', bad.text), bad.text
    shown = amy.post(path, {"purpose_choice": "", "purpose": f"回访 {SCRIPT}"}, headers=htmx)
    assert shown.status_code == 200 and "13812346138" in shown.text and "王女士" in shown.text
    assert SCRIPT not in shown.text and "&lt;script&gt;" in shown.text and shown.headers["Cache-Control"] == "no-store"
    chosen = amy.post(path, {"purpose_choice": "complaint", "purpose": "", "csrf_token": csrf(page)})  # without JS
    assert chosen.status_code == 200 and "13812346138" in chosen.text and "SH001-" in chosen.text
    assert access_log(chain, mine)[-2:] == [("amy", "store_manager", f"回访 {SCRIPT}", "granted"),
                                            ("amy", "store_manager", "处理投诉", "granted")]
    assert "13812346138" not in amy.get(f"/cases/{mine}").text  # kept nowhere: the page again is masked
    assert amy.post(f"/cases/{theirs}/contact", {"purpose_choice": "complaint"},
                    headers=htmx).status_code == 404

    # The console's visit page: no read at intake until the agent asks, then one with the purpose.
    ann = c.browser()
    assert ann.sign_in("ann").status_code == 303
    before = len(access_log(chain, sale_id))
    visit = ann.get(f"/visits/{visit_id}")
    assert visit.status_code == 200 and SALE["customer"]["phone"] not in visit.text
    assert len(access_log(chain, sale_id)) == before
    contact = f"/visits/{visit_id}/contact"
    assert ann.get(contact, params={"purpose_choice": "return"}, headers={"HX-Request": "true"}).status_code == 403
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf(visit.text)}
    empty = ann.get(contact, params={"purpose_choice": "", "purpose": ""}, headers=headers)
    assert empty.status_code == 200 and 'data-field="purpose">必填' in empty.text, empty.text
    got = ann.get(contact, params={"purpose_choice": "return", "purpose": ""}, headers=headers)
    assert got.status_code == 200 and SALE["customer"]["phone"] in got.text and "售后回访" in got.text
    assert access_log(chain, sale_id)[before:] == [("ann", "aftercare_agent", "售后回访", "granted")]


def test_intake_not_answering_is_a_503_and_a_clear_message_on_the_case_page(console, start_service, amqp_uri,
                                                                              clock, token, http):
    """Investigation without intake: the contact read gives up within seconds (503)."""
    investigation = start_service("investigation", clock=clock)
    event = complaint_at("SH001", "SH001-20261122-0001", "east")
    publish(amqp_uri, event)
    opened(investigation, token, event)
    case_id = event["correlation_id"]
    started = time.monotonic()
    answer = http.get(f"{investigation.base_url}/v1/cases/{case_id}/contact", params={"purpose": "回访顾客"},
                      headers=bearer(token("store_manager", branch="SH001")), timeout=15)
    assert answer.status_code == 503 and "intake" in jsonbody(answer)["error"]["message"], answer.text
    assert time.monotonic() - started < 5

    c = console(INVESTIGATION_URL=investigation.base_url)
    c.add("amy", branch="SH001")
    amy = c.browser()
    assert amy.sign_in("amy").status_code == 303
    page = amy.get(f"/cases/{case_id}").text
    down = amy.post(f"/cases/{case_id}/contact", {"purpose_choice": "call_back"},
                    headers={"HX-Request": "true", "X-CSRF-Token": csrf(page)})
    assert down.status_code == 200 and "保存顾客联系方式的受理服务没有响应" in down.text, down.text
