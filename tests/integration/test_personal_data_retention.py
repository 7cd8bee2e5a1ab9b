"""Retention of personal data on the real database: records closed longer than the policy's
retention (3 years) are anonymised, those under an open case, a legal hold or closed since are
kept; a dry run lists the same and changes nothing; a second run touches nothing; every run is
logged with what it touched. Records are made through each service's own use cases, on a clock
the test sets (3 years and a day before the run, and 2 years before)."""
import logging
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from services.intake import handlers as intake_handlers
from services.intake import retention as intake_retention
from services.intake.repository import IntakeStore
from services.investigation import handlers as investigation_handlers
from services.investigation import retention as investigation_retention
from services.investigation.dependencies import load_processes
from services.investigation.repository import InvestigationStore
from shared.calendar.clock import ManualClock
from shared.calendar.policy import load_policy
from shared.messaging.envelope import build_event
from shared.persistence import anonymisation, db
from shared.persistence.anonymisation import RUN_RECORDS, RUNS
from shared.security.auth import Identity
from shared.security.privacy import ANONYMISED as X
from shared.testing.samples import complaint_event, complaint_request

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
POLICY = load_policy()
RETENTION = POLICY.retention.personal_data  # P3Y
NOW = datetime(2029, 11, 23, 2, 0, tzinfo=timezone.utc)
OLD = NOW - timedelta(days=3 * 365 + 1 + 1)  # closed 3 years and a day ago (2028 has a 29 February)
RECENT = NOW - timedelta(days=2 * 365)        # closed 2 years ago
FRONT_DESK = Identity("fd-1", "front_desk", frozenset({"SH001"}), {"branch": "SH001"})
MANAGER = Identity("sm-1", "store_manager", frozenset({"SH001"}), {"branch": "SH001"})
HQ_ADMIN = Identity("hq-1", "hq_admin", None, {"all": True})


def run(store, kinds, service, **kwargs):
    return anonymisation.run(store, kinds, service=service, retention=RETENTION, now=NOW, **kwargs)


def table_rows(engine, *tables) -> list:
    with engine.connect() as conn:
        return [[tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))] for t in tables]


def run_log(engine) -> list[tuple]:
    with engine.connect() as conn:
        runs = conn.execute(sa.select(RUNS.c.id, RUNS.c.dry_run, RUNS.c.counts, RUNS.c.held, RUNS.c.as_of,
                                      RUNS.c.closed_before, RUNS.c.finished_at.is_not(None)).order_by(RUNS.c.id)).all()
        records = conn.execute(sa.select(RUN_RECORDS.c.run_id, RUN_RECORDS.c.record_type, RUN_RECORDS.c.record_id)
                               .order_by(RUN_RECORDS.c.run_id, RUN_RECORDS.c.record_id)).all()
    return [tuple(r) for r in runs], [tuple(r) for r in records]


# -- intake ---------------------------------------------------------------------------------------

def case_event(event_type, complaint_id, sequence, at, **fields):
    return build_event(event_type, {"case_id": complaint_id, "complaint_id": complaint_id, **fields},
                       branch_code="SH001", correlation_id=complaint_id, sequence=sequence, occurred_at=at,
                       source="investigation")


def deliver(store, event, handler):
    return handler(store.for_event(f"intake.{handler.__name__}", event["event_id"]), event=event)


