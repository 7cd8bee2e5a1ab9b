"""A customer looked up by phone (`POST /v1/customers/lookup`), against a real intake on the real
database: the phone in the body, normalised as on complaints and sales and found through the
keyed customer_ref (an index, not a scan of phones); the complaints of the caller's branches only,
newest first, with where each stands, and the sales; an unknown phone answers empty lists; each
look-up is logged in the contact-access log with who, role and purpose; 400 names every wrong
field, 403 comes first for a role without the permission.

One intake for the module (its records are read, not changed, by the tests; each test logs
under subjects of its own)."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
import requests
import sqlalchemy as sa

from shared.calendar.clock import ManualClock
from shared.security import auth
from shared.testing.fixtures import database_rows, jsonbody, run_service, stop_runners
from shared.testing.samples import complaint_request

pytestmark = pytest.mark.e2e
PHONE = "13812346138"
LOOKUP = "/v1/customers/lookup"


@dataclass
class Intake:
    base_url: str
    database_url: str
    clock: ManualClock

    def url(self, path: str) -> str:
        return self.base_url + path


def bearer(role: str, branch: str | None = "SH001", region: str | None = None, subject: str | None = None) -> dict:
    token = auth.issue_token(role=role, subject=subject or f"{role}-{uuid.uuid4().hex[:6]}",
                             branch=None if region else branch, region=region)
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def intake_in_process(amqp_uri: str, database_factory):
    """Intake in the test process (as start_service starts it), on a fresh database, 10:00 in
    Shanghai on 2026-11-22: for a module's fixture (tests/e2e/test_intake_inquiries.py too)."""
    clock = ManualClock(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))
    url = database_factory("intake")
    service = run_service("intake", amqp_uri, url, clock)
    try:
        yield Intake(service.base_url, url, clock)
    finally:
        stop_runners([service.runner])


@pytest.fixture(scope="module")
def intake(amqp_uri, database_factory):
    """One intake for the whole module."""
    with intake_in_process(amqp_uri, database_factory) as running:
        yield running


@pytest.fixture(scope="module")
def records(intake):
    """The customer's two complaints at SH001 (the phone typed two ways), one at SH002 and a sale at
    SH001; another customer's complaint at SH001. Ids by name."""
    http = requests.Session()

    def post(path: str, body: dict, branch: str = "SH001") -> str:
        answer = http.post(intake.url(path), json=body, headers=bearer("front_desk", branch), timeout=10)
        assert answer.status_code == 201, answer.text
        intake.clock.advance(minutes=1)
        return jsonbody(answer)["id"]

    ids = {"first": post("/v1/complaints", complaint_request()),
           "other_customer": post("/v1/complaints", complaint_request(
               customer={"name": "李先生", "phone": "13900001111", "language": "zh"}, description="毛巾很脏")),
           "second": post("/v1/complaints", complaint_request(
               customer={"name": "王女士", "phone": "+86 138-1234-6138", "language": "zh"}, description="又过敏了")),
           "elsewhere": post("/v1/complaints", complaint_request(description="在另一家店也过敏"), branch="SH002"),
           "sale": post("/v1/sales", {"customer": {"name": "王女士", "phone": "138 1234 6138", "contact_consent": True},
                                      "sold_at": "2026-11-21T15:00:00+08:00",
                                      "items": [{"type": "service", "code": "HAIR-DYE", "name": "染发",
                                                 "product_type": "hair_colour", "technician_id": "T-017"}]})}
    http.close()
    return ids


def look_up(intake, body, headers=None, **kwargs) -> requests.Response:
    return requests.post(intake.url(LOOKUP), json=body, timeout=10, **kwargs,
                         headers=bearer("front_desk") if headers is None else headers)


def logged(intake, subject: str) -> list[tuple]:
    return [tuple(r) for r in database_rows(intake.database_url, sa.text(
        "SELECT role, record_type, record_id, branch_code, purpose, outcome, accessed_at FROM contact_access_log "
        "WHERE subject = :s ORDER BY id").bindparams(s=subject))]


