"""Intake's domain with the default chain policy and a fixed clock: registration, the
domain events it records (and their envelopes, services/intake/events.py), the
acknowledgement, and a complaint's status following its case."""
import json
from datetime import datetime, timezone

import pytest

from services.intake import events
from services.intake.domain import STATUS_AFTER_CASE_EVENT, Acknowledgement, Complaint, ComplaintRegistered, Sale, \
    SaleRecorded
from services.intake.schemas import ComplaintIn, SaleIn
from shared.calendar.policy import load_policy
from shared.messaging.envelope import ValidatedEvent, parse_event
from shared.testing.samples import complaint_request

# 18:00 UTC on the 22nd is 02:00 on the 23rd in Shanghai, while the branches are closed.
RECEIVED = datetime(2026, 11, 22, 18, 0, tzinfo=timezone.utc)
KEY = b"r" * 32


@pytest.fixture(scope="module")
def policy():
    return load_policy()


def complaint_body(**changes) -> dict:
    # The phone as a till might type it: the domain normalises it.
    return complaint_request(**{"customer": {"name": "王女士", "phone": "+86 138 1234 6138", "language": "zh"},
                                **changes})


def register(policy, body=None, *, received_at=RECEIVED, number=7, branch="SH001", ref_key=KEY) -> Complaint:
    return Complaint.register(ComplaintIn().load(body or complaint_body()), branch=policy.branch(branch),
                              rules=policy.section("intake"), received_at=received_at, number=number,
                              recorded_by="fd-1", recorded_by_role="front_desk", ref_key=ref_key)


def envelope_of(record, causation_id=None) -> ValidatedEvent:
    [envelope] = events.envelopes(record, causation_id=causation_id)
    return envelope


def test_reference_uses_the_branch_local_date(policy):
    assert register(policy).reference == "SH001-20261123-0007"
    before_midnight = datetime(2026, 11, 22, 15, 59, tzinfo=timezone.utc)  # 23:59 in Shanghai
    assert register(policy, received_at=before_midnight, number=12).reference == "SH001-20261122-0012"
    assert register(policy, branch="BJ001", number=1).reference == "BJ001-20261123-0001"


def test_safety_complaint_is_classified_automatically_and_urgent_around_the_clock(policy):
    c = register(policy)
    assert (c.category, c.category_source, c.priority) == ("safety", "automatic", "urgent")
    assert c.region == "east" and c.status == "received" and c.severity_flags == ["allergy"]
    assert c.branch_code == "SH001" and (c.recorded_by, c.recorded_by_role) == ("fd-1", "front_desk")
    # Urgent: 1 hour and 7 days even though the branch is closed at 02:00 local.
    assert c.first_response_due == datetime(2026, 11, 22, 19, 0, tzinfo=timezone.utc)
    assert c.resolution_due == datetime(2026, 11, 29, 18, 0, tzinfo=timezone.utc)


def test_manual_category_general_priority_and_deadlines_moved_to_opening(policy):
    c = register(policy, complaint_body(category="price", description="上次收费和价目表不一致",
                                        severity_flags=None, service=None, products=[]))
    assert (c.category, c.category_source, c.priority) == ("price", "manual", "general")
    # +24h is 02:00 local on the 24th: moved to the 10:00 opening (02:00 UTC).
    assert c.first_response_due == datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)
    assert c.resolution_due == datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
    assert c.products == [] and c.service is None


def test_a_manual_category_wins_over_the_text(policy):
    c = register(policy, complaint_body(category="booking", description="The receptionist was rude and impolite",
                                        severity_flags=[]))
    assert (c.category, c.category_source, c.priority) == ("booking", "manual", "general")
    automatic = register(policy, complaint_body(category=None, description="The receptionist was rude and impolite",
                                                severity_flags=[]))
    assert (automatic.category, automatic.category_source) == ("staff_attitude", "automatic")


def test_a_legal_threat_in_the_text_makes_a_complaint_urgent(policy):
    c = register(policy, complaint_body(description="剪坏了，我要找律师", severity_flags=None))
    assert (c.category, c.priority) == ("service_quality", "urgent")
    assert c.first_response_due == datetime(2026, 11, 22, 19, 0, tzinfo=timezone.utc)


def test_registration_needs_an_aware_time(policy):
    with pytest.raises(ValueError):
        register(policy, received_at=datetime(2026, 11, 22, 18, 0))


def test_acknowledgement_in_chinese_and_english(policy):
    complaint = register(policy)
    zh = complaint.customer_acknowledgement
    assert complaint.acknowledgement.startswith("王**，您好！")  # what staff see
    # The due time is the first response deadline in Shanghai time: 19:00 UTC is 03:00 on the 23rd.
    assert zh.startswith("王女士，您好！")
    assert "SH001-20261123-0007" in zh and "投诉" in zh and "上海静安店" in zh and "2026-11-23 03:00" in zh
    en = register(policy, complaint_body(customer={"name": "Anne Smith", "email": "anne@example.com",
                                                   "language": "en"})).customer_acknowledgement
    assert en.startswith("Dear Anne Smith,")
    assert "complaint" in en and "SH001-20261123-0007" in en and "2026-11-23 03:00" in en


