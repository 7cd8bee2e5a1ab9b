"""Outside probes of reporting (issue 11): malformed and extreme query input on every endpoint,
roles and scope, events out of order and duplicated, malformed and poisonous messages on its
queues, the service killed mid-batch, PostgreSQL cut during ingest, two replicas, the rebuild,
the exports' format and the dashboard's assets. Each test asserts the behaviour DESIGN.md and
the issue promise; those that found a defect say so in a `# DEFECT:` comment."""
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import sqlalchemy as sa

from shared.messaging import dead_letters
from shared.messaging.consumer import handlers_of
from shared.messaging.envelope import build_event
from shared.messaging.relay import Publisher
from shared.runtime.config import service_class
from shared.testing.fixtures import database_rows, jsonbody, wait_until
from tests.e2e.test_investigation_cases import bearer
from tests.e2e.test_reporting import chain, purge_reporting_queues

pytestmark = pytest.mark.e2e
__all__ = ["chain"]  # the fixture, shared with test_reporting

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
HQ = ("hq_analyst", "*")
# Retries in a fraction of a second, pauses after a temporary failure of a second at most.
FAST = {"EVENT_RETRY_DELAYS_MS": (100, 200), "EVENT_PAUSE_MAX_SECONDS": 1.0}
PHONE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")


# -- events as the producers publish them -------------------------------------------------------------

def complaint(case_id=None, *, branch="SH001", region="east", received=None, category="hygiene_environment",
              kind="complaint", technician=None, reference=None, masked=None, channel="front_desk",
              priority="general", products=(), event_id=None, first_due=None) -> dict:
    case_id = case_id or str(uuid.uuid4())
    received = received or NOW - timedelta(hours=1)
    payload = {
        "complaint_id": case_id, "reference": reference or f"{branch}-20261122-{case_id[:4]}", "kind": kind,
        "channel": channel, "category": category, "category_source": "manual", "priority": priority,
        "severity_flags": [], "description": "毛巾不干净", "occurred_at": None, "received_at": received.isoformat(),
        "region": region,
        "service": {"code": "HAIR-CUT", "name": "剪发", "technician_id": technician} if technician else None,
        "products": [{"sku": "DYE-5N", "batch": b} for b in products],
        "customer_ref": f"ref-{case_id[:8]}", "customer_masked": masked or {"name": "王**", "phone": "138****6138"},
        "customer_language": "zh",
        "first_response_due": (first_due or received + timedelta(hours=24)).isoformat(),
        "resolution_due": (received + timedelta(days=7)).isoformat()}
    event_type = "complaint_registered" if kind == "complaint" else "feedback_registered"
    return dict(build_event(event_type, payload, branch_code=branch, correlation_id=case_id, occurred_at=received,
                            sequence=1, source="intake", event_id=event_id))


def case_event(event_type, case_id, sequence, at, *, branch="SH001", **extra) -> dict:
    payload = {"case_id": case_id, "complaint_id": case_id, "actor": "M-1", "actor_role": "store_manager", **extra}
    return dict(build_event(event_type, payload, branch_code=branch, correlation_id=case_id, occurred_at=at,
                            sequence=sequence, source="investigation"))


def archive_read(case_id, at, *, branch="SH001") -> dict:
    return case_event("archive_accessed", case_id, 20, at, branch=branch, purpose="顾客投诉复查",
                      accessed_at=at.isoformat(), contact_read=False, actor="AUD-1", actor_role="auditor")


def adverse_reaction(batch, at, *, branch="SH001") -> dict:
    visit_id, sale_id = str(uuid.uuid4()), str(uuid.uuid4())
    payload = {"visit_id": visit_id, "kind": "return", "case_id": None, "sale_id": sale_id, "customer_ref": "ref-a",
               "technician_id": "T-9", "product": {"sku": "DYE-5N", "batch": batch}, "description": "头皮红肿",
               "severity_flags": ["allergy"], "reported_at": at.isoformat(), "customer_masked": {"name": "李*"}}
    return dict(build_event("adverse_reaction_reported", payload, branch_code=branch, correlation_id=sale_id,
                            occurred_at=at, sequence=3, source="aftercare"))


def publish(amqp_uri, *events) -> list[str]:
    """Envelopes (dicts) or raw (exchange, routing key, body text) triples, in one confirmed batch;
    the messages' ids (an envelope's event id)."""
    messages = []
    for e in events:
        if isinstance(e, dict):
            messages.append((f"{e['source']}.events", e["type"], json.dumps(e), e["event_id"]))
        else:
            messages.append((*e, str(uuid.uuid4())))
    publisher = Publisher(amqp_uri)
    try:
        publisher.publish_batch(messages)
    finally:
        publisher.close()
    return [m[3] for m in messages]


# -- reading what reporting holds ------------------------------------------------------------------------

def logged(url, ids) -> int:
    return database_rows(url, sa.text("SELECT count(*) FROM event_log WHERE event_id::text = ANY(:ids)").bindparams(
        ids=list(ids)))[0][0]


def count(url, sql) -> int:
    return database_rows(url, sa.text(sql))[0][0]


