"""Reporting's issue-13 reads on PostgreSQL, through its handlers (events folded in process, as
they come from the bus): the customer file in each reader's scope, the case library with nobody
named in it, the standard answers used and the satisfaction that followed, inquiries counted
apart; retention takes the customer's links out and a rebuild makes the same rows."""
import csv
import io
import json
import uuid
from datetime import datetime, timedelta, timezone

import openpyxl
import pytest
import sqlalchemy as sa

from services.reporting import handlers, retention
from services.reporting.policy import ReportingRules
from services.reporting.repository import ReportingStore
from shared.calendar.policy import load_policy
from shared.messaging.envelope import build_event
from shared.persistence import anonymisation, db
from shared.security.auth import Identity
from shared.security.privacy import customer_ref
from shared.web.errors import Forbidden, NotFound, ValidationFailed

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
NOW = T0 + timedelta(days=20)
POLICY = load_policy(None)
KEY = b"test-customer-ref-key"
PHONE = "13812346138"
REF = customer_ref(KEY, PHONE)
OTHER = customer_ref(KEY, "13900001111")
MASKED = {"name": "王**", "phone": "138****6138"}


def who(role: str, branch: str | None = None) -> Identity:
    return Identity(subject=f"{role}-1", role=role, branches=None if branch is None else frozenset({branch}),
                    scope={"all": True} if branch is None else {"branch": branch})


HQ = who("hq_analyst")


def hours(h: float) -> datetime:
    return T0 + timedelta(hours=h)


class Case:
    """One case's events, each numbered and validated as its producer would publish it."""

    def __init__(self, branch: str, h: float, *, ref=REF, kind="complaint", category="booking", flags=(),
                 products=(), description="约了没位置", technician="T-017"):
        self.id, self.branch, self.seq, self.events = str(uuid.uuid4()), branch, {}, []
        self.received = hours(h)
        self.payload = {
            "complaint_id": self.id, "reference": f"{branch}-{self.id[:6]}", "kind": kind, "channel": "phone",
            "category": category, "category_source": "manual", "priority": "general", "severity_flags": list(flags),
            "description": description, "occurred_at": None, "received_at": self.received.isoformat(),
            "region": "east", "service": {"code": "HAIR-DYE", "name": "染发", "technician_id": technician},
            "products": [dict(p) for p in products], "customer_ref": ref,
            "customer_masked": MASKED if ref == REF else {"name": "李**"}, "customer_language": "zh",
            "first_response_due": (self.received + timedelta(hours=24)).isoformat(),
            "resolution_due": (self.received + timedelta(days=7)).isoformat()}
        self.add("complaint_registered" if kind == "complaint" else "feedback_registered", 0, source="intake",
                 **self.payload)

    def add(self, event_type: str, h: float, source: str = "investigation", **payload) -> "Case":
        self.seq[source] = self.seq.get(source, 0) + 1
        if source == "investigation":
            payload = {"case_id": self.id, "complaint_id": self.id, **payload}
        self.events.append(dict(build_event(event_type, payload, branch_code=self.branch, correlation_id=self.id,
                                            occurred_at=self.received + timedelta(hours=h),
                                            sequence=self.seq[source], source=source)))
        return self

    def visit(self, event_type: str, h: float, visit_id: str, seq: int, **payload) -> "Case":
        self.events.append(dict(build_event(
            event_type, {"visit_id": visit_id, "kind": "follow_up", "case_id": self.id, "sale_id": None,
                   "customer_ref": REF, **payload}, branch_code=self.branch, correlation_id=self.id,
            occurred_at=self.received + timedelta(hours=h), sequence=seq, source="aftercare")))
        return self


def remedy(case: Case, h: float, type_: str, amount: float) -> None:
    r = {"remedy_id": str(uuid.uuid4()), "type": type_, "amount": amount}
    case.add("remedy_proposed", h, **r, status="approved").add("remedy_fulfilled", h + 1, **r,
                                                                fulfilled_at=(case.received + timedelta(hours=h + 1))
                                                                .isoformat())


