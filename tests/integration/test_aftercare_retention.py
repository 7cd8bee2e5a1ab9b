"""Aftercare's visits past the retention, on PostgreSQL, through its handlers and the shared run:
a visit given up (by its process's timer) three years ago loses its masks and the texts about the
customer, keeps its shape; a legal hold investigation set on its case, or on the sale an adverse
reaction's case follows, keeps it until released; a hold event heard late does not undo a newer one."""
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.aftercare import handlers, retention
from services.aftercare.dependencies import load_process
from services.aftercare.repository import AftercareStore
from shared.calendar.clock import ManualClock
from shared.calendar.policy import load_policy
from shared.persistence import anonymisation, db
from tests.integration.test_aftercare_plans import sale_recorded

pytestmark = pytest.mark.integration
POLICY = load_policy()
RULES = POLICY.sections["aftercare"]
NOW = datetime(2026, 11, 20, 7, 0, tzinfo=timezone.utc)
RETENTION = POLICY.retention.personal_data  # P3Y


@pytest.fixture
def store(database_factory):
    store = AftercareStore(db.make_engine(database_factory("aftercare"), 2))
    store.clock = ManualClock(NOW)
    store.process = load_process(None, store.clock)
    yield store
    store.engine.dispose()


def planned(store, case_id=None) -> str:
    """A visit planned: a sale's (hair colour), or a follow-up of `case_id`."""
    if case_id is None:
        event = sale_recorded(True, "hair_colour")
        event["payload"]["customer_masked"] = {"name": "王**", "phone": "138****6138"}
        [visit_id] = handlers.plan_sale(store, event=event, process=store.process, policy=POLICY, rules=RULES, now=NOW)
        return visit_id
    event = {"event_id": str(uuid.uuid4()), "type": "case_resolved", "branch_code": "SH001",
             "payload": {"case_id": case_id, "complaint_id": case_id, "resolved_at": NOW.isoformat(), "reopened": 0,
                         "customer_ref": "c-1"}}
    [visit_id] = handlers.plan_case_follow_up(store, event=event, process=store.process, policy=POLICY, rules=RULES,
                                              now=NOW)
    return visit_id


def row(store, visit_id):
    with store.engine.connect() as conn:
        return conn.execute(sa.text("SELECT * FROM visits WHERE id = :v").bindparams(v=visit_id)).one()


def hold(store, event_type: str, sequence: int, case_id: str, sale_id: str | None = None) -> None:
    payload = {"case_id": case_id, "complaint_id": None, "sale_id": sale_id}
    if event_type == "legal_hold_set":
        payload["reason"] = "诉讼"
    handlers.follow_legal_hold(store, event={"event_id": str(uuid.uuid4()), "type": event_type, "sequence": sequence,
                                             "payload": payload}, now=NOW)


def run(store, at: datetime):
    return anonymisation.run(store, retention.KINDS, service="aftercare", retention=RETENTION, now=at)


def test_visits_given_up_long_ago_are_anonymised_unless_their_case_or_sale_is_held(store):
    sold, held_case = planned(store), str(uuid.uuid4())
    followed = planned(store, held_case)
    sale_id = str(row(store, sold).sale_id)
    # Given up by their processes' timers, 7 days after due.
    store.clock.set(NOW + timedelta(days=12))
    done = handlers.fire_timers(store, process=store.process, policy=POLICY, now=store.clock.now())
    assert len(done.fired) == 2 and {row(store, v).status for v in (sold, followed)} == {"abandoned"}
    with store.engine.begin() as conn:  # what an agent wrote about the customer
        conn.execute(sa.text("UPDATE visits SET attempts = '[{\"n\": 1, \"note\": \"王女士 13812346138 不在家\"}]' "
                             "WHERE id = :v").bindparams(v=sold))
    hold(store, "legal_hold_set", 3, held_case)
    hold(store, "legal_hold_set", 5, str(uuid.uuid4()), sale_id)  # an adverse reaction's case after the sale

    later = NOW + timedelta(days=12) + timedelta(days=3 * 366)
    report = run(store, later)
    assert report.touched == {"visit": []} and report.held == {"visit": 2}

    hold(store, "legal_hold_released", 6, "ignored", sale_id)  # the sale's hold ends (its case id aside)
    hold(store, "legal_hold_set", 4, "ignored", sale_id)  # an older "set", heard late: changes nothing
    report = run(store, later)
    assert report.touched == {"visit": [sold]} and report.held == {"visit": 1}
    anonymised = row(store, sold)
    assert anonymised.customer_masked == {} and anonymised.customer_ref is None
    assert anonymised.attempts[0]["note"].count("13812346138") == 0 and "王女士" not in anonymised.attempts[0]["note"]
    assert anonymised.status == "abandoned" and anonymised.items[0]["product_type"] == "hair_colour"
    assert row(store, followed).customer_ref == "c-1"  # its case is still held