def parked(amqp_uri) -> list:
    queues = [h.dlq_name for h in handlers_of(service_class("reporting"), (1000,))]
    return dead_letters.list_parked(amqp_uri, queues)


def get(service, path, role=HQ, token=None, **query):
    headers = bearer(token) if token else {}
    return requests.get(service.url(path), params=query, headers=headers, timeout=15)


# -- reporting alone, fed by raw publishes to the other services' exchanges ----------------------------------

@pytest.fixture
def lone(token, clock, amqp_uri, start_service, start_relay, database_factory, bus_listener):
    clock.set(NOW)
    purge_reporting_queues(amqp_uri)
    alerts_bus = bus_listener("reporting.events")
    url = database_factory("reporting")
    service = start_service("reporting", clock=clock, database_url=url, **FAST)
    start_relay(url)
    lone = SimpleNamespace(token=token, clock=clock, amqp_uri=amqp_uri, url=url, reporting=service,
                           alerts_bus=alerts_bus, start_service=start_service)

    def ask(path, role=HQ, token_region=None, **query):
        scope = {"region": token_region} if token_region else {"branch": role[1]}
        return requests.get(lone.reporting.url(path), params=query, timeout=15,
                            headers=bearer(token(role[0], **scope)))

    def feed(*events, timeout=20):
        publish(amqp_uri, *events)
        ids = {e["event_id"] for e in events if isinstance(e, dict)}
        wait_until(lambda: logged(url, ids) == len(ids), f"reporting to log {len(ids)} event(s)", timeout=timeout)

    lone.ask, lone.feed = ask, feed
    return lone


def fields_of(response) -> set:
    return set((jsonbody(response).get("error") or {}).get("fields") or {})


# -- malformed and extreme query input -------------------------------------------------------------------

PERIOD_BAD = {  # query -> the field the 400 must name
    "from=yesterday": "from", "to=tomorrow": "to", "from=2026-13-01": "from", "to=2026-02-30": "to",
    "from=2026-11-23T10:00:00": "from", "from=2026-11-23T10:00:00%2B20:00": "from",
    "to=9999-12-31T23:59:59-14:00": "to", "from=0001-01-01T00:00:00Z": "from", "from=": "from", "to=": "to",
    "from=" + "2" * 5000: "from", "from=%00": "from", "from=2026-11-01T10:00:00%2B08:00:00.5": "from",
    "from=2026-11-23&to=2026-11-01": "to", "from=2026-11-23&to=2026-11-22T16:00:00Z": "to",
    "from=2000-01-01&to=2026-11-22": "from",  # longer than three years
    "branch=": "branch", "branch=" + "B" * 101: "branch", "region=": "region", "region=mars": "region",
    "region=" + "r" * 101: "region", "colour=red": "colour", "from=2026-11-01&from=2026-11-02": "from",
    "branch=SH001&branch=SH002": "branch",
}
KPI_BAD = {**PERIOD_BAD, "group_by=year": "group_by", "group_by=": "group_by", "group_by=BRANCH": "group_by",
           "group_by=branch&group_by=day": "group_by", "group_by=branch%00": "group_by"}
EXPORT_BAD = {**PERIOD_BAD, "kind=inquiry": "kind", "kind=": "kind", "category=": "category",
              "category=" + "c" * 101: "category", "group_by=branch": "group_by"}
# Dates at the ends of the calendar: refused naming the field, or answered (with nothing); never a 500.
EXTREME_DATES = {
    "to=9999-12-31": "to",  # its day ends in year 10000
    "to=0001-01-01": "to",  # the default 30 days before it are before year 1
    "from=0001-01-01&to=0001-01-02": "from",  # in Python's range, not once in UTC (year 0) on the wire
    "from=9999-12-30&to=9999-12-30": "from",
}
ALERTS_BAD = {"kind=weather": "kind", "kind=": "kind", "status=closed": "status", "status=ALL": "status",
              "limit=0": "limit", "limit=501": "limit", "limit=abc": "limit", "limit=1.5": "limit",
              "limit=-1": "limit", "limit=1&limit=2": "limit", "from=2026-11-01": "from", "branch=SH001": "branch",
              "kind=%00": "kind"}
ACCESS_BAD = {**{q: f for q, f in PERIOD_BAD.items() if not q.startswith(("branch", "region"))},
              "case_id=nope": "case_id", "case_id=": "case_id", "case_id=" + "1" * 5000: "case_id",
              "limit=0": "limit", "limit=201": "limit", "limit=x": "limit", "cursor=nonsense": "cursor",
              "cursor=" + "A" * 5000: "cursor", "branch=SH001": "branch", "group_by=day": "group_by"}


def raw_get(service, path, query, role=("hq_admin", "*"), token=None):
    return requests.get(service.url(path) + "?" + query, headers=bearer(token(role[0], branch=role[1])), timeout=15)


ENDPOINTS = (("/v1/kpis", KPI_BAD), ("/v1/exports/cases.csv", EXPORT_BAD), ("/v1/exports/cases.xlsx", EXPORT_BAD),
             ("/v1/alerts", ALERTS_BAD), ("/v1/access-log", ACCESS_BAD))


