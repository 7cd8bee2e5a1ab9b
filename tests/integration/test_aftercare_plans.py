"""Aftercare's plans on PostgreSQL (issue 10's first part, through its handlers): a sale's
visits stored with their visit_scheduled events in the outbox; a copy of the event, under the
same or a new id, plans nothing more; no consent, no visit; a resolved case's follow-up, and its
cancellation when the case reopens."""
import json
import uuid
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from services.aftercare import handlers
from services.aftercare.dependencies import load_process
from services.aftercare.repository import AftercareStore
from shared.calendar.clock import ManualClock
from shared.calendar.policy import load_policy
from shared.persistence import db

pytestmark = pytest.mark.integration
POLICY = load_policy()
RULES = POLICY.sections["aftercare"]
SHANGHAI = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 20, 7, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(database_factory):
    store = AftercareStore(db.make_engine(database_factory("aftercare"), 2))
    store.process = load_process(None, ManualClock(NOW))  # the engine knows which definitions its database has
    yield store
    store.engine.dispose()


def sale_recorded(consent=True, *types) -> dict:
    sale_id = str(uuid.uuid4())
    return {"event_id": str(uuid.uuid4()), "type": "sale_recorded", "branch_code": "SH001",
            "payload": {"sale_id": sale_id, "sold_at": datetime(2026, 11, 20, 15, 0, tzinfo=SHANGHAI).isoformat(),
                        "contact_consent": consent, "customer_ref": "c-1", "customer_masked": {"name": "王**"},
                        "items": [{"type": "service", "product_type": t, "technician_id": "T-017",
                                   "batch": "B2026-11-03"} for t in types or ("hair_colour",)]}}


def outbox(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [json.loads(body) if isinstance(body, str) else body
                for body in conn.execute(sa.text("SELECT body FROM outbox ORDER BY id")).scalars()]


def visits(store) -> list:
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM visits ORDER BY due_at")).all()


def instances(store) -> dict:
    with store.engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, status FROM process_instances")).all())


def test_a_sale_plans_its_visits_once_with_their_events(store):
    event = sale_recorded(True, "hair_colour", "perm", "skincare")
    added = handlers.plan_sale(store, process=store.process, event=event, policy=POLICY, rules=RULES, now=NOW)
    assert len(added) == 2
    rows = visits(store)
    assert [(r.due_at.astimezone(SHANGHAI).isoformat(), r.allergy_check, len(r.items)) for r in rows] == [
        ("2026-11-22T15:00:00+08:00", True, 2), ("2026-11-27T15:00:00+08:00", False, 1)]
    scheduled = outbox(store)
    assert [(e["type"], e["correlation_id"], e["sequence"]) for e in scheduled] == [
        ("visit_scheduled", event["payload"]["sale_id"], 1)] * 2
    assert datetime.fromisoformat(scheduled[0]["payload"]["due_at"]) == rows[0].due_at
    # The same event again, and replayed under a new id: nothing more.
    assert handlers.plan_sale(store, process=store.process, event=event, policy=POLICY, rules=RULES, now=NOW) == []
    assert handlers.plan_sale(store, process=store.process, event={**event, "event_id": str(uuid.uuid4())}, policy=POLICY,
                              rules=RULES,
                              now=NOW) == []
    assert len(visits(store)) == 2 and len(outbox(store)) == 2
    assert instances(store) == {str(r.id): "running" for r in rows}  # each visit's process, waiting until due


def test_no_consent_no_visit(store):
    assert handlers.plan_sale(store, process=store.process, event=sale_recorded(False), policy=POLICY, rules=RULES, now=NOW) == []
    assert visits(store) == [] and outbox(store) == []


def test_a_resolved_case_is_followed_up_and_a_reopened_one_s_follow_up_cancelled(store):
    case_id = str(uuid.uuid4())
    resolved = {"event_id": str(uuid.uuid4()), "type": "case_resolved", "branch_code": "SH001",
                "payload": {"case_id": case_id, "complaint_id": case_id, "resolved_at": NOW.isoformat(),
                            "reopened": 0, "customer_ref": "c-1"}}
    [visit_id] = handlers.plan_case_follow_up(store, process=store.process, event=resolved, policy=POLICY, rules=RULES, now=NOW)
    [row] = visits(store)
    assert row.due_at == datetime(2026, 11, 23, 15, 0, tzinfo=SHANGHAI) and row.kind == "follow_up"
    reopened = {"event_id": str(uuid.uuid4()), "type": "case_reopened", "branch_code": "SH001",
                "payload": {"case_id": case_id}}
    assert handlers.cancel_follow_up(store, process=store.process, event=reopened, now=NOW) == [visit_id]
    assert handlers.cancel_follow_up(store, process=store.process, event=reopened, now=NOW) == []  # nothing left open
    assert [(e["type"], e["correlation_id"], e["sequence"]) for e in outbox(store)] == [
        ("visit_scheduled", case_id, 1), ("visit_cancelled", case_id, 2)]
    assert visits(store)[0].status == "cancelled"
    assert instances(store) == {visit_id: "completed"}  # its process ended where it stood, timers and all


def test_a_case_resolved_heard_after_its_reopening_plans_nothing_and_the_next_resolution_does(store):
    case_id = str(uuid.uuid4())

    def event(event_type, **payload):
        return {"event_id": str(uuid.uuid4()), "type": event_type, "branch_code": "SH001",
                "payload": {"case_id": case_id, "complaint_id": case_id, **payload}}
    # A retried delivery: the reopening (the first) comes before the resolution it ended.
    assert handlers.cancel_follow_up(store, process=store.process, event=event("case_reopened", reopened=1),
                                     now=NOW) == []
    late = event("case_resolved", resolved_at=NOW.isoformat(), reopened=0, customer_ref="c-1")
    assert handlers.plan_case_follow_up(store, process=store.process, event=late, policy=POLICY, rules=RULES,
                                        now=NOW) == []
    again = event("case_resolved", resolved_at=NOW.isoformat(), reopened=1, customer_ref="c-1")
    assert len(handlers.plan_case_follow_up(store, process=store.process, event=again, policy=POLICY, rules=RULES,
                                            now=NOW)) == 1
    assert [e["type"] for e in outbox(store)] == ["visit_scheduled"]
