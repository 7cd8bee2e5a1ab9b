"""Defects found by probing investigation from the outside (branch probe-investigation). Each
test states what should happen and fails while the defect is there. They run intake and
investigation in the test process on one ManualClock (the `chain` fixture of
test_investigation_cases.py)."""
import base64
import json
import threading
import uuid
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from shared.messaging import consumer, dead_letters
from shared.testing.fixtures import handled, jsonbody, wait_until
from tests.e2e.test_investigation_cases import FINDINGS, bearer, chain, publish_raw  # noqa: F401 (fixture)

pytestmark = pytest.mark.e2e


def _case_ready_for_pause(chain) -> str:
    """An urgent complaint's case, assigned and answered by phone (so it may be paused)."""
    complaint = chain.post_complaint()
    case_id = complaint["id"]
    chain.wait_for_case(case_id)
    assert chain.task(case_id, "assign", {"owner": "INV-7"}).status_code == 200
    assert chain.task(case_id, "respond", {"message": "已电话联系", "channel": "phone"}).status_code == 200
    return case_id


def _registered(chain, bus_listener) -> tuple[dict, dict]:
    """A complaint posted to intake, and the complaint_registered event intake published for it."""
    registered = bus_listener("intake.events", "complaint_registered")
    complaint = chain.post_complaint()
    [event] = [m["body"] for m in registered.wait_for(
        lambda m: m["body"]["payload"]["complaint_id"] == complaint["id"])]
    chain.wait_for_case(complaint["id"])
    return complaint, event


def _waiting_for_locks(database_url: str) -> bool:
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                        "AND datname = current_database()")).scalar() > 0
    finally:
        engine.dispose()


def _parked(amqp_uri) -> list:
    queues = [h.dlq_name for h in consumer.all_handlers() if h.service == "investigation"]
    return dead_letters.list_parked(amqp_uri, queues)


# -- 1. a pause swallows the timers that are due when it is made --------------------------------

def test_pausing_a_case_whose_deadline_passed_before_the_poll_still_breaches_and_escalates_it(chain):
    """handlers.pause ignores what engine.hold returns. hold fires the timers due by now
    ("A timer due by now fires first, in this operation"), so a breach (or warning) that fell
    due since the last poll is consumed by the process and never applied to the case: no
    sla_breached, no case_escalated, no notice, and the timer will not come again. The poll runs
    every second, so the window is a second at best, and as long as the service (or the
    database) is down at worst. Here the poll is held off deterministically by holding the
    instance's row lock (the poll skips locked rows) until the pause is waiting for it."""
    case_id = _case_ready_for_pause(chain)
    resolution = jsonbody(chain.case(case_id))["sla"]["resolution"]
    engine = sa.create_engine(chain.investigation_db)
    try:
        with engine.connect() as conn:
            lock = conn.begin()
            conn.execute(sa.text("SELECT 1 FROM process_instances WHERE id = :id FOR UPDATE"), {"id": case_id})
            chain.clock.set(datetime.fromisoformat(resolution["due"]) + timedelta(minutes=1))
            answer = {}  # the poll's rounds skip the locked instance meanwhile
            pausing = threading.Thread(target=lambda: answer.setdefault("pause", chain.http.post(
                chain.investigation.url(f"/v1/cases/{case_id}/pause"), json={"reason": "等顾客到店复查"},
                headers=bearer(chain.token("investigator", branch="SH001")), timeout=10)))
            pausing.start()
            # The pause queues on the lock (PostgreSQL hands it over at commit; the poll, which
            # skips locked rows, cannot take it first).
            wait_until(lambda: _waiting_for_locks(chain.investigation_db), "the pause to wait for the case's lock")
            lock.commit()
            pausing.join()
    finally:
        engine.dispose()
    assert answer["pause"].status_code == 200, answer["pause"].text
    resumed = chain.http.post(chain.investigation.url(f"/v1/cases/{case_id}/resume"), json={},
                              headers=bearer(chain.token("investigator", branch="SH001")), timeout=10)
    assert resumed.status_code == 200, resumed.text
    # The deadline passed before the pause: the breach and the escalation to level 1 happen.
    breached = wait_until(lambda: chain.seen(case_id, "sla_breached"), "the breach that fell due before the pause",
                          timeout=8)
    assert breached[0]["payload"]["clock"] == "resolution"
    assert jsonbody(chain.case(case_id))["escalation_level"] == 1


