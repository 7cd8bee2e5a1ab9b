"""Investigation's retention of personal data, and the legal holds that suspend it.

A case holds no contact in clear, but it holds who the customer is (`customer_ref`, a keyed hash
of the phone, and `customer_masked`) and what staff wrote about them: the description, the first
response, the findings, the written result, the follow-up, notes on remedies and decisions, the
timeline's details and the task data in its process instance. Once a case has been closed longer
than the policy's `retention.personal_data` (P3Y), with no legal hold, its reference and masks go
and those texts lose every phone number, e-mail address and masked name, and the customer's surname
with an honorific (王女士, 王老师: the surname is what the mask kept); the case keeps its shape
(kind, category, priority, branch, times, clocks, owner, remedies' types and amounts,
responsibility, outcome), so counts and KPIs survive.

An HQ admin holds a case (`PUT /v1/cases/{id}/legal-hold`, a dispute or a lawsuit) and releases it
(`DELETE`); each is a timeline entry and an event (`legal_hold_set`, `legal_hold_released`) that
intake follows, so that it keeps the complaint's contact as long. The run mechanism (batches, locks,
the run log, the daily timer) is shared.persistence.anonymisation, which runs KINDS."""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Callable

import sqlalchemy as sa
from marshmallow import Schema, fields

from services.investigation import models
from services.investigation.policy import PERMISSIONS
from shared.calendar.clock import isoformat
from shared.messaging.envelope import build_event
from shared.persistence.anonymisation import RecordKind
from shared.security.auth import Identity
from shared.security.privacy import anonymise_text, surname_from_mask
from shared.web.errors import Conflict, NotFound, ValidationFailed
from shared.web.requests import Strict, Text, load
from shared.workflow.tables import INSTANCES

# -- scrubbing (pure) -------------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# The case's columns of free text that staff write about the customer (a text, or JSON holding texts).
TEXT_COLUMNS = ("description", "pause_reason")
JSON_COLUMNS = ("first_response", "findings", "decision", "written_result", "follow_up", "corrective_action",
                "remedies", "origin")


def scrubber(customer_masked: dict | None) -> Callable[[str], str]:
    """What anonymises one case's texts: numbers, addresses and masks anywhere, and the surname
    its mask kept, with an honorific."""
    surname = surname_from_mask((customer_masked or {}).get("name"))
    return lambda text: anonymise_text(text, surname=surname)


def scrub_json(value, scrub: Callable[[str], str]):
    """Every text inside a JSON value scrubbed; keys, numbers and ids (UUIDs, which a phone
    pattern could take a run of digits of) kept."""
    if isinstance(value, str):
        return value if _UUID.fullmatch(value) else scrub(value)
    if isinstance(value, list):
        return [scrub_json(item, scrub) for item in value]
    if isinstance(value, dict):
        return {key: scrub_json(item, scrub) for key, item in value.items()}
    return value


def scrub_process_state(state: str, scrub: Callable[[str], str]) -> str:
    """The process instance's serialized state with every text value scrubbed: what completed
    tasks were given (a response's message, the findings) is in its data and its tasks' deltas.
    Its structure (keys, ids, task specs, states) has nothing the patterns take."""
    return json.dumps(scrub_json(json.loads(state), scrub), ensure_ascii=False)


def anonymised_case(row, scrub: Callable[[str], str]) -> dict:
    """What changes on the case: no reference, no masks, and each text that held personal data
    scrubbed (the others are left as they are)."""
    values = {name: scrub(getattr(row, name)) if getattr(row, name) else None for name in TEXT_COLUMNS}
    values.update({name: scrub_json(getattr(row, name), scrub) for name in JSON_COLUMNS})
    changed = {name: value for name, value in values.items() if value != getattr(row, name)}
    return {**changed, "customer_ref": None, "customer_masked": {}}


# -- which cases are due ----------------------------------------------------------------------------

def _past_retention(closed_before: datetime):
    c = models.cases
    return sa.and_(c.c.state == "closed", c.c.closed_at < closed_before, c.c.anonymised_at.is_(None))


def _not_held():
    """No legal hold: SQL NULL, or the JSON null a case saved without one holds."""
    hold = models.cases.c.legal_hold
    return sa.or_(hold.is_(None), sa.func.jsonb_typeof(hold) == "null")


def _due(uow, closed_before: datetime, *, limit: int | None, lock: bool) -> list:
    """Closed cases past the retention and not held, oldest closure first. Locked as handlers lock
    a case, through its process instance's row (SKIP LOCKED: a case being worked waits for the
    next run), then read again, so that what changed meanwhile counts."""
    c = models.cases
    find = (sa.select(c.c.id).join(INSTANCES, INSTANCES.c.id == sa.cast(c.c.id, sa.Text))
            .where(_past_retention(closed_before), _not_held()).order_by(c.c.closed_at, c.c.id)
            .limit(limit))
    ids = uow.execute(find.with_for_update(of=INSTANCES, skip_locked=True) if lock else find).scalars().all()
    if not ids:
        return []
    return uow.execute(sa.select(c.c.id, c.c.customer_masked, *(c.c[name] for name in TEXT_COLUMNS + JSON_COLUMNS))
                       .where(c.c.id.in_(ids), _past_retention(closed_before), _not_held())
                       .order_by(c.c.closed_at, c.c.id)).all()


def _held(uow, closed_before: datetime) -> int:
    return uow.execute(sa.select(sa.func.count()).where(_past_retention(closed_before),
                                                        sa.not_(_not_held()))).scalar_one()