def sale_events(branch: str, h: float, ref=REF, discomfort=True) -> tuple[str, str, list[dict]]:
    """A hair colour sale, its return visit reaching the customer (a reaction to batch B-X)."""
    sale_id, visit_id = str(uuid.uuid4()), str(uuid.uuid4())
    sold = hours(h)
    sale = build_event("sale_recorded", {
        "sale_id": sale_id, "sold_at": sold.isoformat(), "recorded_at": sold.isoformat(), "region": "east",
        "customer_ref": ref, "customer_masked": MASKED, "contact_consent": True, "customer_language": "zh",
        "items": [{"type": "service", "code": "HAIR-DYE", "name": "染发", "product_type": "hair_colour",
                   "technician_id": "T-9", "batch": None},
                  {"type": "product", "sku": "DYE-5N", "name": "染发剂 5N", "product_type": "hair_colour",
                   "batch": "B-X"}]},
        branch_code=branch, correlation_id=sale_id, occurred_at=sold, sequence=1)
    base = {"visit_id": visit_id, "kind": "return", "case_id": None, "sale_id": sale_id, "customer_ref": ref}
    answers = {"met_expectations": False, "discomfort": discomfort, "packaging_ok": True, "satisfaction": 3,
               "suggestions": None, "discomfort_description": "头皮红肿" if discomfort else None}
    visit = [("visit_scheduled", 0, {"due_at": (sold + timedelta(days=2)).isoformat()}),
             ("visit_attempted", 48, {"attempt": 1, "reached": True, "outcome": "reached",
                                      "standard_answer": "visit-hair-colour-zh"}),
             ("visit_completed", 48, {"answers": answers, "score": 3, "standard_answer": "visit-hair-colour-zh"})]
    if discomfort:
        visit.append(("adverse_reaction_reported", 48, {
            "technician_id": "T-9", "product": {"sku": "DYE-5N", "name": "染发剂 5N", "product_type": "hair_colour",
                                                "batch": "B-X"},
            "description": "头皮红肿", "severity_flags": ["allergy"], "reported_at": (sold + timedelta(hours=48))
            .isoformat(), "customer_masked": MASKED, "customer_language": "zh"}))
    events = [dict(sale)] + [dict(build_event(kind, {**base, **payload}, branch_code=branch, correlation_id=sale_id,
                                              occurred_at=sold + timedelta(hours=h_), sequence=n + 1,
                                              source="aftercare"))
                             for n, (kind, h_, payload) in enumerate(visit)]
    return sale_id, visit_id, events


def the_issue_s_customer() -> dict:
    """Three complaints and a sale for one phone number at two branches (the issue's test), with
    an inquiry, a follow-up and a return visit; and another customer's complaint."""
    allergy = Case("SH001", 0, category="safety", flags=["allergy"],
                   products=[{"sku": "DYE-5N", "name": "染发剂", "batch": "B2026-11-03"}],
                   description="王姐染发后头皮过敏，电话 138 1234 6138，微信 wangjie_88，T-017 没做皮试")
    allergy.add("case_assigned", 0.2, owner="M-SH001")
    allergy.add("case_acknowledged", 0.5, channel="phone", within_sla=True, standard_answer="safety-first-response-zh")
    allergy.add("findings_recorded", 20, root_cause="T-017 未做皮肤测试", responsibility="ours", signed_by="INV-1",
                signed_at=hours(20).isoformat(), facts="王女士（13812346138）染发后两小时头皮红肿，Mr Wang 陪同")
    remedy(allergy, 21, "refund", 300.0)
    allergy.add("corrective_action_opened", 22, action="=全员皮肤测试培训，M-SH001 负责", owner="M-SH001",
                due=hours(300).isoformat())
    allergy.add("customer_notified", 30, request_event_id=str(uuid.uuid4()), measures="退款 300 元，王阿姨已接受",
                standard_answer="safety-written-result-zh")
    allergy.add("case_resolved", 30, resolved_at=hours(30).isoformat(), within_sla=True, reopened=0)
    follow_up = str(uuid.uuid4())
    allergy.visit("visit_scheduled", 31, follow_up, 1, due_at=hours(100).isoformat())
    allergy.visit("visit_completed", 100, follow_up, 2, answers={"satisfaction": 5, "resolved": True}, score=5)
    allergy.add("case_closed", 101, outcome="satisfied", corrective_action="open")
    booking = Case("SH001", 24)
    hygiene = Case("SH002", 48, category="hygiene_environment", description="毛巾不干净")
    inquiry = Case("SH002", 60, kind="inquiry", category="product_quality", description="精华孕妇能用吗")
    inquiry.add("case_opened", 0.01, kind="inquiry")
    inquiry.add("case_acknowledged", 2, channel="phone", within_sla=True, standard_answer="product-inquiry-zh")
    inquiry.add("case_closed", 2, outcome="answered")
    stranger = Case("SH001", 30, ref=OTHER)
    sale_id, visit_id, sold = sale_events("SH002", 72)
    events = [e for c in (allergy, booking, hygiene, inquiry, stranger) for e in c.events] + sold
    return {"events": events, "allergy": allergy, "booking": booking, "hygiene": hygiene, "inquiry": inquiry,
            "sale": sale_id, "visit": visit_id, "follow_up": follow_up}


