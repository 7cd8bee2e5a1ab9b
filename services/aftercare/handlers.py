"""Aftercare's use cases: plain functions over a store of units of work and the visit process.
service.py calls them after authentication. Each takes the visit's lock, checks in the API's
error order (404, 409, 403, 400, 422), steps the process, applies what the step means to the
visit, and commits the visit and its events together.

Plans: a sale's return visits, a resolved case's follow-up (each visit with its process
instance, waiting until due), a reopened case's follow-up cancelled. Work: an agent claims the
visit they open (colleagues' "next" passes it by) and their attempt completes the process's
`call` task, ending the claim; its timers send the message after the calls and give the visit up
when nobody answered."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Callable

from services.aftercare import events
from services.aftercare.dependencies import VisitProcess
from services.aftercare.domain import Actor, Visit, follow_up_id, plan_follow_up, plan_return_visits
from services.aftercare.exceptions import VisitClaimed, VisitRuleBroken, VisitStateConflict
from services.aftercare.policy import PERMISSIONS
from services.aftercare.schemas import AttemptIn, ClaimIn, VisitQuery, VisitReadQuery
from shared.calendar.clock import isoformat
from shared.security.auth import Identity
from shared.security.contact import ContactUnavailable
from shared.web.errors import Conflict, NotFound, RuleRefused, ValidationFailed, branch_gone
from shared.web.requests import load, load_query, page, path_id
from shared.workflow import InstanceExists, StepResult, TaskNotWaiting

log = logging.getLogger("closeloop.aftercare")
VISIT_QUERY, VISIT_READ_QUERY, ATTEMPT_IN, CLAIM_IN = VisitQuery(), VisitReadQuery(), AttemptIn(), ClaimIn()
CONTACT_WAIT = 3.0  # seconds: less than the console waits for one call (5 s), so its user hears why


# -- the process and the visit ---------------------------------------------------------------------

def _apply(visit: Visit, result: StepResult, now: datetime, policy) -> None:
    """What a step of the visit's process means for the visit: the message after the calls, or
    the visit given up."""
    for effect in result.effects:
        if effect.kind != "operator":
            continue
        if effect.name == "message_customer":
            visit.message_customer(effect.at, policy.branch(visit.planned.branch_code))
        elif effect.name == "visit_abandoned":
            visit.abandon(effect.at)


def _commit(uow, visit: Visit, now: datetime, causation_id: str | None) -> None:
    uow.visits.save(visit, now)
    for envelope in events.envelopes(visit, causation_id=causation_id):
        uow.publish(envelope)


# -- plans ------------------------------------------------------------------------------------------

def _schedule(store, process: VisitProcess, planned_visits, event: dict, policy, rules, now: datetime) -> list[str]:
    """The planned visits stored with their process (waiting until due) and published
    (visit_scheduled); those stored before (a copy of the event, under its own or a new event
    id: the same visit ids) are left alone. The ids of the new ones."""
    if planned_visits:
        process.register(store.engine)
    added = []
    with store.unit_of_work() as uow:  # with nothing planned too: the event is claimed, taken once
        for planned in planned_visits:
            if planned.kind == "follow_up" and uow.visits.follow_up_cancelled(planned.id):
                log.info("follow-up %s of case %s: the case was reopened since (%s heard late)", planned.id,
                         planned.case_id, event["type"])
                continue
            visit = Visit.schedule(planned, now, rules)
            try:  # its instance first: a twin of this event (a copy, a replay) planned it already, or does now
                result = process.engine.start(uow.conn, visit.id, process.definition, visit.process_data(rules))
            except InstanceExists:
                continue
            _apply(visit, result, now, policy)  # a sale posted late: its visit may be past abandoning already
            uow.visits.add(visit, event["event_id"], now)
            for envelope in events.envelopes(visit, causation_id=event["event_id"]):
                uow.publish(envelope)
            added.append(visit.id)
    return added


def plan_sale(store, *, event: dict, process: VisitProcess, policy, rules, now: datetime) -> list[str]:
    """`sale_recorded`: a return visit per day the sale's items fall due, in contact hours; none
    without the customer's consent."""
    branch = policy.branch(event["branch_code"])  # unknown: a KeyError, retried then parked
    return _schedule(store, process, plan_return_visits(event["payload"], branch=branch, rules=rules), event,
                     policy, rules, now)


