"""The front desk's pages (issue 12) against a real intake, driven over HTTP as a browser would:
a complaint filed through the form shows its reference, priority, deadlines and acknowledgement;
a double submit files once; intake's errors land beside their fields with what was typed; a sale
is recorded; the look-up tells where a complaint stands, by reference or by phone (a POST: the phone
in no URL, shown masked only, the look-up logged by intake with its purpose); other roles get 403;
HTML typed is inert; a POST without the CSRF token is refused."""
from __future__ import annotations

import re

import pytest
import requests
import sqlalchemy as sa

from shared.testing.fixtures import database_rows, wait_until
from tests.e2e import test_console
from tests.e2e.test_intake_follows_cases import case_event, deliver

pytestmark = pytest.mark.e2e
console = test_console.console  # the console fixture, shared

COMPLAINT = {"kind": "complaint", "channel": "front_desk", "category": "", "description": "昨天染发后头皮过敏红肿",
             "flag.allergy": "on", "service.code": "HAIR-DYE", "service.name": "染发", "service.technician_id": "T-017",
             "products.0.sku": "DYE-5N", "products.0.batch": "B2026-11-03", "customer.name": "王女士",
             "customer.phone": "13812346138", "customer.language": "zh", "action": "file"}


def hidden(page: str, name: str) -> str:
    return re.search(rf'name="{re.escape(name)}" value="([^"]*)"', page).group(1)


def form_of(browser, path: str) -> dict:
    """The form's hidden fields as the page gives them (CSRF token, idempotency key, rows)."""
    page = browser.get(path)
    assert page.status_code == 200, page.text[:500]
    return {name: hidden(page.text, name) for name in ("csrf_token", "idempotency_key", "products_rows",
                                                       "items_rows") if f'name="{name}"' in page.text}


def error_beside(page: str, field: str) -> str:
    """The error shown beside `field` (its input marked invalid and pointing at it)."""
    assert f'aria-describedby="e-{field}"' in page, f"{field} not marked in: {page[:3000]}"
    return re.search(rf'<span class="field-error" id="e-{re.escape(field)}">([^<]*)</span>', page).group(1)


def complaints(intake) -> list:
    return database_rows(intake.database_url, sa.text("SELECT reference, description FROM complaints ORDER BY 1"))


@pytest.fixture
def desk(console, intake):
    """The console with a real intake; fran works the front desk of SH001, signed in."""
    c = console(INTAKE_URL=intake.service.base_url)
    c.add("fran", role="front_desk", branch="SH001", name="前台小芳")
    browser = c.browser()
    assert browser.sign_in("fran").status_code == 303
    return c, intake, browser


def test_a_front_desk_files_a_complaint_and_sees_its_reference_priority_deadlines_and_acknowledgement(desk):
    c, intake, browser = desk
    form = browser.get("/complaints/new")
    assert form.status_code == 200 and "由闭环自动分类" in form.text and 'name="idempotency_key"' in form.text
    assert "/static/front_desk.js" in form.text and "SH001" in form.text
    filed = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new")})
    assert filed.status_code == 200, filed.text[:2000]
    page = filed.text
    assert '<strong id="desk-reference">SH001-20261122-0001</strong>' in page
    assert re.search(r'id="desk-priority"[^>]*>紧急<', page)
    assert "安全" in page and "闭环自动分类" in page  # classified from the text
    # received 10:00 in Shanghai: urgent, a first response within the hour; resolution in 7 days
    assert re.search(r'id="desk-first-response"><time datetime="2026-11-22T03:00:00\+00:00">2026年11月22日 11:00<', page)
    assert "2026年11月29日 10:00" in page
    assert 'data-due="2026-11-22T03:00:00+00:00"' in page  # console.js counts down the first response
    # The acknowledgement as staff see it (the name masked); the customer's contact never in clear.
    ack = re.search(r'<blockquote class="desk-ack" id="desk-ack">([^<]*)</blockquote>', page).group(1)
    assert "SH001-20261122-0001" in ack and "王**" in page and "138****6138" in page
    assert "13812346138" not in page and "王女士" not in page
    assert complaints(intake) == [("SH001-20261122-0001", "昨天染发后头皮过敏红肿")]
    # The customer got it by SMS, greeted by name.
    wait_until(lambda: intake.sender.notifier.sent, "the acknowledgement to be sent")
    assert "王女士" in intake.sender.notifier.sent[0]["body"]

    assert browser.post("/language", {"language": "en", "csrf_token": browser.csrf("/")}).status_code == 303
    english = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new"),
                                               "kind": "suggestion", "flag.allergy": "",
                                               "description": "Please open earlier on Sundays"})
    assert english.status_code == 200
    assert "SH001-20261122-0002" in english.text and re.search(r'id="desk-priority"[^>]*>Low<', english.text)
    assert "2026-11-25 10:00" in english.text  # low: 72 hours, ISO-like in English