def test_malformed_and_extreme_queries_are_400_naming_the_field_on_every_endpoint(lone):
    lone.feed(complaint(), archive_read(str(uuid.uuid4()), NOW - timedelta(hours=2)))
    wrong = []
    for path, bad in ENDPOINTS:
        for query, field in bad.items():
            answer = raw_get(lone.reporting, path, query, token=lone.token)
            if answer.status_code != 400 or field not in fields_of(answer):
                wrong.append((path, query[:60], answer.status_code, answer.text[:160]))
    assert wrong == [], "\n".join(map(str, wrong))
    # The queries right at the edges are answered.
    for path, query in (("/v1/kpis", "from=2023-11-23&to=2026-11-22"), ("/v1/kpis", "to=2026-11-22T02:00:00Z"),
                        ("/v1/kpis", "from=2026-11-22&to=2026-11-22&group_by=week"),
                        ("/v1/kpis", "from=0100-01-01T00:00:00Z&to=0100-01-05T00:00:00Z"),
                        ("/v1/kpis", "from=9899-12-01T00:00:00Z&to=9899-12-31T00:00:00Z&group_by=month"),
                        ("/v1/kpis", "branch=%27%20OR%201%3D1%20--"), ("/v1/kpis", "region=east&group_by=region"),
                        ("/v1/exports/cases.csv", "kind=praise&category=%E5%8D%AB%E7%94%9F"),
                        ("/v1/alerts", "status=all&limit=500&kind=safety_signal"),
                        ("/v1/access-log", "limit=200&case_id=" + str(uuid.uuid4()))):
        answer = raw_get(lone.reporting, path, query, token=lone.token)
        assert answer.status_code == 200, (path, query, answer.status_code, answer.text[:300])


def test_dates_at_the_ends_of_the_calendar_are_refused_or_answered_never_a_500(lone):
    wrong = []
    for path in ("/v1/kpis", "/v1/exports/cases.csv", "/v1/exports/cases.xlsx", "/v1/access-log"):
        for query, field in EXTREME_DATES.items():
            answer = raw_get(lone.reporting, path, query, token=lone.token)
            if not (answer.status_code == 200 or (answer.status_code == 400 and field in fields_of(answer))):
                wrong.append((path, query, answer.status_code, answer.text[:120]))
    # DEFECT: a date (YYYY-MM-DD) is not held to the range an instant is (schemas.period):
    # to=9999-12-31 (its day ends in year 10000) and to=0001-01-01 (the default 30 days before it)
    # raise OverflowError: 500 on /v1/kpis, both exports and /v1/access-log; from=0001-01-01&
    # to=0001-01-02 is 500 on /v1/kpis (its `from` in UTC is in year 0). Expected: 400 naming the
    # field, as for an instant out of range (or an answer with nothing in it).
    assert wrong == [], "\n".join(map(str, wrong))


# -- roles and scope ------------------------------------------------------------------------------------------

def scoped_chain(lone) -> dict:
    """Complaints at SH001, SH002 (east) and BJ001 (north), some past their first-response deadline;
    a technician working at SH001 and SH002, one at BJ001 with a colon in its id; a batch with
    adverse reactions at SH001 and BJ001; archive reads at each branch. The ids by name."""
    t = NOW - timedelta(hours=3)
    late = {"received": t, "first_due": t + timedelta(hours=1)}  # breaching now
    ids = {name: str(uuid.uuid4()) for name in ("a1", "a2", "b1", "b2", "b3", "b4", "c1", "c2", "c3")}
    events = [
        complaint(ids["a1"], category="hygiene_environment", technician="T-XB", **late),
        complaint(ids["a2"], category="booking", technician="T-XB"),
        complaint(ids["b1"], branch="SH002", category="price", technician="T-XB"),
        *[complaint(ids[n], branch="SH002", category="booking", **(late if n == "b2" else {}))
          for n in ("b2", "b3", "b4")],
        *[complaint(ids[n], branch="BJ001", region="north", category=c, technician="BJ:T017",
                    **(late if n == "c1" else {}))
          for n, c in (("c1", "booking"), ("c2", "price"), ("c3", "hygiene_environment"))],
    ]
    reactions = [adverse_reaction("B-X", NOW - timedelta(hours=2)),
                 adverse_reaction("B-X", NOW - timedelta(hours=1), branch="BJ001")]
    reads = [archive_read(ids["a1"], NOW - timedelta(hours=2)), archive_read(ids["b1"], NOW - timedelta(hours=2),
                                                                             branch="SH002"),
             archive_read(ids["c1"], NOW - timedelta(hours=2), branch="BJ001")]
    lone.feed(*events, *reactions, *reads)
    ids.update(visit_sh001=reactions[0]["payload"]["visit_id"], visit_bj001=reactions[1]["payload"]["visit_id"],
               read_a1=reads[0]["event_id"], read_b1=reads[1]["event_id"], read_c1=reads[2]["event_id"])
    return ids


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.text[:300]
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:], newline="")))


def xlsx_rows(response) -> list[dict]:
    from openpyxl import load_workbook

    assert response.status_code == 200, response.text[:300]
    book = load_workbook(io.BytesIO(response.content), read_only=True)
    rows = list(book.active.iter_rows(values_only=True))
    return [dict(zip(rows[0], row)) for row in rows[1:]]


