"""Intake's repositories in memory, for the service-layer tests (tests/unit/test_intake_handlers.py)."""
from __future__ import annotations

import copy
import itertools

from services.intake.domain import Numbered
from shared.testing.fakes import FakeStore, FakeUnitOfWork


class FakeRecords:
    def __init__(self, uow, table: str):
        self._uow = uow
        self._rows = uow.table(table)

    def add(self, record) -> None:
        self._rows[record.id] = _stored(record)
        self._uow.track(record)

    def get(self, record_id: str, *, for_update: bool = False):
        found = self._rows.get(record_id)
        return None if found is None else self._uow.track(copy.deepcopy(found))

    def save_progress(self, record) -> None:
        self._rows[record.id] = _stored(record)

    save_conversion = save_progress

    def page(self, *, branches, filters, after, limit):
        rows = [c for c in self._rows.values() if branches is None or c.branch_code in branches]
        for name in ("status", "kind", "priority", "category"):
            if name in filters:
                rows = [c for c in rows if getattr(c, name) == filters[name]]
        if "branch" in filters:
            rows = [c for c in rows if c.branch_code == filters["branch"]]
        if "from_" in filters:
            rows = [c for c in rows if c.received_at >= filters["from_"]]
        if "to" in filters:
            rows = [c for c in rows if c.received_at < filters["to"]]
        rows.sort(key=lambda c: (c.received_at, c.id), reverse=True)
        if after is not None:
            rows = [c for c in rows if (c.received_at, c.id) < after]
        return [copy.deepcopy(c) for c in rows[:limit]]

    def of_customer(self, customer_ref, *, branches, limit):
        rows = [r for r in self._rows.values()
                if r.customer_ref == customer_ref and (branches is None or r.branch_code in branches)]
        rows.sort(key=lambda r: (getattr(r, "received_at", None) or r.sold_at, r.id), reverse=True)
        return [copy.deepcopy(r) for r in rows[:limit]]


class FakeAccessLog:
    def __init__(self, uow):
        self.entries = uow.table("contact_access_log").setdefault("entries", [])

    def add(self, **entry) -> None:
        self.entries.append(entry)


class FakeIntakeUnitOfWork(FakeUnitOfWork):
    def _open(self) -> None:
        super()._open()
        self.complaints = FakeRecords(self, "complaints")
        self.sales = FakeRecords(self, "sales")
        self.contact_access = FakeAccessLog(self)


class FakeIntakeStore(FakeStore):
    unit_of_work_class = FakeIntakeUnitOfWork

    def __init__(self):
        super().__init__()
        self._counters: dict = {}

    def number_complaint(self, branch_code: str, day, *, poster: str, recipient: str | None, limits):
        """No limits here: they are the database's (tests/integration)."""
        return Numbered(next(self._counters.setdefault((branch_code, day), itertools.count(1))), None, True)

    def complaint(self, complaint_id):
        return self.tables.get("complaints", {}).get(complaint_id)


def _stored(record):
    """What a table keeps of a record: its fields, not the events it has yet to publish."""
    kept = copy.deepcopy(record)
    kept.pull_events()
    return kept