def test_a_double_submit_with_the_same_key_files_one_complaint(desk):
    c, intake, browser = desk
    fields = {**COMPLAINT, **form_of(browser, "/complaints/new")}
    first, second = browser.post("/complaints/new", fields), browser.post("/complaints/new", fields)
    assert first.status_code == second.status_code == 200
    refs = [re.search(r'id="desk-reference">([^<]+)<', r.text).group(1) for r in (first, second)]
    assert refs == ["SH001-20261122-0001"] * 2
    assert len(complaints(intake)) == 1
    # The same key with other details: refused by intake, a new form (a new key) offered.
    changed = browser.post("/complaints/new", {**fields, "description": "另一件事"})
    assert changed.status_code == 409 and "此表单已用不同内容提交过" in changed.text
    assert hidden(changed.text, "idempotency_key") != fields["idempotency_key"]
    assert len(complaints(intake)) == 1


def test_intake_s_errors_appear_beside_their_fields_and_what_was_typed_is_kept(desk):
    c, intake, browser = desk
    fields = {**COMPLAINT, **form_of(browser, "/complaints/new"), "description": "", "customer.phone": "12345",
              "customer.name": "see http://evil.cn", "occurred_at": "2030-01-01T10:00",
              "products.0.sku": "", "products.0.batch": "", "products.1.batch": "B-ONLY"}
    refused = browser.post("/complaints/new", fields)
    assert refused.status_code == 400, refused.text[:1000]
    page = refused.text
    assert error_beside(page, "description") == "必填"
    assert error_beside(page, "customer.phone").startswith("不是有效的电话号码")
    assert error_beside(page, "customer.name")
    assert error_beside(page, "occurred_at") == "不能是将来的时间。"
    assert error_beside(page, "products.1.sku") == "必填"  # the second row typed, the first one sent
    assert "请填写标出的字段" in page
    for typed in ('value="12345"', 'value="see http://evil.cn"', 'value="2030-01-01T10:00"', 'value="B-ONLY"',
                  'value="HAIR-DYE"', 'value="T-017"'):
        assert typed in page, typed
    assert re.search(r'name="flag.allergy" value="on" checked', page)
    assert complaints(intake) == []
    # Corrected and sent again with the same key: filed (a refusal is not an answer to repeat).
    assert hidden(page, "idempotency_key") == fields["idempotency_key"]
    fixed = browser.post("/complaints/new", {**fields, "description": "头皮过敏", "customer.phone": "13812346138",
                                             "customer.name": "王女士", "occurred_at": "2026-11-21T15:00",
                                             "products.1.sku": "DYE-5N"})
    assert fixed.status_code == 200 and "SH001-20261122-0001" in fixed.text
    assert "DYE-5N" in fixed.text and "B-ONLY" in fixed.text


def test_a_new_sale_is_recorded_and_confirmed(desk):
    c, intake, browser = desk
    page = browser.get("/sales/new").text
    assert 'name="sold_at" type="datetime-local" value="2026-11-22T10:00"' in page  # now, in the branch's time
    fields = {**form_of(browser, "/sales/new"), "sold_at": "2026-11-22T09:30",
              "items.0.type": "product", "items.0.code": "SK-01", "items.0.name": "修护精华",
              "items.0.product_type": "skincare", "items.0.batch": "B2026-10",
              "items.1.type": "service", "items.1.code": "HAIR-DYE", "items.1.product_type": "hair_colour",
              "items.1.technician_id": "T-017", "items.2.type": "product", "items.2.product_type": "",
              "customer.name": "李女士", "customer.phone": "13900001111", "customer.language": "zh",
              "customer.contact_consent": "yes", "action": "record"}
    missing = browser.post("/sales/new", {**fields, "items.1.product_type": ""})
    assert missing.status_code == 400 and error_beside(missing.text, "items.1.product_type") == "必填"
    recorded = browser.post("/sales/new", fields)
    assert recorded.status_code == 200, recorded.text[:1500]
    assert "销售已登记" in recorded.text and "2026年11月22日 09:30" in recorded.text
    assert "SK-01" in recorded.text and "护肤品" in recorded.text and "T-017" in recorded.text
    assert "已同意" in recorded.text and "139****1111" in recorded.text and "13900001111" not in recorded.text
    assert browser.post("/sales/new", fields).status_code == 200  # the retry: the same sale
    rows = database_rows(intake.database_url, sa.text("SELECT sold_at, contact_consent, items FROM sales"))
    assert len(rows) == 1 and rows[0][1] is True
    assert [i["type"] for i in rows[0][2]] == ["product", "service"] and rows[0][2][0]["sku"] == "SK-01"
    # One more line, without sending anything to intake.
    more = browser.post("/sales/new", {**fields, "action": "add_items"})
    assert more.status_code == 200 and 'name="items.3.code"' in more.text and 'value="SK-01"' in more.text