def _anonymise(uow, rows: list, now: datetime) -> None:
    """Each case, its timeline's details and its process's data, in the caller's transaction."""
    if not rows:
        return
    scrubs = {str(row.id): scrubber(row.customer_masked) for row in rows}
    c, t = models.cases, models.case_timeline
    for row in rows:
        uow.execute(c.update().where(c.c.id == row.id).values(
            **anonymised_case(row, scrubs[str(row.id)]), anonymised_at=now, updated_at=now))
    for entry in uow.execute(sa.select(t.c.id, t.c.case_id, t.c.detail).where(t.c.case_id.in_(list(scrubs)))).all():
        detail = scrub_json(entry.detail, scrubs[str(entry.case_id)])
        if detail != entry.detail:
            uow.execute(t.update().where(t.c.id == entry.id).values(detail=detail))
    instances = uow.execute(sa.select(INSTANCES.c.id, INSTANCES.c.state).where(INSTANCES.c.id.in_(list(scrubs))))
    for instance in instances.all():
        state = scrub_process_state(instance.state, scrubs[str(instance.id)])
        if state != instance.state:
            uow.execute(INSTANCES.update().where(INSTANCES.c.id == instance.id).values(state=state))


KINDS = (RecordKind("case", due=_due, anonymise=_anonymise, held=_held),)


# -- legal holds ------------------------------------------------------------------------------------

class LegalHoldIn(Strict):
    reason = Text(500, required=True)  # why: a dispute, a lawsuit, a regulator's request


class LegalHoldOut(Schema):
    case_id = fields.String()
    reference = fields.String()
    legal_hold = fields.Dict(allow_none=True)  # {"reason", "by", "at"}; null when not held
    anonymised_at = fields.String(allow_none=True)


LEGAL_HOLD_IN = LegalHoldIn()


def _held_case(uow, identity: Identity, case_id) -> sa.Row:
    """The case, locked as handlers lock it (its process instance's row), or 404 when unknown or
    outside the caller's scope."""
    try:
        case_id = str(uuid.UUID(case_id))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"no case {str(case_id)[:100]}") from None
    uow.execute(sa.select(INSTANCES.c.id).where(INSTANCES.c.id == case_id).with_for_update())
    c = models.cases
    row = uow.execute(sa.select(c.c.id, c.c.reference, c.c.branch_code, c.c.complaint_id, c.c.legal_hold,
                                c.c.anonymised_at, c.c.last_sequence, c.c.origin).where(c.c.id == case_id)).first()
    if row is None or not identity.can_see(row.branch_code):
        raise NotFound(f"no case {case_id}")
    return row


def _view(row, hold: dict | None) -> dict:
    return {"case_id": str(row.id), "reference": row.reference, "legal_hold": hold,
            "anonymised_at": isoformat(row.anonymised_at) if row.anonymised_at else None}


def _change_hold(uow, row, identity: Identity, hold: dict | None, event_type: str, detail: dict, now: datetime,
                 causation_id: str | None) -> None:
    """The case's hold, its timeline entry and its event (the case's next in sequence), together."""
    sequence = row.last_sequence + 1
    payload = {"case_id": str(row.id), "complaint_id": str(row.complaint_id) if row.complaint_id else None,
               "actor": identity.subject, "actor_role": identity.role, **detail}
    if row.origin and row.origin.get("sale_id"):  # an adverse reaction's case: intake keeps the sale
        payload["sale_id"] = row.origin["sale_id"]
    envelope = build_event(event_type, payload, branch_code=row.branch_code, correlation_id=str(row.id),
                           occurred_at=now, sequence=sequence, causation_id=causation_id, source="investigation")
    c = models.cases
    uow.execute(c.update().where(c.c.id == row.id).values(legal_hold=sa.null() if hold is None else hold,
                                                          last_sequence=sequence, updated_at=now))
    uow.insert(models.case_timeline, {"case_id": str(row.id), "at": now, "actor": identity.subject,
                                      "role": identity.role, "what": event_type, "detail": detail})
    uow.publish(envelope)


def set_legal_hold(store, *, identity: Identity, case_id: str, read_body: Callable[[], dict], now: datetime,
                   causation_id: str | None = None) -> dict:
    """An HQ admin keeps the case's personal data past the retention. Again with the same reason:
    nothing changes; with another: the hold is the new one."""
    with store.unit_of_work() as uow:
        row = _held_case(uow, identity, case_id)
        if row.anonymised_at is not None:
            raise Conflict(f"case {row.reference}'s personal data was anonymised on "
                           f"{isoformat(row.anonymised_at)}: there is nothing left to hold")
        PERMISSIONS.require(identity, "case:legal_hold")
        data, errors = load(LEGAL_HOLD_IN, read_body())
        if errors:
            raise ValidationFailed("the legal hold is invalid", fields=errors)
        if row.legal_hold is not None and row.legal_hold.get("reason") == data["reason"]:
            return _view(row, row.legal_hold)
        hold = {"reason": data["reason"], "by": identity.subject, "at": isoformat(now)}
        _change_hold(uow, row, identity, hold, "legal_hold_set", {"reason": data["reason"]}, now, causation_id)
        return _view(row, hold)


def release_legal_hold(store, *, identity: Identity, case_id: str, now: datetime,
                       causation_id: str | None = None) -> dict:
    """The hold ends: the retention counts again from the case's closure (a case closed long ago
    is anonymised by the next run). A case not held stays as it is."""
    with store.unit_of_work() as uow:
        row = _held_case(uow, identity, case_id)
        PERMISSIONS.require(identity, "case:legal_hold")
        if row.legal_hold is not None:
            _change_hold(uow, row, identity, None, "legal_hold_released", {}, now, causation_id)
        return _view(row, None)
