"""A conversion that dies part way in investigation (after the inquiry's process instance was
replaced, before the commit: a kill, the database gone): nothing of it stays, and the event
delivered again converts the case once."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.investigation import handlers, models
from services.investigation.dependencies import load_processes
from services.investigation.repository import InvestigationStore
from shared.calendar.clock import ManualClock
from shared.messaging.outbox import OUTBOX
from shared.persistence import db
from shared.workflow.instances import INSTANCES
from tests.integration.test_inquiry_conversion_race import POLICY, T0, registrations

pytestmark = pytest.mark.integration


class Killed(Exception):
    pass


def test_a_conversion_that_dies_after_its_process_restart_leaves_the_inquiry_whole_and_converts_once_again(
        database_factory):
    engine = db.make_engine(database_factory("investigation"), 2)
    store, clock = InvestigationStore(engine), ManualClock(T0 + timedelta(minutes=31))
    processes = load_processes(None, clock)
    rules = POLICY.section("investigation")
    inquiry, conversion = registrations()
    case_id = inquiry["payload"]["complaint_id"]

    def handle(event):
        return handlers.open_case(store, event=event, processes=processes, policy=POLICY, rules=rules, now=clock.now())

    def state():
        with engine.connect() as conn:
            case = conn.execute(sa.select(models.cases.c.kind, models.cases.c.priority, models.cases.c.process)
                                .where(models.cases.c.id == case_id)).one()
            instance = conn.execute(sa.select(INSTANCES.c.process_id, INSTANCES.c.definition_hash)
                                    .where(INSTANCES.c.id == case_id)).one()
            events = conn.execute(sa.select(OUTBOX.c.routing_key).order_by(OUTBOX.c.id)).scalars().all()
            timeline = conn.execute(sa.select(models.case_timeline.c.what).where(
                models.case_timeline.c.case_id == case_id)).scalars().all()
        return tuple(case), tuple(instance), events, sorted(timeline)

    assert handle(inquiry) is True
    before = state()
    real_restart = processes.engine.restart

    def restart_then_die(*args, **kwargs):
        real_restart(*args, **kwargs)
        raise Killed()

    processes.engine.restart = restart_then_die
    with pytest.raises(Killed):
        handle(conversion)
    assert state() == before  # not half converted: kind, process, instance, events and timeline as they were
    processes.engine.restart = real_restart
    assert handle(conversion) is True  # delivered again
    assert handle(conversion) is True  # and again (a replay): nothing more
    (kind, priority, process), (process_id, _), events, timeline = state()
    engine.dispose()
    assert (kind, priority, process_id) == ("complaint", "urgent", "complaint_case") and process.startswith("complaint_case@")
    assert events.count("case_converted") == 1 and timeline.count("case_converted") == 1
