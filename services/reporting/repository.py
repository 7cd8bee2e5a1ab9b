"""Reporting's repositories over its tables (models.py), opened on each unit of work: the event
log, and the case facts locked per case so that two batches folding events of one case (in any
order: the fold does not mind) never overwrite each other."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from services.reporting import facts as case_facts
from services.reporting import models
from shared.persistence.unit_of_work import Store, UnitOfWork

# The columns KPIs filter and group by, from the folded facts.
_COLUMNS = ("branch_code", "region", "kind", "category", "priority", "channel", "technician_id", "state",
            "received_at", "first_response_at", "first_response_due", "resolved_at", "resolution_due", "closed_at",
            "escalation_level", "reopened", "outcome", "follow_up_score")


class EventLog:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def append(self, events: list[dict], now: datetime) -> list[dict]:
        """The events not logged before (by event id), logged now, in the order given."""
        if not events:
            return []
        t = models.event_log
        rows = [{"event_id": e["event_id"], "source": e["source"], "type": e["type"], "version": e.get("version", 1),
                 "branch_code": e.get("branch_code"), "correlation_id": e["correlation_id"],
                 "sequence": e.get("sequence"), "occurred_at": e["occurred_at"], "logged_at": now,
                 "envelope": e} for e in events]
        new = set(self._uow.execute(insert(t).values(rows).on_conflict_do_nothing(index_elements=["event_id"])
                                    .returning(t.c.event_id)).scalars())
        seen, fresh = set(), []
        for e in events:  # a batch may hold one event twice (a redelivery): once
            if e["event_id"] in new and e["event_id"] not in seen:
                seen.add(e["event_id"])
                fresh.append(e)
        return fresh

    def after(self, last_id: int, limit: int) -> list[tuple[int, dict]]:
        """(log id, envelope) of the events logged after `last_id`, in the order logged."""
        t = models.event_log
        return [(row.id, row.envelope) for row in self._uow.execute(
            sa.select(t.c.id, t.c.envelope).where(t.c.id > last_id).order_by(t.c.id).limit(limit))]


class CaseFacts:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def lock(self, case_ids: list[str], now: datetime) -> dict[str, dict]:
        """The facts of these cases (new ones for cases not seen yet), locked until commit, in
        the order of their ids (two batches never wait for each other in opposite orders)."""
        if not case_ids:
            return {}
        t = models.case_facts
        ids = sorted(set(case_ids))
        self._uow.execute(insert(t).values([{"case_id": i, "facts": case_facts.new_case(i), "updated_at": now}
                                            for i in ids]).on_conflict_do_nothing(index_elements=["case_id"]))
        rows = self._uow.execute(sa.select(t.c.case_id, t.c.facts).where(t.c.case_id.in_(ids))
                                 .order_by(t.c.case_id).with_for_update()).all()
        return {str(row.case_id): row.facts for row in rows}

    def save(self, folded: dict[str, dict], now: datetime) -> None:
        t = models.case_facts
        if not folded:
            return
        self._uow.execute(t.update().where(t.c.case_id == sa.bindparam("id")).values(
            {**{name: sa.bindparam(name) for name in _COLUMNS}, "facts": sa.bindparam("all"),
             "updated_at": sa.bindparam("at")}),
            [{"id": case_id, **{name: facts.get(name) for name in _COLUMNS}, "all": facts,
              "at": now} for case_id, facts in folded.items()])

    def clear(self) -> None:
        self._uow.execute(sa.text("TRUNCATE case_facts"))


class ReportingUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.log = EventLog(self)
        self.cases = CaseFacts(self)


class ReportingStore(Store):
    unit_of_work_class = ReportingUnitOfWork
