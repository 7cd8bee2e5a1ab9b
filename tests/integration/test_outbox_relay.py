"""The outbox and the relay on the real broker and database."""
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from shared.persistence import db
from shared.messaging.envelope import build_event
from services.intake import models
from services.intake.repository import IntakeStore
from shared.testing.fixtures import wait_until

pytestmark = pytest.mark.integration


def sale_event(n: int = 0) -> dict:
    sale_id = str(uuid.uuid4())
    payload = {"sale_id": sale_id, "sold_at": "2026-11-22T02:00:00Z", "recorded_at": "2026-11-22T02:00:01Z",
               "region": "east", "customer_ref": f"c_{n}", "customer_masked": {"name": "王**"},
               "contact_consent": True,
               "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare"}]}
    return build_event("sale_recorded", payload, branch_code="SH001", correlation_id=sale_id, sequence=1,
                       occurred_at=datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc))


@pytest.fixture
def store(database_factory):
    engine = db.make_engine(database_factory("intake"), 3)
    yield IntakeStore(engine)
    engine.dispose()


def outbox_state(store) -> tuple[int, int]:
    with store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FROM outbox")).one()
    return row[0], row[1]


def test_state_change_and_its_event_commit_or_roll_back_together(store):
    event = sale_event()
    with pytest.raises(RuntimeError):
        with store.unit_of_work() as uow:
            uow.execute(models.reference_counters.insert().values(branch_code="SH001", day="2026-11-22", last=1))
            uow.publish(event)
            raise RuntimeError("the handler failed after writing")
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reference_counters")).scalar() == 0
    assert outbox_state(store) == (0, 0)

    with store.unit_of_work() as uow:
        uow.execute(models.reference_counters.insert().values(branch_code="SH001", day="2026-11-22", last=1))
        uow.publish(event)
    assert outbox_state(store) == (1, 1)


def test_relay_publishes_everything_in_batches_and_marks_it_sent(store, start_relay, bus_listener):
    listener = bus_listener("intake.events", "sale_recorded")
    events = [sale_event(n) for n in range(1200)]
    with store.unit_of_work() as uow:
        for event in events:
            uow.publish(event)
    relay = start_relay(str(store.engine.url.render_as_string(hide_password=False)), batch_size=500)
    got = listener.wait_for(lambda m: True, timeout=30, count=1200)
    assert {m["body"]["event_id"] for m in got} == {e["event_id"] for e in events}
    first = got[0]
    assert first["content_type"] == "application/json"
    assert first["properties"]["delivery_mode"] == 2
    assert first["properties"]["message_id"] == first["body"]["event_id"]
    assert first["body"] == next(e for e in events if e["event_id"] == first["body"]["event_id"])
    # Rows are marked sent after the broker confirms, in the relay's own transaction.
    wait_until(lambda: outbox_state(store) == (0, 1200), "every row to be marked sent")
    assert relay.published == 1200


def test_relay_keeps_events_while_the_broker_is_cut_and_delivers_them_after(
        store, start_relay, bus_listener, tcp_proxy, amqp_uri):
    listener = bus_listener("intake.events", "sale_recorded")
    proxy, proxied_uri = tcp_proxy(amqp_uri, 5672)
    url = store.engine.url.render_as_string(hide_password=False)
    relay = start_relay(url, amqp=proxied_uri)

    before = [sale_event(n) for n in range(10)]
    with store.unit_of_work() as uow:
        for event in before:
            uow.publish(event)
    listener.wait_for(lambda m: True, count=10)
    # Marked sent once the broker confirms, a moment after the listener has them.
    wait_until(lambda: outbox_state(store) == (0, 10), "the first rows to be marked sent")

    proxy.cut()
    during = [sale_event(n) for n in range(50)]
    with store.unit_of_work() as uow:
        for event in during:
            uow.publish(event)
    # The relay notices the broker is gone and keeps every row unsent.
    wait_until(lambda: relay.broker_ok is False, "the relay to notice the cut")
    assert outbox_state(store)[0] == 50

    proxy.restore()
    got = listener.wait_for(lambda m: True, timeout=30, count=60)
    assert {e["event_id"] for e in before + during} <= {m["body"]["event_id"] for m in got}
    wait_until(lambda: outbox_state(store)[0] == 0, "the outbox to drain")



def test_a_broker_that_goes_silent_fails_the_round_and_the_relay_recovers_when_it_answers(
        store, start_relay, bus_listener, tcp_proxy, amqp_uri):
    """A partition or a paused broker keeps the connection open and answers nothing: every
    wait is bounded, so the relay neither hangs nor holds its rows locked."""
    listener = bus_listener("intake.events", "sale_recorded")
    proxy, proxied_uri = tcp_proxy(amqp_uri, 5672)
    relay = start_relay(store.engine.url.render_as_string(hide_password=False), amqp=proxied_uri,
                        broker_timeout=1.0, ping_interval=0.2)
    wait_until(lambda: relay.broker_ok, "a healthy round")
    proxy.silence()
    events = [sale_event(n) for n in range(20)]
    with store.unit_of_work() as uow:
        for event in events:
            uow.publish(event)
    wait_until(lambda: relay.broker_ok is False, "the relay to give up on the silent broker")
    proxy.restore()
    got = listener.wait_for(lambda m: True, timeout=30, count=20)
    assert {e["event_id"] for e in events} <= {m["body"]["event_id"] for m in got}
    wait_until(lambda: outbox_state(store)[0] == 0, "the outbox to drain")


def test_an_idle_relay_notices_a_lost_broker_and_stops_reporting_healthy(store, start_relay, tcp_proxy, amqp_uri,
                                                                          tmp_path):
    proxy, proxied_uri = tcp_proxy(amqp_uri, 5672)
    relay = start_relay(store.engine.url.render_as_string(hide_password=False), amqp=proxied_uri,
                        ping_interval=0.2)
    relay.heartbeat_file = tmp_path / "relay.alive"
    wait_until(lambda: relay.heartbeat_file.exists() and relay.broker_ok, "a healthy idle round")
    proxy.cut()
    wait_until(lambda: relay.broker_ok is False, "the idle relay to notice the broker is gone")
    proxy.restore()
    wait_until(lambda: relay.broker_ok is True, "the relay to reconnect")
