"""Aftercare's domain events as they travel on the bus: a visit's events carry the sale's id
(return visits) or the case's (follow-ups) as their correlation id, numbered per visit. A
message request is addressed to intake about the sale's or complaint's customer."""
from __future__ import annotations

from services.aftercare.domain import Visit, VisitEvent
from shared.messaging.envelope import ValidatedEvent, build_event


def envelopes(visit: Visit, *, causation_id: str | None) -> list[ValidatedEvent]:
    return [envelope(visit, event, sequence, causation_id) for sequence, event in visit.pull_events()]


def envelope(visit: Visit, event: VisitEvent, sequence: int, causation_id: str | None) -> ValidatedEvent:
    p = visit.planned
    payload = event.fields if event.own_payload else {
        "visit_id": p.id, "kind": p.kind, "case_id": p.case_id, "sale_id": p.sale_id,
        "customer_ref": p.customer_ref, **event.fields}
    return build_event(event.type, payload, branch_code=p.branch_code, correlation_id=p.correlation_id,
                       sequence=sequence, causation_id=causation_id, occurred_at=event.at, source="aftercare",
                       event_id=event.event_id)
