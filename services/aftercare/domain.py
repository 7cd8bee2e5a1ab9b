"""Aftercare's domain, first part (issue 10): what return visits a sale plans, and when a
resolved case's satisfaction follow-up falls due. Plain Python: no ORM, no framework, no wire
format. The visit process (processes/return_visit.bpmn, on shared.workflow) comes next.

A sale plans one visit per day its items fall due (the product type's delay, policy
`aftercare.visit_delays`): items due the same day make one visit. A visit falls due only within
the branch's contact hours (local time, every day): a due time outside them moves to the next
contact hour, never at night. No consent to contact, no visit. Visit ids come from what planned
them, so a duplicated event plans the same visits (and the store refuses the second)."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.calendar.branches import Branch
from shared.calendar.clock import isoformat
from shared.messaging.aggregate import Aggregate

KINDS = ("return", "follow_up")
OPEN = ("scheduled", "in_progress")
ALLERGY_CHECKS = frozenset({"hair_colour", "perm"})  # product types whose visit asks about reactions first
_VISITS = uuid.UUID("0b8f5c7e-9d7a-4f51-8a3c-1f2e6d4b9a20")  # the namespace of visit ids


@dataclass(frozen=True)
class PlannedVisit:
    id: str
    kind: str                      # return (after a sale) or follow_up (after a resolved case)
    branch_code: str
    due_at: datetime
    sale_id: str | None = None
    case_id: str | None = None
    customer_ref: str | None = None
    customer_masked: dict = field(default_factory=dict)
    items: tuple[dict, ...] = ()   # a return visit's items (product type, sku, batch, technician)
    allergy_check: bool = False    # asks about discomfort or allergy first; first in the agent's queue

    @property
    def correlation_id(self) -> str:
        """What the visit's events carry: the sale's id, or the case's."""
        return self.sale_id if self.kind == "return" else self.case_id


def contact_time(at: datetime, branch: Branch, rules) -> datetime:
    """`at` if it falls within the branch's contact hours (its local time), else the next
    contact hour's start: a customer is never called at night."""
    start, end = rules.contact_hours
    local = at.astimezone(branch.zone)
    opens = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    closes = local.replace(hour=end.hour, minute=end.minute, second=end.second, microsecond=0)
    if local < opens:
        return opens
    if local >= closes:
        return (opens + timedelta(days=1)).astimezone(branch.zone)
    return local


def plan_return_visits(sale: dict, *, branch: Branch, rules) -> list[PlannedVisit]:
    """The visits `sale_recorded`'s payload plans: one per local day its items fall due, at the
    earliest of their due times; none without consent or for items whose type needs none."""
    if not sale.get("contact_consent"):
        return []
    sold = datetime.fromisoformat(sale["sold_at"])
    days: dict = {}
    for item in sale["items"]:
        delay = rules.visit_delays.get(item.get("product_type"))
        if delay is None:
            continue
        due = contact_time(sold + timedelta(days=delay), branch, rules)
        days.setdefault(due.date(), []).append((due, item))
    visits = []
    for day, due_items in sorted(days.items()):
        items = tuple(item for _, item in due_items)
        visits.append(PlannedVisit(
            id=str(uuid.uuid5(_VISITS, f"return:{sale['sale_id']}:{day.isoformat()}")), kind="return",
            branch_code=branch.code, due_at=min(due for due, _ in due_items), sale_id=sale["sale_id"],
            customer_ref=sale.get("customer_ref"), customer_masked=dict(sale.get("customer_masked") or {}),
            items=items, allergy_check=any(item.get("product_type") in ALLERGY_CHECKS for item in items)))
    return visits


def plan_follow_up(resolved: dict, *, branch: Branch, rules) -> PlannedVisit:
    """The satisfaction follow-up `case_resolved`'s payload plans (`follow_up_after` later, in
    contact hours). A case resolved again after a reopening plans a follow-up of its own."""
    resolved_at = datetime.fromisoformat(resolved["resolved_at"])
    round_ = resolved.get("reopened", 0)
    return PlannedVisit(
        id=str(uuid.uuid5(_VISITS, f"follow_up:{resolved['case_id']}:{round_}")), kind="follow_up",
        branch_code=branch.code, due_at=contact_time(resolved_at + rules.follow_up_after, branch, rules),
        case_id=resolved["case_id"], sale_id=None, customer_ref=resolved.get("customer_ref"))


@dataclass(frozen=True)
class VisitEvent:
    """A domain event about a visit: its type on the bus and its own payload fields."""
    type: str
    at: datetime
    fields: dict


class Visit(Aggregate):
    """A visit as it is stored and worked (the process that works it comes next)."""

    def __init__(self, planned: PlannedVisit, *, status: str = "scheduled", attempts: int = 0,
                 outcome: dict | None = None):
        self.planned, self.status, self.attempts, self.outcome = planned, status, attempts, outcome

    @property
    def id(self) -> str:
        return self.planned.id

    @classmethod
    def schedule(cls, planned: PlannedVisit, now: datetime) -> "Visit":
        visit = cls(planned)
        visit.record(VisitEvent("visit_scheduled", now, {"due_at": isoformat(planned.due_at)}))
        return visit

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def cancel(self, reason: str, now: datetime) -> bool:
        """A follow-up no longer wanted (its case reopened): True when it was still open."""
        if not self.open:
            return False
        self.status, self.outcome = "cancelled", {"reason": reason, "at": isoformat(now)}
        self.record(VisitEvent("visit_cancelled", now, {"reason": reason}))
        return True
