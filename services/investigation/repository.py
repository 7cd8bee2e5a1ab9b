"""Investigation's repositories over its tables (models.py), opened on each unit of work: the
handlers ask for cases, not rows.

A case's lock is its process instance's row lock: every change to a case (a task, a timer, a
pause, a message outcome) first locks the instance row, then reads the case. The engine locks
the same row when it steps the instance, and the timer poll holds it while it fires, so the
two never wait for each other in opposite orders."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from services.investigation import models
from services.investigation.domain import Case, OpenTask, SlaClock
from services.investigation.remedies import Remedy
from shared.persistence.unit_of_work import Store, UnitOfWork
from shared.workflow.tables import INSTANCES

_CASE_COLUMNS = ("id", "kind", "complaint_id", "reference", "branch_code", "region", "category", "priority",
                 "severity_flags", "channel", "description", "service", "products", "customer_ref",
                 "customer_masked", "customer_language", "received_at", "opened_at", "process", "state", "owner",
                 "escalation_level", "paused_since", "pause_reason", "first_response", "findings", "decision",
                 "outcome", "closed_at", "written_result", "resolved_at", "follow_up", "corrective_action",
                 "reopened", "origin", "legal_hold", "anonymised_at", "converted_from", "converted_at")
NO_DEADLINE = models.NO_DEADLINE  # sorts tasks without a deadline last (as the list's indexes do)
# What changes after opening.
_PROGRESS = ("state", "owner", "escalation_level", "paused_since", "pause_reason", "first_response", "findings",
             "decision", "outcome", "closed_at", "written_result", "resolved_at", "follow_up", "corrective_action",
             "reopened", "legal_hold", "anonymised_at", "customer_ref", "customer_masked", "description",
             # an inquiry converted into a complaint
             "kind", "category", "priority", "severity_flags", "received_at", "process", "converted_from",
             "converted_at")


class Cases:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow
        self._loaded: dict[str, dict] = {}  # case id -> its task rows as read (what save may skip)

    def add(self, case: Case, now: datetime) -> None:
        row = {name: getattr(case, name) for name in _CASE_COLUMNS}
        self._uow.insert(models.cases, {**row, **self._derived(case, now)})
        self._uow.track(case)
        self._insert_tasks(case, self._task_rows(case, {}, now))
        self._append_timeline(case)

    def get(self, case_id: str, *, lock: bool = False) -> Case | None:
        """The case; `lock` takes its lock (its process instance's row) until commit first."""
        if lock:
            self._uow.execute(sa.select(INSTANCES.c.id).where(INSTANCES.c.id == case_id).with_for_update())
        cases, tasks = models.cases, models.case_tasks
        rows = self._uow.execute(  # the case and its waiting tasks in one round trip
            sa.select(cases, *[c.label(f"task_{c.name}") for c in tasks.c])
            .outerjoin(tasks, tasks.c.case_id == cases.c.id).where(cases.c.id == case_id)
            .order_by(tasks.c.waiting_since, tasks.c.task)).all()
        if not rows:
            return None
        task_rows = [_TaskRow(r) for r in rows if r.task_task is not None]
        case = _case(rows[0], task_rows)
        self._loaded[case.id] = _task_rows_written(case, task_rows)
        return self._uow.track(case)

    def save(self, case: Case, now: datetime) -> None:
        """The case's progress, its waiting tasks and its new timeline entries."""
        values = {name: getattr(case, name) for name in _PROGRESS}
        self._uow.execute(models.cases.update().where(models.cases.c.id == case.id).values(
            **values, **self._derived(case, now)))
        self._save_tasks(case, now)
        self._append_timeline(case)

    @staticmethod
    def _derived(case: Case, now: datetime) -> dict:
        return {"clocks": {name: clock.to_json() for name, clock in case.clocks.items()},
                "remedies": [remedy.to_json() for remedy in case.remedies],
                "next_due": case.next_due(), "last_sequence": case.sequence, "updated_at": now}

    def _save_tasks(self, case: Case, now: datetime) -> None:
        """Rewrite the case's task rows, unless they are what was read (a timer that only warned)."""
        loaded = self._loaded.get(case.id)
        if loaded is None:  # not read through get(): what is there is unknown
            loaded = {r.task: dict(r._mapping) for r in self._uow.execute(
                sa.select(models.case_tasks).where(models.case_tasks.c.case_id == case.id)).all()}
        rows = self._task_rows(case, loaded, now)
        if {row["task"]: row for row in rows} == loaded:
            return
        self._uow.execute(models.case_tasks.delete().where(models.case_tasks.c.case_id == case.id))
        self._insert_tasks(case, rows)
        self._loaded[case.id] = {row["task"]: row for row in rows}

    @staticmethod
    def _task_rows(case: Case, loaded: dict, now: datetime) -> list[dict]:
        rows = []
        for task in case.open_tasks:
            view = case.task_view(task)
            due, warning = (None, None) if case.paused_since else (view["due"], view["warning_at"])
            rows.append({
                "case_id": case.id, "task": task.name, "title": task.title, "roles": list(task.roles),
                "owner_may_complete": task.owner_may_complete, "owner": case.owner if task.owner_may_complete else None,
                "clock": task.clock, "approval": task.approval, "system": task.system,
                "due": datetime.fromisoformat(due) if due else None,
                "warning_at": datetime.fromisoformat(warning) if warning else None,
                "branch_code": case.branch_code,
                "waiting_since": loaded[task.name]["waiting_since"] if task.name in loaded else now})
        return rows

    def _insert_tasks(self, case: Case, rows: list[dict]) -> None:
        if rows:  # not the queued insert: roles is an array, not JSON
            self._uow.execute(models.case_tasks.insert(), rows)

    def _append_timeline(self, case: Case) -> None:
        for entry in case.timeline:
            self._uow.insert(models.case_timeline, {"case_id": case.id, "at": entry.at, "actor": entry.actor,
                                                    "role": entry.role, "what": entry.what, "detail": entry.detail})
        case.timeline.clear()

    def timeline(self, case_id: str) -> list[dict]:
        t = models.case_timeline
        rows = self._uow.execute(sa.select(t.c.at, t.c.actor, t.c.role, t.c.what, t.c.detail)
                                 .where(t.c.case_id == case_id).order_by(t.c.id)).all()
        return [{"at": r.at.isoformat(), "actor": r.actor, "role": r.role, "what": r.what, "detail": r.detail}
                for r in rows]

    def requested(self, case_id: str, request_event_id: str) -> bool:
        """Whether the case asked intake for the message this id names (its timeline says so)."""
        t = models.case_timeline
        return self._uow.execute(sa.select(sa.literal(1)).where(
            t.c.case_id == case_id, t.c.what == "customer_message_requested",
            t.c.detail["request_event_id"].astext == request_event_id)).first() is not None

    def asked_about_sale(self, sale_id: str, request_event_id: str) -> str | None:
        """The case opened for an adverse reaction after `sale_id` that asked intake for this message."""
        t, cases = models.case_timeline, models.cases
        row = self._uow.execute(sa.select(cases.c.id).join(t, t.c.case_id == cases.c.id).where(
            cases.c.origin["sale_id"].astext == sale_id, t.c.what == "customer_message_requested",
            t.c.detail["request_event_id"].astext == request_event_id).limit(1)).first()
        return str(row.id) if row else None

    def page(self, *, branches: frozenset[str] | None, filters: dict, now: datetime, after: tuple | None,
             limit: int) -> list[Case]:
        """Newest first, in the given branches (None: all); `after` is (opened_at, id)."""
        table = models.cases
        statement = sa.select(table)
        if branches is not None:
            statement = statement.where(table.c.branch_code.in_(sorted(branches)))
        for name in ("state", "priority", "owner", "kind", "category"):
            if name in filters:
                statement = statement.where(table.c[name] == filters[name])
        if "branch" in filters:
            statement = statement.where(table.c.branch_code == filters["branch"])
        if filters.get("overdue") is True:
            statement = statement.where(table.c.next_due <= now)
        elif filters.get("overdue") is False:
            statement = statement.where(sa.or_(table.c.next_due.is_(None), table.c.next_due > now))
        if after is not None:
            statement = statement.where(sa.tuple_(table.c.opened_at, table.c.id) < sa.tuple_(
                sa.literal(after[0], sa.DateTime(timezone=True)), sa.cast(after[1], table.c.id.type)))
        statement = statement.order_by(table.c.opened_at.desc(), table.c.id.desc()).limit(limit)
        rows = self._uow.execute(statement).all()
        tasks = self._tasks_of([r.id for r in rows])
        return [_case(row, tasks.get(str(row.id), [])) for row in rows]

    def _tasks_of(self, case_ids: list) -> dict[str, list]:
        if not case_ids:
            return {}
        table = models.case_tasks
        found: dict[str, list] = {}
        for row in self._uow.execute(sa.select(table).where(table.c.case_id.in_(case_ids))
                                     .order_by(table.c.waiting_since, table.c.task)).all():
            found.setdefault(str(row.case_id), []).append(row)
        return found


    def complaints_by_category(self, *, branches: frozenset[str] | None, since: datetime,
                               until: datetime) -> dict[str, int]:
        """Complaints (kind complaint: a converted inquiry counts) received after `since` and by
        `until`, by category, in the given branches (None: all). One grouped read of
        ix_cases_complaints_received."""
        table = models.cases
        statement = (sa.select(table.c.category, sa.func.count())
                     .where(table.c.kind == "complaint", table.c.received_at > since, table.c.received_at <= until))
        if branches is not None:
            statement = statement.where(table.c.branch_code.in_(sorted(branches)))
        return {category: count for category, count in self._uow.execute(statement.group_by(table.c.category))}

    def notices(self, role: str, branches: frozenset[str] | None, before_id: int | None, limit: int) -> list:
        """The staff notices addressed to `role` about cases of `branches` (None: every branch),
        newest first, those older than `before_id`. A role's notices are found newest first
        (ix_notifications_role), each notice's case by its id as text (ix_cases_id_text): the
        subject is text, and a subject that is not a case id is no case's, never an error."""
        scope = "AND c.branch_code = ANY(:branches)" if branches is not None else ""
        after = "AND n.id < :before" if before_id is not None else ""
        return self._uow.execute(sa.text(f"""
            SELECT n.id, n.subject_id, n.body, n.created_at, n.recipient, c.reference, c.branch_code
            FROM notifications n JOIN cases c ON c.id::text = n.subject_id
            WHERE n.audience = 'staff' AND split_part(n.recipient, ';', 1) = :role {scope} {after}
            ORDER BY n.id DESC LIMIT :limit"""), {"role": f"role:{role}", "limit": limit, "before": before_id,
                                                    "branches": sorted(branches) if branches is not None else None}
        ).all()


class Tasks:
    """The waiting tasks across cases: what a caller may complete, in their scope."""

    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def _mine(self, statement, *, role: str, subject: str, branches: frozenset[str] | None, filters: dict):
        """`statement` (over case_tasks, or case_tasks joined to cases) narrowed to the caller's
        waiting tasks (by role, or as the case's owner) in scope and to the list's filters (branch,
        priority, task) but not deadline. Of cases only the priority filter reads: a statement
        given case_tasks alone must join cases when filtered by priority (counts does)."""
        table, cases = models.case_tasks, models.cases
        statement = statement.where(sa.or_(table.c.roles.any(role), table.c.owner == subject))
        if branches is not None:
            statement = statement.where(table.c.branch_code.in_(sorted(branches)))
        if "branch" in filters:
            statement = statement.where(table.c.branch_code == filters["branch"])
        if "priority" in filters:
            statement = statement.where(cases.c.priority == filters["priority"])
        if "task" in filters:
            statement = statement.where(table.c.task == filters["task"])
        return statement

    def for_caller(self, *, role: str, subject: str, branches: frozenset[str] | None, filters: dict,
                   now: datetime, after: tuple | None, limit: int) -> list:
        """Soonest due first (no deadline last), then case and task; `after` is (due or None, case
        id, task). `filters["deadline"]`: "breached" (due now or before) or "soon" (warned, not due).
        The order is that of ix_case_tasks_branch_due and ix_case_tasks_due: a page reads its rows
        in order and stops."""
        table, cases = models.case_tasks, models.cases
        due_key = sa.func.coalesce(table.c.due, sa.literal(NO_DEADLINE, sa.DateTime(timezone=True)))
        statement = self._mine(
            sa.select(table, cases.c.reference, cases.c.priority, cases.c.kind, cases.c.paused_since)
            .join(cases, cases.c.id == table.c.case_id),
            role=role, subject=subject, branches=branches, filters=filters)
        if filters.get("deadline") == "breached":
            statement = statement.where(table.c.due <= now)
        elif filters.get("deadline") == "soon":
            statement = statement.where(table.c.warning_at <= now, table.c.due > now)
        if after is not None:
            due, case_id, task = after
            due = due or NO_DEADLINE
            statement = statement.where(sa.tuple_(due_key, table.c.case_id, table.c.task) > sa.tuple_(
                sa.literal(due, sa.DateTime(timezone=True)), sa.cast(case_id, table.c.case_id.type),
                sa.literal(task)))
        statement = statement.order_by(due_key, table.c.case_id, table.c.task).limit(limit)
        return self._uow.execute(statement).all()

    def counts(self, *, role: str, subject: str, branches: frozenset[str] | None, filters: dict,
               now: datetime) -> dict:
        """How many of the caller's tasks wait, are breaching soon and are breached (the same
        filters as the list but its deadline). Cases are joined only for a priority filter."""
        table, cases = models.case_tasks, models.cases
        source = table.join(cases, cases.c.id == table.c.case_id) if "priority" in filters else table
        row = self._uow.execute(self._mine(
            sa.select(sa.func.count(),
                      sa.func.count().filter(sa.and_(table.c.warning_at <= now, table.c.due > now)),
                      sa.func.count().filter(table.c.due <= now)).select_from(source),
            role=role, subject=subject, branches=branches, filters=filters)).one()
        return {"waiting": row[0], "soon": row[1], "breached": row[2]}


class InvestigationUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.cases = Cases(self)
        self.tasks = Tasks(self)


class InvestigationStore(Store):
    unit_of_work_class = InvestigationUnitOfWork


class _TaskRow:
    """A task's columns from the joined read (`task_<column>`), by their own names."""

    def __init__(self, row):
        self.__dict__.update({c.name: getattr(row, f"task_{c.name}") for c in models.case_tasks.c})


def _task_rows_written(case: Case, task_rows: list) -> dict:
    """The task rows as `_task_rows` would write them, to compare (same keys and values)."""
    return {t.task: {c.name: (str(t.case_id) if c.name == "case_id" else
                              list(t.roles) if c.name == "roles" else getattr(t, c.name))
                     for c in models.case_tasks.c} for t in task_rows}


def _case(row, task_rows) -> Case:
    case = Case(**{name: getattr(row, name) for name in _CASE_COLUMNS if name not in ("id", "complaint_id")},
                id=str(row.id), complaint_id=str(row.complaint_id) if row.complaint_id else None,
                clocks={name: SlaClock.from_json(name, data) for name, data in row.clocks.items()},
                remedies=[Remedy.from_json(data) for data in row.remedies],
                open_tasks=tuple(OpenTask(t.task, t.title, tuple(t.roles), t.owner_may_complete, t.clock, t.approval,
                                          t.system) for t in task_rows))
    case.sequence = row.last_sequence
    return case