# -- 2. a cursor of GET /v1/tasks can crash the request ---------------------------------------

@pytest.mark.parametrize("task", ["a\x00b", "\ud800"], ids=["nul", "lone-surrogate"])
def test_a_task_cursor_with_text_the_database_cannot_take_is_a_400_naming_cursor(chain, task):
    """decode_cursor accepts any text as the cursor's task part; PostgreSQL's driver then
    raises ValueError / UnicodeEncodeError (not a DataError), which the HTTP layer answers 500."""
    complaint = chain.post_complaint()
    chain.wait_for_case(complaint["id"])
    cursor = base64.urlsafe_b64encode(json.dumps([None, complaint["id"], task]).encode()).decode().rstrip("=")
    answer = chain.http.get(chain.investigation.url("/v1/tasks"), params={"cursor": cursor},
                            headers=bearer(chain.token("store_manager", branch="SH001")), timeout=10)
    assert answer.status_code == 400, answer.text
    assert "cursor" in jsonbody(answer)["error"]["fields"]


# -- 3. staff ids take bidirectional controls and invisible characters -------------------------

@pytest.mark.parametrize("owner", ["INV\u202e7-VNI", "\u200b", "\u2066T-001\u2069"],
                         ids=["right-to-left-override", "zero-width-space-only", "isolates"])
def test_a_staff_id_with_a_bidirectional_control_or_nothing_visible_is_refused(chain, owner):
    """StaffId's pattern only refuses whitespace and C0 controls: an owner (or signed_by, or a
    pass_on recipient) made of U+202E or only U+200B is stored and shown to staff, and the owner
    so named may complete tasks. Every other text refuses bidirectional controls (README: "Free
    text") and an empty-once-invisible value."""
    complaint = chain.post_complaint()
    chain.wait_for_case(complaint["id"])
    answer = chain.task(complaint["id"], "assign", {"owner": owner})
    assert answer.status_code == 400, answer.text
    assert set(jsonbody(answer)["error"]["fields"]) == {"owner"}


# -- 4. findings take numbers for booleans --------------------------------------------------------

def test_findings_refuse_numbers_for_the_checked_booleans(chain):
    """service_log_checked / product_batch_checked are declared truthy={True}, falsy={False} to
    refuse "true" and 1, but 1 == True in Python: 1 and 0 (and 1.0) are taken as true/false."""
    case_id = _case_ready_for_pause(chain)
    answer = chain.task(case_id, "record_findings", {**FINDINGS, "service_log_checked": 1,
                                                     "product_batch_checked": 0}, role="investigator")
    assert answer.status_code == 400, answer.text
    assert set(jsonbody(answer)["error"]["fields"]) == {"service_log_checked", "product_batch_checked"}


# -- 5. repeated query parameters ---------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/cases", "/v1/tasks"])
def test_a_repeated_query_parameter_is_refused_not_read_as_its_first_value(chain, path):
    """query_args keeps the first of repeated values (werkzeug's to_dict): `limit=1&limit=abc`
    answers 200 with one item, the invalid second value never checked, and `state=open&state=lost`
    filters by `open`. A proxy or cache that reads the last value sees another query."""
    complaint = chain.post_complaint()
    chain.wait_for_case(complaint["id"])
    answer = chain.http.get(chain.investigation.url(path), params=[("limit", "1"), ("limit", "abc")],
                            headers=bearer(chain.token("hq_admin")), timeout=10)
    assert answer.status_code == 400, answer.text
    assert "limit" in jsonbody(answer)["error"]["fields"]


# -- 6. the documented error order: 401 before 413 ----------------------------------------------

def test_an_oversized_body_is_refused_at_the_front_door_before_anything_else(chain):
    """A body over 1 MB is refused by the transport from its Content-Length, unread and before
    the token is checked (DESIGN.md orders 413 after 401-400; buffering a megabyte from an
    anonymous caller to answer 401 instead would be the worse trade; the README says so), and
    the case is untouched."""
    complaint = chain.post_complaint()
    chain.wait_for_case(complaint["id"])
    body = b'{"owner": "' + b"x" * (1024 * 1024) + b'"}'
    url = chain.investigation.url(f"/v1/cases/{complaint['id']}/tasks/assign")
    for headers in ({}, bearer(chain.token("store_manager", branch="SH002")),
                    bearer(chain.token("store_manager", branch="SH001"))):
        answer = chain.http.post(url, data=body, headers={"Content-Type": "application/json", **headers}, timeout=10)
        assert answer.status_code == 413, answer.text
    assert jsonbody(chain.case(complaint["id"]))["owner"] is None