def fresh_store(database_factory) -> ReportingStore:
    return ReportingStore(db.make_engine(database_factory("reporting"), 2))


@pytest.fixture(scope="module")
def loaded(database_factory):
    chain = the_issue_s_customer()
    store = fresh_store(database_factory)
    events = chain["events"]
    for i in range(0, len(events), 7):  # in batches, as the bus delivers them
        handlers.ingest(store, events=events[i:i + 7], rules=ReportingRules(), now=NOW)
    yield store, chain
    store.engine.dispose()


def file_of(store, identity=HQ, ref=REF, **query) -> dict:
    return json.loads(handlers.customer_file(store, identity=identity, customer_ref=ref, query=query))


def test_hq_sees_the_customer_s_whole_file_across_branches(loaded):
    store, chain = loaded
    allergy, booking, hygiene, inquiry = (chain[k] for k in ("allergy", "booking", "hygiene", "inquiry"))
    found = file_of(store)
    assert found["customer_ref"] == REF and found["customer_masked"] == MASKED and found["contact_consent"] is True
    assert [c["case_id"] for c in found["cases"]] == [inquiry.id, hygiene.id, booking.id, allergy.id]
    assert {c["branch_code"] for c in found["cases"]} == {"SH001", "SH002"}
    [worked] = [c for c in found["cases"] if c["case_id"] == allergy.id]
    assert worked == {
        "case_id": allergy.id, "reference": allergy.payload["reference"], "kind": "complaint", "branch_code": "SH001",
        "category": "safety", "priority": "general", "severity_flags": ["allergy"],
        "received_at": allergy.received.isoformat().replace("+00:00", "Z"), "state": "closed",
        "outcome": "satisfied", "closed_at": hours(101).isoformat().replace("+00:00", "Z"), "responsibility": "ours",
        "remedies": [{"type": "refund", "amount": 300.0, "status": "fulfilled", "promise": None}],
        "follow_up_score": 5, "batches": ["B2026-11-03"]}
    [sale] = found["sales"]
    assert (sale["sale_id"], sale["branch_code"], sale["contact_consent"]) == (chain["sale"], "SH002", True)
    assert [(i["type"], i.get("sku"), i.get("code"), i["name"], i["batch"]) for i in sale["items"]] == [
        ("service", None, "HAIR-DYE", "染发", None), ("product", "DYE-5N", None, "染发剂 5N", "B-X")]
    assert [v["visit_id"] for v in found["visits"]] == [chain["visit"], chain["follow_up"]]
    visit = found["visits"][0]
    assert (visit["kind"], visit["status"], visit["score"], visit["adverse_reaction"], visit["sale_id"]) == (
        "return", "completed", 3, True, chain["sale"])
    assert visit["answers"]["discomfort_description"] == "头皮红肿"
    assert found["summary"] == {
        "complaints": 3, "inquiries": 1, "open_cases": 2, "sales": 1, "visits": 2, "last_visit_score": 3,
        "last_visit_at": hours(120).isoformat().replace("+00:00", "Z"),
        "allergies": [
            {"at": hours(120).isoformat().replace("+00:00", "Z"), "batch": "B-X", "sku": "DYE-5N", "source": "visit",
             "record_id": chain["visit"]},
            {"at": hours(0).isoformat().replace("+00:00", "Z"), "batch": "B2026-11-03", "sku": "DYE-5N",
             "source": "complaint", "record_id": allergy.id}]}
    assert [(s["kind"], s["score"], s["case_id"]) for s in found["satisfaction"]] == [
        ("follow_up", 5, allergy.id), ("return", 3, None)]
    assert found["more"] == {"cases": False, "sales": False, "visits": False, "allergies": False, "satisfaction": False}
    assert "13812346138" not in str(found) and OTHER not in str(found)