def test_roles_that_may_not_read_are_403_and_no_token_is_401(lone):
    paths = ("/v1/kpis", "/v1/alerts", "/v1/exports/cases.csv", "/v1/exports/cases.xlsx", "/v1/access-log")
    for path in paths:
        assert requests.get(lone.reporting.url(path), timeout=10).status_code == 401, path
        for header in ("Bearer x.y.z", "Basic abc", "Bearer " + lone.token("hq_admin", branch="*") + "x"):
            answer = requests.get(lone.reporting.url(path), headers={"Authorization": header}, timeout=10)
            assert answer.status_code == 401 and "error" in jsonbody(answer), (path, header[:20], answer.text)
        expired = lone.token("hq_admin", branch="*", ttl=timedelta(seconds=-60)) if _ttl_supported() else None
        if expired:
            assert get(lone.reporting, path, token=expired).status_code == 401, path
    for role in ("front_desk", "aftercare_agent", "branch_integration", "auditor"):
        for path in paths[:4]:
            answer = lone.ask(path, role=(role, "SH001"), group_by="bogus")  # 403 before the query's 400
            assert answer.status_code == 403, (role, path, answer.status_code, answer.text[:200])
    for role, scope in (("front_desk", "SH001"), ("store_manager", "SH001"), ("investigator", "*"),
                        ("hq_analyst", "*"), ("aftercare_agent", "*"), ("branch_integration", "SH001")):
        answer = lone.ask("/v1/access-log", role=(role, scope), limit="0")
        assert answer.status_code == 403, (role, answer.status_code, answer.text[:200])
    answer = lone.ask("/v1/access-log", role=("regional_manager", None), token_region="east")
    assert answer.status_code == 403, answer.text


def _ttl_supported() -> bool:
    import inspect

    from shared.security import auth

    return "ttl" in inspect.signature(auth.issue_token).parameters


def test_a_store_manager_sees_its_branch_only_and_a_regional_manager_its_region(lone):
    ids = scoped_chain(lone)
    sh001, sh002, bj001 = {ids["a1"], ids["a2"]}, {ids[n] for n in ("b1", "b2", "b3", "b4")}, \
        {ids[n] for n in ("c1", "c2", "c3")}
    manager, region = ("store_manager", "SH001"), ("regional_manager", None)

    def kpis(role, **query):
        answer = lone.ask("/v1/kpis", role=role, token_region="east" if role is region else None, **query)
        assert answer.status_code == 200, (role, query, answer.text[:300])
        return jsonbody(answer)

    def ask(path, role, **query):
        return lone.ask(path, role=role, token_region="east" if role is region else None, **query)

    # HQ: the whole chain.
    assert kpis(HQ)["totals"]["volume"]["complaints"] == 9
    assert [g["key"] for g in kpis(HQ, group_by="branch")["groups"]] == ["BJ001", "SH001", "SH002"]
    # The store manager of SH001: its two complaints, whatever it asks for.
    figures = kpis(manager)
    assert figures["totals"]["volume"]["complaints"] == 2 and figures["branches"] == ["SH001"]
    assert [g["key"] for g in kpis(manager, group_by="branch")["groups"]] == ["SH001"]
    assert [g["key"] for g in kpis(manager, group_by="region")["groups"]] == ["east"]
    assert {g["key"] for g in kpis(manager, group_by="technician")["groups"]} == {"T-XB"}
    assert kpis(manager, group_by="technician")["groups"][0]["volume"]["complaints"] == 2
    for query in ({"branch": "SH002"}, {"branch": "BJ001"}, {"region": "north"}, {"branch": "SH002", "region": "east"},
                  {"branch": "XX999"}):
        figures = kpis(manager, group_by="branch", **query)
        assert figures["totals"]["volume"]["complaints"] == 0 and figures["groups"] == [], (query, figures)
        assert figures["totals"]["volume"]["by_category"] == {}
    assert kpis(manager, branch="SH001", region="east")["totals"]["volume"]["complaints"] == 2
    # The regional manager of east: SH001 and SH002, never BJ001.
    assert kpis(region)["totals"]["volume"]["complaints"] == 6
    assert [g["key"] for g in kpis(region, group_by="branch")["groups"]] == ["SH001", "SH002"]
    assert kpis(region, group_by="branch", branch="BJ001")["groups"] == []
    # The CSV export: the rows of the caller's scope only (the XLSX export: see its own test).
    for role, expected in ((manager, sh001), (region, sh001 | sh002), (HQ, sh001 | sh002 | bj001)):
        assert {r["case_id"] for r in csv_rows(ask("/v1/exports/cases.csv", role))} == expected, role
    assert csv_rows(ask("/v1/exports/cases.csv", manager, branch="SH002")) == []
    assert csv_rows(ask("/v1/exports/cases.csv", region, branch="BJ001")) == []
    assert csv_rows(ask("/v1/exports/cases.csv", manager, region="north")) == []
    # Breaching cases: by branch, in scope.
    for role, branches in ((manager, ["SH001"]), (region, ["SH001", "SH002"]), (HQ, ["BJ001", "SH001", "SH002"])):
        answer = ask("/v1/alerts", role)
        assert answer.status_code == 200, answer.text
        assert sorted(b["branch_code"] for b in jsonbody(answer)["breaching"]) == branches, role
    # Alerts: HQ sees each of them (what they are about: see the next test).
    assert len(jsonbody(ask("/v1/alerts", HQ))["alerts"]) == 4
    # Alerts: no branch role sees an alert about another branch, nor records outside its scope.
    outside = {manager: sh002 | bj001 | {ids["visit_bj001"]}, region: bj001 | {ids["visit_bj001"]}}
    leaks = {}
    for role, records in outside.items():
        answer = ask("/v1/alerts", role, status="all")
        assert answer.status_code == 200, answer.text
        shown = jsonbody(answer)["alerts"]
        assert all(a["about"].get("branch_code") in (None, "SH001", "SH002") for a in shown)
        assert "SH002" not in [a["about"].get("branch_code") for a in shown] or role is region
        leaks[role[0]] = sorted(i for i in records if i in answer.text)
    # DEFECT: GET /v1/alerts filters alerts by `branches && scope` but shows each whole: the store
    # manager of SH001 gets the technician T-XB's alert with SH002's case in `records` (and in
    # `count`, with SH002 in `branches`) and the B-X safety signal with BJ001's visit; the regional
    # manager of east the safety signal with BJ001's visit. DESIGN.md: a record outside the caller's
    # scope is not shown, not counted. Expected: the records (and count) in the caller's scope only.
    assert leaks == {"store_manager": [], "regional_manager": []}, leaks


