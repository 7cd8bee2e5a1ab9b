"""Aftercare's repositories over its tables (models.py), opened on each unit of work."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.aftercare import models
from services.aftercare.domain import PlannedVisit, Visit
from shared.persistence.unit_of_work import Store, UnitOfWork


class Visits:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, visit: Visit, planned_by: str, now: datetime) -> bool:
        """The visit, unless one of its id exists (the same event, or a copy of it, planned it):
        False then, and nothing of it is kept."""
        p = visit.planned
        inserted = self._uow.execute(insert(models.visits).values(
            id=p.id, kind=p.kind, branch_code=p.branch_code, due_at=p.due_at, sale_id=p.sale_id, case_id=p.case_id,
            customer_ref=p.customer_ref, customer_masked=p.customer_masked, items=list(p.items),
            allergy_check=p.allergy_check, status=visit.status, attempts=visit.attempts, outcome=visit.outcome,
            planned_by=planned_by, created_at=now, updated_at=now, last_sequence=visit.sequence,
        ).on_conflict_do_nothing(index_elements=["id"]).returning(models.visits.c.id)).first()
        if inserted is None:
            visit.pull_events()  # a copy: its events were published with the first
            return False
        self._uow.track(visit)
        return True

    def get(self, visit_id: str, *, lock: bool = False) -> Visit | None:
        statement = sa.select(models.visits).where(models.visits.c.id == visit_id)
        row = self._uow.execute(statement.with_for_update() if lock else statement).first()
        return None if row is None else self._uow.track(_visit(row))

    def open_follow_ups(self, case_id: str) -> list[Visit]:
        """The case's follow-ups still to make, locked."""
        t = models.visits
        rows = self._uow.execute(sa.select(t).where(t.c.case_id == case_id, t.c.kind == "follow_up",
                                                    t.c.status.in_(models.OPEN_STATUSES))
                                 .order_by(t.c.due_at).with_for_update()).all()
        return [self._uow.track(_visit(row)) for row in rows]

    def save(self, visit: Visit, now: datetime) -> None:
        t = models.visits
        self._uow.execute(t.update().where(t.c.id == visit.id).values(
            status=visit.status, attempts=visit.attempts, outcome=visit.outcome, updated_at=now,
            last_sequence=visit.sequence))


class AftercareUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.visits = Visits(self)


class AftercareStore(Store):
    unit_of_work_class = AftercareUnitOfWork


def _visit(row) -> Visit:
    planned = PlannedVisit(id=str(row.id), kind=row.kind, branch_code=row.branch_code, due_at=row.due_at,
                           sale_id=str(row.sale_id) if row.sale_id else None,
                           case_id=str(row.case_id) if row.case_id else None, customer_ref=row.customer_ref,
                           customer_masked=dict(row.customer_masked), items=tuple(row.items),
                           allergy_check=row.allergy_check)
    visit = Visit(planned, status=row.status, attempts=row.attempts, outcome=row.outcome)
    visit.sequence = row.last_sequence
    return visit
