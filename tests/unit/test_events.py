"""The bus envelope: producers build strictly, consumers read tolerantly."""
import copy
import json
import uuid
from datetime import datetime, timezone

import pytest

from shared.messaging.envelope import EventSchemaError, build_event, parse_event

AT = datetime(2026, 11, 22, 18, 0, tzinfo=timezone.utc)


def sale_payload(**changes) -> dict:
    payload = {
        "sale_id": str(uuid.uuid4()), "sold_at": "2026-11-22T10:00:00Z", "recorded_at": "2026-11-22T18:00:00Z",
        "region": "east", "customer_ref": "c_abc", "customer_masked": {"name": "王**", "phone": "138****6138"},
        "contact_consent": True,
        "items": [{"type": "product", "sku": "SK-01", "product_type": "skincare", "batch": "B1"}],
    }
    payload.update(changes)
    return payload


def build(payload=None, **kwargs) -> dict:
    options = {"branch_code": "SH001", "correlation_id": "corr-1", "occurred_at": AT, "sequence": 1}
    options.update(kwargs)
    return build_event("sale_recorded", payload or sale_payload(), **options)


def test_build_event_gives_a_plain_json_envelope():
    event = build(causation_id=uuid.UUID("00000000-0000-0000-0000-000000000001"))
    assert set(event) == {"event_id", "type", "version", "occurred_at", "source", "branch_code",
                          "correlation_id", "causation_id", "sequence", "payload"}
    assert event["type"] == "sale_recorded" and event["version"] == 1 and event["source"] == "intake"
    uuid.UUID(event["event_id"])
    assert event["occurred_at"] == "2026-11-22T18:00:00Z"
    assert event["causation_id"] == "00000000-0000-0000-0000-000000000001"
    # Ids and times are plain strings: the JSON round trip changes nothing (no kombu __type__ tags).
    assert json.loads(json.dumps(event)) == event
    assert all(isinstance(event[k], str) for k in ("event_id", "occurred_at", "correlation_id", "causation_id"))


def test_build_event_keeps_a_given_event_id_and_makes_fresh_ones_otherwise():
    given = str(uuid.uuid4())
    assert build(event_id=given)["event_id"] == given
    assert build()["event_id"] != build()["event_id"]


@pytest.mark.parametrize("change, error_key", [
    ({"customer_phone": "13812346138"}, "payload.customer_phone"),           # unknown field: contact cannot slip on
    ({"customer_masked": {"name": "王**", "phone_clear": "13812346138"}}, "payload.customer_masked.phone_clear"),
    ({"sale_id": "not-a-uuid"}, "payload.sale_id"),
    ({"sale_id": uuid.uuid4()}, "payload.sale_id"),                           # a UUID object, not a string
    ({"sold_at": datetime(2026, 11, 22, tzinfo=timezone.utc)}, "payload.sold_at"),  # a datetime object
    ({"sold_at": "2026-11-22T10:00:00"}, "payload.sold_at"),                  # no offset
    ({"items": []}, "payload.items"),
    ({"contact_consent": "maybe"}, "payload.contact_consent"),
])
def test_build_event_refuses_a_bad_payload(change, error_key):
    with pytest.raises(EventSchemaError) as raised:
        build(sale_payload(**change))
    assert error_key in raised.value.errors
    assert raised.value.event_type == "sale_recorded"


def test_build_event_refuses_a_missing_field_and_an_unknown_type_or_version():
    payload = sale_payload()
    del payload["customer_ref"]
    with pytest.raises(EventSchemaError) as raised:
        build(payload)
    assert "payload.customer_ref" in raised.value.errors
    with pytest.raises(EventSchemaError):
        build_event("sale_recorded", sale_payload(), branch_code="SH001", correlation_id="c", occurred_at=AT,
                    sequence=1, version=2)
    with pytest.raises(EventSchemaError):
        build_event("no_such_event", {}, branch_code="SH001", correlation_id="c", occurred_at=AT, sequence=1)
    with pytest.raises(EventSchemaError) as raised:
        build(event_id="42")
    assert "event_id" in raised.value.errors


def test_parse_event_round_trips_a_built_event():
    event = build()
    assert parse_event(json.loads(json.dumps(event))) == event


def test_parse_event_tolerates_fields_added_later():
    body = build()
    body["trace"] = "x"                              # new envelope field
    body["payload"]["loyalty_tier"] = "gold"         # new payload field
    parsed = parse_event(body)
    assert "trace" not in parsed and "loyalty_tier" not in parsed["payload"]
    assert parsed["payload"]["sale_id"] == body["payload"]["sale_id"]