def test_a_branch_reader_sees_only_its_branch_s_records_and_none_is_a_404(loaded):
    store, chain = loaded
    mine = file_of(store, who("store_manager", "SH002"))
    assert [c["case_id"] for c in mine["cases"]] == [chain["inquiry"].id, chain["hygiene"].id]
    assert [s["sale_id"] for s in mine["sales"]] == [chain["sale"]]
    assert [v["visit_id"] for v in mine["visits"]] == [chain["visit"]]
    assert (mine["summary"]["complaints"], mine["summary"]["inquiries"], mine["summary"]["visits"]) == (1, 1, 1)
    assert [a["source"] for a in mine["summary"]["allergies"]] == ["visit"]
    theirs = file_of(store, who("front_desk", "SH001"))
    assert [c["case_id"] for c in theirs["cases"]] == [chain["booking"].id, chain["allergy"].id]
    assert theirs["sales"] == [] and theirs["contact_consent"] is None and theirs["customer_masked"] == MASKED
    assert [v["kind"] for v in theirs["visits"]] == ["follow_up"]
    with pytest.raises(NotFound):
        file_of(store, who("aftercare_agent", "BJ001"))
    with pytest.raises(NotFound):
        file_of(store, ref=customer_ref(KEY, "13700000000"))
    with pytest.raises(Forbidden):
        file_of(store, who("auditor"))


@pytest.mark.parametrize("ref", ["c_123", "13812346138", REF.upper(), REF + "0", "c-" + REF[2:], ""])
def test_a_malformed_reference_is_a_400_naming_it(loaded, ref):
    store, _ = loaded
    with pytest.raises(ValidationFailed) as refused:
        file_of(store, ref=ref)
    assert list(refused.value.fields) == ["customer_ref"]


def test_an_unknown_parameter_is_named(loaded):
    store, _ = loaded
    with pytest.raises(ValidationFailed) as refused:
        file_of(store, ref="c_1", limit="5")
    assert set(refused.value.fields) == {"customer_ref", "limit"}


def library(store, identity=HQ, kind="csv", **query) -> list[dict]:
    mimetype, headers, body = handlers.case_library(store, identity=identity, query=query, policy=POLICY,
                                                    now=NOW, kind=kind)
    data = b"".join(body)
    assert "case-library" in headers["Content-Disposition"]
    if kind == "xlsx":
        sheet = openpyxl.load_workbook(io.BytesIO(data), read_only=True)["case library"]
        head, *lines = list(sheet.iter_rows(values_only=True))
        return [dict(zip(head, line)) for line in lines]
    text = data.decode("utf-8")
    assert text.startswith("\ufeff") and mimetype.startswith("text/csv")
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


def test_the_case_library_holds_closed_complaints_and_nobody_in_it(loaded):
    store, chain = loaded
    [row] = library(store)  # the inquiry is closed too, but no complaint; the others are open
    allergy = chain["allergy"]
    assert row["case_id"] == allergy.id and (row["category"], row["branch_code"], row["region"]) == (
        "safety", "SH001", "east")
    assert (row["received_month"], row["channel"], row["severity_flags"], row["responsibility"]) == (
        "2026-11", "phone", "allergy", "ours")
    assert (row["remedies"], row["outcome"], row["follow_up_score"], row["reopened"], row["escalation_level"]) == (
        "refund 300.00", "satisfied", "5", "0", "0")
    assert (row["first_response_hours"], row["resolution_hours"]) == ("0.50", "30.00")
    assert "头皮过敏" in row["what_happened"] and "头皮红肿" in row["what_happened"]
    assert row["root_cause"] == "[已匿名] 未做皮肤测试" and row["measures"] == "退款 300 元，[已匿名]已接受"
    assert row["corrective_action"].startswith("'=全员皮肤测试培训")  # inert against formulas
    everything = "".join(str(v) for v in row.values())
    for personal in ("13812346138", "138 1234 6138", "王姐", "王女士", "王阿姨", "王**", "wangjie_88", "Mr Wang",
                     "T-017", "M-SH001", "INV-1", REF, "138****6138", allergy.payload["reference"]):
        assert personal not in everything, personal
    assert set(row) == set(handlers.library.COLUMNS)
    [same] = library(store, kind="xlsx")
    assert same["what_happened"] == row["what_happened"] and same["case_id"] == allergy.id
    assert library(store, who("store_manager", "SH002")) == []
    assert library(store, category="booking") == []
    assert library(store, **{"from": "2026-11-01", "to": "2026-11-05"}) == []  # closed on the 6th
    with pytest.raises(ValidationFailed) as refused:
        library(store, category="", kind_of="x")
    assert set(refused.value.fields) == {"category", "kind_of"}
    with pytest.raises(Forbidden):
        library(store, who("front_desk", "SH001"))