def plan_case_follow_up(store, *, event: dict, process: VisitProcess, policy, rules, now: datetime) -> list[str]:
    """`case_resolved`: the satisfaction follow-up, `follow_up_after` later in contact hours."""
    branch = policy.branch(event["branch_code"])
    payload = {k: v for k, v in event["payload"].items() if v is not None}
    resolved = {"resolved_at": event.get("occurred_at"), **payload}  # the schema lets resolved_at out
    return _schedule(store, process, [plan_follow_up(resolved, branch=branch, rules=rules)], event,
                     policy, rules, now)


def cancel_follow_up(store, *, event: dict, process: VisitProcess, now: datetime) -> list[str]:
    """`case_reopened`: the case's follow-ups still to make are no longer wanted; their
    processes end where they stand. The round it ends is remembered, so its `case_resolved`,
    should it come after this (a retried delivery), plans nothing."""
    cancelled = []
    case_id = event["payload"]["case_id"]
    with store.unit_of_work() as uow:
        reopened = event["payload"].get("reopened")
        if reopened:  # the n-th reopening ends the follow-up of the (n-1)-th resolution
            uow.visits.cancel_follow_up(follow_up_id(case_id, reopened - 1), case_id, now)
        for visit in uow.visits.open_follow_ups(case_id):
            if visit.cancel("case_reopened", now):
                process.engine.cancel(uow.conn, visit.id)
                _commit(uow, visit, now, event["event_id"])
                cancelled.append(visit.id)
    return cancelled


# -- the process's timers ----------------------------------------------------------------------------

def fire_timers(store, *, process: VisitProcess, policy, now: datetime, limit: int = 100):
    """One round of the timer poll: the due instances (locked; another replica's are skipped),
    each fired in a savepoint with its visit's change and events."""
    with store.unit_of_work() as uow:
        def on_fired(result: StepResult) -> None:
            with uow.part():
                visit = uow.visits.get(result.instance_id)  # locked by the poll's claim
                if visit is None:
                    log.error("process instance %s has no visit", result.instance_id)
                    return
                _apply(visit, result, now, policy)
                _commit(uow, visit, now, None)

        return process.engine.fire_due(uow.conn, limit, on_fired=on_fired)


# -- reading -----------------------------------------------------------------------------------------

def _visit_in_scope(uow, identity: Identity, visit_id: str, *, lock: bool = False) -> Visit:
    visit = uow.visits.get(visit_id, lock=lock)
    if visit is None or not identity.can_see(visit.planned.branch_code):
        raise NotFound(f"no visit {visit_id}")
    return visit


def list_visits(store, *, identity: Identity, query: dict, policy, now: datetime) -> dict:
    """The agent's queue: open visits due by `due_before` (default now) in the caller's scope,
    allergy checks first, then by when they are next called; another status lists those.
    `unclaimed=true` leaves out the visits a colleague works now (their claim runs)."""
    PERMISSIONS.require(identity, "visit:read")
    params, after = load_query(VISIT_QUERY, query, extra=1)
    if after is not None and (after[0] is None or after[2] not in ("0", "1")):
        raise ValidationFailed("invalid cursor", fields={"cursor": ["not a cursor this API gave out"]})
    branches = identity.branches
    if "branch" in params:  # narrows the scope; a branch outside it lists nothing
        branches = frozenset({params["branch"]}) & (branches if branches is not None else {params["branch"]})
    due_before = params.get("due_before", now if params["status"] == "open" else None)
    limit = params["limit"]
    with store.unit_of_work() as uow:
        visits = uow.visits.queue(branches=branches, status=params["status"], due_before=due_before, after=after,
                                  limit=limit + 1, free_for=(identity.subject, now) if params["unclaimed"] else None)
    return page(visits, limit, lambda v: v.view(now, policy.branches.get(v.planned.branch_code)),
                lambda v: (v.call_at, v.id, "1" if v.planned.allergy_check else "0"))