def test_the_look_up_by_reference_tells_where_the_complaint_stands(desk, token, amqp_uri):
    c, intake, browser = desk
    filed = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new"),
                                             "customer.language": "en"})
    reference = re.search(r"/lookup\?q=(SH001-[0-9-]+)", filed.text).group(1)
    other = requests.post(intake.url("/v1/complaints"), timeout=10,
                          headers={"Authorization": f"Bearer {token('front_desk', branch='SH002')}"},
                          json={"kind": "complaint", "channel": "phone", "description": "毛巾很脏",
                                "customer": {"name": "赵先生", "phone": "13700001234"}})
    assert other.status_code == 201

    found = browser.get("/lookup", params={"q": "sh001-20261122-1"})  # typed loosely: found all the same
    assert found.status_code == 200 and 'id="desk-reference">SH001-20261122-0001<' in found.text
    assert re.search(r'id="desk-status">已受理<', found.text) and "门店会在下面的首次回复期限前联系顾客" in found.text
    assert "We have received it." in found.text  # the same words in the customer's language
    assert "王**" in found.text and "138****6138" in found.text and "13812346138" not in found.text
    assert "2026年11月22日 11:00" in found.text

    intake_id = requests.get(intake.url("/v1/complaints"), timeout=10, headers={
        "Authorization": f"Bearer {token('front_desk', branch='SH001')}"}).json()["items"][0]["id"]
    deliver(intake, amqp_uri, case_event("case_opened", intake_id, 1), case_event("case_resolved", intake_id, 5))
    moved = browser.get("/lookup", params={"q": reference})
    assert re.search(r'id="desk-status">已解决<', moved.text) and "处理结果已发送给顾客" in moved.text
    assert 'id="desk-reference">SH001-20261122-0001<' in browser.get("/lookup", params={"q": intake_id}).text

    elsewhere = browser.get("/lookup", params={"q": other.json()["reference"]})  # another branch's
    assert elsewhere.status_code == 200 and "您的门店没有这个编号的投诉" in elsewhere.text
    assert "赵" not in elsewhere.text
    by_phone = browser.get("/lookup", params={"q": "138 1234 6138"})  # a phone in a URL: not looked up
    assert "手机号请用下面的表单查询" in by_phone.text and "desk-reference" not in by_phone.text
    assert "138 1234 6138" not in by_phone.text and "desk-customer" not in by_phone.text
    assert "手机号请用下面的表单查询" not in browser.get("/lookup").text


def test_roles_that_do_not_work_the_front_desk_get_403_and_a_store_manager_of_a_region_chooses_the_branch(
        console, intake):
    c = console(INTAKE_URL=intake.service.base_url)
    c.add("ann", role="aftercare_agent")
    c.add("rita", role="regional_manager")
    for login in ("ann", "rita"):
        browser = c.browser()
        assert browser.sign_in(login).status_code == 303
        for path in ("/complaints/new", "/sales/new", "/lookup?q=SH001-20261122-0001"):
            refused = browser.get(path)
            assert refused.status_code == 403 and "您的角色不能使用前台页面" in refused.text, path
        posted = browser.post("/complaints/new", {**COMPLAINT, "csrf_token": browser.csrf("/"),
                                                  "idempotency_key": "k-1234567890"})
        assert posted.status_code == 403
    assert complaints(intake) == []

    assert c.staff("add", "mia", "--name", "Mia", "--role", "store_manager", "--region", "east") == 0
    manager = c.browser()
    assert manager.sign_in("mia").status_code == 303
    page = manager.get("/complaints/new").text
    assert 'name="branch_code"' in page and 'value="SH002"' in page and 'value="BJ001"' not in page
    fields = {**COMPLAINT, **form_of(manager, "/complaints/new")}
    unchosen = manager.post("/complaints/new", fields)
    assert unchosen.status_code == 400 and error_beside(unchosen.text, "branch_code") == "请选择门店。"
    chosen = manager.post("/complaints/new", {**fields, "branch_code": "SH002"})
    assert chosen.status_code == 200 and "SH002-20261122-0001" in chosen.text
    outside = manager.post("/complaints/new", {**COMPLAINT, **form_of(manager, "/complaints/new"),
                                               "branch_code": "BJ001"})
    assert outside.status_code == 400 and error_beside(outside.text, "branch_code")