def test_standard_answers_are_counted_with_the_satisfaction_that_followed(loaded):
    store, _ = loaded
    used = handlers.standard_answers(store, identity=HQ, query={"from": "2026-11-01", "to": "2026-11-20"},
                                     policy=POLICY, now=NOW)
    assert {(u["standard_answer"], u["purpose"]): (u["used"], u["followed_up"], u["mean_score"], u["satisfied"])
            for u in used["answers"]} == {
        ("safety-first-response-zh", "first_response"): (1, 1, 5.0, 100.0),
        ("safety-written-result-zh", "written_result"): (1, 1, 5.0, 100.0),
        ("product-inquiry-zh", "inquiry"): (1, 0, None, None),
        ("visit-hair-colour-zh", "visit_follow_up"): (1, 1, 3.0, 0.0)}
    mine = handlers.standard_answers(store, identity=who("store_manager", "SH002"), query={"from": "2026-11-01"},
                                     policy=POLICY, now=NOW)
    assert sorted(u["standard_answer"] for u in mine["answers"]) == ["product-inquiry-zh", "visit-hair-colour-zh"]
    with pytest.raises(ValidationFailed):
        handlers.standard_answers(store, identity=HQ, query={"group_by": "branch"}, policy=POLICY, now=NOW)


def test_inquiries_are_counted_apart_from_complaints(loaded):
    store, _ = loaded
    figures = handlers.kpis(store, identity=HQ, query={"from": "2026-11-01", "to": "2026-11-20"}, policy=POLICY,
                            now=NOW)["totals"]
    assert figures["inquiries"] == {"received": 1, "answered": 1, "answered_in_time": 1, "converted": 0,
                                    "answered_in_time_pct": 100.0}
    assert figures["volume"]["complaints"] == 4 and figures["volume"]["by_kind"] == {"complaint": 4, "inquiry": 1}


def test_a_customer_with_more_than_200_of_a_kind_gets_the_newest_200_and_counts_of_all(database_factory):
    store = fresh_store(database_factory)
    cases = [Case("SH001", n, category="safety" if n == 0 else "booking") for n in range(203)]
    handlers.ingest(store, events=[e for c in cases for e in c.events], rules=ReportingRules(), now=NOW)
    found = file_of(store)
    assert len(found["cases"]) == 200 and found["more"] == {
        "cases": True, "sales": False, "visits": False, "allergies": False, "satisfaction": False}
    assert found["cases"][0]["case_id"] == cases[-1].id and found["summary"]["complaints"] == 203
    assert found["summary"]["open_cases"] == 203
    # the oldest, not listed, still reports its allergy
    assert [a["record_id"] for a in found["summary"]["allergies"]] == [cases[0].id]
    store.engine.dispose()


def test_retention_takes_the_customer_s_links_out_and_a_rebuild_makes_the_same_rows(database_factory):
    store = fresh_store(database_factory)
    chain = the_issue_s_customer()
    handlers.ingest(store, events=chain["events"], rules=ReportingRules(), now=NOW)
    policy_retention = POLICY.retention.personal_data
    later = hours(101) + timedelta(days=3 * 366)  # the closed case's and the sale's three years are over
    done = anonymisation.run(store, retention.KINDS, service="reporting", retention=policy_retention, now=later)
    closed = sorted([chain["allergy"].id, chain["inquiry"].id])
    assert sorted(done.touched["case"]) == closed and done.touched["sale"] == [chain["sale"]]

    def state():
        with store.engine.connect() as conn:
            return [conn.execute(sa.text(sql)).all() for sql in (
                "SELECT case_id::text, customer_ref, facts->'texts' FROM case_facts ORDER BY 1",
                "SELECT visit_id::text, customer_ref, facts->'customer_ref', facts->'answers' FROM visit_facts ORDER BY 1",
                "SELECT sale_id::text, customer_ref, customer_masked FROM sales ORDER BY 1",
                "SELECT record_id::text, purpose, standard_answer, score FROM answer_uses ORDER BY 1, 2")]
    before = state()
    cases, visits, sales, _ = before
    assert [r.customer_ref for r in cases if r.case_id in closed] == [None, None]
    assert {r.visit_id: r.customer_ref for r in visits} == {chain["visit"]: None, chain["follow_up"]: None}
    assert [(r.customer_ref, r.customer_masked) for r in sales] == [(None, {"name": None, "phone": None})]
    found = file_of(store)
    assert {c["case_id"] for c in found["cases"]} == {chain["booking"].id, chain["hygiene"].id}
    assert found["sales"] == [] and found["visits"] == [] and found["summary"]["allergies"] == []
    handlers.rebuild(store, rules=ReportingRules(), now=later, zone="Asia/Shanghai")
    assert state() == before
    store.engine.dispose()