def test_a_look_up_finds_the_phone_s_complaints_in_scope_newest_first_with_where_each_stands(intake, records):
    answer = look_up(intake, {"phone": PHONE, "purpose": "顾客询问投诉进度"})
    assert answer.status_code == 200, answer.text
    body = jsonbody(answer)
    [stored_ref] = {r[0] for r in database_rows(intake.database_url, sa.text(
        "SELECT customer_ref FROM complaints WHERE id IN (:a, :b)").bindparams(a=records["first"],
                                                                              b=records["second"]))}
    assert body["customer_ref"] == stored_ref and body["customer"] == {"phone": "138****6138"}
    assert [c["id"] for c in body["complaints"]] == [records["second"], records["first"]]  # newest first
    second = body["complaints"][0]
    assert (second["reference"], second["status"], second["branch_code"], second["kind"]) == (
        "SH001-20261122-0003", "received", "SH001", "complaint")
    assert second["received_at"] == "2026-11-22T02:02:00Z" and second["closed_at"] is None
    assert {"category", "priority", "first_response_due", "resolution_due"} <= set(second)
    assert [s["id"] for s in body["sales"]] == [records["sale"]] and body["sales"][0]["items"][0]["code"] == "HAIR-DYE"
    assert (body["more_complaints"], body["more_sales"]) == (False, False)
    assert PHONE not in answer.text and "王女士" not in answer.text and "过敏" not in answer.text

    # SH002's front desk sees SH002's complaint only; the region and HQ see both branches'.
    assert [c["id"] for c in jsonbody(look_up(intake, {"phone": PHONE, "purpose": "顾客询问投诉进度"},
                                              bearer("front_desk", "SH002")))["complaints"]] == [records["elsewhere"]]
    for who in (bearer("regional_manager", region="east"), bearer("hq_admin", "*")):
        assert [c["id"] for c in jsonbody(look_up(intake, {"phone": PHONE, "purpose": "处理投诉"}, who))["complaints"]] \
            == [records["elsewhere"], records["second"], records["first"]]
    for role in ("store_manager", "investigator"):
        assert len(jsonbody(look_up(intake, {"phone": PHONE, "purpose": "处理投诉"}, bearer(role)))["complaints"]) == 2


def test_phone_formats_normalise_to_one_customer_and_an_unknown_phone_answers_empty_lists(intake, records):
    answers = [jsonbody(look_up(intake, {"phone": phone, "purpose": "顾客询问投诉进度"}))
               for phone in (PHONE, "+86 138 1234 6138", "138-1234-6138", "(138) 1234-6138", "+8613812346138")]
    assert all(a == answers[0] for a in answers) and len(answers[0]["complaints"]) == 2
    other = jsonbody(look_up(intake, {"phone": "13900001111", "purpose": "顾客询问投诉进度"}))
    assert [c["id"] for c in other["complaints"]] == [records["other_customer"]] and other["sales"] == []
    for phone in ("13700000000", "021-12345678", "+44 20 7946 0958"):
        unknown = look_up(intake, {"phone": phone, "purpose": "顾客询问投诉进度"})
        assert unknown.status_code == 200, unknown.text
        body = jsonbody(unknown)
        assert body["customer_ref"].startswith("c_") and (body["complaints"], body["sales"]) == ([], [])
    # Another branch's customer looks just like an unknown one.
    elsewhere = jsonbody(look_up(intake, {"phone": PHONE, "purpose": "顾客询问投诉进度"}, bearer("front_desk", "BJ001")))
    assert (elsewhere["complaints"], elsewhere["sales"], elsewhere["more_complaints"]) == ([], [], False)


def test_each_look_up_is_logged_with_who_role_purpose_and_when(intake, records):
    subject = f"fd-{uuid.uuid4().hex[:6]}"
    ref = jsonbody(look_up(intake, {"phone": "138 1234 6138", "purpose": " 顾客\u200b询问投诉进度 "},
                           bearer("front_desk", subject=subject)))["customer_ref"]
    look_up(intake, {"phone": "13700000000", "purpose": "前台查询"}, bearer("front_desk", subject=subject))
    [found, unknown] = logged(intake, subject)
    at = intake.clock.now()
    assert found == ("front_desk", "customer", ref, None, "顾客询问投诉进度", "granted", at)  # the purpose as cleaned
    assert unknown[:2] == ("front_desk", "customer") and unknown[2] != ref and unknown[4:6] == ("前台查询", "granted")
    assert not any(PHONE in str(field) or "1370000" in str(field) for row in (found, unknown) for field in row)


