"""Aftercare's use cases, first part (issue 10): the visits a sale plans, the follow-up a
resolved case plans, and a reopened case's follow-up cancelled. Plain functions over a store of
units of work; each commits its visits with their events."""
from __future__ import annotations

import logging
from datetime import datetime

from services.aftercare import events
from services.aftercare.domain import Visit, plan_follow_up, plan_return_visits

log = logging.getLogger("closeloop.aftercare")


def _schedule(store, planned_visits, event: dict, now: datetime) -> list[str]:
    """The planned visits stored and published (visit_scheduled); those stored before (a copy
    of the event, under its own or a new event id) are left alone. The ids of the new ones."""
    added = []
    with store.unit_of_work() as uow:
        for planned in planned_visits:
            visit = Visit.schedule(planned, now)
            if uow.visits.add(visit, event["event_id"], now):
                for envelope in events.envelopes(visit, causation_id=event["event_id"]):
                    uow.publish(envelope)
                added.append(visit.id)
    return added


def plan_sale(store, *, event: dict, policy, rules, now: datetime) -> list[str]:
    """`sale_recorded`: a return visit per day the sale's items fall due, in contact hours; none
    without the customer's consent."""
    branch = policy.branch(event["branch_code"])  # unknown: a KeyError, retried then parked
    return _schedule(store, plan_return_visits(event["payload"], branch=branch, rules=rules), event, now)


def plan_case_follow_up(store, *, event: dict, policy, rules, now: datetime) -> list[str]:
    """`case_resolved`: the satisfaction follow-up, `follow_up_after` later in contact hours."""
    branch = policy.branch(event["branch_code"])
    return _schedule(store, [plan_follow_up(event["payload"], branch=branch, rules=rules)], event, now)


def cancel_follow_up(store, *, event: dict, now: datetime) -> list[str]:
    """`case_reopened`: the case's follow-ups still to make are no longer wanted."""
    cancelled = []
    with store.unit_of_work() as uow:
        for visit in uow.visits.open_follow_ups(event["payload"]["case_id"]):
            if visit.cancel("case_reopened", now):
                uow.visits.save(visit, now)
                for envelope in events.envelopes(visit, causation_id=event["event_id"]):
                    uow.publish(envelope)
                cancelled.append(visit.id)
    return cancelled
