"""An inquiry's registration and its conversion handled at once (two investigation replicas, or
two consumers of one), on the real database: whichever opens the case first, the other waits for
it and the case ends the complaint intake converted it into, once."""
import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from services.investigation import handlers, models
from services.investigation.dependencies import load_processes
from services.investigation.repository import InvestigationStore
from shared.calendar.clock import ManualClock
from shared.calendar.policy import load_policy
from shared.messaging.envelope import build_event
from shared.persistence import db
from shared.testing.fixtures import wait_until
from shared.testing.samples import complaint_event

pytestmark = pytest.mark.integration
POLICY = load_policy()
T0 = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)


def registrations() -> tuple[dict, dict]:
    """The inquiry's feedback_registered and the complaint_registered of its conversion."""
    inquiry = {**complaint_event("染发后头皮痒正常吗？")["payload"], "kind": "inquiry", "priority": "low",
               "category": "service_quality", "first_response_due": (T0 + timedelta(hours=24)).isoformat(),
               "resolution_due": (T0 + timedelta(hours=24)).isoformat()}
    complaint = {**inquiry, "kind": "complaint", "category": "safety", "priority": "urgent",
                 "severity_flags": ["allergy"], "first_response_due": (T0 + timedelta(hours=1)).isoformat(),
                 "resolution_due": (T0 + timedelta(days=7)).isoformat(), "converted_from": "inquiry",
                 "converted_at": (T0 + timedelta(minutes=30)).isoformat()}
    event = lambda kind, payload, n: build_event(kind, payload, branch_code="SH001", sequence=n,  # noqa: E731
                                                 correlation_id=payload["complaint_id"], occurred_at=T0)
    return event("feedback_registered", inquiry, 1), event("complaint_registered", complaint, 2)


@pytest.mark.parametrize("first", ["inquiry", "conversion"])
def test_the_inquiry_and_its_conversion_heard_at_once_end_in_the_complaint(database_factory, first):
    engine = db.make_engine(database_factory("investigation"), 4)
    store, clock = InvestigationStore(engine), ManualClock(T0 + timedelta(minutes=31))
    processes = load_processes(None, clock)
    rules = POLICY.section("investigation")
    inquiry, conversion = registrations()
    events = {"inquiry": inquiry, "conversion": conversion}
    started, go = threading.Event(), threading.Event()
    real_start = processes.engine.start

    def start_then_wait(*args, **kwargs):  # the first handler holds its new instance, uncommitted
        result = real_start(*args, **kwargs)
        if not started.is_set():
            started.set()
            go.wait(15)
        return result

    processes.engine.start = start_then_wait
    outcome = {}

    def handle(name):
        outcome[name] = handlers.open_case(store, event=events[name], processes=processes, policy=POLICY,
                                           rules=rules, now=clock.now())

    second = "conversion" if first == "inquiry" else "inquiry"
    threads = [threading.Thread(target=handle, args=(first,))]
    threads[0].start()
    wait_until(started.is_set, f"the {first} to open the case")
    threads.append(threading.Thread(target=handle, args=(second,)))
    threads[1].start()
    with engine.connect() as observer:
        wait_until(lambda: observer.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )).scalar() >= 1, f"the {second} to wait for it")
    go.set()
    for thread in threads:
        thread.join(15)
    case_id = inquiry["payload"]["complaint_id"]
    with engine.connect() as conn:
        case = conn.execute(sa.select(models.cases).where(models.cases.c.id == case_id)).one()
        timeline = conn.execute(sa.select(models.case_timeline.c.what).where(
            models.case_timeline.c.case_id == case_id).order_by(models.case_timeline.c.id)).scalars().all()
    engine.dispose()
    assert (case.kind, case.category, case.priority, case.converted_from) == ("complaint", "safety", "urgent",
                                                                              "inquiry")
    assert case.process.startswith("complaint_case@")
    opened_as = "inquiry" if first == "inquiry" else "complaint"
    assert timeline.count("case_opened") == 1 and timeline.count("case_converted") == (opened_as == "inquiry")
    assert outcome[first] is True
