"""Inquiries (consultations, 咨询) against a real intake, its relay and the bus: an inquiry is posted
as `kind: inquiry`, low and due within 24 hours, and published as feedback_registered; converted
(`POST /v1/complaints/{id}/convert`) with the clock moved on, it answers 200 as a complaint whose
deadlines count from the inquiry's receipt, and complaint_registered goes on the bus for the same
id with converted_from; a retry with its Idempotency-Key gets the first answer; refusals come in
the API's order (404, 409 not_an_inquiry, 403, 400 naming each field); of two conversions at once
exactly one wins.

One intake for the module (each test posts its own inquiries; the clock only moves forward)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import eventlet
import pytest
import requests

from shared.calendar.clock import ManualClock
from shared.messaging.relay import Relay
from shared.persistence import db
from shared.security import auth
from shared.testing.fixtures import BusListener, jsonbody
from shared.testing.samples import complaint_request
from tests.e2e.test_intake_customer_lookup import intake_in_process

pytestmark = pytest.mark.e2e
QUESTION = "请问染发后头皮红肿要怎么护理？"  # reads like a reaction (safety); as an inquiry it is low


@dataclass
class Desk:
    """The running intake, a listener on its events and an HTTP session."""
    base_url: str
    clock: ManualClock
    bus: BusListener
    http: requests.Session

    def post(self, path: str, body: dict, role: str = "front_desk", headers: dict | None = None,
             subject: str | None = None):
        return self.http.post(self.base_url + path, json=body, timeout=10,
                              headers={**bearer(role, subject), **(headers or {})})

    def inquiry(self, **changes) -> dict:
        answer = self.post("/v1/complaints", complaint_request(**{
            "kind": "inquiry", "description": QUESTION, "severity_flags": None, "occurred_at": None, **changes}))
        assert answer.status_code == 201, answer.text
        return jsonbody(answer)

    def convert(self, complaint_id: str, body: dict | None = None, role: str = "front_desk", key: str | None = None,
                subject: str | None = None):
        return self.post(f"/v1/complaints/{complaint_id}/convert", body or {}, role,
                         {"Idempotency-Key": key} if key else None, subject)

    def published(self, complaint_id: str, count: int) -> list[dict]:
        return [m["body"] for m in self.bus.wait_for(lambda m: m["body"]["correlation_id"] == complaint_id,
                                                     count=count)]


def bearer(role: str, subject: str | None = None) -> dict:
    token = auth.issue_token(role=role, subject=subject or f"{role}-{uuid.uuid4().hex[:6]}",
                             branch="*" if role.startswith("hq") else "SH001")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def intake(amqp_uri, database_factory):
    """Intake and its relay in the test process, a listener on intake's events, 10:00 in
    Shanghai on 2026-11-22."""
    with intake_in_process(amqp_uri, database_factory) as running:
        bus = BusListener(amqp_uri, "intake.events")
        relay = Relay(db.make_engine(running.database_url, 2), amqp_uri)
        relay.thread = eventlet.spawn(relay.run)
        desk = Desk(running.base_url, running.clock, bus, requests.Session())
        yield desk
        desk.http.close()
        relay.stop()
        relay.thread.wait()
        relay.engine.dispose()
        bus.close()


def test_an_inquiry_is_low_due_within_24_hours_and_published_as_feedback(intake):
    posted = intake.inquiry()
    received = datetime.fromisoformat(posted["received_at"].replace("Z", "+00:00"))
    assert (posted["kind"], posted["priority"], posted["converted_from"]) == ("inquiry", "low", None)
    assert posted["first_response_due"] == posted["resolution_due"] == (received + timedelta(hours=24)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert "咨询" in posted["acknowledgement"]
    shown = jsonbody(intake.http.get(f"{intake.base_url}/v1/complaints/{posted['id']}", headers=bearer("investigator"),
                                     timeout=10))
    assert shown == posted
    listed = jsonbody(intake.http.get(f"{intake.base_url}/v1/complaints", params={"kind": "inquiry", "limit": 100},
                                      headers=bearer("store_manager"), timeout=10))
    assert posted["id"] in [c["id"] for c in listed["items"]] and {c["kind"] for c in listed["items"]} == {"inquiry"}
    [event] = intake.published(posted["id"], 1)
    assert (event["type"], event["sequence"], event["payload"]["kind"], event["payload"]["first_response_due"]) == (
        "feedback_registered", 1, "inquiry", posted["first_response_due"])


def test_a_converted_inquiry_counts_from_its_receipt_and_is_registered_again_as_a_complaint(intake):
    posted = intake.inquiry()
    intake.clock.advance(hours=3)
    once = {"body": {"note": "头皮起泡了，顾客要投诉"}, "key": f"conv-{posted['id']}", "subject": "fd-convert"}
    converted = intake.convert(posted["id"], **once)
    assert converted.status_code == 200, converted.text
    body = jsonbody(converted)
    assert (body["id"], body["kind"], body["converted_from"], body["category"], body["priority"]) == (
        posted["id"], "complaint", "inquiry", "safety", "urgent")
    received = datetime.fromisoformat(posted["received_at"].replace("Z", "+00:00"))
    assert body["received_at"] == posted["received_at"]
    assert datetime.fromisoformat(body["converted_at"].replace("Z", "+00:00")) == received + timedelta(hours=3)
    # Urgent: 1 hour after the inquiry came in (already past), not after the conversion.
    assert datetime.fromisoformat(body["first_response_due"].replace("Z", "+00:00")) == received + timedelta(hours=1)
    registered, again = intake.published(posted["id"], 2)
    assert (again["type"], again["sequence"]) == ("complaint_registered", 2) and again["event_id"] != registered[
        "event_id"]
    assert (again["payload"]["converted_from"], again["payload"]["converted_at"], again["payload"]["received_at"],
            again["payload"]["first_response_due"]) == ("inquiry", body["converted_at"], posted["received_at"],
                                                        body["first_response_due"])
    retried = intake.convert(posted["id"], **once)
    assert (retried.status_code, jsonbody(retried)) == (200, body)
    late = intake.convert(posted["id"], {"category": "price"})
    assert late.status_code == 409 and jsonbody(late)["error"]["code"] == "not_an_inquiry"
    assert body["converted_at"] in jsonbody(late)["error"]["message"]


def test_refusals_come_in_the_api_s_order_and_name_every_wrong_field(intake):
    inquiry = intake.inquiry()
    complaint = jsonbody(intake.post("/v1/complaints", complaint_request()))
    wrong_body = {"category": "weather", "severity_flags": ["sunburn"], "kind": "complaint"}
    assert intake.convert(str(uuid.uuid4()), wrong_body).status_code == 404
    assert intake.http.post(f"{intake.base_url}/v1/complaints/{inquiry['id']}/convert", json={},
                            timeout=10).status_code == 401
    refused = intake.convert(complaint["id"], wrong_body, role="hq_analyst")
    assert (refused.status_code, jsonbody(refused)["error"]["code"]) == (409, "not_an_inquiry")
    assert intake.convert(inquiry["id"], wrong_body, role="hq_analyst").status_code == 403
    invalid = intake.convert(inquiry["id"], wrong_body)
    assert invalid.status_code == 400 and set(jsonbody(invalid)["error"]["fields"]) == {
        "category", "severity_flags", "kind"}
    shown = jsonbody(intake.http.get(f"{intake.base_url}/v1/complaints/{inquiry['id']}", headers=bearer("front_desk"),
                                     timeout=10))
    assert shown["kind"] == "inquiry"


def test_of_two_conversions_at_once_exactly_one_wins(intake):
    inquiry = intake.inquiry()

    def convert(category):
        with requests.Session() as session:
            answer = session.post(f"{intake.base_url}/v1/complaints/{inquiry['id']}/convert",
                                  json={"category": category}, headers=bearer("store_manager"), timeout=10)
        return answer.status_code, jsonbody(answer)

    answers = sorted(eventlet.GreenPool(2).imap(convert, ["price", "booking"]), key=lambda a: a[0])
    assert [status for status, _ in answers] == [200, 409]
    assert answers[1][1]["error"]["code"] == "not_an_inquiry"
    events = intake.published(inquiry["id"], 2)
    assert [e["type"] for e in events] == ["feedback_registered", "complaint_registered"]
    assert events[1]["payload"]["category"] == answers[0][1]["category"]