def get_visit(store, *, identity: Identity, visit_id: str, policy, read_contact: Callable | None,
              now: datetime, query: dict | None = None) -> dict:
    """A visit with the sale or case it follows and its attempts. The customer's contact only
    on request (`contact=true` with a `purpose`): read from intake now for the agent working it,
    logged there with the purpose; without intake, the visit comes with `contact_unavailable`
    saying why. Branch and region roles who may not call, and finished visits, get no contact.
    In the API's order: 404, 403, 400."""
    visit_id = path_id(visit_id, "visit")
    with store.unit_of_work() as uow:
        visit = _visit_in_scope(uow, identity, visit_id)
        PERMISSIONS.require(identity, "visit:read")
    params, errors = load(VISIT_READ_QUERY, query or {})
    if errors:
        raise ValidationFailed("invalid query", fields=errors)
    shown = visit.view(now, policy.branches.get(visit.planned.branch_code), detail=True)
    contact, unavailable = None, None
    if not params["contact"]:
        pass  # not asked: intake is not asked, nothing is logged
    elif not visit.open:
        unavailable = f"the visit is {visit.status}: its customer's contact is not read"
    elif not PERMISSIONS.may(identity, "visit:attempt"):
        unavailable = f"a {identity.role} does not call customers: no contact read"
    elif read_contact is not None:  # asked outside the transaction: no lock held while waiting
        try:
            contact = read_contact(identity, visit.planned.record_id, params["purpose"])
        except ContactUnavailable as why:
            unavailable = str(why)
    return {**shown, "contact": contact, "contact_unavailable": unavailable}


# -- working a visit ----------------------------------------------------------------------------------


def _known_answer(data: dict, policy, errors: dict) -> None:
    """The standard answer an attempt names is one of the chain's (the policy's
    investigation.standard_answers, which reporting counts by id)."""
    chosen, answers = data.get("standard_answer"), policy.sections.get("investigation")
    if chosen is not None and answers is not None and answers.standard_answer(chosen) is None:
        errors.setdefault("standard_answer", []).append(
            "not a standard answer of the chain's policy (GET /v1/standard-answers lists them)")


def record_attempt(store, *, identity: Identity, visit_id: str, read_body: Callable[[], dict],
                   process: VisitProcess, policy, rules, now: datetime, causation_id: str | None = None) -> dict:
    """An agent's call: reached (with the answers), not reached, or a call back asked for. In
    the API's order: 404, 409 (finished, or not due), 403, 400, 422."""
    visit_id = path_id(visit_id, "visit")
    actor = Actor(identity.subject, identity.role)
    with store.unit_of_work() as uow:
        visit = _visit_in_scope(uow, identity, visit_id, lock=True)
        # What is due by now fires first: the timer poll may not have come since the visit fell due
        # (it then calls at once), or since it was to be given up (then it is: 409, as the poll will).
        if visit.open:
            _apply(visit, process.engine.fire_timers(uow.conn, visit_id), now, policy)
        try:
            visit.check_workable(None, now)
        except VisitStateConflict as conflict:
            raise Conflict(str(conflict)) from None
        PERMISSIONS.require(identity, "visit:attempt")
        data, errors = load(ATTEMPT_IN, read_body())
        _known_answer(data, policy, errors)
        if errors:
            raise ValidationFailed("the attempt is invalid", fields=errors)
        branch = policy.branches.get(visit.planned.branch_code)
        if branch is None:  # its contact hours are the branch's: nothing to call by
            raise branch_gone(visit.planned.branch_code)
        try:
            visit.record_attempt(data, actor, now, branch, rules)
            result = process.engine.complete_task(uow.conn, visit_id, "call", visit.process_facts(),
                                                  actor=identity.subject)
        except VisitStateConflict as conflict:
            raise Conflict(str(conflict)) from None
        except VisitRuleBroken as broken:
            raise RuleRefused(str(broken), fields=broken.fields) from None
        except TaskNotWaiting:  # the process is not calling (not due yet: the domain said so first)
            raise Conflict(f"visit {visit_id} is not waiting for a call now") from None
        _apply(visit, result, now, policy)
        _commit(uow, visit, now, causation_id)
        return visit.view(now, branch, detail=True)


# -- who works a visit now ---------------------------------------------------------------------------

class ClaimedByColleague(Conflict):
    """A colleague works the visit now: the 409 names them and when their claim runs out, in the
    message and as `claimed_by` / `claimed_until` beside it."""
    code = "claimed"

    def __init__(self, claimed: VisitClaimed):
        super().__init__(str(claimed))
        self.claimed_by, self.claimed_until = claimed.by, isoformat(claimed.until)

    def to_body(self) -> dict:
        body = super().to_body()
        body["error"].update(claimed_by=self.claimed_by, claimed_until=self.claimed_until)
        return body


