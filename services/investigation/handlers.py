"""Investigation's use cases: plain functions over a store of units of work and the case
processes. service.py calls them after authentication. Each takes the case's lock, checks in
the API's error order (404, 409, 403, 400, 422), steps the process, applies what the step means
to the case, and commits the case, its timeline, its events and its staff notices together."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Callable

from services.investigation import events, standard_answers
from services.investigation.dependencies import CaseProcesses
from services.investigation.domain import SYSTEM, Actor, Case, CaseRuleBroken, CaseStateConflict, OpenTask
from services.investigation.policy import PERMISSIONS
from services.investigation.remedies import RemedyRefused
from services.investigation.schemas import (
    PROCESS_TASK, TASK_BODIES, ArchiveQuery, CaseQuery, ContactQuery, LegalHoldIn, NoticeQuery, PauseIn, ResumeIn,
    StandardAnswerQuery, TaskQuery,
)
from shared.calendar.clock import isoformat
from shared.notifications.queue import StaffMessage
from shared.security.contact import ContactUnavailable, contact_reader
from shared.security.auth import Identity
from shared.web.errors import (
    Conflict, Forbidden, NotFound, RuleRefused, ServiceUnavailable, ValidationFailed, branch_gone,
)
from shared.web.requests import load, load_query, page, path_id
from shared.workflow import InstanceExists, StepResult, TaskNotWaiting

log = logging.getLogger("closeloop.investigation")
# A case opened by an adverse reaction has its own id, the same for every copy of one report.
ADVERSE_REACTION_CASES = uuid.UUID("6f1c2a44-52a9-4a53-9d0e-2b7c1f0e7a11")
CASE_QUERY, TASK_QUERY, PAUSE_IN, RESUME_IN = CaseQuery(), TaskQuery(), PauseIn(), ResumeIn()
ARCHIVE_QUERY, LEGAL_HOLD_IN, STANDARD_ANSWER_QUERY = ArchiveQuery(), LegalHoldIn(), StandardAnswerQuery()
CLOCK_SKEW = timedelta(minutes=5)  # a signature this far ahead of the server's clock is still "now"


# -- the process and the case ----------------------------------------------------------------------

def _apply(case: Case, result: StepResult, now: datetime, rules) -> None:
    """What a step of the case's process means for the case: its timers' effects, then the
    tasks it waits on now."""
    for effect in result.effects:
        if effect.kind != "operator":
            continue
        if effect.name == "sla_warning":
            case.clock_warning(effect.params["clock"], effect.at, rules)
        elif effect.name == "sla_breached":
            case.clock_breached(effect.params["clock"], int(effect.params["level"]), effect.at, rules)
        elif effect.name == "promise_deadline":
            case.promise_deadline_passed(effect.at, rules)
        elif effect.name == "corrective_action_deadline":
            case.corrective_action_overdue(effect.at)
    waiting = tuple(OpenTask.from_properties(t.name, t.title, t.properties) for t in result.waiting)
    case.process_moved(waiting, result.completed, now)


def _commit(uow, case: Case, now: datetime, causation_id: str | None, *, new: bool = False) -> None:
    """The case, its new timeline entries, its events and its notices, in the unit of work."""
    if new:
        uow.cases.add(case, now)
    else:
        uow.cases.save(case, now)
    for envelope in events.envelopes(case, causation_id=causation_id):
        uow.publish(envelope)
    for notice in case.notices:
        uow.notify(StaffMessage(role=notice.role, subject_id=case.id, text=notice.text, branch=notice.branch,
                                region=notice.region, language="en"))  # the console will word them in zh
    case.notices.clear()


def _process_data(task: str, data: dict) -> dict:
    """What a completed task gives the process: its data under the task's name (instants as
    text), so a condition may read `record_findings["responsibility"]`."""
    return {task: {k: isoformat(v) if isinstance(v, datetime) else str(v) if isinstance(v, uuid.UUID) else v
                   for k, v in data.items()}}


# -- opening ----------------------------------------------------------------------------------------

def open_case(store, *, event: dict, processes: CaseProcesses, policy, rules, now: datetime) -> bool:
    """A registered complaint, suggestion, praise or inquiry opens its case (the case id is the
    complaint's). A second registration of one complaint (a replay under a new event id)
    opens nothing. A complaint converted from an inquiry converts the inquiry's case in place,
    or, when it comes first (the events out of order), opens the complaint's: the inquiry's
    registration then opens nothing. True when a case was opened or converted."""
    payload = event["payload"]
    branch = policy.branch(event["branch_code"])  # unknown: a KeyError, retried then parked
    processes.register(store.engine)
    converted = payload["kind"] == "complaint" and payload.get("converted_from") == "inquiry"
    with store.unit_of_work() as uow:
        if converted and _convert(uow, event, processes, branch, rules, now):
            return True
        definition = processes.for_kind(payload["kind"])
        case = Case.open(payload, branch=branch, rules=rules, now=now, process=_process_name(definition))
        try:
            # The case's instance exists already (a replay, or the inquiry's registration after its
            # conversion), or a twin in another replica opens it now (this waits for it, then
            # refuses): InstanceExists. Nothing was written: the event is taken, with no effect.
            result = processes.engine.start(uow.conn, case.id, definition, case.process_data())
        except InstanceExists:
            # A converted complaint whose inquiry's registration was handled meanwhile: convert it now.
            if converted and _convert(uow, event, processes, branch, rules, now):
                return True
            log.info("case %s exists already: %s %s opens nothing", payload["complaint_id"], event["type"],
                     event["event_id"])
            return False
        _apply(case, result, now, rules)
        _commit(uow, case, now, event["event_id"], new=True)
    return True


def _process_name(definition) -> str:
    return f"{definition.process_id}@{definition.hash[:12]}"


def _convert(uow, event: dict, processes: CaseProcesses, branch, rules, now: datetime) -> bool:
    """An inquiry's case here becomes the complaint intake converted it into (Case.convert): its
    process instance replaced by a complaint case's, started on the clocks from the original
    receipt, so that a deadline already passed fires its timers now. True when the case is here
    (as an inquiry it is converted; already a complaint, a replay, nothing changes); False: not
    here (yet)."""
    payload = event["payload"]
    case = uow.cases.get(payload["complaint_id"], lock=True)
    if case is None:
        return False
    definition = processes.for_kind("complaint")
    if not case.convert(payload, branch=branch, rules=rules, now=now, process=_process_name(definition)):
        log.info("case %s is a %s already: %s %s changes nothing", case.id, case.kind, event["type"],
                 event["event_id"])
        return True
    result = processes.engine.restart(uow.conn, case.id, definition, case.process_data())
    _apply(case, result, now, rules)
    _commit(uow, case, now, event["event_id"])
    return True


# -- reading ----------------------------------------------------------------------------------------

def _case_in_scope(uow, identity: Identity, case_id: str, *, lock: bool = False) -> Case:
    case = uow.cases.get(case_id, lock=lock)
    if case is None or not identity.can_see(case.branch_code):
        raise NotFound(f"no case {case_id}")
    return case


def get_case(store, *, identity: Identity, case_id: str, now: datetime) -> dict:
    case_id = path_id(case_id, "case")
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id)
        PERMISSIONS.require(identity, "case:read")
        return case.view(now, uow.cases.timeline(case_id))


def list_cases(store, *, identity: Identity, query: dict, now: datetime) -> dict:
    PERMISSIONS.require(identity, "case:read")
    params, after = load_query(CASE_QUERY, query)
    if after is not None and after[0] is None:  # a task list's cursor
        raise ValidationFailed("invalid cursor", fields={"cursor": ["not a cursor this API gave out"]})
    limit = params["limit"]
    with store.unit_of_work() as uow:
        cases = uow.cases.page(branches=identity.branches, filters=params, now=now, after=after, limit=limit + 1)
    return page(cases, limit, lambda c: c.view(now), lambda c: (c.opened_at, c.id))


def list_tasks(store, *, identity: Identity, query: dict, now: datetime) -> dict:
    """The waiting tasks the caller may complete (by role, or as the case's owner) in scope,
    soonest deadline first, with how many wait, are breaching soon and are breached."""
    PERMISSIONS.require(identity, "case:read")
    params, after = load_query(TASK_QUERY, query, extra=1)
    limit = params["limit"]
    mine = {"role": identity.role, "subject": identity.subject, "branches": identity.branches,
            "filters": params, "now": now}
    with store.unit_of_work() as uow:
        rows = uow.tasks.for_caller(**mine, after=after, limit=limit + 1)
        counts = uow.tasks.counts(**mine)
    return {**page(rows, limit, _task_view, lambda r: (r.due, str(r.case_id), r.task)), "counts": counts}


def _task_view(r) -> dict:
    return {"case_id": str(r.case_id), "reference": r.reference, "name": r.task, "title": r.title,
            "roles": list(r.roles), "owner_may_complete": r.owner_may_complete, "clock": r.clock,
            "due": isoformat(r.due) if r.due else None,
            "warning_at": isoformat(r.warning_at) if r.warning_at else None, "priority": r.priority,
            "kind": r.kind, "branch_code": r.branch_code, "waiting_since": isoformat(r.waiting_since),
            "paused": r.paused_since is not None}


def read_archive(store, *, identity: Identity, case_id: str, read_query: Callable[[], dict], read_contact,
                 now: datetime, causation_id: str | None = None) -> dict:
    """A closed case's whole record and the customer's contact (from intake), for HQ and
    auditors, with a stated purpose; the read is published as `archive_accessed`. In the API's
    order: 404, 409 (not closed), 403, 400. Without intake the record still comes, its contact
    marked unavailable."""
    case_id = path_id(case_id, "case")
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id)
        if case.state != "closed":
            raise Conflict(f"case {case.reference} is not closed: the archive holds closed cases")
        PERMISSIONS.require(identity, "case:archive")
        data, errors = load(ARCHIVE_QUERY, read_query())
        if errors:
            raise ValidationFailed("say why the record is read (purpose=...)", fields=errors)
        record_type, record_id = case.message_record()
    contact, unavailable = None, None  # intake is asked outside the transaction: no lock held while waiting
    try:
        contact = read_contact(identity, record_id, data["purpose"])
    except ContactUnavailable as why:
        unavailable = str(why)
    with store.unit_of_work() as uow:
        case = uow.cases.get(case_id, lock=True)
        case.archive_read(_actor(identity), data["purpose"], now, contact is not None)
        _commit(uow, case, now, causation_id)
        return {"case": case.view(now, uow.cases.timeline(case_id)), "contact": contact,
                "contact_unavailable": unavailable, "purpose": data["purpose"], "accessed_at": isoformat(now),
                "accessed_by": identity.subject}


# -- standard answers -------------------------------------------------------------------------------

def list_standard_answers(store, *, identity: Identity, query: dict, policy, rules, now: datetime) -> dict:
    """GET /v1/standard-answers: the policy's answers (of a category, purpose, language) ranked by
    their category's complaints received in the last 90 days in the caller's scope; with
    `case_id` (a case in scope, else 404) each also filled with that case's facts. In order: 403,
    400 naming each bad parameter, 404."""
    PERMISSIONS.require(identity, "standard_answer:read")
    data, errors = load(STANDARD_ANSWER_QUERY, query)
    if "category" in data and rules.categories and data["category"] not in rules.categories:
        errors.setdefault("category", []).append(f"not a category (categories: {', '.join(rules.categories)})")
    if errors:
        raise ValidationFailed("the query is invalid", fields=errors)
    answers = standard_answers.selected(rules.standard_answers, category=data.get("category"),
                                        purpose=data.get("purpose"), language=data.get("language"))
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, path_id(data["case_id"], "case")) if "case_id" in data else None
        complaints = uow.cases.complaints_by_category(branches=identity.branches, since=now - standard_answers.WINDOW,
                                                      until=now)
    facts = case.answer_facts(policy.branches.get(case.branch_code)) if case is not None else None
    return {"answers": [{"id": a.id, "category": a.category, "purpose": a.purpose, "language": a.language,
                         "title": a.title, "text": a.text, "complaints": count,
                         "filled": standard_answers.filled(a, facts) if facts is not None else None}
                        for a, count in standard_answers.ranked(answers, complaints, rules.categories)],
            "window_days": standard_answers.WINDOW.days, "as_of": isoformat(now)}


# -- the customer's contact on request, for the staff member working the case ----------------------

CONTACT_CALL = "intake.get_contact"  # intake's RPC for a record's contact; a grant is made for this call only
CONTACT_WAIT = 3.0  # seconds: less than the console waits for one call (5 s), so its user hears why
CONTACT_QUERY = ContactQuery()


def case_contact_reader(intake_rpc, timeout: float = CONTACT_WAIT):
    """`read(identity, record_id, purpose)` -> the contact intake gives the user working the case
    (logged in intake's contact-access log with the purpose), or ContactUnavailable."""
    return contact_reader(intake_rpc, CONTACT_CALL, timeout)


def read_contact(store, *, identity: Identity, case_id: str, read_query: Callable[[], dict], read_contact,
                 now: datetime) -> dict:
    """The customer's contact, asked of intake now with the caller's identity and stated purpose
    (intake logs the read), for a role that works cases, on a case in its scope that is not
    closed (a closed case's is the archive's). Never stored here. In the API's order: 404, 409,
    403, 400; intake not answering (or refusing): 503 saying why."""
    case_id = path_id(case_id, "case")
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id)
        if case.state == "closed":
            raise Conflict(f"case {case.reference} is closed: its contact is read through the archive "
                           "(GET /v1/archive/cases/{id}, HQ and auditors)")
        PERMISSIONS.require(identity, "case:contact")
        data, errors = load(CONTACT_QUERY, read_query())
        if errors:
            raise ValidationFailed("say why the contact is read (purpose=...)", fields=errors)
        _, record_id = case.message_record()
        reference = case.reference
    try:  # outside the transaction: no lock held while intake is asked
        contact = read_contact(identity, record_id, data["purpose"])
    except ContactUnavailable as why:
        log.warning("contact of case %s not read: %s", case_id, why)
        raise ServiceUnavailable(f"the customer's contact is not available now: {why}", retry_after=5) from None
    return {"case_id": case_id, "reference": reference, "contact": contact, "purpose": data["purpose"],
            "read_at": isoformat(now), "read_by": identity.subject}


# -- legal holds: a case's personal data kept past the retention -----------------------------------

def _hold_view(case: Case) -> dict:
    return {"case_id": case.id, "reference": case.reference, "legal_hold": case.legal_hold,
            "anonymised_at": isoformat(case.anonymised_at) if case.anonymised_at else None}


def set_legal_hold(store, *, identity: Identity, case_id: str, read_body: Callable[[], dict], now: datetime,
                   causation_id: str | None = None) -> dict:
    """An HQ admin keeps the case's personal data (and intake its contact) past the retention.
    In the API's order: 404, 409 (anonymised already), 403, 400."""
    case_id = path_id(case_id, "case")
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id, lock=True)
        if case.anonymised_at is not None:
            raise Conflict(f"case {case.reference}'s personal data was anonymised on "
                           f"{isoformat(case.anonymised_at)}: there is nothing left to hold")
        PERMISSIONS.require(identity, "case:legal_hold")
        data, errors = load(LEGAL_HOLD_IN, read_body())
        if errors:
            raise ValidationFailed("the legal hold is invalid", fields=errors)
        if case.hold_legally(data["reason"], _actor(identity), now):
            _commit(uow, case, now, causation_id)
        return _hold_view(case)


def release_legal_hold(store, *, identity: Identity, case_id: str, now: datetime,
                       causation_id: str | None = None) -> dict:
    """The hold ends: the next retention run takes a case closed long enough ago."""
    case_id = path_id(case_id, "case")
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id, lock=True)
        PERMISSIONS.require(identity, "case:legal_hold")
        if case.release_legal_hold(_actor(identity), now):
            _commit(uow, case, now, causation_id)
        return _hold_view(case)