def post_complaint(store, n: int, *, received: datetime, closed: datetime | None = None, **follow) -> str:
    """A complaint whose customer is named and reachable in its text, received then, its case
    acknowledged, and closed when `closed` says."""
    phone = f"139{n:08d}"
    body = complaint_request(occurred_at=None, customer={"name": "王芳", "phone": phone,
                                                         "email": f"wang{n}@example.com", "language": "zh"},
                             description=f"王芳女士染发后过敏，请回电 {phone[:3]} {phone[3:7]} {phone[7:]}")
    _, answer = intake_handlers.register_complaint(store, identity=FRONT_DESK, body=body, policy=POLICY,
                                                   rules=POLICY.section("intake"), now=received, ref_key=b"key")
    cid = answer["id"]
    deliver(store, case_event("case_acknowledged", cid, 3, received), intake_handlers.follow_case)
    if closed is not None:
        deliver(store, case_event("case_closed", cid, 8, closed, outcome="satisfied"), intake_handlers.follow_case)
    if follow.get("reopened"):
        deliver(store, case_event("case_reopened", cid, 9, follow["reopened"], escalation_level=1),
                intake_handlers.follow_case)
    if follow.get("held"):
        deliver(store, case_event("legal_hold_set", cid, 10, closed, actor="hq-1", actor_role="hq_admin",
                                  reason="顾客起诉"), intake_handlers.follow_legal_hold)
    return cid


def record_sale(store, n: int, sold_at: datetime) -> str:
    body = {"customer": {"name": "Anne Smith", "phone": f"137{n:08d}", "contact_consent": True},
            "sold_at": sold_at.isoformat(), "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare"}]}
    _, answer = intake_handlers.record_sale(store, identity=FRONT_DESK, body=body, policy=POLICY,
                                            rules=POLICY.section("intake"), now=sold_at, ref_key=b"key")
    return answer["id"]


def test_intake_anonymises_the_contacts_of_what_closed_past_the_retention_and_keeps_the_rest(database_factory):
    from services.intake import models

    engine = db.make_engine(database_factory("intake"), 2)
    store = IntakeStore(engine)
    due = post_complaint(store, 1, received=OLD - timedelta(days=9), closed=OLD)
    held = post_complaint(store, 2, received=OLD - timedelta(days=9), closed=OLD, held=True)
    still_open = post_complaint(store, 3, received=OLD - timedelta(days=9))
    post_complaint(store, 4, received=RECENT - timedelta(days=9), closed=RECENT)
    post_complaint(store, 5, received=OLD - timedelta(days=9), closed=OLD, reopened=RECENT)
    old_sale, _ = record_sale(store, 6, OLD), record_sale(store, 7, RECENT)
    with store.unit_of_work() as uow:  # an investigator read the contact to call back
        uow.contact_access.add(accessed_at=OLD, subject="inv-7", role="investigator", record_type="complaint",
                               record_id=due, branch_code="SH001", purpose="回电王芳 13900000001", outcome="granted")
    # ...and a front desk looked the customer up by phone (logged under the customer_ref)
    intake_handlers.look_up_customer(store, identity=FRONT_DESK, ref_key=b"key", now=OLD, read_body=lambda: {
        "phone": "139 0000 0001", "purpose": "王芳问进度 13900000001"})
    records = (models.complaints, models.sales, models.contact_access_log)
    before = table_rows(engine, *records)

    dry = run(store, intake_retention.KINDS, "intake", dry_run=True)
    assert (dry.touched, dry.held) == ({"complaint": [due], "sale": [old_sale]}, {"complaint": 1, "sale": 0})
    assert table_rows(engine, *records) == before

    done = run(store, intake_retention.KINDS, "intake")
    assert done.touched == dry.touched
    with engine.connect() as conn:
        rows = {str(r.id): r for r in conn.execute(sa.select(models.complaints))}
        sale = conn.execute(sa.select(models.sales).where(models.sales.c.id == old_sale)).one()
    gone = rows[due]
    assert (gone.customer_name, gone.customer_phone, gone.customer_email, gone.customer_ref) == (None,) * 4
    assert gone.description == f"{X}染发后过敏，请回电 {X}" and "王" not in gone.acknowledgement
    assert gone.anonymised_at == NOW
    assert (gone.status, gone.category, gone.priority, gone.closed_at, gone.products) == \
        ("closed", "safety", "urgent", OLD, [{"sku": "DYE-5N", "name": None, "batch": "B2026-11-03"}])
    assert (sale.customer_name, sale.customer_phone, sale.customer_ref, sale.anonymised_at) == (None, None, None, NOW)
    assert sale.items[0]["sku"] == "SK-01" and sale.contact_consent is True
    kept = [r for cid, r in rows.items() if cid != due]
    assert all(r.customer_name == "王芳" and r.customer_phone and r.anonymised_at is None for r in kept)
    assert rows[held].legal_hold["reason"] == "顾客起诉" and rows[still_open].status == "acknowledged"
    with engine.connect() as conn:
        read, looked_up = conn.execute(sa.select(models.contact_access_log).order_by(models.contact_access_log.c.id))
    assert (read.subject, read.accessed_at, read.record_id, read.purpose) == ("inv-7", OLD, due, f"回电{X} {X}")
    assert (looked_up.subject, looked_up.record_type, looked_up.record_id.startswith("c_"), looked_up.purpose) == (
        "fd-1", "customer", True, f"{X}问进度 {X}")

    again = run(store, intake_retention.KINDS, "intake")
    assert again.touched == {"complaint": [], "sale": []}
    runs, touched = run_log(engine)
    assert [(dry_run, counts, held_, as_of, closed_before, finished) for _, dry_run, counts, held_, as_of,
            closed_before, finished in runs] == [
        (True, {"complaint": 1, "sale": 1}, {"complaint": 1, "sale": 0}, NOW, NOW.replace(year=2026), True),
        (False, {"complaint": 1, "sale": 1}, {"complaint": 1, "sale": 0}, NOW, NOW.replace(year=2026), True),
        (False, {}, {"complaint": 1, "sale": 0}, NOW, NOW.replace(year=2026), True)]
    assert sorted(touched) == sorted([(runs[i][0], kind, rid) for i in (0, 1)
                                      for kind, rid in (("complaint", due), ("sale", old_sale))])

    # Once the case is released, its complaint is due at the next run.
    deliver(store, case_event("legal_hold_released", held, 11, NOW, actor="hq-1", actor_role="hq_admin"),
            intake_handlers.follow_legal_hold)
    assert run(store, intake_retention.KINDS, "intake").touched == {"complaint": [held], "sale": []}
    engine.dispose()


