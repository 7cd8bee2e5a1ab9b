"""Reporting end to end over the real bus (issue 11): intake, investigation, aftercare and
reporting in the test process on one clock the tests move, with their relays and senders.
What the branches do reaches reporting as events; HQ reads KPIs, alerts and exports."""
import csv
import io
import uuid
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import openpyxl
import pytest
import sqlalchemy as sa

from services.investigation.handlers import ADVERSE_REACTION_CASES
from services.reporting import handlers
from services.reporting.policy import ReportingRules
from services.reporting.repository import ReportingStore
from shared.messaging.envelope import build_event
from shared.persistence import db
from shared.testing.fixtures import database_rows, jsonbody, purge_queues_of, wait_until
from shared.testing.samples import complaint_request
from tests.e2e.test_investigation_cases import COMPLAINT_REQUEST, FINDINGS, Chain, bearer, publish_raw

pytestmark = pytest.mark.e2e
HQ = ("hq_analyst", "*")


def purge_reporting_queues(amqp_uri: str) -> None:
    """Reporting's queues take every event of the other services, also those of tests that ran
    without reporting: what an earlier test left there is not this chain's."""
    purge_queues_of(amqp_uri, "reporting")


@pytest.fixture
def chain(http, token, clock, amqp_uri, start_service, start_relay, start_sender, database_factory, bus_listener):
    from services.intake.service import IntakeService

    clock.set(datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))  # 10:00 in Shanghai, a Sunday
    purge_reporting_queues(amqp_uri)
    cases_bus = bus_listener("investigation.events")
    alerts_bus = bus_listener("reporting.events")
    intake_bus = bus_listener("intake.events")
    visits_bus = bus_listener("aftercare.events")
    databases = {name: database_factory(name) for name in ("intake", "investigation", "aftercare", "reporting")}
    services = {name: start_service(name, clock=clock, database_url=url) for name, url in databases.items()}
    for url in databases.values():
        start_relay(url)
    staff = start_sender(databases["investigation"], service="investigation")
    customers = start_sender(databases["intake"], service="intake", on_outcome=IntakeService.message_outcome)
    chain = Chain(http, token, services["intake"], services["investigation"], staff, customers, cases_bus, clock)
    chain.aftercare, chain.reporting, chain.alerts_bus, chain.customers_bus, chain.visits_bus, chain.databases = (
        services["aftercare"], services["reporting"], alerts_bus, intake_bus, visits_bus, databases)
    return chain


def kpis(chain, role=HQ, **query) -> tuple[int, dict]:
    answer = chain.http.get(chain.reporting.url("/v1/kpis"), params=query,
                            headers=bearer(chain.token(role[0], branch=role[1])), timeout=10)
    return answer.status_code, jsonbody(answer)


def test_complaints_reach_the_kpis_and_three_of_a_category_raise_a_recurring_problem(chain):
    body = {**COMPLAINT_REQUEST, "category": "hygiene_environment", "severity_flags": [], "service": None,
            "products": [], "description": "毛巾不干净"}
    ids = [chain.post_complaint(body)["id"] for _ in range(3)]
    wait_until(lambda: kpis(chain)[1]["totals"]["volume"]["complaints"] == 3, "the complaints in the KPIs")
    status, figures = kpis(chain, group_by="branch")
    assert status == 200 and [g["key"] for g in figures["groups"]] == ["SH001"]
    assert figures["totals"]["volume"]["by_category"] == {"hygiene_environment": 3}
    [alert] = [m["body"] for m in chain.alerts_bus.wait_for(
        lambda m: m["body"]["type"] == "recurring_problem_detected", 15)]
    assert alert["payload"]["by"] == "branch_category" and sorted(alert["payload"]["case_ids"]) == sorted(ids)


# -- a scripted week of a three-branch chain ---------------------------------------------------------

LOCAL = ZoneInfo("Asia/Shanghai")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=LOCAL)
ANSWERS = {"met_expectations": False, "discomfort": False, "packaging_ok": None, "satisfaction": 2,
           "suggestions": None}


def local(day: int, hour: float) -> datetime:
    return MONDAY + timedelta(days=day, hours=hour - 10)


def complaint(category: str, technician: str, **more) -> dict:
    return complaint_request(category=category, severity_flags=[], products=[],
                             service={"code": "HAIR-CUT", "name": "剪发", "technician_id": technician}, **more)


