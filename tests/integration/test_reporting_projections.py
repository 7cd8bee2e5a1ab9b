"""Reporting's projections on PostgreSQL (issue 11 groundwork, through its handlers): batches of
events logged once each and folded into the case facts, in any order and with copies; the
facts rebuilt from the log to the same rows."""
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.reporting import handlers
from services.reporting.policy import ReportingRules
from shared.calendar.policy import load_policy
from services.reporting.repository import ReportingStore
from shared.persistence import db
from tests.unit.test_reporting_facts import CASE, LIFE, at, fold

pytestmark = pytest.mark.integration
NOW = datetime(2026, 11, 23, 2, 0, tzinfo=timezone.utc)
RULES = ReportingRules()
RETENTION = load_policy(None).retention.personal_data  # P3Y


@pytest.fixture
def store(database_factory):
    store = ReportingStore(db.make_engine(database_factory("reporting"), 2))
    yield store
    store.engine.dispose()


def rows(store, statement: str) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(statement)).all()


def test_batches_in_any_order_with_copies_log_each_event_once_and_give_the_case_s_facts(store):
    rng = random.Random(3)
    events = LIFE + rng.sample(LIFE, 4)
    rng.shuffle(events)
    other = str(uuid.uuid4())  # an event about no case (a sale's) is logged, and folded into nothing
    sale = {"event_id": str(uuid.uuid4()), "source": "intake", "type": "sale_recorded", "sequence": 1,
            "occurred_at": at(0), "branch_code": "SH001", "correlation_id": other, "payload": {"sale_id": other}}
    fresh = len({e["event_id"] for e in events[:9]}) + 1
    assert handlers.ingest(store, events=events[:9] + [sale], rules=RULES, now=NOW) == fresh
    handlers.ingest(store, events=events[9:], rules=RULES, now=NOW)
    assert handlers.ingest(store, events=LIFE, rules=RULES, now=NOW) == 0  # all logged before
    assert rows(store, "SELECT count(*) FROM event_log")[0][0] == len(LIFE) + 1
    [case] = rows(store, "SELECT * FROM case_facts")
    expected = fold(LIFE)
    assert str(case.case_id) == CASE and case.facts == expected
    assert (case.state, case.outcome, case.reopened, case.escalation_level, case.follow_up_score) == (
        "closed", "satisfied", 1, 2, 5)
    assert case.first_response_at == datetime.fromisoformat(at(1.5)) and case.category == "safety"

    before = rows(store, "SELECT case_id, facts, state, resolved_at FROM case_facts")
    assert handlers.rebuild(store, rules=RULES, now=NOW, zone="Asia/Shanghai", batch=4) == len(LIFE) + 1
    assert rows(store, "SELECT case_id, facts, state, resolved_at FROM case_facts") == before