def test_an_alert_says_what_it_is_about_as_the_events_said_it(lone):
    scoped_chain(lone)
    answer = lone.ask("/v1/alerts")
    assert answer.status_code == 200, answer.text
    about = sorted(json.dumps(a["about"], sort_keys=True) for a in jsonbody(answer)["alerts"])
    # DEFECT: handlers._alert_view splits the stored key (recurring_problem:technician:BJ:T017) on
    # every ":", so the alert about technician BJ:T017 is shown as about {"technician_id": "BJ"}
    # (a category or batch with a colon is cut the same way). Expected: the id as the events gave it.
    assert about == sorted(json.dumps(a, sort_keys=True) for a in (
        {"branch_code": "SH002", "category": "booking"}, {"technician_id": "T-XB"},
        {"technician_id": "BJ:T017"}, {"batch": "B-X"})), about
    [published] = [m["body"] for m in lone.alerts_bus.wait_for(
        lambda m: m["body"]["payload"].get("technician_id") == "BJ:T017", 15)]
    assert published["type"] == "recurring_problem_detected" and published["payload"]["by"] == "technician"


def test_the_access_log_is_the_auditor_s_in_its_scope_paged_once_each(lone):
    ids = scoped_chain(lone)
    everyone = {ids["read_a1"], ids["read_b1"], ids["read_c1"]}
    for role, scope, expected in (("hq_admin", "*", everyone), ("auditor", "*", everyone),
                                  ("auditor", "SH001", {ids["read_a1"]}), ("auditor", "BJ001", {ids["read_c1"]})):
        answer = lone.ask("/v1/access-log", role=(role, scope))
        # DEFECT: GET /v1/access-log is 500 as soon as the log holds a read: queries.access_log
        # returns the rows as psycopg2 gives them, event_id and case_id as uuid.UUID (SQLAlchemy's
        # psycopg2 dialect registers the UUID type), and the JSON response cannot serialise them
        # ("TypeError: Object of type UUID is not JSON serializable"). Expected: 200 with the reads.
        assert answer.status_code == 200, answer.text
        items = jsonbody(answer)["items"]
        assert {i["event_id"] for i in items} == expected, (role, scope)
        assert all(i["purpose"] == "顾客投诉复查" for i in items)
    region = requests.get(lone.reporting.url("/v1/access-log"), timeout=10,
                          headers=bearer(lone.token("auditor", region="north")))
    assert {i["event_id"] for i in jsonbody(region)["items"]} == {ids["read_c1"]}
    # One a page: every read once; filtered by case.
    seen, cursor = [], None
    for _ in range(5):
        answer = lone.ask("/v1/access-log", role=("auditor", "*"), limit=1, **({"cursor": cursor} if cursor else {}))
        assert answer.status_code == 200, answer.text
        seen += [i["event_id"] for i in jsonbody(answer)["items"]]
        cursor = jsonbody(answer)["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(everyone) and len(seen) == 3
    assert [i["case_id"] for i in jsonbody(lone.ask("/v1/access-log", role=("auditor", "*"),
                                                    case_id=ids["a1"].upper()))["items"]] == [ids["a1"]]
    assert jsonbody(lone.ask("/v1/access-log", role=("auditor", "SH001"), case_id=ids["b1"]))["items"] == []


# -- exports ------------------------------------------------------------------------------------------------

COLUMNS = ["case_id", "reference", "branch_code", "region", "kind", "category", "priority", "channel",
           "technician_id", "owner", "state", "received_at", "first_response_due", "first_response_at",
           "first_response_hours", "first_response_within_sla", "resolution_due", "resolved_at", "resolution_hours",
           "resolved_within_sla", "escalation_level", "reopened", "responsibility", "remedies", "remedies_cost",
           "outcome", "follow_up_score", "closed_at", "corrective_action_due", "corrective_action_done_at",
           "customer_ref", "customer_masked"]
AWKWARD = {"reference": 'SH001-"引号",逗号\n换行', "technician_id": 'T,"7"\r\n第二行',
           "category": "卫生,环境", "owner": '店长 "张", 早班\n'}


def awkward_case(lone) -> str:
    case_id = str(uuid.uuid4())
    t = NOW - timedelta(hours=5)
    lone.feed(complaint(case_id, received=t, reference=AWKWARD["reference"], technician=AWKWARD["technician_id"],
                        category=AWKWARD["category"], masked={"name": '王**,"VIP"', "phone": "138****6138"}),
              case_event("case_assigned", case_id, 2, t + timedelta(minutes=5), owner=AWKWARD["owner"]),
              case_event("case_acknowledged", case_id, 3, t + timedelta(hours=1), within_sla=True),
              complaint())
    return case_id


def test_the_csv_export_of_chinese_commas_quotes_and_newlines_is_well_formed(lone):
    case_id = awkward_case(lone)
    answer = lone.ask("/v1/exports/cases.csv")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert "charset=utf-8" in answer.headers["Content-Type"].lower()
    assert re.fullmatch(r'attachment; filename="closeloop-cases-\d{8}-\d{8}\.csv"',
                        answer.headers["Content-Disposition"]), answer.headers["Content-Disposition"]
    text = answer.content.decode("utf-8")
    assert text.startswith("\ufeff") and text.endswith("\r\n")
    rows = list(csv.reader(io.StringIO(text[1:], newline="")))
    assert rows[0] == COLUMNS and len(rows) == 3 and all(len(r) == len(COLUMNS) for r in rows), rows
    [row] = [dict(zip(COLUMNS, r)) for r in rows[1:] if r[0] == case_id]
    for name, value in AWKWARD.items():
        assert row[name] == value, (name, row[name])
    assert row["customer_masked"] == '王**,"VIP" 138****6138' and row["first_response_hours"] == "1.00"
    assert row["first_response_within_sla"] == "True" and row["received_at"] == "2026-11-22T05:00:00+08:00"
    assert not PHONE.search(text)


def test_an_export_over_an_empty_period_is_its_header_alone(lone):
    lone.feed(complaint())
    answer = lone.ask("/v1/exports/cases.csv", **{"from": "2020-01-01", "to": "2020-01-31"})
    assert answer.status_code == 200 and answer.content.decode("utf-8") == "\ufeff" + ",".join(COLUMNS) + "\r\n"
    assert 'filename="closeloop-cases-20200101-20200201.csv"' in answer.headers["Content-Disposition"]
    store = lone.ask("/v1/exports/cases.csv", role=("store_manager", "SH002"))  # its branch has no case
    assert store.status_code == 200 and store.content.decode("utf-8").count("\r\n") == 1
    book = lone.ask("/v1/exports/cases.xlsx", **{"from": "2020-01-01", "to": "2020-01-31"})
    assert book.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    assert xlsx_rows(book) == []


def test_the_xlsx_export_holds_one_row_per_case_of_the_caller_s_scope(lone):
    ids = scoped_chain(lone)
    answer = lone.ask("/v1/exports/cases.xlsx", role=("store_manager", "SH001"))
    # DEFECT: GET /v1/exports/cases.xlsx is 500 as soon as one case is in the period: the rows
    # come from psycopg2 with case_id as uuid.UUID, and openpyxl refuses it ("ValueError: Cannot
    # convert UUID('...') to Excel"). Only an export with no row at all answers. Expected: 200 and
    # a workbook with one row per case, as the CSV export.
    assert answer.status_code == 200, answer.text[:300]
    rows = xlsx_rows(answer)
    assert {r["case_id"] for r in rows} == {ids["a1"], ids["a2"]} and {r["branch_code"] for r in rows} == {"SH001"}
    everything = xlsx_rows(lone.ask("/v1/exports/cases.xlsx", role=("regional_manager", None), token_region="east"))
    assert {r["branch_code"] for r in everything} == {"SH001", "SH002"} and len(everything) == 6


def test_exported_text_that_looks_like_a_formula_or_holds_control_characters_stays_text(lone):
    case_id = str(uuid.uuid4())
    formula = '=HYPERLINK("http://example.invalid/?"&A1,"详情")'
    lone.feed(complaint(case_id, technician=formula, reference="SH001-\x07\x0b-0001",
                        masked={"name": "@SUM(1+1)", "phone": "138****6138"}))
    csv_answer = lone.ask("/v1/exports/cases.csv")
    [row] = [r for r in csv_rows(csv_answer) if r["case_id"] == case_id]
    assert row["technician_id"].endswith(formula[1:]) and "\x07" in row["reference"]
    answer = lone.ask("/v1/exports/cases.xlsx")
    # DEFECT (once the UUID above is fixed, the same export): openpyxl makes a string that starts
    # with "=" a formula (data_type "f"), so text a branch system sent as a technician id runs as a
    # formula when HQ opens the workbook; and a control character (BEL, VT: the event schemas
    # allow them) raises IllegalCharacterError, a 500. Expected: the cells are text (data_type
    # "s"), control characters dropped or replaced, and the export answered.
    assert answer.status_code == 200, answer.text[:300]
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(answer.content)).active
    header = [c.value for c in sheet[1]]
    [cells] = [r for r in sheet.iter_rows(min_row=2) if r[0].value == case_id]
    technician = cells[header.index("technician_id")]
    assert technician.data_type == "s" and formula[1:] in technician.value, (technician.data_type, technician.value)


