"""Aftercare's repositories over its tables (models.py), opened on each unit of work.

A visit's lock is its process instance's row lock: every change to a visit (an attempt, a timer,
a cancellation, a message outcome) first locks the instance row, then reads the visit. The engine
locks the same row when it steps the instance, and the timer poll holds it while it fires, so
the two never wait for each other in opposite orders.

An agent's claim is the exception: it changes no process, so it takes no lock. It is one
conditional UPDATE of the visit's row (`claim`, `release`), which PostgreSQL runs one at a time
per row: of two agents claiming together, the second's condition is checked again on the row the
first wrote, and it finds nothing to update."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.aftercare import models
from services.aftercare.domain import Claim, PlannedVisit, Visit
from shared.persistence.unit_of_work import Store, UnitOfWork
from shared.workflow.tables import INSTANCES

OPEN = models.OPEN_STATUSES


class Visits:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, visit: Visit, planned_by: str, now: datetime) -> None:
        """A new visit, queued to go with the unit of work's next statement or commit (in one
        round trip with its events). Its process instance is started first: the instance's id is
        the visit's, so a second planning of one visit stops there (InstanceExists)."""
        p = visit.planned
        self._uow.insert(models.visits, dict(
            id=p.id, kind=p.kind, branch_code=p.branch_code, due_at=p.due_at, sale_id=p.sale_id, case_id=p.case_id,
            record_type=p.record_type, record_id=p.record_id, customer_ref=p.customer_ref,
            customer_masked=p.customer_masked, customer_language=p.customer_language, items=list(p.items),
            follows=p.follows, allergy_check=p.allergy_check, planned_by=planned_by, created_at=now,
            **self._state(visit, now)))
        self._uow.track(visit)

    @staticmethod
    def _state(visit: Visit, now: datetime) -> dict:
        return {"status": visit.status, "call_at": visit.call_at, "abandon_at": visit.abandon_at,
                "attempts": visit.attempts, "message": visit.message, "outcome": visit.outcome,
                "finished_at": visit.finished_at, "updated_at": now, "last_sequence": visit.sequence}

    def _lock(self, visit_ids: list[str]) -> None:
        if visit_ids:
            self._uow.execute(sa.select(INSTANCES.c.id).where(INSTANCES.c.id.in_(visit_ids))
                              .order_by(INSTANCES.c.id).with_for_update())

    def get(self, visit_id: str, *, lock: bool = False) -> Visit | None:
        """The visit; `lock` takes its lock (its process instance's row) until commit first."""
        if lock:
            self._lock([visit_id])
        row = self._uow.execute(sa.select(models.visits).where(models.visits.c.id == visit_id)).first()
        return None if row is None else self._uow.track(_visit(row))

    def _locked(self, where) -> list[Visit]:
        """The visits `where` selects, locked, read again after the lock (a change meanwhile counts)."""
        t = models.visits
        ids = [str(i) for i in self._uow.execute(sa.select(t.c.id).where(*where)).scalars()]
        self._lock(ids)
        rows = self._uow.execute(sa.select(t).where(t.c.id.in_(ids), *where).order_by(t.c.due_at)).all() if ids else []
        return [self._uow.track(_visit(row)) for row in rows]

    def open_follow_ups(self, case_id: str) -> list[Visit]:
        """The case's follow-ups still to make, locked."""
        t = models.visits
        return self._locked([t.c.case_id == case_id, t.c.kind == "follow_up", t.c.status.in_(OPEN)])

    def messaged(self, record_id: str, request_event_id: str) -> Visit | None:
        """The visit that asked intake for this message about this record's customer, locked."""
        t = models.visits
        found = self._locked([t.c.record_id == record_id,
                              t.c.message["request_event_id"].astext == request_event_id])
        return found[0] if found else None

    def cancel_follow_up(self, visit_id: str, case_id: str, now: datetime) -> None:
        """The follow-up `visit_id` is not wanted, whether planned yet or not."""
        self._uow.execute(insert(models.cancelled_follow_ups).values(visit_id=visit_id, case_id=case_id,
                                                                     cancelled_at=now)
                          .on_conflict_do_nothing(index_elements=["visit_id"]))

    def follow_up_cancelled(self, visit_id: str) -> bool:
        t = models.cancelled_follow_ups
        return self._uow.execute(sa.select(sa.literal(1)).where(t.c.visit_id == visit_id)).first() is not None

    def save(self, visit: Visit, now: datetime) -> None:
        """The visit's changed state; its claim only when the change ended it (an attempt, the
        visit finished): a claim made meanwhile is not overwritten by a timer's step."""
        t = models.visits
        values = self._state(visit, now)
        if visit.claim_ended:
            values.update(claimed_by=None, claimed_until=None)
        self._uow.execute(t.update().where(t.c.id == visit.id).values(**values))

    @staticmethod
    def _free_for(subject: str, now: datetime) -> sa.ColumnElement:
        """SQL true when `subject` may take the visit now: nobody's claim runs on it, or theirs does
        (the domain's Claim.held_against, negated)."""
        t = models.visits
        return sa.or_(t.c.claimed_by.is_(None), t.c.claimed_until <= now, t.c.claimed_by == subject)

    def claim(self, visit_id: str, claim: Claim, now: datetime) -> Claim | None:
        """`claim` stored on the open visit if it is still free for its agent now, else None (a
        colleague claimed it, or it finished, since it was read). One statement: of agents
        claiming at once, exactly one wins."""
        t = models.visits
        row = self._uow.execute(
            t.update().where(t.c.id == visit_id, t.c.status.in_(OPEN), self._free_for(claim.by, now))
            .values(claimed_by=claim.by, claimed_until=claim.until, updated_at=now)
            .returning(t.c.claimed_by, t.c.claimed_until)).first()
        return None if row is None else Claim(row.claimed_by, row.claimed_until)

    def release(self, visit_id: str, subject: str, now: datetime) -> bool:
        """`subject`'s claim on the visit ended (run out or not); a colleague's is left alone.
        True when there was one."""
        t = models.visits
        done = self._uow.execute(t.update().where(t.c.id == visit_id, t.c.claimed_by == subject)
                                 .values(claimed_by=None, claimed_until=None, updated_at=now))
        return done.rowcount == 1

    def queue(self, *, branches: frozenset[str] | None, status: str, due_before: datetime | None,
              after: tuple | None, limit: int, free_for: tuple[str, datetime] | None = None) -> list[Visit]:
        """A page of visits in `branches` (None: every branch), allergy checks first, then by
        when they are next called, then id; `after` is the last shown (call_at, id, allergy).
        Open visits are read per branch and per allergy flag, each part a range of the queue
        index, so a branch with a million visits answers as fast as one with ten. `free_for`
        (subject, now) leaves out the visits a colleague's claim holds now."""
        t = models.visits
        statuses = OPEN if status == "open" else (status,)
        if branches is not None and not branches:
            return []
        per_branch = sorted(branches) if branches is not None else [None]
        parts = []
        for allergy in (True, False):
            if after is not None and after[2] == "0" and allergy:
                continue  # the cursor is past the allergy checks
            for branch in per_branch:
                where = [t.c.status.in_(statuses), t.c.allergy_check.is_(allergy)]
                if branch is not None:
                    where.append(t.c.branch_code == branch)
                if due_before is not None:
                    where.append(t.c.call_at <= due_before)
                if free_for is not None:
                    where.append(self._free_for(*free_for))
                if after is not None and (after[2] == "1") == allergy:
                    where.append(sa.tuple_(t.c.call_at, t.c.id) > sa.tuple_(sa.literal(after[0]), sa.literal(after[1])))
                parts.append(sa.select(t).where(*where).order_by(t.c.call_at, t.c.id).limit(limit).subquery().select())
        union = sa.union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        rows = self._uow.execute(sa.select(union).order_by(union.c.allergy_check.desc(), union.c.call_at,
                                                           union.c.id).limit(limit)).all()
        return [_visit(row) for row in rows]