# -- investigation ----------------------------------------------------------------------------------

class Investigation:
    """Investigation's use cases on a database of its own, on a clock the test sets."""

    def __init__(self, url: str):
        self.engine = db.make_engine(url, 2)
        self.store = InvestigationStore(self.engine)
        self.clock = ManualClock(OLD)
        self.processes = load_processes(None, self.clock)
        self.rules = POLICY.section("investigation")

    def open(self, kind: str, at: datetime) -> str:
        self.clock.set(at)
        event = complaint_event("王女士染发后头皮红肿，电话 13812346138")
        if kind != "complaint":
            payload = {**event["payload"], "kind": kind, "priority": "low", "category": "service_quality"}
            event = build_event("feedback_registered", payload, branch_code="SH001", sequence=1, occurred_at=at,
                                correlation_id=payload["complaint_id"])
        investigation_handlers.open_case(self.store, event=event, processes=self.processes, policy=POLICY,
                                         rules=self.rules, now=at)
        return event["payload"]["complaint_id"]

    def task(self, case_id: str, task: str, body: dict, who: Identity) -> dict:
        return investigation_handlers.complete_task(
            self.store, identity=who, case_id=case_id, task=task, read_body=lambda: body, processes=self.processes,
            policy=POLICY, rules=self.rules, now=self.clock.now())

    def praised_and_closed(self, at: datetime) -> str:
        case_id = self.open("praise", at)
        self.task(case_id, "acknowledge", {"message": "王女士您好，谢谢您的表扬，回电 021-12345678", "channel": "phone"},
                  FRONT_DESK)
        closed = self.task(case_id, "pass_on", {"to": ["T-017"], "note": "王女士表扬托尼老师"}, MANAGER)
        assert closed["state"] == "closed"
        return case_id

    def rows(self) -> dict:
        from services.investigation import models

        with self.engine.connect() as conn:
            return {str(r.id): r for r in conn.execute(sa.select(models.cases))}

    def texts(self, case_id: str) -> str:
        """Everything the database keeps about the case, as text."""
        from services.investigation import models
        from shared.workflow.tables import INSTANCES

        with self.engine.connect() as conn:
            case = conn.execute(sa.select(models.cases).where(models.cases.c.id == case_id)).one()
            timeline = conn.execute(sa.select(models.case_timeline.c.detail)
                                    .where(models.case_timeline.c.case_id == case_id)).scalars().all()
            state = conn.execute(sa.select(INSTANCES.c.state).where(INSTANCES.c.id == case_id)).scalar_one()
        return f"{tuple(case)} {timeline} {state}"