# -- events out of order, duplicated, malformed, poisonous --------------------------------------------------------

def worked_case(case_id, t) -> list[dict]:
    """A complaint's whole life, in the order its producers published it."""
    remedy = {"remedy_id": str(uuid.uuid4()), "type": "refund", "amount": 300.0, "currency": "CNY"}
    follow_up = {"visit_id": str(uuid.uuid4()), "kind": "follow_up", "case_id": case_id, "sale_id": None}
    return [
        complaint(case_id, received=t, category="service_quality", technician="T-5"),
        case_event("case_opened", case_id, 1, t, kind="complaint", category="service_quality"),
        case_event("case_assigned", case_id, 2, t + timedelta(minutes=5), owner="M-1"),
        case_event("case_acknowledged", case_id, 3, t + timedelta(hours=2), within_sla=True),
        case_event("case_escalated", case_id, 4, t + timedelta(hours=3), level=1, to_role="regional_manager"),
        case_event("case_assigned", case_id, 5, t + timedelta(hours=3), owner="M-2"),
        case_event("remedy_proposed", case_id, 6, t + timedelta(hours=4), **remedy, status="approved"),
        case_event("remedy_approved", case_id, 7, t + timedelta(hours=4), **remedy),
        case_event("case_resolved", case_id, 8, t + timedelta(hours=10), resolved_at=(t + timedelta(hours=10)).isoformat(),
                   within_sla=True, reopened=0),
        dict(build_event("visit_scheduled", {**follow_up, "due_at": (t + timedelta(days=3)).isoformat()},
                         branch_code="SH001", correlation_id=case_id, occurred_at=t + timedelta(hours=10), sequence=1,
                         source="aftercare")),
        dict(build_event("visit_completed", {**follow_up, "score": 5, "answers": {"satisfaction": 5, "resolved": True}},
                         branch_code="SH001", correlation_id=case_id, occurred_at=t + timedelta(hours=12), sequence=2,
                         source="aftercare")),
        case_event("case_closed", case_id, 9, t + timedelta(hours=12), outcome="satisfied"),
    ]