# -- working a case ---------------------------------------------------------------------------------

def _actor(identity: Identity) -> Actor:
    return Actor(identity.subject, identity.role)


def _branch_of(policy, case: Case):
    """The case's branch as the chain policy has it; one the policy no longer has (its hours,
    its region) leaves nothing to work the case by: 422."""
    branch = policy.branches.get(case.branch_code)
    if branch is None:
        raise branch_gone(case.branch_code)
    return branch


def _resume_for(case: Case, uow, processes: CaseProcesses, actor: Actor | None, now: datetime, policy, rules,
                note: str) -> None:
    """End the wait for the customer: the clocks move on by the pause, the process's timers
    are re-armed from them, and whatever fell due meanwhile fires now."""
    case.resume(actor, now, _branch_of(policy, case), note)
    result = processes.engine.release(uow.conn, case.id, case.process_facts())
    _apply(case, result, now, rules)


def complete_task(store, *, identity: Identity, case_id: str, task: str, read_body: Callable[[], dict],
                  processes: CaseProcesses, policy, rules, now: datetime, causation_id: str | None = None) -> dict:
    """`task` is the API's name: the process's task id, or `reject` (the approval, refused)."""
    case_id = path_id(case_id, "case")
    actor = _actor(identity)
    process_task = PROCESS_TASK.get(task, task)
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id, lock=True)
        try:
            waiting = case.waiting_task(process_task)
        except CaseStateConflict as conflict:
            raise Conflict(str(conflict)) from None
        if not case.may_complete(waiting, actor, rules):
            raise Forbidden(_who_completes(waiting, identity))
        schema = TASK_BODIES.get(task)
        body = read_body()
        if schema is None:
            raise RuleRefused(f"this version of investigation does not complete {task!r} yet",
                              fields={"task": [f"{task} is completed by a later version"]})
        data, errors = load(schema, body)
        if data.get("standard_answer") is not None and rules.standard_answer(data["standard_answer"]) is None:
            errors.setdefault("standard_answer", []).append(
                "not a standard answer of the chain's policy (GET /v1/standard-answers lists them)")
        for name in ("signed_at", "completed_at"):  # what was done is not done in the future
            if data.get(name) is not None and data[name] > now + CLOCK_SKEW:
                errors.setdefault(name, []).append("must not be in the future")
        if errors:
            raise ValidationFailed(f"the {task} data is invalid", fields=errors)
        branch = _branch_of(policy, case)
        if case.paused_since is not None:  # the customer is back: working the case ends the wait
            _resume_for(case, uow, processes, actor, now, policy, rules, note=f"{task} completed")
        try:
            case.complete(task, data, actor, now, rules, branch)
            result = processes.engine.complete_task(uow.conn, case_id, process_task,
                                                    {**_process_data(task, data), **case.process_facts()},
                                                    actor=identity.subject)
        except RemedyRefused as refused:
            fields = {**refused.fields, **({"needed_role": [refused.needed]} if refused.needed else {})}
            raise RuleRefused(str(refused), fields=fields) from None
        except CaseRuleBroken as broken:
            raise RuleRefused(str(broken), fields=broken.fields) from None
        except CaseStateConflict as conflict:  # e.g. an approval of a remedy proposed again since
            raise Conflict(str(conflict)) from None
        except TaskNotWaiting as gone:  # the case's task list was behind its process
            raise Conflict(str(gone)) from None
        _apply(case, result, now, rules)
        _settle_follow_up(case, uow, processes, now, rules, branch)
        _commit(uow, case, now, causation_id)
        return case.view(now, uow.cases.timeline(case_id))


