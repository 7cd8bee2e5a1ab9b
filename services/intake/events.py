"""Intake's domain events as they travel on the bus: the edge where a plain domain event
becomes a validated envelope (shared.messaging.envelope) for the outbox."""
from __future__ import annotations

from shared.calendar.clock import isoformat
from shared.messaging.envelope import ValidatedEvent, build_event
from services.intake.domain import (ComplaintRegistered, CustomerMessageFailed, CustomerMessageSent,
                                    SaleRecorded)


def envelopes(record, *, causation_id: str | None) -> list[ValidatedEvent]:
    """Every event the record noted since it was loaded, as envelopes, numbered per record."""
    return [envelope(event, sequence, causation_id) for sequence, event in record.pull_events()]


def envelope(event, sequence: int, causation_id: str | None) -> ValidatedEvent:
    if isinstance(event, ComplaintRegistered):
        c = event.complaint
        scrub = c.scrubber()
        payload = {
            "complaint_id": c.id, "reference": c.reference, "kind": c.kind,
            "channel": c.channel, "category": c.category, "category_source": c.category_source,
            "priority": c.priority, "severity_flags": list(c.severity_flags),
            # Contact data never travels on the bus: a phone, e-mail or name the customer typed into
            # the description is masked there (intake keeps the text as written).
            "description": scrub(c.description),
            "occurred_at": isoformat(c.occurred_at) if c.occurred_at else None,
            "received_at": isoformat(c.received_at), "region": c.region,
            "service": c.service, "products": c.products,
            "customer_ref": c.customer_ref, "customer_masked": c.customer.masked(),
            "customer_language": c.customer.language,
            "first_response_due": isoformat(c.first_response_due),
            "resolution_due": isoformat(c.resolution_due),
        }
        if c.converted_from:  # an inquiry registered again as the complaint it proved to be
            payload.update(converted_from=c.converted_from, converted_at=isoformat(c.converted_at),
                           conversion_note=scrub(c.conversion_note) if c.conversion_note else None)
        event_type = "complaint_registered" if c.kind == "complaint" else "feedback_registered"
        # A case's id is its complaint's id: the complaint id is the correlation id.
        # A conversion happens when it is made; the payload keeps the original receipt.
        return build_event(event_type, payload, branch_code=c.branch_code, correlation_id=c.id, sequence=sequence,
                           causation_id=causation_id, occurred_at=c.converted_at or c.received_at)
    if isinstance(event, SaleRecorded):
        s = event.sale
        payload = {"sale_id": s.id, "sold_at": isoformat(s.sold_at), "recorded_at": isoformat(s.recorded_at),
                   "region": s.region, "customer_ref": s.customer_ref, "customer_masked": s.customer.masked(),
                   "contact_consent": s.contact_consent, "items": s.items,
                   "customer_language": s.customer.language}
        return build_event("sale_recorded", payload, branch_code=s.branch_code, correlation_id=s.id,
                           sequence=sequence, causation_id=causation_id, occurred_at=s.recorded_at)
    if isinstance(event, (CustomerMessageSent, CustomerMessageFailed)):
        return _message_outcome(event, sequence)
    raise TypeError(f"intake publishes no event for {type(event).__name__}")


def _message_outcome(event, sequence: int, correlation_id: str | None = None) -> ValidatedEvent:
    payload = {"request_event_id": event.request_event_id, "record_type": event.record_type,
               "record_id": event.record_id}
    if isinstance(event, CustomerMessageSent):
        event_type, payload["channel"] = "customer_message_sent", event.channel
    else:
        event_type = "customer_message_failed"
        payload.update(reason=event.reason, detail=event.detail)
    # A case's id is its complaint's, a return visit's correlation is its sale: the record's
    # id is the requester's correlation id.
    return build_event(event_type, payload, branch_code=event.branch_code,
                       correlation_id=correlation_id or event.record_id, sequence=sequence,
                       causation_id=event.request_event_id, occurred_at=event.at)


def unknown_record(request: dict, at) -> ValidatedEvent:
    """The answer to a request about a complaint or sale intake does not hold: there is no
    record to number it, so it is the first and only event about that id here."""
    p = request["payload"]
    failure = CustomerMessageFailed(request["event_id"], p["record_type"], p["record_id"], request["branch_code"],
                                    at, "unknown_record", f"no {p['record_type']} {p['record_id']} at intake")
    return _message_outcome(failure, 1, correlation_id=request["correlation_id"])