def test_investigation_anonymises_cases_closed_past_the_retention_unless_held_or_open(database_factory):
    from services.investigation import models

    inv = Investigation(database_factory("investigation"))
    due = inv.praised_and_closed(OLD)
    held = inv.praised_and_closed(OLD)
    recent = inv.praised_and_closed(RECENT)
    still_open = inv.open("complaint", OLD)
    inv.task(still_open, "assign", {"owner": "INV-7"}, MANAGER)
    inv.task(still_open, "respond", {"message": "王女士您好，请回电 13812346138", "channel": "phone"}, MANAGER)
    inv.clock.set(NOW - timedelta(days=30))
    hold = investigation_handlers.set_legal_hold(inv.store, identity=HQ_ADMIN, case_id=held,
                                                  read_body=lambda: {"reason": "顾客起诉，保全证据"}, now=inv.clock.now())
    assert hold["legal_hold"] == {"reason": "顾客起诉，保全证据", "by": "hq-1", "at": "2029-10-24T02:00:00Z"}
    tables = (models.cases, models.case_timeline)
    before = table_rows(inv.engine, *tables)

    dry = run(inv.store, investigation_retention.KINDS, "investigation", dry_run=True)
    assert (dry.touched, dry.held) == ({"case": [due]}, {"case": 1})
    assert table_rows(inv.engine, *tables) == before

    done = run(inv.store, investigation_retention.KINDS, "investigation")
    assert done.touched == {"case": [due]}
    rows, text = inv.rows(), inv.texts(due)
    gone = rows[due]
    assert (gone.customer_ref, gone.customer_masked, gone.anonymised_at) == (None, {}, NOW)
    assert gone.description == f"{X}染发后头皮红肿，电话 {X}"
    assert gone.first_response["message"] == f"{X}您好，谢谢您的表扬，回电 {X}"
    assert gone.decision["note"] == f"{X}表扬托尼老师" and gone.decision["to"] == ["T-017"]
    assert "13812346138" not in text and "王女士" not in text and "021-12345678" not in text and "王**" not in text
    before_rows = before_by_id(before[0])
    shape = ("kind", "category", "priority", "state", "outcome", "closed_at", "opened_at", "received_at", "clocks",
             "owner", "branch_code", "reference", "remedies", "escalation_level")
    assert {k: getattr(gone, k) for k in shape} == {k: before_rows[due][k] for k in shape}
    for kept in (held, recent, still_open):
        assert rows[kept].anonymised_at is None and rows[kept].customer_masked == {"name": "王**"}
        assert "13812346138" in inv.texts(kept)

    assert run(inv.store, investigation_retention.KINDS, "investigation").touched == {"case": []}
    runs, touched = run_log(inv.engine)
    assert [(r[1], r[2], r[3]) for r in runs] == [(True, {"case": 1}, {"case": 1}), (False, {"case": 1}, {"case": 1}),
                                                  (False, {}, {"case": 1})]
    assert touched == [(runs[0][0], "case", due), (runs[1][0], "case", due)]

    # Released, the held case goes at the next run; its hold and release stay on its timeline.
    investigation_handlers.release_legal_hold(inv.store, identity=HQ_ADMIN, case_id=held, now=NOW)
    assert run(inv.store, investigation_retention.KINDS, "investigation").touched == {"case": [held]}
    with inv.engine.connect() as conn:
        entries = conn.execute(sa.select(models.case_timeline.c.what, models.case_timeline.c.actor,
                                         models.case_timeline.c.detail)
                               .where(models.case_timeline.c.case_id == held).order_by(models.case_timeline.c.id)).all()
    assert [tuple(e) for e in entries][-2:] == [("legal_hold_set", "hq-1", {"reason": "顾客起诉，保全证据"}),
                                                ("legal_hold_released", "hq-1", {})]
    with pytest.raises(Exception) as refused:  # nothing left to hold
        investigation_handlers.set_legal_hold(inv.store, identity=HQ_ADMIN, case_id=held,
                                               read_body=lambda: {"reason": "再次"}, now=NOW)
    assert refused.value.__class__.__name__ == "Conflict"
    inv.engine.dispose()