def _who_completes(task: OpenTask, identity: Identity) -> str:
    if task.system:
        return f"{task.name} is completed by investigation itself, on aftercare's follow-up"
    if task.approval:
        return f"{task.name} is decided by a role with remedy authority, not by a {identity.role}"
    owner = " or the case's owner" if task.owner_may_complete else ""
    return f"{task.name} is completed by {', '.join(task.roles)}{owner}, not by a {identity.role}"


def _settle_follow_up(case: Case, uow, processes: CaseProcesses, now: datetime, rules, branch) -> None:
    """The follow-up's outcome, heard before the process reached it (a corrective action was
    still to be opened), applies as soon as the process waits for it."""
    follow_up = next((t for t in case.open_tasks if t.system), None)
    if follow_up is None or not (case.follow_up or {}).get("pending"):
        return
    case.complete(follow_up.name, {}, Actor(SYSTEM, None), now, rules, branch)
    result = processes.engine.complete_task(uow.conn, case.id, follow_up.name, case.process_facts(), actor=SYSTEM)
    _apply(case, result, now, rules)


def pause(store, *, identity: Identity, case_id: str, read_body: Callable[[], dict], processes: CaseProcesses,
          rules, now: datetime, causation_id: str | None = None) -> dict:
    """Waiting for the customer: every running clock stands still until `resume`. A timer that
    fell due before the pause (the poll had not reached it yet) fires in the hold: its warning
    or breach comes first."""
    case_id = path_id(case_id, "case")
    actor = _actor(identity)
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id, lock=True)
        if case.state in ("closed", "resolved") or case.paused_since is not None:
            raise Conflict(f"case {case.reference} is {case.state}: no clock runs to pause"
                           if case.state in ("closed", "resolved") else
                           f"case {case.reference} is already waiting for the customer")
        if not case.may_pause(actor, PERMISSIONS.may(identity, "case:pause")):
            raise Forbidden(f"a {identity.role} who does not own the case may not pause its clocks")
        data, errors = load(PAUSE_IN, read_body())
        if errors:
            raise ValidationFailed("the pause is invalid", fields=errors)
        try:
            case.check_pause()
        except CaseRuleBroken as broken:
            raise RuleRefused(str(broken), fields=broken.fields) from None
        _apply(case, processes.engine.hold(uow.conn, case_id), now, rules)
        case.pause(data["reason"], actor, now)
        _commit(uow, case, now, causation_id)
        return case.view(now, uow.cases.timeline(case_id))