def test_0004_fills_the_customer_columns_and_the_sales_from_what_reporting_held(infra):
    """A database of 0003 (its facts and log): the case's and the visit's refs, the visit's
    answers and each sale (once) come from its facts and logged envelopes; an anonymised event
    gives no ref."""
    from shared.runtime.config import with_database
    from shared.testing.fixtures import RUN_ID, drop_at_exit

    url = with_database(infra.database_url, f"cltest_{RUN_ID}_reporting_mig_{uuid.uuid4().hex[:8]}")
    db.create_database(url)
    drop_at_exit(url)
    db.migrate("reporting", url, "0003")
    allergy = Case("SH001", 0)
    sale_id, visit_id, sold = sale_events("SH002", 72)
    gone_id, _, gone = sale_events("SH001", 80, discomfort=False)
    old = [*allergy.events, *sold, *gone, {**gone[0], "event_id": str(uuid.uuid4())}]  # a sale logged twice
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for n, e in enumerate(old):
            anonymised = e["correlation_id"] == gone_id
            payload = {**e["payload"], "customer_ref": None} if anonymised else e["payload"]
            conn.execute(sa.text(
                "INSERT INTO event_log (event_id, source, type, version, branch_code, correlation_id, sequence, "
                "occurred_at, logged_at, envelope, anonymised_at) VALUES (:id, :source, :type, 1, :branch, :cid, "
                ":seq, :at, :at, CAST(:envelope AS jsonb), :gone)"),
                {"id": e["event_id"], "source": e["source"], "type": e["type"], "branch": e["branch_code"],
                 "cid": e["correlation_id"], "seq": e["sequence"], "at": e["occurred_at"],
                 "envelope": json.dumps({**e, "payload": payload}), "gone": NOW if anonymised else None})
        conn.execute(sa.text("INSERT INTO case_facts (case_id, branch_code, kind, facts, updated_at) "
                             "VALUES (:id, 'SH001', 'complaint', CAST(:facts AS jsonb), now())"),
                     {"id": allergy.id, "facts": json.dumps({"customer_ref": REF, "kind": "complaint"})})
        conn.execute(sa.text("INSERT INTO visit_facts (visit_id, branch_code, kind, status, facts, updated_at) "
                             "VALUES (:id, 'SH002', 'return', 'completed', '{\"visit_id\": \"x\"}', now())"),
                     {"id": visit_id})
    db.migrate("reporting", url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT customer_ref FROM case_facts")).scalar() == REF
        [visit] = conn.execute(sa.text("SELECT customer_ref, facts FROM visit_facts")).all()
        assert visit.customer_ref == REF and visit.facts["customer_ref"] == REF
        assert visit.facts["answers"]["discomfort_description"] == "头皮红肿"
        sales = {str(r.sale_id): r for r in conn.execute(sa.text("SELECT * FROM sales"))}
    engine.dispose()
    assert set(sales) == {sale_id, gone_id} and sales[gone_id].customer_ref is None
    mine = sales[sale_id]
    assert (mine.customer_ref, mine.branch_code, mine.contact_consent, mine.customer_masked) == (
        REF, "SH002", True, MASKED)
    assert mine.items[1] == {"type": "product", "sku": "DYE-5N", "code": None, "name": "染发剂 5N",
                             "product_type": "hair_colour", "batch": "B-X", "technician_id": None}