def row_of(lone, case_id) -> dict:
    [row] = [r for r in csv_rows(lone.ask("/v1/exports/cases.csv")) if r["case_id"] == case_id]
    return {k: v for k, v in row.items() if k not in ("case_id", "reference", "customer_ref")}


def test_events_out_of_order_and_duplicated_change_nothing(lone):
    t = NOW - timedelta(days=1)
    control, probed = str(uuid.uuid4()), str(uuid.uuid4())
    lone.feed(*worked_case(control, t))
    expected = row_of(lone, control)
    assert (expected["owner"], expected["state"], expected["escalation_level"], expected["remedies_cost"],
            expected["follow_up_score"], expected["outcome"]) == ("M-2", "closed", "1", "300.00", "5", "satisfied")
    figures = jsonbody(lone.ask("/v1/kpis", group_by="handler"))
    # The same life, newest first: the case's events (each twice in one batch) before the complaint's.
    events = worked_case(probed, t)
    backwards = [e for e in reversed(events) if e["source"] != "intake"]
    lone.feed(*[copy for e in backwards for copy in (e, e)])
    assert jsonbody(lone.ask("/v1/kpis"))["totals"]["volume"]["complaints"] == 1  # not counted before it was received
    lone.feed(events[0])
    assert row_of(lone, probed) == expected
    twice = jsonbody(lone.ask("/v1/kpis", group_by="handler"))
    assert twice["totals"]["volume"]["complaints"] == 2 and [g["key"] for g in twice["groups"]] == ["M-2"]
    assert twice["groups"][0]["remedies"]["cost_by_type"] == {"refund": 600.0}
    # Every event again across batches (same ids), then copies under new ids: nothing changes.
    lone.feed(*events[3:], *events[:3])
    replayed = [{**e, "event_id": str(uuid.uuid4())} for e in events]
    lone.feed(*replayed)
    assert jsonbody(lone.ask("/v1/kpis", group_by="handler")) == twice
    assert row_of(lone, probed) == expected
    ids = [e["event_id"] for e in events]
    assert count(lone.url, f"SELECT count(*) FROM event_log WHERE correlation_id = '{probed}'") == 2 * len(ids)
    assert logged(lone.url, ids) == len(ids)
    # An older assignment heard last does not take the case back from its newer owner.
    lone.feed(case_event("case_assigned", probed, 3, t + timedelta(minutes=30), owner="M-OLD"))
    assert row_of(lone, probed)["owner"] == "M-2"
    assert figures["totals"]["volume"]["complaints"] == 1