def resume(store, *, identity: Identity, case_id: str, read_body: Callable[[], dict], processes: CaseProcesses,
           policy, rules, now: datetime, causation_id: str | None = None) -> dict:
    case_id = path_id(case_id, "case")
    actor = _actor(identity)
    with store.unit_of_work() as uow:
        case = _case_in_scope(uow, identity, case_id, lock=True)
        if case.paused_since is None:
            raise Conflict(f"case {case.reference} is not waiting for the customer")
        if not case.may_pause(actor, PERMISSIONS.may(identity, "case:pause")):
            raise Forbidden(f"a {identity.role} who does not own the case may not resume its clocks")
        data, errors = load(RESUME_IN, read_body())
        if errors:
            raise ValidationFailed("the resume is invalid", fields=errors)
        _resume_for(case, uow, processes, actor, now, policy, rules, note=data.get("note"))
        _commit(uow, case, now, causation_id)
        return case.view(now, uow.cases.timeline(case_id))


# -- the engine's timers --------------------------------------------------------------------------

def fire_timers(store, *, processes: CaseProcesses, rules, now: datetime, limit: int = 100):
    """One round of the timer poll: the due instances (locked; another replica's are skipped),
    each fired in a savepoint with its case's change, events and notices."""
    with store.unit_of_work() as uow:
        def on_fired(result: StepResult) -> None:
            with uow.part():
                case = uow.cases.get(result.instance_id)  # locked by the poll's claim
                if case is None:
                    log.error("process instance %s has no case", result.instance_id)
                    return
                _apply(case, result, now, rules)
                _commit(uow, case, now, None)

        return processes.engine.fire_due(uow.conn, limit, on_fired=on_fired)