def test_parse_event_tolerates_fields_added_later_inside_nested_objects():
    # DESIGN: "add fields freely". A producer adding e.g. an expiry date to each sold item
    # (or a wechat id to customer_masked) must not make older consumers park every event.
    body = build()
    body["payload"]["items"][0]["expiry"] = "2027-12-31"
    body["payload"]["customer_masked"]["wechat"] = "w***"
    parsed = parse_event(body)
    assert parsed["payload"]["items"][0]["sku"] == "SK-01"


@pytest.mark.parametrize("mutate", [
    lambda b: b.pop("event_id"),
    lambda b: b.update(event_id="not-a-uuid"),
    lambda b: b.update(version="1"),
    lambda b: b.update(occurred_at="yesterday"),
    lambda b: b.update(occurred_at="2026-11-22T18:00:00"),
    lambda b: b.update(payload="not an object"),
    lambda b: b.update(type="no_such_event"),
    lambda b: b["payload"].pop("items"),
    lambda b: b.pop("sequence"),
    lambda b: b.update(sequence=0),
], ids=["no id", "bad id", "string version", "bad time", "naive time", "payload not object", "unknown type",
        "payload field missing", "no sequence", "sequence zero"])
def test_parse_event_rejects_a_bad_envelope_or_payload(mutate):
    body = copy.deepcopy(build())
    mutate(body)
    with pytest.raises(EventSchemaError):
        parse_event(body)


@pytest.mark.parametrize("body", ["{}", b"{}", [], None, 42])
def test_parse_event_rejects_a_body_that_is_not_an_object(body):
    with pytest.raises(EventSchemaError) as raised:
        parse_event(body)
    assert raised.value.errors == {"_schema": ["the body is not a JSON object"]}


def test_the_outbox_accepts_only_events_that_passed_their_schema():
    from shared.messaging import outbox

    hand_made = json.loads(json.dumps(build()))  # the same content, but not made by build_event
    with pytest.raises(TypeError, match="build_event"):
        outbox.event_row(hand_made)



def test_build_event_numbers_events_per_record_and_refuses_a_missing_sequence():
    assert build(sequence=3)["sequence"] == 3
    for bad in (0, -1, "2", None):
        with pytest.raises(EventSchemaError) as raised:
            build(sequence=bad)
        assert "sequence" in raised.value.errors


def test_a_newer_version_of_a_known_type_is_not_malformed_but_early():
    from shared.messaging.envelope import NewerVersion

    body = copy.deepcopy(build())
    body["version"] = 7
    with pytest.raises(NewerVersion) as raised:
        parse_event(body)
    assert "upgrade the consumer" in str(raised.value.errors["version"])
    body["type"], body["version"] = "no_such_event", 7
    with pytest.raises(EventSchemaError) as raised:
        parse_event(body)
    assert not isinstance(raised.value, NewerVersion)


def test_a_type_several_services_publish_names_its_source():
    payload = {"record_type": "complaint", "record_id": str(uuid.uuid4()), "purpose": "written_result",
               "text": "您的投诉已处理完毕", "language": "zh", "channels": ["sms"]}
    options = {"branch_code": "SH001", "correlation_id": "c", "occurred_at": AT, "sequence": 4}
    with pytest.raises(EventSchemaError) as raised:
        build_event("customer_message_requested", payload, **options)
    assert "source" in raised.value.errors
    with pytest.raises(EventSchemaError):
        build_event("customer_message_requested", payload, source="intake", **options)
    for source in ("investigation", "aftercare"):
        assert build_event("customer_message_requested", payload, source=source, **options)["source"] == source


def test_text_no_consumer_could_store_is_refused_on_the_bus():
    payload = {"record_type": "complaint", "record_id": str(uuid.uuid4()), "purpose": "written_result",
               "text": "结果\x00", "language": "zh", "channels": ["sms"]}
    options = {"branch_code": "SH001", "correlation_id": "c", "occurred_at": AT, "sequence": 1,
               "source": "investigation"}
    for text in ("结果\x00", "lone \ud800 surrogate"):
        with pytest.raises(EventSchemaError) as raised:
            build_event("customer_message_requested", dict(payload, text=text), **options)
        assert "payload.text" in raised.value.errors
    with pytest.raises(EventSchemaError):
        build(sequence=2 ** 63)


def test_failures_that_pass_with_time_are_told_by_their_sqlstate_too():
    import psycopg2
    from sqlalchemy import exc as sa_exc

    from shared.messaging.failures import is_temporary

    class ReadOnly(psycopg2.InternalError):
        pgcode = "25006"  # a standby during a failover

    class Bug(psycopg2.ProgrammingError):
        pgcode = "42P01"  # undefined table: will repeat

    assert is_temporary(sa_exc.InternalError("INSERT ...", {}, ReadOnly()))
    assert not is_temporary(sa_exc.ProgrammingError("SELECT ...", {}, Bug()))
    assert not is_temporary(KeyError("complaint_id"))