def test_a_wrong_body_is_400_naming_every_wrong_field_and_nothing_is_logged(intake, records):
    subject = f"fd-{uuid.uuid4().hex[:6]}"
    who = bearer("front_desk", subject=subject)
    for body, wrong in [({}, {"phone", "purpose"}),
                        ({"phone": "", "purpose": ""}, {"phone", "purpose"}),
                        ({"phone": "55555", "purpose": "x"}, {"phone", "purpose"}),
                        ({"phone": None, "purpose": "\u200b\u200b"}, {"phone", "purpose"}),
                        ({"phone": 13812346138, "purpose": "回访"}, {"phone"}),
                        ({"phone": PHONE, "purpose": "1234"}, {"purpose"}),
                        ({"phone": PHONE, "purpose": "查" * 501}, {"purpose"}),
                        ({"phone": PHONE, "purpose": "回访", "branch": "SH001"}, {"branch"})]:
        refused = look_up(intake, body, who)
        assert refused.status_code == 400, (body, refused.text)
        error = jsonbody(refused)["error"]
        assert set(error["fields"]) == wrong, (body, error)
        assert "55555" not in refused.text
    assert "at least 2 letters" in error["fields"].get("purpose", ["at least 2 letters"])[0]
    not_json = requests.post(intake.url(LOOKUP), data="phone=13812346138", headers={
        **who, "Content-Type": "application/x-www-form-urlencoded"}, timeout=10)
    assert not_json.status_code == 415
    assert look_up(intake, [PHONE], who).status_code == 400
    assert logged(intake, subject) == []


def test_a_role_without_the_permission_gets_403_before_its_body_is_judged(intake, records):
    for role in ("hq_analyst", "auditor", "aftercare_agent", "branch_integration"):
        for body in ({"phone": PHONE, "purpose": "顾客询问投诉进度"}, {}):
            refused = look_up(intake, body, bearer(role, "*"))
            assert refused.status_code == 403, (role, refused.text)
            assert "customer:lookup" in jsonbody(refused)["error"]["message"]
    assert look_up(intake, {"phone": PHONE, "purpose": "顾客询问投诉进度"}, {}).status_code == 401
    # GET is not the look-up: the phone is never in a URL.
    assert requests.get(intake.url(LOOKUP), params={"phone": PHONE}, headers=bearer("front_desk"),
                        timeout=10).status_code in (404, 405)


def test_the_look_up_is_documented_and_goes_through_the_customer_ref_indexes(intake, records):
    document = jsonbody(requests.get(intake.url("/openapi.json"), timeout=10))
    post = document["paths"][LOOKUP]["post"]
    assert set(post["requestBody"]["content"]["application/json"]["schema"]["required"]) == {"phone", "purpose"}
    answer = post["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert {"customer_ref", "complaints", "sales"} <= set(answer) and {"400", "403"} <= set(post["responses"])
    engine = sa.create_engine(intake.database_url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SET enable_seqscan = off"))  # a few rows: judge the plan, not the size
            for table, newest, index in (("complaints", "received_at", "ix_complaints_customer_received"),
                                         ("sales", "sold_at", "ix_sales_customer_sold")):
                plan = "\n".join(conn.execute(sa.text(
                    f"EXPLAIN SELECT * FROM {table} WHERE customer_ref = 'c_x' AND branch_code IN ('SH001') "
                    f"ORDER BY {newest} DESC, id DESC LIMIT 51")).scalars())
                assert index in plan, plan
    finally:
        engine.dispose()


def test_a_customer_with_more_than_50_complaints_gets_the_50_newest(intake, records):
    """At GZ001, a branch no other test here reads, with a phone of its own."""
    http = requests.Session()
    who = bearer("front_desk", "GZ001")
    for n in range(51):
        posted = http.post(intake.url("/v1/complaints"), headers=who, timeout=10, json=complaint_request(
            description=f"第{n}次", customer={"name": "周女士", "phone": "13600000000", "language": "zh"}))
        assert posted.status_code == 201, posted.text
        intake.clock.advance(timedelta(seconds=1))
    body = jsonbody(http.post(intake.url(LOOKUP), json={"phone": "13600000000", "purpose": "顾客询问投诉进度"},
                              headers=who, timeout=10))
    http.close()
    assert len(body["complaints"]) == 50 and body["more_complaints"] is True
    assert body["complaints"][0]["reference"] == "GZ001-20261122-0051"  # the newest first