# -- what aftercare says: the follow-up's outcome, adverse reactions -------------------------------

def follow_up_outcome(store, *, event: dict, processes: CaseProcesses, policy, rules, now: datetime) -> bool:
    """visit_completed / visit_abandoned / dissatisfaction_reported about a case's satisfaction
    follow-up: satisfied or no answer closes the case, unsatisfied reopens it (once the process
    reaches the follow-up: a corrective action may come first). A return visit after a sale is
    not about a case: nothing to do. True when the case took it."""
    payload = event["payload"]
    case_id = payload.get("case_id")
    if payload.get("kind", "follow_up") != "follow_up" or not case_id:
        return False
    with store.unit_of_work() as uow:
        case = uow.cases.get(case_id, lock=True)
        if case is None or case.branch_code != event["branch_code"]:
            log.warning("%s %s names case %s, which %s", event["type"], event["event_id"], case_id,
                        "is not here" if case is None else "is another branch's")
            return False
        answered_at = datetime.fromisoformat(event["occurred_at"]) if event.get("occurred_at") else None
        taken = case.follow_up_heard(event["type"], payload, answered_at, now)
        if taken:
            _settle_follow_up(case, uow, processes, now, rules, policy.branch(case.branch_code))
        _commit(uow, case, now, event["event_id"])
    return taken