class LegalHolds:
    """Investigation's holds on cases (and an adverse reaction case's sale): held visits keep
    their personal data past the retention. A newer hold event wins over an older one."""

    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def follow(self, subjects: list[str], held: bool, reason: str | None, sequence: int, now: datetime) -> None:
        t = models.legal_holds
        for subject in subjects:
            current = self._uow.execute(sa.select(t.c.last_sequence).where(t.c.subject == subject)
                                        .with_for_update()).scalar()
            if current is not None and current >= sequence:
                continue  # an older event, heard late
            values = {"held": held, "reason": reason, "set_at": now, "last_sequence": sequence}
            self._uow.execute(insert(t).values(subject=subject, **values)
                              .on_conflict_do_update(index_elements=["subject"], set_=values))

    @staticmethod
    def holding(visits) -> sa.ColumnElement:
        """SQL true when a hold covers the visit (its case, or its sale)."""
        t = models.legal_holds
        return sa.exists().where(t.c.held, sa.or_(
            t.c.subject == sa.func.concat("case:", visits.c.case_id),
            t.c.subject == sa.func.concat("sale:", visits.c.sale_id)))


class AftercareUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.visits = Visits(self)
        self.legal_holds = LegalHolds(self)


class AftercareStore(Store):
    unit_of_work_class = AftercareUnitOfWork


def _visit(row) -> Visit:
    planned = PlannedVisit(id=str(row.id), kind=row.kind, branch_code=row.branch_code, due_at=row.due_at,
                           sale_id=str(row.sale_id) if row.sale_id else None,
                           case_id=str(row.case_id) if row.case_id else None, customer_ref=row.customer_ref,
                           customer_masked=dict(row.customer_masked), customer_language=row.customer_language,
                           items=tuple(row.items), allergy_check=row.allergy_check, record_type=row.record_type,
                           record_id=str(row.record_id), follows=dict(row.follows))
    claim = Claim(row.claimed_by, row.claimed_until) if row.claimed_by and row.claimed_until else None
    visit = Visit(planned, status=row.status, call_at=row.call_at, abandon_at=row.abandon_at,
                  attempts=list(row.attempts), outcome=row.outcome, message=row.message, finished_at=row.finished_at,
                  claim=claim)
    visit.sequence = row.last_sequence
    return visit
