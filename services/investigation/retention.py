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

A case under a legal hold (`Case.hold_legally`, set by an HQ admin through handlers.py) is kept.
The run mechanism (batches, locks, the run log, the daily timer) is shared.persistence.anonymisation,
which runs KINDS."""
from __future__ import annotations

import json
from datetime import datetime
from typing import Callable

import sqlalchemy as sa

from services.investigation import models
from shared.persistence.anonymisation import RecordKind
from shared.security.privacy import scrub_json, scrubber
from shared.workflow.tables import INSTANCES

# -- scrubbing (pure) -------------------------------------------------------------------------------

# The case's columns of free text that staff write about the customer (a text, or JSON holding texts).
TEXT_COLUMNS = ("description", "pause_reason")
JSON_COLUMNS = ("first_response", "findings", "decision", "written_result", "follow_up", "corrective_action",
                "remedies", "origin")


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
