"""Aftercare's retention of personal data, and the legal holds that suspend it.

A visit holds no contact in clear, but it holds who the customer is (`customer_ref`, a keyed
hash of the phone, and `customer_masked`) and what the customer and the agents said: the
answers (a discomfort's description, suggestions), the attempts' notes and the message's
outcome. Once a visit has been finished (completed, abandoned or cancelled) longer than the
policy's `retention.personal_data` (P3Y), with no legal hold on its case or sale (investigation's
`legal_hold_set`, followed in `legal_holds`), its masks go and those texts lose every phone
number, e-mail address, masked name and surname with an honorific; the visit keeps its shape
(kind, branch, times, items, score, outcome), so counts and KPIs survive. Its process instance
holds only times and counts: nothing to scrub there.

The run mechanism (batches, locks, the run log, the daily timer) is shared.persistence.anonymisation,
which runs KINDS."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from services.aftercare import models
from services.aftercare.repository import LegalHolds
from shared.persistence.anonymisation import RecordKind
from shared.security.privacy import scrub_json, scrubber
from shared.workflow.tables import INSTANCES

JSON_COLUMNS = ("attempts", "outcome", "message")


def _past_retention(finished_before: datetime):
    v = models.visits
    return sa.and_(v.c.finished_at < finished_before, v.c.anonymised_at.is_(None))


def _due(uow, finished_before: datetime, *, limit: int | None, lock: bool) -> list:
    """Finished visits past the retention and not held, oldest first. Locked as handlers lock a
    visit, through its process instance's row (SKIP LOCKED), then read again."""
    v = models.visits
    find = (sa.select(v.c.id).join(INSTANCES, INSTANCES.c.id == sa.cast(v.c.id, sa.Text))
            .where(_past_retention(finished_before), sa.not_(LegalHolds.holding(v)))
            .order_by(v.c.finished_at, v.c.id).limit(limit))
    ids = uow.execute(find.with_for_update(of=INSTANCES, skip_locked=True) if lock else find).scalars().all()
    if not ids:
        return []
    return uow.execute(sa.select(v.c.id, v.c.customer_masked, *(v.c[name] for name in JSON_COLUMNS))
                       .where(v.c.id.in_(ids), _past_retention(finished_before), sa.not_(LegalHolds.holding(v)))
                       .order_by(v.c.finished_at, v.c.id)).all()


def _held(uow, finished_before: datetime) -> int:
    v = models.visits
    return uow.execute(sa.select(sa.func.count()).where(_past_retention(finished_before),
                                                        LegalHolds.holding(v))).scalar_one()


def _anonymise(uow, rows: list, now: datetime) -> None:
    v = models.visits
    for row in rows:
        scrub = scrubber(row.customer_masked)
        values = {name: scrub_json(getattr(row, name), scrub) for name in JSON_COLUMNS}
        uow.execute(v.update().where(v.c.id == row.id).values(
            **values, customer_ref=None, customer_masked={}, anonymised_at=now, updated_at=now))


KINDS = (RecordKind("visit", due=_due, anonymise=_anonymise, held=_held),)