def hair_colour_sale(technician: str, sold_at: datetime) -> dict:
    return {"customer": {"name": "钱女士", "phone": "13900001111", "contact_consent": True, "language": "zh"},
            "sold_at": sold_at.isoformat(),
            "items": [{"type": "service", "code": "HAIR-DYE", "name": "染发", "product_type": "hair_colour",
                       "technician_id": technician, "batch": "B-X"}]}


def post(chain, path: str, body: dict, branch: str) -> dict:
    token = chain.token("front_desk", branch=branch)
    answer = chain.http.post(chain.intake.url(path), json=body, headers=bearer(token), timeout=10)
    assert answer.status_code == 201, answer.text
    return jsonbody(answer)


def work(chain, case_id: str, branch: str, *tasks) -> None:
    for task, body, role in tasks:
        answer = chain.task(case_id, task, body, role=role, branch=branch)
        assert answer.status_code == 200, (task, answer.text)


def move_to(chain, instant: datetime) -> None:
    chain.clock.set(instant)


def agent_reaches(chain, branch: str, follows: str, answers: dict) -> str:
    """The branch's agent finds the visit following `follows` (a sale or case id) in the queue due
    now and records the customer reached with these answers: the visit's id."""
    token = bearer(chain.token("aftercare_agent", branch=branch))

    def listed():
        answer = chain.http.get(chain.aftercare.url("/v1/visits"), headers=token, timeout=10)
        return [v for v in jsonbody(answer)["items"] if follows in (v["sale_id"], v["case_id"])]

    [visit] = wait_until(listed, f"the visit after {follows} in {branch}'s queue")
    answer = chain.http.post(chain.aftercare.url(f"/v1/visits/{visit['id']}/attempts"), headers=token, timeout=10,
                             json={"outcome": "reached", "answers": answers})
    assert answer.status_code == 200, answer.text
    return visit["id"]


def reporting_caught_up(chain) -> None:
    """Every event the other services published so far (as the test's listeners heard them) is in
    reporting's log, folded: the log and the fold commit together."""
    def logged() -> bool:
        published = {m["body"]["event_id"] for bus in (chain.customers_bus, chain.bus, chain.visits_bus)
                     for m in bus.messages}
        rows = database_rows(chain.databases["reporting"], sa.text("SELECT event_id::text FROM event_log"))
        return published <= {row[0] for row in rows}
    wait_until(logged, "reporting to log every event published")