def test_view_masks_the_contact(policy):
    view = register(policy).view()
    assert view["customer"] == {"name": "王**", "phone": "138****6138", "email": None, "language": "zh"}
    assert view["reference"] == "SH001-20261123-0007" and view["status"] == "received"
    assert view["received_at"] == "2026-11-22T18:00:00Z"
    assert view["first_response_due"] == "2026-11-22T19:00:00Z"
    assert view["occurred_at"] == "2026-11-21T07:00:00Z"
    text = json.dumps(view, ensure_ascii=False)
    assert "13812346138" not in text


def test_view_does_not_reveal_the_name_through_the_acknowledgement(policy):
    # view() is what GET /v1/complaints shows to every role with complaint:read (hq_analyst
    # included), while the name in clear is meant for contact:read only; the stored
    # acknowledgement greets the customer by name ("王女士，您好！").
    text = json.dumps(register(policy).view(), ensure_ascii=False)
    assert "王女士" not in text


# --- domain events and their envelopes ---------------------------------------------------------

def test_registration_records_exactly_one_event_and_pulling_empties_it(policy):
    c = register(policy)
    assert c.pending_events() == [(1, ComplaintRegistered(c))]  # looking does not take them
    assert c.pull_events() == [(1, ComplaintRegistered(c))]
    assert c.pull_events() == [] and c.pending_events() == []
    assert events.envelopes(c, causation_id=None) == []  # nothing is published twice
    assert c.sequence == 1  # the number stays with the record after its events are pulled


def test_registered_event_is_valid_and_carries_no_contact_in_clear(policy):
    c = register(policy)
    event = envelope_of(c)
    assert isinstance(event, ValidatedEvent)  # the outbox accepts nothing else
    assert event["type"] == "complaint_registered" and event["branch_code"] == "SH001"
    assert event["sequence"] == 1 and event["causation_id"] is None
    assert event["correlation_id"] == c.id == event["payload"]["complaint_id"]
    assert event["occurred_at"] == "2026-11-22T18:00:00Z"
    payload = parse_event(json.loads(json.dumps(event)))["payload"]
    assert payload["reference"] == "SH001-20261123-0007" and payload["priority"] == "urgent"
    assert payload["customer_masked"] == {"name": "王**", "phone": "138****6138", "email": None}
    assert payload["customer_ref"] == c.customer_ref == c.customer.ref(KEY)
    assert payload["customer_ref"].startswith("c_")
    assert payload["products"][0]["batch"] == "B2026-11-03"
    assert payload["service"]["technician_id"] == "T-017"
    text = json.dumps(event, ensure_ascii=False)
    for clear in ("13812346138", "138 1234 6138", "王女士"):
        assert clear not in text


def test_same_customer_same_ref_across_phone_spellings(policy):
    a = register(policy)
    b = register(policy, complaint_body(customer={"name": "王女士", "phone": "138-1234-6138"}))
    assert a.id != b.id
    assert a.customer_ref == b.customer_ref
    assert envelope_of(a)["payload"]["customer_ref"] == envelope_of(b)["payload"]["customer_ref"]


def test_the_customer_ref_is_computed_at_registration_with_the_key_given(policy):
    assert register(policy).customer_ref != register(policy, ref_key=b"o" * 32).customer_ref


@pytest.mark.parametrize("kind, word", [("suggestion", "建议"), ("praise", "表扬")])
def test_suggestion_and_praise_are_feedback_with_low_priority(policy, kind, word):
    c = register(policy, complaint_body(kind=kind, description="希望增加周末的预约时段", severity_flags=None))
    assert c.priority == "low"
    # +72h is 02:00 local on the 26th: moved to the 10:00 opening.
    assert c.first_response_due == datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
    assert word in c.acknowledgement
    event = envelope_of(c, causation_id="11111111-1111-1111-1111-111111111111")
    assert event["type"] == "feedback_registered" and event["payload"]["kind"] == kind
    assert event["payload"]["priority"] == "low" and event["sequence"] == 1
    assert event["causation_id"] == "11111111-1111-1111-1111-111111111111"
    assert parse_event(event)["type"] == "feedback_registered"


def test_events_without_an_envelope_are_refused():
    with pytest.raises(TypeError):
        events.envelope(object(), 1, None)


# --- the acknowledgement sent --------------------------------------------------------------------

def test_acknowledgement_message_goes_to_the_phone_else_the_email(policy):
    complaint = register(policy)
    by_sms = complaint.acknowledgement_message()
    assert isinstance(by_sms, Acknowledgement)
    assert (by_sms.channel, by_sms.recipient, by_sms.language) == ("sms", "13812346138", "zh")
    assert by_sms.subject_id == complaint.id
    # The customer is greeted by name; staff and logs see the masked text.
    assert by_sms.text == complaint.customer_acknowledgement and by_sms.text.startswith("王女士，您好！")
    assert by_sms.masked_text == complaint.acknowledgement and "王女士" not in by_sms.masked_text
    by_email = register(policy, complaint_body(customer={"email": "anne@example.com"})).acknowledgement_message()
    assert (by_email.channel, by_email.recipient) == ("email", "anne@example.com")