def test_html_typed_into_the_description_is_inert_on_the_confirmation_and_the_look_up(desk):
    c, intake, browser = desk
    typed = '<script>alert("x")</script><img src=x onerror=alert(1)>"><b>粗体</b>'
    filed = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new"),
                                             "description": typed, "service.name": "<i>染发</i>",
                                             "products.0.batch": "<svg onload=alert(1)>"})
    assert filed.status_code == 200
    for page in (filed.text, browser.get("/lookup", params={"q": "SH001-20261122-0001"}).text):
        assert "<script>alert" not in page and "<img src=x" not in page and "<b>粗体" not in page
        assert "<svg" not in page and "<i>染发" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    # and kept inert in the form when intake refuses it
    refused = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new"),
                                               "description": typed, "customer.phone": "1"})
    assert refused.status_code == 400 and "<script>alert" not in refused.text and "&lt;script&gt;" in refused.text


def test_a_post_without_the_session_s_csrf_token_is_refused_and_files_nothing(desk):
    c, intake, browser = desk
    fields = {**COMPLAINT, **form_of(browser, "/complaints/new")}
    for data in ({k: v for k, v in fields.items() if k != "csrf_token"}, {**fields, "csrf_token": "forged"}):
        for path in ("/complaints/new", "/sales/new"):
            refused = browser.post(path, data)
            assert refused.status_code == 403 and "表单已过期" in refused.text
    assert complaints(intake) == []
    assert c.browser().get("/complaints/new").status_code == 303  # not signed in: to the sign-in form


def test_intake_down_keeps_what_was_typed_and_says_to_send_again(console):
    c = console(INTAKE_URL=test_console.NOBODY)
    c.add("fran", role="front_desk")
    browser = c.browser()
    browser.sign_in("fran")
    fields = {**COMPLAINT, **form_of(browser, "/complaints/new")}
    down = browser.post("/complaints/new", fields)
    assert down.status_code == 503 and "受理服务暂时没有响应" in down.text
    assert 'value="13812346138"' in down.text and hidden(down.text, "idempotency_key") == fields["idempotency_key"]
    assert "受理服务暂时没有响应" in browser.get("/lookup", params={"q": "SH001-20261122-0001"}).text


def looked_up(intake) -> list[tuple]:
    """intake's log of look-ups by phone: who, role, purpose."""
    return [tuple(r) for r in database_rows(intake.database_url, sa.text(
        "SELECT subject, role, purpose FROM contact_access_log WHERE record_type = 'customer' ORDER BY id"))]