def _claim_conflict(conflict: VisitStateConflict) -> Conflict:
    return ClaimedByColleague(conflict) if isinstance(conflict, VisitClaimed) else Conflict(str(conflict))


def claim_visit(store, *, identity: Identity, visit_id: str, read_body: Callable[[], dict], policy, rules,
                now: datetime) -> dict:
    """The agent works the visit from now (`minutes`, else the policy's `claim_for`): colleagues'
    "next" passes it by until the claim runs out, the agent records their attempt, or releases
    it. Their own claim is extended. In the API's order: 404, 409 (finished), 403, 400, then
    409 `claimed` when a colleague's claim runs (read, or won since: one statement decides)."""
    visit_id = path_id(visit_id, "visit")
    actor = Actor(identity.subject, identity.role)
    with store.unit_of_work() as uow:
        visit = _visit_in_scope(uow, identity, visit_id)
        try:
            visit.check_claimable(None, now)  # finished: before the role and the body
        except VisitStateConflict as conflict:
            raise Conflict(str(conflict)) from None
        PERMISSIONS.require(identity, "visit:claim")
        data, errors = load(CLAIM_IN, read_body())
        if errors:
            raise ValidationFailed("the claim is invalid", fields=errors)
        length = timedelta(minutes=data["minutes"]) if "minutes" in data else rules.claim_for
        try:
            claim = visit.claim_for(actor, now, length)
        except VisitStateConflict as conflict:
            raise _claim_conflict(conflict) from None
        won = uow.visits.claim(visit_id, claim, now)
        if won is None:  # a colleague claimed it, or it finished, since it was read: say which
            visit = _visit_in_scope(uow, identity, visit_id)
            try:
                visit.check_claimable(actor.subject, now)
            except VisitStateConflict as conflict:
                raise _claim_conflict(conflict) from None
            raise Conflict(f"visit {visit_id} changed while it was claimed: try again")
        visit.claim = won
        return visit.view(now, policy.branches.get(visit.planned.branch_code), detail=True)


def release_visit(store, *, identity: Identity, visit_id: str, policy, now: datetime) -> dict:
    """The agent puts the visit back: their claim ends (none running: nothing changes). A
    colleague's running claim is theirs to release: 409 `claimed`. In the API's order: 404, 403,
    409."""
    visit_id = path_id(visit_id, "visit")
    actor = Actor(identity.subject, identity.role)
    with store.unit_of_work() as uow:
        visit = _visit_in_scope(uow, identity, visit_id)
        PERMISSIONS.require(identity, "visit:claim")
        try:
            visit.release(actor, now)
        except VisitStateConflict as conflict:
            raise _claim_conflict(conflict) from None
        uow.visits.release(visit_id, actor.subject, now)  # only theirs: a colleague's claim made since stays
        visit = _visit_in_scope(uow, identity, visit_id)
        return visit.view(now, policy.branches.get(visit.planned.branch_code), detail=True)


# -- what others say -------------------------------------------------------------------------------

def message_outcome(store, *, event: dict, now: datetime) -> bool:
    """customer_message_sent / _failed for a message a visit asked for: kept with the visit.
    False: not a visit's request (investigation asks intake too)."""
    payload = event["payload"]
    with store.unit_of_work() as uow:
        visit = uow.visits.messaged(payload["record_id"], payload["request_event_id"])
        if visit is None or not visit.message_outcome(event["type"], payload, now):
            return False
        _commit(uow, visit, now, event["event_id"])
    return True


def follow_legal_hold(store, *, event: dict, now: datetime) -> None:
    """legal_hold_set / _released on a case (and the sale an adverse reaction's case follows):
    the visits they cover keep, or no longer keep, their personal data past the retention."""
    payload = event["payload"]
    subjects = [f"case:{payload['case_id']}"] + ([f"sale:{payload['sale_id']}"] if payload.get("sale_id") else [])
    with store.unit_of_work() as uow:
        uow.legal_holds.follow(subjects, event["type"] == "legal_hold_set", payload.get("reason"),
                               event.get("sequence") or 0, now)