def test_closeloop_projections_rebuild_folds_the_log_again(store):
    import subprocess
    import sys
    from pathlib import Path

    handlers.ingest(store, events=LIFE, rules=RULES, now=NOW)
    with store.engine.begin() as conn:  # read models gone astray (a fold since corrected, a bad hand edit)
        conn.execute(sa.text("UPDATE case_facts SET state = 'open', facts = '{}'"))
    url = store.engine.url.render_as_string(hide_password=False)
    done = subprocess.run([sys.executable, "-m", "shared.cli", "projections", "rebuild"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CLOSELOOP_DEV_KEYS": "1", "REPORTING_DATABASE_URL": url})
    rebuilt = f"reporting: projections rebuilt from {len(LIFE)} logged event(s)\n"
    assert (done.returncode, done.stdout) == (0, rebuilt), \
        done.stderr
    [case] = rows(store, "SELECT state, facts FROM case_facts")
    assert case.state == "closed" and case.facts == fold(LIFE)
    away = subprocess.run([sys.executable, "-m", "shared.cli", "projections", "rebuild"],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "CLOSELOOP_DEV_KEYS": "1",
                               "REPORTING_DATABASE_URL": "postgresql://postgres@127.0.0.1:9/x"})
    assert away.returncode == 2 and away.stdout == "" and len(away.stderr.strip().splitlines()) == 1, away.stderr
    assert "database unavailable" in away.stderr and "nothing rebuilt" in away.stderr


def test_retention_scrubs_the_customer_from_a_case_closed_three_years_ago_and_the_figures_stay(store):
    from services.reporting import retention
    from shared.persistence import anonymisation

    registered = {**LIFE[0], "payload": {**LIFE[0]["payload"], "description": "王女士 13812346138 染发后过敏",
                                         "customer_masked": {"name": "王**", "phone": "138****6138"}}}
    handlers.ingest(store, events=[registered, *LIFE[1:]], rules=RULES, now=NOW)
    columns = "SELECT state, outcome, category, received_at, resolved_at, follow_up_score FROM case_facts"
    before = rows(store, columns)
    closed = datetime.fromisoformat(LIFE[-1]["occurred_at"])
    early = anonymisation.run(store, retention.KINDS, service="reporting", retention=RETENTION,
                              now=closed + timedelta(days=3 * 365 - 2))
    assert early.touched == {"case": [], "sale": []}
    done = anonymisation.run(store, retention.KINDS, service="reporting", retention=RETENTION,
                             now=closed + timedelta(days=3 * 366))
    assert done.touched["case"] == [CASE]
    [facts] = rows(store, "SELECT facts FROM case_facts")
    assert facts.facts["customer_ref"] is None and facts.facts["customer_masked"] is None
    [logged] = rows(store, "SELECT envelope FROM event_log WHERE type = 'complaint_registered'")
    payload = logged.envelope["payload"]
    assert "13812346138" not in payload["description"] and "王女士" not in payload["description"]
    assert payload["customer_ref"] is None and payload["customer_masked"] == {} and "过敏" in payload["description"]
    assert rows(store, columns) == before
    handlers.rebuild(store, rules=RULES, now=NOW, zone="Asia/Shanghai")
    assert rows(store, columns) == before


def test_alerts_list_50_records_and_say_there_are_more_and_breaching_reads_the_worst_few(store):
    """GET /v1/alerts's answer (handlers.alerts_now): an alert counts every record of the caller's
    scope but lists the first 50 (`records_more`), every one with `records=all`; the breaching
    list counts each branch's late cases and shows its 50 most overdue with their reference."""
    import json

    from services.reporting.handlers import ALERT_RECORDS
    from shared.security.auth import Identity

    hq = Identity(subject="h", role="hq_admin", branches=None, scope={"all": True})
    sh002 = Identity(subject="m", role="store_manager", branches=frozenset({"SH002"}), scope={"branch": "SH002"})
    records = [{"id": str(uuid.uuid4()), "branch": "SH002" if i % 12 == 5 else "SH001"} for i in range(60)]
    with store.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO alerts VALUES (:id, 'recurring_problem', :key, 60, :first, :last, :until, CAST(:r AS jsonb), "
            "ARRAY['SH001', 'SH002'], :last)"),
            {"id": str(uuid.uuid4()), "key": json.dumps(["recurring_problem", "technician", "T-1"]),
             "first": NOW - timedelta(days=3), "last": NOW - timedelta(hours=1), "until": NOW + timedelta(days=13),
             "r": json.dumps(records)})
        # 53 complaints of SH001 past a deadline (odd: the first response, even: the resolution), 2 of
        # SH002 and one resolved there
        conn.execute(sa.text(
            "INSERT INTO case_facts (case_id, branch_code, kind, priority, state, received_at, first_response_at, "
            "first_response_due, resolution_due, facts, updated_at) "
            "SELECT gen_random_uuid(), CASE WHEN i > 53 THEN 'SH002' ELSE 'SH001' END, 'complaint', 'urgent', "
            "CASE WHEN i = 56 THEN 'resolved' ELSE 'open' END, :now - i * interval '1 hour', "
            "CASE WHEN i % 2 = 0 THEN :now END, :now - i * interval '1 minute', "
            "CASE WHEN i % 2 = 0 THEN :now - i * interval '1 minute' ELSE :now + interval '1 day' END, "
            "jsonb_build_object('reference', 'REF-' || i, 'description', repeat('x', 2000)), :now "
            "FROM generate_series(1, 56) AS i"), {"now": NOW})

    answer = handlers.alerts_now(store, identity=hq, query={}, now=NOW)
    [alert] = answer["alerts"]
    assert ALERT_RECORDS == 50 and alert["count"] == 60
    assert alert["records"] == [r["id"] for r in records[:50]] and alert["records_more"] is True
    [every] = handlers.alerts_now(store, identity=hq, query={"records": "all"}, now=NOW)["alerts"]
    assert every["records"] == [r["id"] for r in records] and every["records_more"] is False
    [theirs] = handlers.alerts_now(store, identity=sh002, query={}, now=NOW)["alerts"]
    assert theirs["count"] == 5 and theirs["records_more"] is False and theirs["branches"] == ["SH002"]
    assert theirs["records"] == [r["id"] for r in records if r["branch"] == "SH002"]

    mine, other = answer["breaching"]
    assert (mine["branch_code"], mine["cases"], mine["first_response"], mine["resolution"]) == ("SH001", 53, 27, 26)
    assert [w["reference"] for w in mine["worst"]] == [f"REF-{i}" for i in range(53, 3, -1)]  # the 50 most overdue
    assert [(w["clock"], w["priority"]) for w in mine["worst"][:2]] == [("first_response", "urgent"),
                                                                         ("resolution", "urgent")]
    assert mine["worst"][0]["due"] == (NOW - timedelta(minutes=53)).isoformat()
    assert (other["branch_code"], other["cases"], other["first_response"], other["resolution"],
            [w["reference"] for w in other["worst"]]) == ("SH002", 2, 1, 1, ["REF-55", "REF-54"])