def test_the_look_up_by_phone_lists_where_each_complaint_stands_with_the_phone_in_no_url(desk, token, amqp_uri):
    c, intake, browser = desk
    first = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new")})
    assert first.status_code == 200
    c.clock.advance(minutes=1)
    intake.clock.advance(minutes=1)
    second = browser.post("/complaints/new", {**COMPLAINT, **form_of(browser, "/complaints/new"),
                                              "customer.phone": "+86 138-1234-6138", "description": "又过敏了",
                                              "flag.allergy": ""})
    assert second.status_code == 200
    theirs = requests.post(intake.url("/v1/complaints"), timeout=10,  # the same customer at another branch
                           headers={"Authorization": f"Bearer {token('front_desk', branch='SH002')}"},
                           json={"kind": "complaint", "channel": "phone", "description": "毛巾很脏",
                                 "customer": {"name": "王女士", "phone": "13812346138"}})
    assert theirs.status_code == 201
    mine = requests.get(intake.url("/v1/complaints"), timeout=10, headers={
        "Authorization": f"Bearer {token('front_desk', branch='SH001')}"}).json()["items"]
    older = next(i["id"] for i in mine if i["reference"] == "SH001-20261122-0001")
    deliver(intake, amqp_uri, case_event("case_opened", older, 1), case_event("case_acknowledged", older, 3))

    page = browser.get("/lookup")
    assert 'method="post" action="/lookup"' in page.text and 'name="purpose_choice"' in page.text
    found = browser.post("/lookup", {"q": " 138-1234-6138 ", "purpose_choice": "status", "purpose": "",
                                     "csrf_token": hidden(page.text, "csrf_token")})
    assert found.status_code == 200, found.text[:2000]
    assert "Location" not in found.headers and found.url.endswith("/lookup")  # answered here, no redirect
    text = found.text
    assert 'id="desk-customer-phone">138****6138<' in text
    for typed in ("13812346138", "138-1234-6138", "1381234", "王女士"):
        assert typed not in text, typed  # the phone masked only, in the form too
    rows = re.findall(r'<li data-complaint="([^"]+)">(.*?)</li>', text, re.S)
    assert [cid for cid, _ in rows][1] == older and len(rows) == 2  # newest first; not SH002's
    newer_row, older_row = rows[0][1], rows[1][1]
    assert re.search(rf'<a href="/cases/{older}">SH001-20261122-0001</a>', older_row)
    assert ">处理中<" in older_row and "门店已联系顾客，正在处理投诉。" in older_row  # the reference look-up's words
    assert "SH001-20261122-0002" in newer_row and ">已受理<" in newer_row and "门店会在下面的首次回复期限前联系顾客" in newer_row
    assert theirs.json()["reference"] not in text
    assert 'name="next" value="/lookup"' in text  # the language switch goes back to a URL without it
    assert looked_up(intake) == [("fran", "front_desk", "顾客询问投诉进度")]

    own = browser.post("/lookup", {"q": "13700000000", "purpose_choice": "", "purpose": "顾客来电询问",
                                   "csrf_token": hidden(page.text, "csrf_token")})
    assert own.status_code == 200 and "您的门店没有这个手机号的投诉" in own.text and "13700000000" not in own.text
    assert looked_up(intake)[-1] == ("fran", "front_desk", "顾客来电询问")

    # No purpose: refused beside the field, intake never asked; not a phone: intake's words beside the box.
    unsaid = browser.post("/lookup", {"q": "13812346138", "purpose_choice": "", "purpose": " ",
                                      "csrf_token": hidden(page.text, "csrf_token")})
    assert unsaid.status_code == 400 and error_beside(unsaid.text, "purpose") == "必填"
    assert "13812346138" not in unsaid.text and len(looked_up(intake)) == 2
    wrong = browser.post("/lookup", {"q": "1234-5678", "purpose_choice": "status",
                                     "csrf_token": hidden(page.text, "csrf_token")})
    assert wrong.status_code == 400 and error_beside(wrong.text, "q").startswith("不是有效的电话号码")
    assert "1234-5678" not in wrong.text and len(looked_up(intake)) == 2

    # A reference typed into the same box is found as before.
    by_reference = browser.post("/lookup", {"q": "sh001-20261122-1", "purpose_choice": "status",
                                            "csrf_token": hidden(page.text, "csrf_token")})
    assert by_reference.status_code == 200 and 'id="desk-reference">SH001-20261122-0001<' in by_reference.text
    assert len(looked_up(intake)) == 2  # a reference is no look-up of a customer


def test_the_look_up_by_phone_needs_the_session_s_csrf_token_and_a_front_desk_role(desk, console, intake):
    c, intake, browser = desk
    for data in ({"q": "13812346138", "purpose_choice": "status"},
                 {"q": "13812346138", "purpose_choice": "status", "csrf_token": "forged"}):
        refused = browser.post("/lookup", data)
        assert refused.status_code == 403 and "表单已过期" in refused.text and "13812346138" not in refused.text
    assert looked_up(intake) == []
    assert c.browser().post("/lookup", {"q": "13812346138"}).status_code == 303  # not signed in

    c.add("ann", role="aftercare_agent")
    ann = c.browser()
    assert ann.sign_in("ann").status_code == 303
    refused = ann.post("/lookup", {"q": "13812346138", "purpose_choice": "status", "csrf_token": ann.csrf("/")})
    assert refused.status_code == 403 and "您的角色不能使用前台页面" in refused.text
    assert looked_up(intake) == []