def before_by_id(rows: list[tuple]) -> dict:
    from services.investigation import models

    names = [c.name for c in models.cases.c]
    return {str(r[0]): dict(zip(names, r)) for r in rows}


# -- the daily timer's run and the command ----------------------------------------------------------

def test_the_timer_runs_once_per_interval_and_waits_out_a_database_that_is_away(database_factory, caplog):
    every = timedelta(days=1)

    def scheduled(store, now):
        return anonymisation.scheduled_run(store, intake_retention.KINDS, service="intake", retention=RETENTION,
                                           now=now, every=every)
    store = IntakeStore(db.make_engine(database_factory("intake"), 1))
    assert scheduled(store, NOW) is not None
    assert scheduled(store, NOW + timedelta(hours=23)) is None
    assert scheduled(store, NOW + every) is not None
    store.engine.dispose()
    away = IntakeStore(db.make_engine("postgresql+psycopg2://postgres@127.0.0.1:9/closeloop_intake", 1))
    with caplog.at_level(logging.WARNING, logger="closeloop.retention"):
        assert scheduled(away, NOW) is None
    assert "retention for intake: database unavailable" in caplog.text
    away.engine.dispose()


def test_closeloop_retention_run_says_what_it_would_do_and_a_database_away_in_a_line(database_factory):
    intake_url, investigation_url = database_factory("intake"), database_factory("investigation")
    env = {"PATH": "/usr/bin:/bin", "CLOSELOOP_DEV_KEYS": "1", "INTAKE_DATABASE_URL": intake_url,
           "INVESTIGATION_DATABASE_URL": investigation_url, "AFTERCARE_DATABASE_URL": database_factory("aftercare"),
           "REPORTING_DATABASE_URL": database_factory("reporting")}
    command = [sys.executable, "-m", "shared.cli", "retention", "run"]
    done = subprocess.run([*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(" closed before ")[0] for line in lines if "anonymise" in line] == [
        "intake: would anonymise 0 complaint(s)", "intake: would anonymise 0 sale(s)",
        "investigation: would anonymise 0 case(s)", "aftercare: would anonymise 0 visit(s)",
        "reporting: would anonymise 0 case(s)", "reporting: would anonymise 0 sale(s)"]
    assert [line for line in lines if "logged" in line] == [
        "intake: logged as retention run 1 (dry run: nothing changed)",
        "investigation: logged as retention run 1 (dry run: nothing changed)",
        "aftercare: logged as retention run 1 (dry run: nothing changed)",
        "reporting: logged as retention run 1 (dry run: nothing changed)"]
    away = {**env, "INVESTIGATION_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/x"}
    done = subprocess.run([*command, "--service", "investigation"], cwd=ROOT, env=away, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("closeloop: investigation: database unavailable (") and \
        len(done.stderr.strip().splitlines()) == 1
