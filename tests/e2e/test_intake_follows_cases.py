"""A front desk sees where a complaint stands: intake's complaint status follows
investigation's case events on the real broker, whatever order they arrive in."""
import json
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from shared.messaging.envelope import build_event
from shared.messaging.inbox import INBOX
from shared.messaging.relay import Publisher
from shared.testing.fixtures import jsonbody, wait_until
from shared.testing.samples import COMPLAINT_REQUEST

pytestmark = pytest.mark.e2e
AT = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)


def case_event(event_type, complaint_id, sequence, **extra):
    payload = {"case_id": complaint_id, "complaint_id": complaint_id, **extra}
    return build_event(event_type, payload, branch_code="SH001", correlation_id=complaint_id, sequence=sequence,
                       occurred_at=AT, source="investigation")


def deliver(intake, amqp_uri, *events):
    """Publish investigation's events and wait until intake's handler took each (its inbox)."""
    publisher = Publisher(amqp_uri)
    try:
        publisher.publish_batch([("investigation.events", e["type"], json.dumps(e), e["event_id"]) for e in events])
    finally:
        publisher.close()
    engine = sa.create_engine(intake.database_url)
    try:
        def handled():
            with engine.connect() as conn:
                return set(conn.execute(sa.select(INBOX.c.event_id)).scalars())
        wait_until(lambda: {e["event_id"] for e in events} <= handled(), "intake to handle the case events")
    finally:
        engine.dispose()


def test_the_status_follows_the_newest_case_event_out_of_order_and_duplicated(http, intake, token, amqp_uri):
    auth_header = {"Authorization": f"Bearer {token('front_desk', branch='SH001')}"}
    created = http.post(intake.url("/v1/complaints"), json=COMPLAINT_REQUEST, headers=auth_header, timeout=10)
    complaint_id = jsonbody(created)["id"]
    assert created.json()["status"] == "received"

    opened = case_event("case_opened", complaint_id, 1)
    closed = case_event("case_closed", complaint_id, 6, outcome="satisfied")
    resolved = case_event("case_resolved", complaint_id, 5)  # older, arrives last
    deliver(intake, amqp_uri, opened, closed, closed, resolved)
    answer = http.get(intake.url(f"/v1/complaints/{complaint_id}"), headers=auth_header, timeout=10)
    assert jsonbody(answer)["status"] == "closed"
    listed = http.get(intake.url("/v1/complaints?status=closed"), headers=auth_header, timeout=10)
    assert complaint_id in [c["id"] for c in jsonbody(listed)["items"]]


def test_a_case_event_for_no_complaint_here_is_handled_and_changes_nothing(intake, amqp_uri):
    deliver(intake, amqp_uri, case_event("case_opened", str(uuid.uuid4()), 1))  # taken, not parked