def test_no_acknowledgement_without_a_way_to_reach_the_customer(policy):
    # The schema asks for a phone or an email; a record without either has no acknowledgement.
    c = register(policy)
    c.customer = type(c.customer)(name="王女士", phone=None, email=None, language="zh")
    assert c.acknowledgement_message() is None


# --- a complaint's status follows its case --------------------------------------------------------

def test_follow_case_takes_the_status_each_case_event_implies(policy):
    expected = {"case_opened": "received", "case_assigned": "received", "case_acknowledged": "acknowledged",
                "sla_paused": "investigating", "findings_recorded": "investigating", "case_resolved": "resolved",
                "case_reopened": "investigating", "case_closed": "closed", "case_converted": "received"}
    assert STATUS_AFTER_CASE_EVENT == expected  # every case event intake follows
    c = register(policy)
    for sequence, (event_type, status) in enumerate(expected.items(), start=1):
        assert c.follow_case(event_type, sequence) is True
        assert (c.status, c.status_sequence) == (status, sequence)


def test_follow_case_applies_only_newer_case_events(policy):
    c = register(policy)
    assert c.follow_case("case_opened", 1) and c.status == "received"
    # Out of order: the case closed (5) arrives before it was resolved (4).
    assert c.follow_case("case_closed", 5) is True
    assert c.follow_case("case_resolved", 4) is False
    assert (c.status, c.status_sequence) == ("closed", 5)
    assert c.follow_case("case_closed", 5) is False  # a redelivery changes nothing
    assert c.follow_case("case_opened", 1) is False
    assert (c.status, c.status_sequence) == ("closed", 5)
    assert c.follow_case("case_reopened", 6) is True and c.status == "investigating"


def test_follow_case_ignores_sequence_zero_on_a_new_complaint(policy):
    c = register(policy)
    assert c.follow_case("case_opened", 0) is False
    assert (c.status, c.status_sequence) == ("received", 0)


def test_an_unknown_case_event_changes_nothing(policy):
    c = register(policy)
    c.follow_case("case_opened", 1)
    with pytest.raises(KeyError):
        c.follow_case("case_escalated", 2)
    assert (c.status, c.status_sequence) == ("received", 1)


# --- sales -----------------------------------------------------------------------------------------

def sale_body(**changes) -> dict:
    body = {"customer": {"name": "李先生", "phone": "13900001111", "contact_consent": True},
            "sold_at": "2026-11-22T20:30:00+08:00",
            "items": [{"type": "product", "sku": "SK-01", "name": "精华", "product_type": "skincare", "batch": "B7"},
                      {"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour",
                       "technician_id": "T-017"}]}
    body.update(changes)
    return body


def register_sale(policy, body=None, branch="SH002") -> Sale:
    return Sale.register(SaleIn().load(body or sale_body()), branch=policy.branch(branch), recorded_at=RECEIVED,
                         recorded_by="fd-2", ref_key=KEY)


def test_sale_register_and_recorded_event(policy):
    sale = register_sale(policy)
    assert sale.region == "east" and sale.branch_code == "SH002" and sale.contact_consent is True
    assert sale.customer_ref == sale.customer.ref(KEY) and sale.customer_ref.startswith("c_")
    view = sale.view()
    assert view["sold_at"] == "2026-11-22T12:30:00Z" and view["customer"]["phone"] == "139****1111"
    event = envelope_of(sale)
    assert isinstance(event, ValidatedEvent)
    assert event["type"] == "sale_recorded" and event["correlation_id"] == sale.id and event["sequence"] == 1
    payload = parse_event(json.loads(json.dumps(event)))["payload"]
    assert payload["sale_id"] == sale.id and payload["recorded_at"] == "2026-11-22T18:00:00Z"
    assert payload["customer_ref"] == sale.customer_ref
    assert [i["product_type"] for i in payload["items"]] == ["skincare", "hair_colour"]
    assert payload["items"][1]["technician_id"] == "T-017" and payload["items"][0]["batch"] == "B7"
    text = json.dumps(event, ensure_ascii=False)
    assert "13900001111" not in text and "李先生" not in text


def test_sale_registration_records_exactly_one_event(policy):
    sale = register_sale(policy)
    assert sale.pull_events() == [(1, SaleRecorded(sale))]
    assert sale.pull_events() == []


def test_sale_without_consent(policy):
    body = sale_body(customer={"phone": "13900001111", "contact_consent": False})
    sale = register_sale(policy, body, branch="SH001")
    assert sale.contact_consent is False
    assert envelope_of(sale)["payload"]["contact_consent"] is False
