"""Investigation and aftercare speak to customers through intake, the only holder of their
contacts: a customer_message_requested event on the real broker is sent through intake's
notification port, and its outcome comes back on the bus."""
import json
import uuid
from datetime import datetime, timezone

import pytest

from shared.messaging.envelope import build_event
from shared.messaging.relay import Publisher
from shared.testing.fixtures import jsonbody
from shared.testing.samples import COMPLAINT_REQUEST

pytestmark = pytest.mark.e2e
AT = datetime(2026, 11, 22, 3, 0, tzinfo=timezone.utc)
SALE = {"customer": {"name": "李先生", "phone": "13900001111", "contact_consent": False},
        "sold_at": "2026-11-22T09:30:00+08:00",
        "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare", "batch": "B1"}]}


def request(source, record_type, record_id, text, channels=("sms",), correlation_id=None):
    payload = {"record_type": record_type, "record_id": record_id, "purpose": "written_result", "text": text,
               "language": "zh", "channels": list(channels)}
    return build_event("customer_message_requested", payload, branch_code="SH001",
                       correlation_id=correlation_id or record_id, sequence=7, occurred_at=AT, source=source)


def publish(amqp_uri, *events):
    publisher = Publisher(amqp_uri)
    try:
        publisher.publish_batch([(f"{e['source']}.events", e["type"], json.dumps(e), e["event_id"]) for e in events])
    finally:
        publisher.close()


def post(http, intake, path, body, token):
    response = http.post(intake.url(path), json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return jsonbody(response)


def test_a_written_result_reaches_the_customer_through_intake_and_its_outcome_is_published(
        http, intake, token, amqp_uri, bus_listener, caplog):
    events = bus_listener("intake.events")
    complaint = post(http, intake, "/v1/complaints", COMPLAINT_REQUEST, token("front_desk", branch="SH001"))
    text = "王女士，您好：您反映的染发过敏问题已处理，我们将为您免费重做并报销药费。"
    asked = request("investigation", "complaint", complaint["id"], text)
    publish(amqp_uri, asked)

    [sent] = events.wait_for(lambda m: m["body"]["payload"].get("request_event_id") == asked["event_id"])
    event = sent["body"]
    assert event["type"] == "customer_message_sent" and event["causation_id"] == asked["event_id"]
    assert event["correlation_id"] == complaint["id"] and event["payload"]["channel"] == "sms"
    assert event["sequence"] == 2  # registered was 1: the second event intake published about it
    assert "13812346138" not in json.dumps(event, ensure_ascii=False) and "王女士" not in json.dumps(event)
    [message] = [m for m in intake.sender.notifier.sent if m["body"] == text]
    assert (message["recipient"], message["subject_id"]) == ("13812346138", complaint["id"])
    assert "王女士" not in message["log_text"] and message["log_text"].startswith("王**")
    assert "王女士" not in caplog.text and "13812346138" not in caplog.text


def test_requests_intake_cannot_carry_out_are_answered_with_the_reason(
        http, intake, token, amqp_uri, bus_listener):
    events = bus_listener("intake.events", "customer_message_failed")
    sale = post(http, intake, "/v1/sales", SALE, token("front_desk", branch="SH001"))
    complaint = post(http, intake, "/v1/complaints", COMPLAINT_REQUEST, token("front_desk", branch="SH001"))
    no_consent = request("aftercare", "sale", sale["id"], "您好，想了解您使用面霜后的感受")
    no_contact = request("investigation", "complaint", complaint["id"], "结果已发送", channels=("email",))
    unknown = request("investigation", "complaint", str(uuid.uuid4()), "结果")
    publish(amqp_uri, no_consent, no_contact, unknown)

    reasons = {}
    for asked in (no_consent, no_contact, unknown):
        [failed] = events.wait_for(lambda m, a=asked: m["body"]["payload"]["request_event_id"] == a["event_id"])
        reasons[asked["event_id"]] = failed["body"]["payload"]["reason"]
        assert failed["body"]["source"] == "intake"
    assert reasons == {no_consent["event_id"]: "no_consent", no_contact["event_id"]: "no_contact",
                       unknown["event_id"]: "unknown_record"}
    texts = {e["payload"]["text"] for e in (no_consent, no_contact, unknown)}
    assert not [m for m in intake.sender.notifier.started if m["body"] in texts]  # none was sent


def test_a_message_the_gateway_keeps_refusing_is_reported_failed(
        http, start_service, start_relay, start_sender, database_factory, token, amqp_uri, bus_listener):
    from services.intake.service import IntakeService
    from shared.testing.notifiers import RecordingNotifier

    def refuse(message):
        if message.body.startswith("refused"):
            raise RuntimeError("gateway says no")

    url = database_factory("intake")
    service = start_service("intake", database_url=url)
    start_relay(url)
    start_sender(url, RecordingNotifier(refuse), service="intake", on_outcome=IntakeService.message_outcome,
                 max_attempts=1, timeout_s=1, lease_s=5)
    events = bus_listener("intake.events", "customer_message_failed")
    response = http.post(service.url("/v1/complaints"), json=COMPLAINT_REQUEST,
                         headers={"Authorization": f"Bearer {token('front_desk', branch='SH001')}"}, timeout=10)
    asked = request("investigation", "complaint", jsonbody(response)["id"], "refused: 结果")
    publish(amqp_uri, asked)
    [failed] = events.wait_for(lambda m: m["body"]["payload"]["request_event_id"] == asked["event_id"])
    assert failed["body"]["payload"]["reason"] == "delivery_failed"
    # The gateway's own words stay in intake (they may quote the number or the text).
    assert "gateway says no" not in json.dumps(failed["body"], ensure_ascii=False)