def open_adverse_reaction_case(store, *, event: dict, processes: CaseProcesses, policy, rules,
                               now: datetime) -> bool:
    """An adverse reaction a return visit found opens an urgent complaint case of its own, linked
    to the sale, technician and batch. Its id comes from the visit, so a replay opens nothing."""
    payload = event["payload"]
    branch = policy.branch(event["branch_code"])
    case_id = str(uuid.uuid5(ADVERSE_REACTION_CASES, payload["visit_id"]))
    processes.register(store.engine)
    try:
        with store.unit_of_work() as uow:
            definition = processes.for_kind("complaint")
            case = Case.open_for_adverse_reaction(case_id, payload, branch=branch, rules=rules, now=now,
                                                  process=_process_name(definition))
            result = processes.engine.start(uow.conn, case.id, definition, case.process_data())
            _apply(case, result, now, rules)
            _commit(uow, case, now, event["event_id"], new=True)
    except InstanceExists:
        log.info("adverse reaction of visit %s has its case %s already", payload["visit_id"], case_id)
        return False
    return True


# -- what intake says about messages to customers ----------------------------------------------

def message_outcome(store, *, event: dict, now: datetime) -> bool:
    """customer_message_sent / _failed for a message a case asked for: on the timeline; a
    failure is also a notice to the branch (call the customer instead). False: not an answer to
    a case's request here (aftercare asks intake about complaints' customers too)."""
    payload = event["payload"]
    with store.unit_of_work() as uow:
        if payload.get("record_type") == "complaint":
            case_id = payload["record_id"]
        else:  # a sale's customer: a case opened by an adverse reaction after it, if one asked
            case_id = uow.cases.asked_about_sale(payload["record_id"], payload["request_event_id"])
        case = uow.cases.get(case_id, lock=True) if case_id else None
        if case is None or not uow.cases.requested(case.id, payload["request_event_id"]):
            return False
        case.message_outcome(event["type"], payload, now)
        _commit(uow, case, now, event["event_id"])
    return True