# -- 7. another service's message outcome lands on the case -------------------------------------

def test_a_message_outcome_for_a_request_investigation_did_not_make_stays_off_the_case(chain, amqp_uri,
                                                                                        bus_listener):
    """message_outcome takes any customer_message_sent/_failed whose record is a case's complaint,
    without checking that request_event_id (the envelope's causation_id) is one of the case's own
    customer_message_requested. Aftercare also asks intake to write to a complaint's customer;
    its failure would go on the case's timeline and tell the store manager "the message to the
    customer could not be sent ... contact them another way" about a message the case never sent."""
    complaint, event = _registered(chain, bus_listener)
    foreign_request, foreign_request_event = str(uuid.uuid4()), str(uuid.uuid4())
    publish_raw(amqp_uri, {**event, "type": "customer_message_failed", "event_id": foreign_request_event,
                           "causation_id": foreign_request,
                           "payload": {"request_event_id": foreign_request, "record_type": "complaint",
                                       "record_id": complaint["id"], "reason": "delivery_failed", "detail": None}})
    wait_until(lambda: handled(chain.investigation_db, foreign_request_event), "the outcome to be handled")
    timeline = [e["what"] for e in jsonbody(chain.case(complaint["id"]))["timeline"]]
    assert "customer_message_failed" not in timeline
    assert [m for m in chain.staff.notifier.sent if m["subject_id"] == complaint["id"]
            and "could not be sent" in m["body"]] == []


# -- 8. impossible deadlines open a case escalated to HQ at once -------------------------------

def test_a_complaint_registered_with_deadlines_before_its_receipt_is_parked_not_escalated(chain, amqp_uri,
                                                                                          bus_listener):
    """A complaint_registered whose first_response_due and resolution_due precede received_at
    passes the schema and opens a case that breaches both clocks at once, to level 2: events
    to reporting and notices to the regional manager and hq_admin for a producer's bug. It
    should be parked (nothing lost, nobody paged), like any event that fails its schema."""
    _, event = _registered(chain, bus_listener)
    case_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    publish_raw(amqp_uri, {**event, "event_id": event_id, "correlation_id": case_id, "payload": {
        **event["payload"], "complaint_id": case_id, "received_at": "2026-11-22T02:00:00+00:00",
        "first_response_due": "2026-11-21T00:00:00+00:00", "resolution_due": "2026-11-20T00:00:00+00:00"}})
    wait_until(lambda: [p for p in _parked(amqp_uri) if p.event_id == event_id]
               or chain.case(case_id, role="hq_admin", branch="*").status_code == 200, "the event to be handled")
    assert chain.case(case_id, role="hq_admin", branch="*").status_code == 404
    assert chain.seen(case_id, "case_escalated") == []


# -- 9. text the database cannot store is retried instead of parked as malformed ---------------

def test_a_complaint_registered_with_a_nul_in_its_text_is_parked_as_malformed_at_once(chain, amqp_uri,
                                                                                     bus_listener):
    """README (Consuming events): an event that fails its schema is parked at once, reason
    `malformed`; shared.messaging.envelope.Text exists so that NUL and lone surrogates fail the
    schema. complaint_registered's texts are plain fields.String, so the handler fails on the
    INSERT, is retried for 36 s and parked as `failed` (error ValueError: NUL)."""
    _, event = _registered(chain, bus_listener)
    case_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
    publish_raw(amqp_uri, {**event, "event_id": event_id, "correlation_id": case_id,
                           "payload": {**event["payload"], "complaint_id": case_id, "description": "毛巾\x00很脏"}})
    [parked] = wait_until(lambda: [p for p in _parked(amqp_uri) if p.event_id == event_id], "the event to be parked",
                          timeout=10)
    assert parked.reason == "malformed" and parked.attempts <= 1
