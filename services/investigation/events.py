"""Investigation's domain events as they travel on the bus: the edge where a case's plain
domain events become validated envelopes (shared.messaging.envelope) for the outbox. A case's
correlation id is its own id (a complaint's case has its complaint's id)."""
from __future__ import annotations

from services.investigation.domain import Case, CaseEvent, CustomerMessage
from shared.messaging.envelope import ValidatedEvent, build_event


def envelopes(case: Case, *, causation_id: str | None) -> list[ValidatedEvent]:
    """Every event the case noted since it was loaded, numbered per case."""
    return [envelope(case, event, sequence, causation_id) for sequence, event in case.pull_events()]


def envelope(case: Case, event: CaseEvent | CustomerMessage, sequence: int,
             causation_id: str | None) -> ValidatedEvent:
    if isinstance(event, CustomerMessage):
        return _message_request(case, event, sequence, causation_id)
    payload = {"case_id": case.id, "complaint_id": case.complaint_id, "actor": event.actor,
               "actor_role": event.actor_role, **event.fields}
    return build_event(event.type, payload, branch_code=case.branch_code, correlation_id=case.id,
                       sequence=sequence, causation_id=causation_id, occurred_at=event.at, source="investigation")


def _message_request(case: Case, message: CustomerMessage, sequence: int,
                     causation_id: str | None) -> ValidatedEvent:
    """Ask intake, the contact holder, to send the case's customer a text."""
    record_type, record_id = case.message_record()
    payload = {"record_type": record_type, "record_id": record_id, "purpose": message.purpose,
               "text": message.text, "language": message.language, "channels": list(message.channels)}
    return build_event("customer_message_requested", payload, branch_code=case.branch_code, correlation_id=case.id,
                       sequence=sequence, causation_id=causation_id, occurred_at=message.at, source="investigation",
                       event_id=message.request_id)