def test_a_scripted_week_of_three_branches_gives_the_figures_computed_by_hand(chain, amqp_uri):
    move_to(chain, local(0, 10))
    a = post(chain, "/v1/complaints", complaint("service_quality", "T-1", description="剪得太短"), "SH001")["id"]
    b = post(chain, "/v1/complaints", complaint("hygiene_environment", "T-5", description="毛巾不干净"), "SH002")["id"]
    c = post(chain, "/v1/complaints", complaint_request(category="safety"), "BJ001")["id"]
    praise = post(chain, "/v1/complaints", complaint_request(kind="praise", category=None, severity_flags=[],
                                                             description="技师很专业"), "SH001")["id"]
    s1 = post(chain, "/v1/sales", hair_colour_sale("T-1", local(0, 10)), "SH001")["id"]
    s2 = post(chain, "/v1/sales", hair_colour_sale("T-9", local(0, 10)), "BJ001")["id"]
    for case_id, branch in ((a, "SH001"), (b, "SH002"), (c, "BJ001"), (praise, "SH001")):
        wait_until(lambda: chain.case(case_id, branch=branch).status_code == 200, f"case {case_id} in {branch}")

    # Monday: the urgent one answered in half an hour; A answered at noon and resolved with an apology.
    move_to(chain, local(0, 10.5))
    work(chain, c, "BJ001", ("assign", {"owner": "BJ-M"}, "store_manager"),
         ("respond", {"message": "已安排专人处理", "channel": "phone"}, "store_manager"))
    move_to(chain, local(0, 12))
    work(chain, a, "SH001", ("assign", {"owner": "SH-M"}, "store_manager"),
         ("respond", {"message": "您好，已收到", "channel": "phone"}, "store_manager"),
         ("record_findings", {**FINDINGS, "responsibility": "customer_misuse"}, "investigator"),
         ("propose_remedy", {"type": "apology", "amount": 0}, "store_manager"),
         ("fulfil", {"note": "店长当面致歉"}, "store_manager"),
         ("notify_customer", {"measures": "店长当面致歉", "completed_at": local(0, 12).isoformat(),
                              "responsible": "SH-M", "follow_up": "三天后回访"}, "store_manager"))
    # Tuesday: B's first response falls due at 10:00 and breaches; answered at 16:00 (30 hours).
    move_to(chain, local(1, 10) + timedelta(minutes=1))
    chain.events(b, "sla_breached")
    move_to(chain, local(1, 16))
    work(chain, b, "SH002", ("assign", {"owner": "SH2-M"}, "store_manager"),
         ("respond", {"message": "抱歉，已整改", "channel": "wechat"}, "store_manager"))
    # Wednesday 10:00: both hair-colour allergy checks; both customers report a reaction (batch B-X).
    move_to(chain, local(2, 10))
    reaction = {**ANSWERS, "discomfort": True, "discomfort_description": "头皮红肿"}
    v1 = agent_reaches(chain, "SH001", s1, reaction)
    v2 = agent_reaches(chain, "BJ001", s2, reaction)
    ar1, ar2 = (str(uuid.uuid5(ADVERSE_REACTION_CASES, v)) for v in (v1, v2))
    wait_until(lambda: chain.case(ar1).status_code == 200 and chain.case(ar2, branch="BJ001").status_code == 200,
               "the adverse-reaction cases")
    move_to(chain, local(2, 10.5))  # BJ001 answers its reaction in half an hour; SH001 does not answer
    work(chain, ar2, "BJ001", ("assign", {"owner": "BJ-M"}, "store_manager"),
         ("respond", {"message": "请停止使用并来店处理", "channel": "phone"}, "store_manager"))
    # Thursday noon: A's follow-up; the customer is unsatisfied (2, not resolved): A reopens.
    move_to(chain, local(3, 12))
    chain.events(ar1, "sla_breached")  # AR1's first response, due Wednesday 11:00
    agent_reaches(chain, "SH001", a, {**ANSWERS, "resolved": False})
    chain.events(a, "case_reopened")
    move_to(chain, local(3, 13))
    reporting_caught_up(chain)

    # By hand. Cases: A, B, C, AR1, AR2 (complaints), the praise. First responses: C 0.5 h, AR2
    # 0.5 h, A 2 h, B 30 h -> median 1.25, p90 2 + 0.7 * 28 = 21.6. SLA verdicts at Thursday 13:00:
    # met A's response and resolution, C's and AR2's responses; breached B's response and AR1's
    # (unanswered, due Wednesday 11:00); the other resolutions are not due: 4 of 6 = 66.7%.
    status, figures = kpis(chain)
    totals = figures["totals"]
    assert status == 200 and totals["volume"] == {
        "total": 6, "complaints": 5, "services": 2, "complaints_per_100_services": 250.0,
        "by_kind": {"complaint": 5, "praise": 1},
        "by_category": {"service_quality": 1, "hygiene_environment": 1, "safety": 3},
        "by_priority": {"general": 2, "urgent": 3}, "by_channel": {"front_desk": 3, "return_visit": 2}}
    levels: dict[str, int] = {}  # each case's highest escalation, as investigation published it
    for m in chain.bus.messages:
        if m["body"]["type"] == "case_escalated":
            case_id = m["body"]["payload"]["case_id"]
            levels[case_id] = max(levels.get(case_id, 0), m["body"]["payload"]["level"])
    # Percentiles come from histograms of 1% wide buckets (services/reporting/kpis.py): within 1%.
    assert totals["response"] == {
        "first_response_hours": {"median": pytest.approx(1.25, rel=0.01), "p90": pytest.approx(21.6, rel=0.01)},
        "resolution_hours": {"median": pytest.approx(2.0, rel=0.01), "p90": pytest.approx(2.0, rel=0.01)},
        "sla_compliance_pct": 66.7,
        "escalations_by_level": {str(n): sum(1 for case_id, level in levels.items() if level >= n and case_id != praise)
                                 for n in (1, 2, 3) if any(level >= n for level in levels.values())},
        "resolution_rate_pct": 20.0, "reopen_rate_pct": 100.0}
    # B and AR1 answered late or never, A reopened one level up, the praise unacknowledged in 72 h
    assert set(levels) == {a, b, ar1, praise}
    assert totals["satisfaction"] == {"mean_score": 2.0, "share_4_5_pct": 0.0, "praise": 1}
    assert totals["aftercare"] == {"visits_due": 3, "completed": 3, "reached_pct": 100.0, "abandoned": 0,
                                   "mean_score": 2.0, "adverse_reactions": 2, "suggestions_recorded": 0}
    assert totals["remedies"] == {"count_by_type": {"apology": 1}, "cost_by_type": {"apology": 0.0},
                                  "promises_kept_pct": None}
    by_branch = {g["key"]: g["volume"]["complaints"] for g in kpis(chain, group_by="branch")[1]["groups"]}
    assert by_branch == {"SH001": 2, "SH002": 1, "BJ001": 2}
    mine = kpis(chain, role=("store_manager", "SH002"))[1]["totals"]
    assert mine["volume"]["complaints"] == 1 and mine["response"]["sla_compliance_pct"] == 0.0

    # The safety signal: two reactions on B-X at two branches, published once; AR1 breaching now.
    [signal] = [m["body"] for m in chain.alerts_bus.wait_for(
        lambda m: m["body"]["type"] == "safety_signal_raised", 15)]
    assert signal["payload"]["batch"] == "B-X" and signal["payload"]["branches"] == ["BJ001", "SH001"]
    assert sorted(signal["payload"]["visit_ids"]) == sorted([v1, v2])
    answer = chain.http.get(chain.reporting.url("/v1/alerts"), headers=bearer(chain.token(*HQ)), timeout=10)
    alerts = jsonbody(answer)
    assert [(a["kind"], a["about"]) for a in alerts["alerts"]] == [("safety_signal", {"batch": "B-X"})]
    breaching = {b_["branch_code"]: b_["first_response"] for b_ in alerts["breaching"]}
    assert breaching == {"SH001": 1}
    sh002 = chain.http.get(chain.reporting.url("/v1/alerts"), timeout=10,
                           headers=bearer(chain.token("store_manager", branch="SH002")))
    assert jsonbody(sh002)["alerts"] == [] and jsonbody(sh002)["breaching"] == []

    # HQ's totals of whole days came from the KPI cells each batch kept (kpi_values; the
    # integration tests hold them to the rows' figures).
    [(complete, services, complaints)] = database_rows(chain.databases["reporting"], sa.text(
        "SELECT complete, (SELECT sum(value) FROM kpi_values WHERE grain = 'day' AND category = '*' "
        "AND measure = 'services'), (SELECT sum(value) FROM kpi_values WHERE grain = 'month' AND category = '*' "
        "AND measure = 'complaints') FROM kpi_state"))
    assert complete and (services, complaints) == (2, 5)

    # A duplicated event changes nothing; a rebuild from the log gives the same answers.
    before = kpis(chain, group_by="branch")[1]
    [registered] = [m["body"] for m in chain.customers_bus.messages
                    if m["body"]["type"] == "complaint_registered" and m["body"]["correlation_id"] == b]
    publish_raw(amqp_uri, registered)
    reporting_caught_up(chain)
    assert kpis(chain, group_by="branch")[1] == before
    store = ReportingStore(db.make_engine(chain.databases["reporting"], 1))
    handlers.rebuild(store, rules=ReportingRules(), now=chain.clock.now(), zone="Asia/Shanghai")
    store.engine.dispose()
    assert kpis(chain, group_by="branch")[1] == before
    assert len([m for m in chain.alerts_bus.messages if m["body"]["type"] == "safety_signal_raised"]) == 1