def test_a_malformed_message_is_parked_at_once_and_the_batch_s_other_events_land(lone):
    good = [complaint() for _ in range(3)]
    stranger = case_event("case_opened", str(uuid.uuid4()), 1, NOW, kind="complaint")
    newer = {**complaint(), "version": 99}
    missing = {k: v for k, v in complaint().items() if k != "payload"}
    bad_payload = complaint()
    bad_payload["payload"] = {**bad_payload["payload"], "received_at": "yesterday"}
    raw = [("intake.events", "complaint_registered", "not json {"), ("intake.events", "complaint_registered", "[1, 2]"),
           ("aftercare.events", "visit_completed", json.dumps({"type": "visit_completed"})),
           ("investigation.events", "x", json.dumps({**case_event("case_closed", str(uuid.uuid4()), 2, NOW,
                                                                  outcome="satisfied"), "type": "case_vanished"}))]
    ids = publish(lone.amqp_uri, good[0], *raw, ("intake.events", "case_opened", json.dumps(stranger)), newer,
                  good[1], missing, bad_payload, good[2])
    wait_until(lambda: logged(lone.url, [g["event_id"] for g in good]) == 3, "the good events to land")
    bad = set(ids) - {g["event_id"] for g in good}
    found = wait_until(lambda: {p.event_id: p for p in parked(lone.amqp_uri) if p.event_id in bad} if len(
        [p for p in parked(lone.amqp_uri) if p.event_id in bad]) == len(bad) else None, "every bad one parked")
    reasons = {event_id: p.reason for event_id, p in found.items()}
    assert reasons.pop(newer["event_id"]) == "newer_version"
    assert set(reasons.values()) == {"malformed"}, reasons
    assert found[newer["event_id"]].attempts == 3
    assert all(found[i].attempts == 1 for i in reasons)
    assert count(lone.url, "SELECT count(*) FROM event_log") == 3
    assert jsonbody(lone.ask("/v1/kpis"))["totals"]["volume"]["complaints"] == 3


def test_an_event_whose_fold_fails_is_retried_and_parked_alone_while_the_rest_commits(lone):
    case_id = str(uuid.uuid4())
    remedy = {"remedy_id": str(uuid.uuid4()), "type": "refund", "currency": "CNY"}
    poison = [  # each passes its schema; the read models cannot hold it
        case_event("remedy_approved", case_id, 3, NOW, **remedy, amount=1e13),  # numeric(14, 2)
        case_event("case_escalated", case_id, 4, NOW, level=2 ** 40, to_role="hq_admin"),  # integer
    ]
    good = [complaint(case_id), case_event("case_assigned", case_id, 2, NOW, owner="M-1"),
            *[complaint() for _ in range(4)]]
    publish(lone.amqp_uri, good[0], poison[0], *good[1:4], poison[1], *good[4:])
    wait_until(lambda: logged(lone.url, [e["event_id"] for e in good]) == len(good), "the good events to commit")
    poisoned = {e["event_id"] for e in poison}
    found = wait_until(lambda: [p for p in parked(lone.amqp_uri) if p.event_id in poisoned] if len(
        [p for p in parked(lone.amqp_uri) if p.event_id in poisoned]) == 2 else None, "both parked", timeout=20)
    assert {(p.reason, p.attempts) for p in found} == {("failed", 3)}, found
    assert any("numeric" in p.error.lower() for p in found) and any("integer" in p.error.lower() for p in found)
    assert logged(lone.url, poisoned) == 0
    figures = jsonbody(lone.ask("/v1/kpis", group_by="handler"))
    assert figures["totals"]["volume"]["complaints"] == 5 and figures["totals"]["remedies"]["count_by_type"] == {}
    assert figures["totals"]["response"]["escalations_by_level"] == {}


def test_a_value_the_database_can_never_index_is_parked_not_retried_for_ever(lone):
    """Not an outage: PostgreSQL refuses an index entry over 2704 bytes with SQLSTATE 54000
    (program_limit_exceeded), which psycopg2 raises as an OperationalError."""
    huge = os.urandom(4000).hex()  # a correlation id of 8,000 characters that do not compress
    poison = {**complaint(), "correlation_id": huge}
    good = [complaint() for _ in range(4)]
    publish(lone.amqp_uri, good[0], good[1], poison, good[2], good[3])
    try:
        # DEFECT: shared.messaging.failures.is_temporary takes every OperationalError for an
        # outage, and psycopg2 raises SQLSTATE class 54 (program limit exceeded: here "index row
        # size 8016 exceeds btree version 4 maximum 2704 for index ix_event_log_record") as one:
        # the batch consumer holds the whole batch and runs it again every pause, for ever (a
        # warning each time); the batch's other events never commit and the poison is never
        # parked. The envelope schema bounds no text (correlation_id, branch_code, technician or
        # batch ids). Expected: an error that will repeat is split out, retried and parked alone;
        # the rest of the batch commits.
        wait_until(lambda: logged(lone.url, [e["event_id"] for e in good]) == 4, "the good events to commit",
                   timeout=10)
        wait_until(lambda: [p for p in parked(lone.amqp_uri) if p.event_id == poison["event_id"]], "it parked")
    finally:
        lone.reporting.runner.kill()  # the batch may be held, and tried again every second