# -- staff notices for the console ---------------------------------------------------------------
# The escalation and approval messages a case queues for staff (StaffNotice -> the shared
# notifications table, audience "staff", addressed to a role in a branch, a region or every
# branch) are sent through the notification port; the console also lists them. A notice is the
# caller's when it is addressed to the caller's role and its case lies in the caller's scope (the
# address is the case's branch, its region or every branch, so this is the same rule). The
# text is investigation's (English, from masked data); `kind` names what happened, read from
# the wording domain.py gives each notice, so a reader can label it in its own language.

NOTICE_QUERY = NoticeQuery()
# The first wording that matches names the kind (domain.py writes them; the order matters:
# "an approval is overdue since" before "overdue since", "escalated to you" before both).
NOTICE_KINDS = (("approval_requested", "awaits your approval"), ("approval_overdue", "an approval is overdue"),
                ("escalated", "escalated to you"), ("sla_warning", "of the time is gone"),
                ("corrective_action_overdue", "the corrective action owned by"),
                ("customer_message_failed", "could not be sent"), ("overdue", "overdue since"))


def _notice_kind(text: str) -> str:
    return next((kind for kind, words in NOTICE_KINDS if words in text), "other")


def _notice_view(row) -> dict:
    parts = dict(part.split(":", 1) for part in row.recipient.split(";") if ":" in part)
    return {"id": str(row.id), "kind": _notice_kind(row.body), "case_id": str(row.subject_id),
            "reference": row.reference, "branch_code": row.branch_code, "text": row.body,
            "created_at": isoformat(row.created_at),
            "addressed_to": {"role": parts.get("role"), "branch": parts.get("branch"), "region": parts.get("region")}}


def list_notices(store, *, identity: Identity, query: dict) -> dict:
    """GET /v1/notifications: the notices addressed to the caller's role about cases in its
    scope, newest first, keyset-paginated by the notice's id (a 400 names each bad parameter)."""
    params, after = load_query(NOTICE_QUERY, query, extra=1)
    if after is not None and not (after[2].isdigit() and len(after[2]) <= 19):
        raise ValidationFailed("invalid cursor", fields={"cursor": ["not a cursor this API gave out"]})
    limit = params["limit"]
    with store.unit_of_work() as uow:
        rows = uow.cases.notices(identity.role, identity.branches, int(after[2]) if after is not None else None,
                                 limit + 1)
    return page(rows, limit, _notice_view, lambda r: (r.created_at, r.subject_id, str(r.id)))