def test_exports_stream_the_cases_masked_and_the_access_log_is_for_auditors(chain, amqp_uri):
    move_to(chain, local(0, 10))
    ids = [post(chain, "/v1/complaints", complaint("booking", "T-2", description=f'约了没位置, "第{n}次"\n再说'),
                branch)["id"] for n, branch in enumerate(("SH001", "SH001", "SH002"))]
    case_id = ids[0]
    read = build_event("archive_accessed", {"case_id": case_id, "complaint_id": case_id, "actor": "AUD-1",
                                            "actor_role": "auditor", "purpose": "年度审计抽查",
                                            "accessed_at": local(0, 11).isoformat(), "contact_read": True},
                       branch_code="SH001", correlation_id=case_id, occurred_at=local(0, 11), sequence=9)
    publish_raw(amqp_uri, dict(read))
    wait_until(lambda: database_rows(chain.databases["reporting"], sa.text("SELECT count(*) FROM access_log"))[0][0]
               == 1 and database_rows(chain.databases["reporting"],
                                      sa.text("SELECT count(*) FROM case_facts WHERE received_at IS NOT NULL"))[0][0]
               == 3, "the cases and the archive read in reporting")

    def get(path, role, branch="*", **query):
        return chain.http.get(chain.reporting.url(path), params=query, timeout=10,
                              headers=bearer(chain.token(role, branch=branch)))

    answer = get("/v1/exports/cases.csv", "hq_analyst")
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/csv")
    assert "attachment" in answer.headers["Content-Disposition"]
    text = answer.content.decode("utf-8")
    assert text.startswith("\ufeff") and "13812346138" not in text and "王女士" not in text
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    assert sorted(r["case_id"] for r in rows) == sorted(ids)
    assert {r["category"] for r in rows} == {"booking"} and {r["customer_masked"] for r in rows} == {"王** 138****6138"}
    assert {r["branch_code"]: r["region"] for r in rows} == {"SH001": "east", "SH002": "east"}
    mine = get("/v1/exports/cases.csv", "store_manager", "SH002")
    assert [r["case_id"] for r in csv.DictReader(io.StringIO(mine.content.decode().lstrip("\ufeff")))] == [ids[2]]
    empty = get("/v1/exports/cases.csv", "hq_analyst", **{"from": "2020-01-01", "to": "2020-01-31"})
    assert empty.status_code == 200 and empty.content.decode().lstrip("\ufeff").count("\r\n") == 1  # the header
    book = get("/v1/exports/cases.xlsx", "hq_admin")
    assert book.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(book.content), read_only=True)["cases"]
    assert len(list(sheet.iter_rows(values_only=True))) == 4
    bad = get("/v1/exports/cases.csv", "hq_analyst", **{"from": "yesterday", "kind": "order"})
    assert bad.status_code == 400 and set(jsonbody(bad)["error"]["fields"]) == {"from", "kind"}
    assert get("/v1/exports/cases.csv", "front_desk", "SH001").status_code == 403

    # The customer file: the three complaints and a sale of one phone number at two branches, each
    # reader the records of their scope (issue 13); the case library and the standard answers answer.
    sale = {**hair_colour_sale("T-9", local(0, 10)), "customer": {"name": "王女士", "phone": "13812346138",
                                                                  "contact_consent": False, "language": "zh"}}
    sale_id = post(chain, "/v1/sales", sale, "SH002")["id"]
    wait_until(lambda: database_rows(chain.databases["reporting"], sa.text("SELECT count(*) FROM sales"))[0][0] == 1,
               "the sale in reporting")
    [(ref,)] = database_rows(chain.databases["reporting"], sa.text("SELECT DISTINCT customer_ref FROM case_facts"))
    whole = get(f"/v1/customers/{ref}", "hq_analyst")
    assert whole.status_code == 200, whole.text
    body = jsonbody(whole)
    assert sorted(c["case_id"] for c in body["cases"]) == sorted(ids) and [s["sale_id"] for s in body["sales"]] == [
        sale_id]
    assert body["customer_masked"] == {"name": "王**", "phone": "138****6138"} and body["contact_consent"] is False
    assert (body["summary"]["complaints"], body["summary"]["sales"]) == (3, 1)
    sh002 = jsonbody(get(f"/v1/customers/{ref}", "store_manager", "SH002"))
    assert [c["case_id"] for c in sh002["cases"]] == [ids[2]] and len(sh002["sales"]) == 1
    assert get(f"/v1/customers/{ref}", "front_desk", "BJ001").status_code == 404
    assert set(jsonbody(get("/v1/customers/13812346138", "front_desk", "SH001"))["error"]["fields"]) == {
        "customer_ref"}
    library = get("/v1/exports/case-library.csv", "hq_analyst", category="booking")
    assert library.status_code == 200 and library.content.decode().lstrip("\ufeff").startswith("case_id,category,")
    assert get("/v1/exports/case-library.xlsx", "hq_analyst").status_code == 200
    used = get("/v1/kpis/standard-answers", "store_manager", "SH001")
    assert used.status_code == 200 and jsonbody(used)["answers"] == []

    log = get("/v1/access-log", "auditor")
    assert log.status_code == 200
    [entry] = jsonbody(log)["items"]
    assert (entry["case_id"], entry["actor"], entry["purpose"], entry["contact_read"]) == (
        case_id, "AUD-1", "年度审计抽查", True)
    assert get("/v1/access-log", "store_manager", "SH001").status_code == 403
    assert get("/v1/access-log", "hq_admin", case_id=str(uuid.uuid4())).json()["items"] == []
