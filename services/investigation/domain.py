"""Investigation's domain: what a case is, its SLA clocks, and what each step does to it.
Plain Python: no ORM, no framework, no wire format. The case process (processes/*.bpmn, run
by shared.workflow) decides which task waits next and when a clock's timer fires; this module
says what completing a task or a timer firing means for the case, and records it as domain
events (published by services/investigation/events.py) and timeline entries.

The first-response clock runs from intake's receipt to the first response to the customer; the
resolution clock to the case's resolution. A clock warns at a fraction of its target (policy,
80%), breaches at its deadline, and at each further target's length past it escalates one more
level (policy's escalation ladder: store manager, regional manager, hq_admin). An urgent case
counts every hour; a general or low one warns when 80% of the branch's opening hours before its
deadline have passed, and its later levels move into opening hours (its deadlines come from intake,
already moved). Waiting for the customer pauses
every running clock and extends each deadline by the pause."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

from services.investigation.exceptions import CaseRuleBroken, CaseStateConflict
from services.investigation.policy import BRANCH_ROLES, REGION_ROLES
from services.investigation.remedies import AWAITING, Remedy, cny
from shared.calendar.branches import Branch
from shared.calendar.clock import isoformat
from shared.messaging.aggregate import Aggregate

KINDS = ("complaint", "suggestion", "praise", "inquiry")
CLOCKS = ("first_response", "resolution")     # every case's
TASK_CLOCKS = (*CLOCKS, "approval")            # a remedy awaiting approval runs the third
NEVER = "9999-12-31T23:59:59+00:00"            # a timer the process arms but that never falls due
RESPONSE_CHANNELS = ("phone", "in_person", "sms", "wechat", "email")
MESSAGE_CHANNELS = ("sms", "wechat", "email")  # a response by these is sent to the customer by intake
# A case's state: where the case stands for staff (the process's waiting tasks say what is next).
STATES = ("open", "assigned", "acknowledged", "investigated", "resolved", "reopened", "closed")
# The satisfaction follow-up's outcome (aftercare's events): satisfied or no answer closes the
# case; a score of 1-2 or "not resolved" reopens it.
LOW_SCORE = 2
SYSTEM = "system"  # the actor of what the engine does on its own (timers)


# -- SLA clocks ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlaClock:
    name: str
    started_at: datetime
    due: datetime                       # the deadline, extended by every pause
    warning_at: datetime
    escalations: tuple[datetime, ...]   # when breach level 1, 2... falls (level 1: the deadline)
    stopped_at: datetime | None = None  # the clock's goal was reached (first response given, resolved)
    paused_seconds: int = 0             # total time the clock stood still
    warned: bool = False
    breach_level: int = 0
    base_level: int = 0                 # the case's level when the clock started (a reopened case's is higher)

    @classmethod
    def plan(cls, name: str, started_at: datetime, due: datetime, *, urgent: bool, branch: Branch,
             warning_at: float, levels: int, base_level: int = 0) -> "SlaClock":
        """A clock from its start and deadline: the warning at `warning_at` of the target (of the
        branch's opening hours within it, for a general or low case) and `levels` breach levels,
        one target's length apart (a later level of a general or low case at the next opening)."""
        target = max(due - started_at, timedelta(minutes=1))
        escalations = [due + target * i for i in range(max(levels, 1))]
        if urgent:
            warn = started_at + target * warning_at
        else:  # the share of the time the branch is open before the deadline: staff can act on it
            open_time = branch.open_time_between(started_at, due)
            warn = branch.after_open_time(started_at, open_time * warning_at) if open_time else due
            escalations = [escalations[0], *(branch.next_opening(at) for at in escalations[1:])]
        return cls(name, started_at, due, min(warn, due), tuple(escalations), base_level=base_level)

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def shifted(self, pause: timedelta, *, urgent: bool, branch: Branch) -> "SlaClock":
        """The clock after a pause: every instant still ahead moved on by the pause (into
        opening hours for a general or low case)."""
        if not self.running:
            return replace(self, paused_seconds=self.paused_seconds + int(pause.total_seconds()))
        move = (lambda at: at + pause) if urgent else (lambda at: branch.next_opening(at + pause))
        return replace(self, due=move(self.due), warning_at=move(self.warning_at),
                       escalations=tuple(move(at) for at in self.escalations),
                       paused_seconds=self.paused_seconds + int(pause.total_seconds()))

    def state(self, now: datetime) -> str:
        if not self.running:
            return "met" if self.stopped_at <= self.due else "met_late"
        if now >= self.due:
            return "breached"
        return "warning" if now >= self.warning_at else "running"

    def view(self, now: datetime, paused_since: datetime | None) -> dict:
        """What the API shows: due, remaining (frozen while paused), paused, state."""
        at = paused_since if paused_since is not None and self.running else now
        remaining = None if not self.running else int((self.due - at).total_seconds())
        return {"name": self.name, "started_at": isoformat(self.started_at), "due": isoformat(self.due),
                "warning_at": isoformat(self.warning_at), "remaining_seconds": remaining,
                "paused": paused_since is not None and self.running, "paused_seconds": self.paused_seconds,
                "state": self.state(at), "breach_level": self.breach_level,
                "stopped_at": isoformat(self.stopped_at) if self.stopped_at else None}

    def process_data(self) -> dict:
        """What the process's timers read (`clocks[name]`): ISO instants."""
        return {"warning_at": isoformat(self.warning_at), "due": isoformat(self.due),
                "escalations": [isoformat(at) for at in self.escalations]}

    def to_json(self) -> dict:
        return {**self.process_data(), "started_at": isoformat(self.started_at),
                "stopped_at": isoformat(self.stopped_at) if self.stopped_at else None,
                "paused_seconds": self.paused_seconds, "warned": self.warned, "breach_level": self.breach_level,
                "base_level": self.base_level}

    @classmethod
    def from_json(cls, name: str, data: dict) -> "SlaClock":
        instant = datetime.fromisoformat
        return cls(name, instant(data["started_at"]), instant(data["due"]), instant(data["warning_at"]),
                   tuple(map(instant, data["escalations"])),
                   instant(data["stopped_at"]) if data.get("stopped_at") else None,
                   data.get("paused_seconds", 0), data.get("warned", False), data.get("breach_level", 0),
                   data.get("base_level", 0))


# -- what the case records --------------------------------------------------------------------

@dataclass(frozen=True)
class TimelineEntry:
    at: datetime
    actor: str
    role: str | None
    what: str            # an event type (case_assigned...) or a process step
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CaseEvent:
    """A domain event about the case: its type on the bus and its own payload fields."""
    type: str
    at: datetime
    actor: str | None
    actor_role: str | None
    fields: dict


@dataclass(frozen=True)
class StaffNotice:
    """A message to staff: a role in the case's branch, its region, or every branch (HQ)."""
    role: str
    text: str
    branch: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class CustomerMessage:
    """A message to the customer, sent by intake (the contact holder) on request; `request_id`
    is the request event's id, which intake's answer names."""
    at: datetime
    purpose: str
    text: str
    language: str
    channels: tuple[str, ...]
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class OpenTask:
    """A task the process waits on, as the API lists it."""
    name: str
    title: str | None
    roles: tuple[str, ...]
    owner_may_complete: bool
    clock: str | None
    approval: bool = False   # waits for whoever may grant the remedy; any role with authority may try
    system: bool = False     # completed by the service itself (on the follow-up's outcome)

    @classmethod
    def from_properties(cls, name: str, title: str | None, properties: dict) -> "OpenTask":
        roles = tuple(r for r in (properties.get("roles") or "").replace(" ", "").split(",") if r)
        clock = properties.get("clock") if properties.get("clock") in TASK_CLOCKS else None
        flag = lambda key: str(properties.get(key, "")).lower() == "true"  # noqa: E731
        return cls(name, title, roles, flag("owner_may_complete"), clock, flag("approval"), flag("system"))


@dataclass(frozen=True)
class Actor:
    subject: str
    role: str


class Case(Aggregate):
    def __init__(self, *, id: str, kind: str, complaint_id: str | None, reference: str, branch_code: str, region: str,
                 category: str, priority: str, severity_flags: list, channel: str | None, description: str,
                 service: dict | None, products: list, customer_ref: str | None, customer_masked: dict,
                 customer_language: str, received_at: datetime, opened_at: datetime, process: str,
                 clocks: dict[str, SlaClock], state: str = "open", owner: str | None = None,
                 escalation_level: int = 0, paused_since: datetime | None = None, pause_reason: str | None = None,
                 first_response: dict | None = None, findings: dict | None = None, decision: dict | None = None,
                 outcome: str | None = None, closed_at: datetime | None = None,
                 open_tasks: tuple[OpenTask, ...] = (), remedies: list | None = None,
                 written_result: dict | None = None, resolved_at: datetime | None = None,
                 follow_up: dict | None = None, corrective_action: dict | None = None, reopened: int = 0,
                 origin: dict | None = None, legal_hold: dict | None = None, anonymised_at: datetime | None = None,
                 converted_from: str | None = None, converted_at: datetime | None = None):
        self.id, self.kind, self.complaint_id, self.reference = id, kind, complaint_id, reference
        self.branch_code, self.region, self.category, self.priority = branch_code, region, category, priority
        self.severity_flags, self.channel, self.description = severity_flags, channel, description
        self.service, self.products = service, products
        self.customer_ref, self.customer_masked, self.customer_language = customer_ref, customer_masked, customer_language
        self.received_at, self.opened_at, self.process = received_at, opened_at, process
        self.clocks = dict(clocks)
        self.state, self.owner, self.escalation_level = state, owner, escalation_level
        self.paused_since, self.pause_reason = paused_since, pause_reason
        self.first_response, self.findings, self.decision = first_response, findings, decision
        self.outcome, self.closed_at = outcome, closed_at
        self.open_tasks = tuple(open_tasks)
        self.remedies = list(remedies or [])   # services.investigation.remedies.Remedy, oldest first
        self.written_result, self.resolved_at = written_result, resolved_at
        self.follow_up = follow_up              # the satisfaction follow-up's outcome (and visits heard of)
        self.corrective_action = corrective_action
        self.reopened = reopened                # times reopened after an unsatisfied follow-up
        self.origin = origin                    # an adverse reaction: the sale, visit, technician, batch
        self.legal_hold = legal_hold            # {"reason", "by", "at"} while an HQ admin holds it
        self.anonymised_at = anonymised_at
        self.converted_from, self.converted_at = converted_from, converted_at  # an inquiry converted into a complaint
        self.timeline: list[TimelineEntry] = []   # entries added since loaded (the repository appends them)
        self.notices: list[StaffNotice] = []

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, registered: dict, *, branch: Branch, rules, now: datetime, process: str) -> "Case":
        """A case for a registered complaint, suggestion, praise or inquiry (intake's event payload).
        An inquiry converted at intake whose case is not here yet (the events came out of order)
        opens as the complaint it became, saying so."""
        p = registered
        received = datetime.fromisoformat(p["received_at"])
        clocks = _planned_clocks(p, received, branch, rules)
        converted = ({"converted_from": p["converted_from"], "converted_at": _converted_at(p, now)}
                     if p.get("converted_from") else {})
        case = cls(id=p["complaint_id"], kind=p["kind"], complaint_id=p["complaint_id"], reference=p["reference"],
                   branch_code=branch.code, region=branch.region, category=p["category"], priority=p["priority"],
                   severity_flags=list(p.get("severity_flags") or []), channel=p.get("channel"),
                   description=p["description"], service=p.get("service"), products=list(p.get("products") or []),
                   customer_ref=p.get("customer_ref"), customer_masked=dict(p.get("customer_masked") or {}),
                   customer_language=p.get("customer_language") or "zh", received_at=received, opened_at=now,
                   process=process, clocks=clocks, **converted)
        extra = {"converted_from": case.converted_from} if case.converted_from else {}
        case._happened("case_opened", now, None, dict(extra), kind=case.kind, reference=case.reference,
                       category=case.category, priority=case.priority, severity_flags=case.severity_flags,
                       region=case.region, customer_ref=case.customer_ref, customer_masked=case.customer_masked,
                       received_at=isoformat(received), first_response_due=isoformat(clocks["first_response"].due),
                       resolution_due=isoformat(clocks["resolution"].due), process=process, **extra)
        return case

    def convert(self, registered: dict, *, branch: Branch, rules, now: datetime, process: str) -> bool:
        """An inquiry converted into a complaint at intake (complaint_registered with
        converted_from "inquiry"): in place, whatever its state, it becomes the complaint: its
        category, priority and flags, its clocks planned again from the original receipt and the
        dues intake computed from it (a first response already overdue is breached at once), the
        complaint's process (the caller starts it: open tasks go), open again if it was closed.
        False (nothing changes) unless the case is an inquiry: a replay, or a complaint's own."""
        if self.kind != "inquiry":
            return False
        p = registered
        received = datetime.fromisoformat(p["received_at"])
        before = {"kind": self.kind, "category": self.category, "priority": self.priority, "state": self.state,
                  "outcome": self.outcome, "first_response": self.first_response}
        self.kind, self.category, self.priority = "complaint", p["category"], p["priority"]
        self.severity_flags = list(p.get("severity_flags") or [])
        self.description = p.get("description") or self.description
        self.received_at, self.process = received, process
        self.clocks = _planned_clocks(p, received, branch, rules)
        self.converted_from = "inquiry"
        self.converted_at = _converted_at(p, now)
        self.open_tasks, self.paused_since, self.pause_reason = (), None, None
        self.state, self.outcome, self.closed_at = "open", None, None
        self.first_response = None  # the complaint's is still to give (the inquiry's answer stays on the timeline)
        detail = {"from": before, **({"note": p["conversion_note"]} if p.get("conversion_note") else {})}
        self._happened("case_converted", now, None, detail, from_kind="inquiry", kind=self.kind,
                       category=self.category, priority=self.priority, severity_flags=self.severity_flags,
                       received_at=isoformat(received), converted_at=isoformat(self.converted_at),
                       first_response_due=isoformat(self.clocks["first_response"].due),
                       resolution_due=isoformat(self.clocks["resolution"].due), process=process)
        return True

    @classmethod
    def open_for_adverse_reaction(cls, case_id: str, report: dict, *, branch: Branch, rules, now: datetime,
                                  process: str) -> "Case":
        """An urgent case for an adverse reaction a return visit found (aftercare's event payload):
        its own id, linked to the sale, technician and product batch; its deadlines are the
        policy's for adverse reactions, from the report."""
        p = report
        received = datetime.fromisoformat(p["reported_at"]) if p.get("reported_at") else now
        levels = len(rules.escalation) - 1
        clocks = {name: SlaClock.plan(name, received, received + rules.adverse_reaction[name], urgent=True,
                                      branch=branch, warning_at=rules.warning_at, levels=levels)
                  for name in CLOCKS}
        product = dict(p.get("product") or {})
        day = received.astimezone(branch.zone).strftime("%Y%m%d")
        origin = {"type": "adverse_reaction", "visit_id": p["visit_id"], "sale_id": p["sale_id"],
                  "technician_id": p.get("technician_id"), "product": product or None}
        case = cls(id=case_id, kind="complaint", complaint_id=None, reference=f"{branch.code}-AR-{day}-{case_id[:6].upper()}",
                   branch_code=branch.code, region=branch.region, category="safety", priority="urgent",
                   severity_flags=list(p.get("severity_flags") or ["allergy"]), channel="return_visit",
                   description=p.get("description") or "adverse reaction reported on a return visit",
                   service={"technician_id": p["technician_id"]} if p.get("technician_id") else None,
                   products=[product] if product else [], customer_ref=p.get("customer_ref"),
                   customer_masked=dict(p.get("customer_masked") or {}),
                   customer_language=p.get("customer_language") or "zh", received_at=received, opened_at=now,
                   process=process, clocks=clocks, origin=origin)
        case._happened("case_opened", now, None, {"origin": "adverse_reaction", "sale_id": p["sale_id"]},
                       kind=case.kind, reference=case.reference, category=case.category, priority=case.priority,
                       severity_flags=case.severity_flags, region=case.region, customer_ref=case.customer_ref,
                       customer_masked=case.customer_masked, received_at=isoformat(received),
                       first_response_due=isoformat(clocks["first_response"].due),
                       resolution_due=isoformat(clocks["resolution"].due), process=process, origin=origin)
        return case

    def process_data(self) -> dict:
        """What the process starts with, and reads its timers from."""
        return {"case_id": self.id, "kind": self.kind, "priority": self.priority, "branch_code": self.branch_code,
                **self.process_facts()}

    def process_facts(self) -> dict:
        """What the process's gateways and timers read; the service merges it into every task it
        completes, so the process decides on the case as it stands."""
        remedy, action = self.current_remedy, self.corrective_action or {}
        action_open = action.get("status") == "open"
        return {"clocks": self.clock_data(), "reopened": self.reopened,
                "remedy_status": remedy.status if remedy else None,
                "promise_due": isoformat(remedy.deadline) if remedy is not None and remedy.is_promise else NEVER,
                "needs_corrective_action": self.needs_corrective_action, "corrective_action_open": action_open,
                "corrective_due": action["due"] if action_open else NEVER,
                "follow_up_outcome": (self.follow_up or {}).get("outcome")}

    @property
    def current_remedy(self) -> Remedy | None:
        return self.remedies[-1] if self.remedies else None

    @property
    def needs_corrective_action(self) -> bool:
        """The fault was ours and no corrective action is named yet: the case may not close."""
        return bool(self.findings and self.findings.get("responsibility") == "ours") and self.corrective_action is None

    def message_record(self) -> tuple[str, str]:
        """What intake knows the customer by: the complaint, or the sale of an adverse reaction."""
        if self.complaint_id is None and self.origin:
            return "sale", self.origin["sale_id"]
        return "complaint", self.complaint_id

    def clock_data(self) -> dict:
        return {name: clock.process_data() for name, clock in self.clocks.items()}

    # -- who may do what -------------------------------------------------------------------------

    def waiting_task(self, name: str) -> OpenTask:
        task = next((t for t in self.open_tasks if t.name == name), None)
        if task is None:
            waiting = ", ".join(t.name for t in self.open_tasks) or "none"
            raise CaseStateConflict(f"the task {name!r} is not waiting on case {self.reference} "
                                    f"(waiting: {waiting})")
        return task

    def may_complete(self, task: OpenTask, actor: Actor, rules) -> bool:
        """Whether `actor` may try the task. The service completes a system task itself; any role
        with some authority may try an approval (one without enough is refused naming whom)."""
        if task.system:
            return False
        if task.approval:
            return actor.role in rules.authority
        return actor.role in task.roles or (task.owner_may_complete and self.owner is not None
                                            and actor.subject == self.owner)

    def may_pause(self, actor: Actor, role_allowed: bool) -> bool:
        return role_allowed or (self.owner is not None and actor.subject == self.owner)

    # -- tasks -----------------------------------------------------------------------------------

    def complete(self, task: str, data: dict, actor: Actor, now: datetime, rules=None, branch: Branch | None = None) -> None:
        """What completing `task` (the API's name: `reject` completes the approval too) with its
        validated data means for the case."""
        handler = getattr(self, f"_{task}", None)
        if handler is None:
            raise CaseRuleBroken(f"this version of investigation cannot complete {task!r} yet",
                                 {"task": [f"{task} is completed by a later version"]})
        handler(data, actor, now, rules=rules, branch=branch)

    def _assign(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        self.owner = data["owner"]
        if self.state == "open":
            self.state = "assigned"
        self._happened("case_assigned", now, actor, None, owner=self.owner)

    def _respond(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        clock = self.clocks["first_response"]
        within = now <= clock.due
        self.clocks["first_response"] = replace(clock, stopped_at=now)
        answer = data.get("standard_answer")
        self.first_response = {"message": data["message"], "channel": data["channel"], "by": actor.subject,
                               "at": isoformat(now), "standard_answer": answer}
        self.state = "acknowledged"
        if data["channel"] in MESSAGE_CHANNELS:
            self._ask_intake_to_send(CustomerMessage(now, "first_response", data["message"], self.customer_language,
                                                     (data["channel"],)), actor)
        self._happened("case_acknowledged", now, actor, {"channel": data["channel"], "standard_answer": answer},
                       channel=data["channel"], within_sla=within, standard_answer=answer)

    _acknowledge = _respond  # the feedback case's first response

    def _answer(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        """An inquiry answered: its first response (as respond), which is all it needed: both
        clocks stop and the process ends, closing the case (outcome answered)."""
        self._respond(data, actor, now)
        self._stop_clock("resolution", now)

    def _record_findings(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        signed_at = data.get("signed_at") or now
        if signed_at < self.received_at:
            raise CaseRuleBroken("the findings cannot be signed before the complaint was received",
                                 {"signed_at": [f"must not be before {isoformat(self.received_at)}"]})
        self.findings = {**{k: v for k, v in data.items() if k != "signed_at"}, "signed_at": isoformat(signed_at),
                         "recorded_by": actor.subject, "recorded_at": isoformat(now)}
        self.state = "investigated"
        self._happened("findings_recorded", now, actor, {"responsibility": data["responsibility"]},
                       facts=data["facts"], root_cause=data["root_cause"], responsibility=data["responsibility"],
                       signed_by=data["signed_by"], signed_at=isoformat(signed_at))

    def _decide(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        self.decision = {**data, "by": actor.subject, "at": isoformat(now)}
        self._happened("suggestion_decided", now, actor, {"decision": data["decision"]}, decision=data["decision"])

    def _pass_on(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        self.decision = {**data, "by": actor.subject, "at": isoformat(now)}
        self._happened("praise_passed_on", now, actor, {"to": data["to"]}, to=list(data["to"]))


    # -- remedies --------------------------------------------------------------------------------

    def _propose_remedy(self, data: dict, actor: Actor, now: datetime, *, rules, **_) -> None:
        remedy = Remedy.propose(data, by=actor.subject, role=actor.role, now=now, rules=rules)
        self.remedies.append(remedy)
        self._happened("remedy_proposed", now, actor, {"remedy_id": remedy.id, "type": remedy.type,
                                                       "amount": remedy.amount, "status": remedy.status},
                       **self._remedy_fields(remedy), status=remedy.status, approvers=list(remedy.approvers),
                       note=remedy.note)
        if remedy.status == AWAITING:
            self.clocks["approval"] = SlaClock.plan("approval", now, now + rules.approval_time, urgent=True,
                                                    branch=None, warning_at=rules.warning_at, levels=2)
            role = remedy.approvers[0]
            self.notices.append(self._notice(role, f"[{self.reference}] a {remedy.type} of {cny(remedy.amount)} CNY "
                                                   f"awaits your approval by {isoformat(self.clocks['approval'].due)}"))
        else:  # within the proposer's own authority: it goes ahead
            self._granted(remedy, actor, now)

    def _decided_remedy(self, data: dict) -> Remedy:
        """The remedy awaiting the decision: the one the approver names, if they name one."""
        remedy = self.current_remedy
        if data.get("remedy_id") is not None and str(data["remedy_id"]) != remedy.id:
            raise CaseStateConflict(f"remedy {data['remedy_id']} is no longer the one awaiting approval "
                                    f"(now: {remedy.id}, a {remedy.type} of {cny(remedy.amount)} CNY)")
        return remedy

    def _approve(self, data: dict, actor: Actor, now: datetime, *, rules, **_) -> None:
        remedy = self._decided_remedy(data).approve(by=actor.subject, role=actor.role, now=now, rules=rules)
        self.remedies[-1] = remedy
        self._stop_clock("approval", now)
        self._granted(remedy, actor, now, data.get("note"))

    def _reject(self, data: dict, actor: Actor, now: datetime, *, rules, **_) -> None:
        remedy = self._decided_remedy(data)
        self.remedies[-1] = remedy.reject(by=actor.subject, role=actor.role, reason=data["reason"], now=now,
                                          rules=rules)
        self._stop_clock("approval", now)
        self._happened("remedy_rejected", now, actor, {"remedy_id": remedy.id, "reason": data["reason"]},
                       remedy_id=remedy.id, type=remedy.type, amount=remedy.amount, reason=data["reason"])

    def _granted(self, remedy: Remedy, actor: Actor, now: datetime, note: str | None = None) -> None:
        detail = {"remedy_id": remedy.id, **({"note": note} if note else {})}
        self._happened("remedy_approved", now, actor, detail, **self._remedy_fields(remedy),
                       within_authority=not remedy.approvers)
        if remedy.is_promise:
            self._happened("promise_made", now, actor, {"remedy_id": remedy.id, "deadline": isoformat(remedy.deadline)},
                           **self._remedy_fields(remedy))

    def _fulfil(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        remedy = self.current_remedy.fulfil(now=now)
        self.remedies[-1] = remedy
        detail = {"remedy_id": remedy.id, **({"note": data["note"]} if data.get("note") else {})}
        self._happened("remedy_fulfilled", now, actor, detail, **self._remedy_fields(remedy),
                       fulfilled_at=isoformat(now), promise=remedy.promise)
        if remedy.promise == "kept":
            self._happened("promise_kept", now, actor, {"remedy_id": remedy.id}, **self._remedy_fields(remedy),
                           fulfilled_at=isoformat(now))

    def promise_deadline_passed(self, now: datetime, rules) -> None:
        """The promise's timer fired: unfulfilled, it is broken, and the case goes one level up."""
        remedy = self.current_remedy
        broken = remedy.deadline_passed(now) if remedy is not None else None
        if broken is None:
            return
        self.remedies[-1] = broken
        self._happened("promise_broken", now, None, {"remedy_id": remedy.id, "deadline": isoformat(remedy.deadline)},
                       **self._remedy_fields(remedy))
        self._escalate(min(self.escalation_level + 1, len(rules.escalation) - 1), now, rules, reason="promise_broken",
                       why=f"the {remedy.type} promised by {isoformat(remedy.deadline)} was not given")

    @staticmethod
    def _remedy_fields(remedy: Remedy) -> dict:
        return {"remedy_id": remedy.id, "type": remedy.type, "amount": remedy.amount, "currency": "CNY",
                "deadline": isoformat(remedy.deadline) if remedy.deadline else None}

    # -- the written result, the follow-up, closure ----------------------------------------------

    def _notify_customer(self, data: dict, actor: Actor, now: datetime, *, branch: Branch, **_) -> None:
        completed_at = data["completed_at"]
        if completed_at < self.received_at:
            raise CaseRuleBroken("the measures cannot be completed before the complaint was received",
                                 {"completed_at": [f"must not be before {isoformat(self.received_at)}"]})
        answer = data.get("standard_answer")
        result = {"measures": data["measures"], "completed_at": isoformat(completed_at),
                  "responsible": data["responsible"], "follow_up": data["follow_up"], "by": actor.subject,
                  "at": isoformat(now), "language": self.customer_language, "standard_answer": answer}
        self.written_result = result
        text = written_result_text(self.customer_language, reference=self.reference, measures=data["measures"],
                                   completed_at=completed_at.astimezone(branch.zone).strftime("%Y-%m-%d %H:%M"),
                                   responsible=data["responsible"], follow_up=data["follow_up"])
        message = CustomerMessage(now, "written_result", text, self.customer_language, MESSAGE_CHANNELS)
        self._ask_intake_to_send(message, actor)
        self._happened("customer_notified", now, actor, {"request_event_id": message.request_id,
                                                         "standard_answer": answer},
                       request_event_id=message.request_id, language=self.customer_language,
                       completed_at=result["completed_at"], responsible=data["responsible"],
                       measures=data["measures"], follow_up=data["follow_up"], standard_answer=answer)
        clock = self.clocks["resolution"]
        within = now <= clock.due
        self._stop_clock("resolution", now)
        self.state, self.resolved_at = "resolved", now
        record_type, record_id = self.message_record()
        remedy = self.current_remedy
        self._happened("case_resolved", now, actor, {"within_sla": within}, reference=self.reference,
                       resolved_at=isoformat(now), within_sla=within, customer_ref=self.customer_ref,
                       customer_language=self.customer_language, record_type=record_type, record_id=record_id,
                       responsibility=(self.findings or {}).get("responsibility"), reopened=self.reopened,
                       remedy=self._remedy_fields(remedy) if remedy else None, follow_up_plan=data["follow_up"])

    def _open_corrective_action(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        if data["due"] <= now:
            raise CaseRuleBroken("a corrective action is due in the future", {"due": ["must be after now"]})
        self.corrective_action = {"action": data["action"], "owner": data["owner"], "due": isoformat(data["due"]),
                                  "status": "open", "opened_by": actor.subject, "opened_at": isoformat(now)}
        self._happened("corrective_action_opened", now, actor, {"owner": data["owner"], "due": isoformat(data["due"])},
                       action=data["action"], owner=data["owner"], due=isoformat(data["due"]))

    def _close_corrective_action(self, data: dict, actor: Actor, now: datetime, **_) -> None:
        action = self.corrective_action
        on_time = now <= datetime.fromisoformat(action["due"])
        self.corrective_action = {**action, "status": "done", "done_at": isoformat(now), "done_by": actor.subject,
                                  "on_time": on_time, **({"note": data["note"]} if data.get("note") else {})}
        self._happened("corrective_action_closed", now, actor, {"on_time": on_time}, action=action["action"],
                       owner=action["owner"], due=action["due"], done_at=isoformat(now), on_time=on_time)

    def corrective_action_overdue(self, now: datetime) -> None:
        """The action's due date passed while it is open: its owner's store manager hears of it."""
        action = self.corrective_action or {}
        if action.get("status") != "open" or action.get("overdue_noticed"):
            return
        self.corrective_action = {**action, "overdue_noticed": isoformat(now)}
        self.timeline.append(TimelineEntry(now, SYSTEM, None, "corrective_action_overdue", {"due": action["due"]}))
        self.notices.append(self._notice("store_manager", f"[{self.reference}] the corrective action owned by "
                                                          f"{action['owner']} was due {action['due']}: "
                                                          f"{action['action'][:200]}"))

    def follow_up_heard(self, event_type: str, payload: dict, answered_at: datetime | None, now: datetime) -> bool:
        """Aftercare's word on the satisfaction follow-up: `visit_completed`, `visit_abandoned` or
        `dissatisfaction_reported`. True when it stands as the outcome the case waits for (applied
        when the process reaches the follow-up); a visit heard of already, or a word that comes
        when the case is not resolved (a late one about an earlier round), changes nothing."""
        follow = dict(self.follow_up or {})
        visits = list(follow.get("visits", []))
        visit_id = payload["visit_id"]
        if visit_id in visits:
            return False
        visits.append(visit_id)
        follow["visits"] = visits
        self.follow_up = follow
        score, resolved = payload.get("score"), (payload.get("answers") or {}).get("resolved", payload.get("resolved"))
        if event_type == "visit_abandoned":
            outcome, closure = "close", "no_feedback"
        elif event_type == "dissatisfaction_reported" or (score is not None and score <= LOW_SCORE) or resolved is False:
            outcome, closure = "reopen", None
        else:
            outcome, closure = "close", "satisfied"
        detail = {"visit_id": visit_id, "event": event_type, "score": score, "outcome": closure or outcome}
        stale = answered_at is not None and self.resolved_at is not None and answered_at < self.resolved_at
        if self.state != "resolved" or follow.get("pending") or stale:  # not about this round
            self.timeline.append(TimelineEntry(now, SYSTEM, None, "follow_up_ignored",
                                               {**detail, "state": self.state, "stale": stale}))
            return False
        follow["pending"] = {"outcome": outcome, "closure": closure, "visit_id": visit_id, "score": score,
                             "resolved": resolved, "event": event_type}
        self.timeline.append(TimelineEntry(now, SYSTEM, None, "follow_up_received", detail))
        return True

    def _await_follow_up(self, data: dict, actor: Actor, now: datetime, *, rules, branch: Branch, **_) -> None:
        """The process reached the follow-up and the case has its outcome: close or reopen."""
        follow = dict(self.follow_up or {})
        pending = follow.pop("pending", None)
        if pending is None:
            raise CaseStateConflict(f"case {self.reference} has no follow-up outcome yet")
        follow["outcome"] = pending["outcome"]
        follow.setdefault("rounds", []).append({**pending, "at": isoformat(now)})
        self.follow_up = follow
        if pending["outcome"] == "close":
            self._close(pending["closure"], now)
        else:
            self._reopen(pending, now, rules, branch)

    def _close(self, outcome: str, now: datetime) -> None:
        self.clocks = {n: c if not c.running else replace(c, stopped_at=now) for n, c in self.clocks.items()}
        self.state, self.closed_at, self.outcome, self.paused_since = "closed", now, outcome, None
        self._happened("case_closed", now, None, {"outcome": outcome}, outcome=outcome,
                       corrective_action=(self.corrective_action or {}).get("status"))

    def _reopen(self, pending: dict, now: datetime, rules, branch: Branch) -> None:
        """One escalation level higher, back to the owner, under a new resolution clock as long as
        the first one's target."""
        old = self.clocks["resolution"]
        target = max(old.due - old.started_at - timedelta(seconds=old.paused_seconds), timedelta(hours=1))
        urgent = self.priority == "urgent"
        due = now + target if urgent else branch.next_opening(now + target)
        level = min(self.escalation_level + 1, len(rules.escalation) - 1)
        self.reopened += 1
        self.clocks["resolution"] = SlaClock.plan("resolution", now, due, urgent=urgent, branch=branch,
                                                  warning_at=rules.warning_at, levels=len(rules.escalation) - 1,
                                                  base_level=level)
        self.state, self.resolved_at = "reopened", None
        reason = "not resolved" if pending.get("resolved") is False else f"score {pending.get('score')}"
        self._happened("case_reopened", now, None, {"visit_id": pending["visit_id"], "reason": reason},
                       escalation_level=level, reopened=self.reopened, visit_id=pending["visit_id"],
                       score=pending.get("score"), reason=reason, resolution_due=isoformat(due))
        self._escalate(level, now, rules, reason="reopened",
                       why=f"the customer was not satisfied ({reason}); back to {self.owner or 'the owner'}")

    def _escalate(self, level: int, now: datetime, rules, *, reason: str, why: str) -> None:
        """The case at `level` (never lower): an event when it goes up, a notice to that level."""
        role = rules.escalation_role(level)
        target = self._notice(role, f"[{self.reference}] escalated to you (level {level}): {why}")
        self.notices.append(target)
        if level > self.escalation_level:
            self.escalation_level = level
            self._happened("case_escalated", now, None, {"level": level, "to_role": role, "reason": reason},
                           level=level, to_role=role, to_branch=target.branch, to_region=target.region, reason=reason)

    def _stop_clock(self, name: str, now: datetime) -> None:
        clock = self.clocks.get(name)
        if clock is not None and clock.running:
            self.clocks[name] = replace(clock, stopped_at=now)

    def _ask_intake_to_send(self, message: CustomerMessage, actor: Actor | None) -> None:
        self.record(message)
        self.timeline.append(TimelineEntry(message.at, actor.subject if actor else SYSTEM, actor.role if actor else None,
                                           "customer_message_requested",
                                           {"request_event_id": message.request_id, "purpose": message.purpose,
                                            "channels": list(message.channels)}))

    # -- retention -------------------------------------------------------------------------------

    def hold_legally(self, reason: str, actor: Actor, now: datetime) -> bool:
        """An HQ admin keeps the case's personal data past the retention (a dispute, a lawsuit).
        The same reason again changes nothing (False); another replaces the hold."""
        if self.anonymised_at is not None:
            raise CaseStateConflict(f"case {self.reference}'s personal data was anonymised on "
                                    f"{isoformat(self.anonymised_at)}: there is nothing left to hold")
        if self.legal_hold is not None and self.legal_hold.get("reason") == reason:
            return False
        self.legal_hold = {"reason": reason, "by": actor.subject, "at": isoformat(now)}
        self._happened("legal_hold_set", now, actor, {"reason": reason}, reason=reason, **self._sale_link())
        return True

    def release_legal_hold(self, actor: Actor, now: datetime) -> bool:
        """The hold ends: the retention counts again from the closure. False: none was held."""
        if self.legal_hold is None:
            return False
        self.legal_hold = None
        self._happened("legal_hold_released", now, actor, {}, **self._sale_link())
        return True

    def _sale_link(self) -> dict:
        """An adverse reaction's case names its sale, which intake keeps while the case is held."""
        return {"sale_id": self.origin["sale_id"]} if self.origin and self.origin.get("sale_id") else {}

    # -- the archive ---------------------------------------------------------------------------

    def archive_read(self, actor: Actor, purpose: str, now: datetime, contact_read: bool) -> None:
        """A closed case's record read from the archive: who, when, why (查阅登记)."""
        self._happened("archive_accessed", now, actor, {"purpose": purpose, "contact_read": contact_read},
                       purpose=purpose, accessed_at=isoformat(now), contact_read=contact_read)

    # -- the process moved on --------------------------------------------------------------------

    def process_moved(self, waiting: tuple[OpenTask, ...], completed: bool, now: datetime) -> None:
        """The tasks the process waits on now (an approval waits for the roles that may grant the
        remedy); a finished feedback process closes the case (a complaint's closes on its
        follow-up, its corrective action tracked after)."""
        remedy = self.current_remedy
        self.open_tasks = tuple(replace(t, roles=remedy.approvers) if t.approval and remedy is not None else t
                                for t in waiting)
        if completed and self.state != "closed":
            self.clocks = {n: c if not c.running else replace(c, stopped_at=now) for n, c in self.clocks.items()}
            self.outcome = self._feedback_outcome()
            self.state, self.closed_at, self.paused_since = "closed", now, None
            self._happened("case_closed", now, None, {"outcome": self.outcome}, outcome=self.outcome)

    def _feedback_outcome(self) -> str:
        if self.kind == "suggestion" and self.decision:
            return self.decision["decision"]
        if self.kind == "inquiry":
            return "answered"
        return "passed_on" if self.kind == "praise" else "completed"

    # -- clocks ----------------------------------------------------------------------------------

    def clock_warning(self, name: str, now: datetime, rules) -> None:
        """The process's warning timer fired. Once per clock, and only while it runs."""
        clock = self.clocks[name]
        if not clock.running or clock.warned:
            return
        self.clocks[name] = replace(clock, warned=True)
        role = self._ladder_role(name, 0, rules) if name == "approval" else rules.escalation_role(self.escalation_level)
        self._happened("sla_warning", now, None, {"clock": name, "role": role}, clock=name, due=isoformat(clock.due),
                       level=self.escalation_level)
        share = round(rules.warning_at * 100)
        self.notices.append(self._notice(role, f"[{self.reference}] {_CLOCK_TITLES[name]}: {share}% of the time is "
                                               f"gone, due {isoformat(clock.due)}"))

    def clock_breached(self, name: str, level: int, now: datetime, rules) -> None:
        """A breach timer fired: level 1 at the deadline, 2 one target later... The case goes up
        to that level (never down); each level is an event and a notice to whom it reached."""
        clock = self.clocks[name]
        if not clock.running or level <= clock.breach_level:
            return
        self.clocks[name] = replace(clock, breach_level=level)
        self._happened("sla_breached", now, None, {"clock": name, "level": level}, clock=name,
                       due=isoformat(clock.due), level=level)
        if name == "approval":  # the next role up among those who may approve it is reminded
            role = self._ladder_role(name, level, rules)
            self.notices.append(self._notice(role, f"[{self.reference}] an approval is overdue since "
                                                   f"{isoformat(clock.due)}: a {self.current_remedy.type} of "
                                                   f"{cny(self.current_remedy.amount)} CNY waits"))
            return
        level = min(clock.base_level + level, len(rules.escalation) - 1) if clock.base_level else level
        if level > self.escalation_level:
            self.escalation_level = level
            role = rules.escalation_role(level)
            target = self._notice(role, f"[{self.reference}] escalated to you (level {level}): "
                                        f"{_CLOCK_TITLES[name]} overdue since {isoformat(clock.due)}; "
                                        f"{self.priority} {self.category}")
            self.notices.append(target)
            self._happened("case_escalated", now, None, {"level": level, "to_role": role}, level=level,
                           to_role=role, to_branch=target.branch, to_region=target.region, clock=name)
        else:  # the case is at this level already (the other clock took it there): remind that level
            role = rules.escalation_role(self.escalation_level)
            self.notices.append(self._notice(role, f"[{self.reference}] {_CLOCK_TITLES[name]} overdue since "
                                                   f"{isoformat(clock.due)} (level {level})"))

    def _ladder_role(self, clock: str, level: int, rules) -> str:
        """Who a clock's level reaches: an approval's, the roles that may approve it, lowest first."""
        approvers = self.current_remedy.approvers if self.current_remedy is not None else ()
        if clock == "approval" and approvers:
            return approvers[min(level, len(approvers) - 1)]
        return rules.escalation_role(level)

    def _notice(self, role: str, text: str) -> StaffNotice:
        if role in BRANCH_ROLES:
            return StaffNotice(role, text, branch=self.branch_code)
        if role in REGION_ROLES:
            return StaffNotice(role, text, region=self.region)
        return StaffNotice(role, text)

    def next_due(self) -> datetime | None:
        """The earliest deadline of a running clock (None while paused: nothing can fall due)."""
        if self.paused_since is not None:
            return None
        return min((c.due for c in self.clocks.values() if c.running), default=None)

    def overdue(self, now: datetime) -> bool:
        due = self.next_due()
        return due is not None and due <= now

    def check_pause(self) -> None:
        """CaseStateConflict or CaseRuleBroken when the case may not wait for the customer now."""
        if self.state in ("closed", "resolved"):
            raise CaseStateConflict(f"case {self.reference} is {self.state}: no clock runs to pause")
        if self.paused_since is not None:
            raise CaseStateConflict(f"case {self.reference} is already waiting for the customer "
                                    f"(since {isoformat(self.paused_since)})")
        if self.first_response is None:
            raise CaseRuleBroken("respond to the customer first: the first-response clock cannot wait for them",
                                 {"state": ["no first response yet"]})

    def pause(self, reason: str, actor: Actor, now: datetime) -> None:
        self.check_pause()
        self.paused_since, self.pause_reason = now, reason
        self._happened("sla_paused", now, actor, {"reason": reason}, reason=reason)

    def resume(self, actor: Actor | None, now: datetime, branch: Branch, note: str | None = None) -> None:
        if self.paused_since is None:
            raise CaseStateConflict(f"case {self.reference} is not waiting for the customer")
        pause = max(now - self.paused_since, timedelta(0))
        urgent = self.priority == "urgent"
        self.clocks = {n: c.shifted(pause, urgent=urgent, branch=branch) for n, c in self.clocks.items()}
        if self.remedies:  # a promise cannot be kept while the customer is away
            self.remedies[-1] = self.remedies[-1].postponed(pause)
        self.paused_since, self.pause_reason = None, None
        due = {n: isoformat(c.due) for n, c in self.clocks.items() if c.running}
        detail = {"paused_seconds": int(pause.total_seconds()), **({"note": note} if note else {})}
        self._happened("sla_resumed", now, actor, detail, paused_seconds=int(pause.total_seconds()), due=due)

    # -- messages to the customer ----------------------------------------------------------------

    def message_outcome(self, event_type: str, payload: dict, now: datetime) -> None:
        """Intake said whether a message it was asked to send reached the customer."""
        if event_type == "customer_message_sent":
            self.timeline.append(TimelineEntry(now, SYSTEM, None, "customer_message_sent",
                                               {"channel": payload.get("channel")}))
            return
        self.timeline.append(TimelineEntry(now, SYSTEM, None, "customer_message_failed",
                                           {"reason": payload.get("reason")}))
        role = "store_manager"
        self.notices.append(self._notice(role, f"[{self.reference}] the message to the customer could not be sent "
                                               f"({payload.get('reason')}): contact them another way"))

    # -- recording -------------------------------------------------------------------------------

    def _happened(self, event_type: str, at: datetime, actor: Actor | None, detail: dict | None, **fields: Any) -> None:
        self.record(CaseEvent(event_type, at, actor.subject if actor else None, actor.role if actor else None, fields))
        self.timeline.append(TimelineEntry(at, actor.subject if actor else SYSTEM, actor.role if actor else None,
                                           event_type, detail if detail is not None else {}))

    def view(self, now: datetime, timeline: list[dict] | None = None) -> dict:
        answer = {
            "id": self.id, "kind": self.kind, "complaint_id": self.complaint_id, "reference": self.reference,
            "branch_code": self.branch_code, "region": self.region, "category": self.category,
            "priority": self.priority, "severity_flags": self.severity_flags, "channel": self.channel,
            "description": self.description, "service": self.service, "products": self.products,
            "customer": {"ref": self.customer_ref, "masked": self.customer_masked,
                         "language": self.customer_language},
            "state": self.state, "owner": self.owner, "escalation_level": self.escalation_level,
            "overdue": self.overdue(now), "received_at": isoformat(self.received_at),
            "opened_at": isoformat(self.opened_at), "closed_at": isoformat(self.closed_at) if self.closed_at else None,
            "outcome": self.outcome,
            "waiting_for_customer": None if self.paused_since is None else {
                "since": isoformat(self.paused_since), "reason": self.pause_reason},
            "open_tasks": [self.task_view(t) for t in self.open_tasks],
            "sla": {name: c.view(now, self.paused_since) for name, c in self.clocks.items()},
            "first_response": self.first_response, "findings": self.findings, "decision": self.decision,
            "remedies": [r.view() for r in self.remedies], "written_result": self.written_result,
            "resolved_at": isoformat(self.resolved_at) if self.resolved_at else None,
            "follow_up": self._follow_up_view(), "corrective_action": self.corrective_action,
            "reopened": self.reopened, "origin": self.origin, "legal_hold": self.legal_hold,
            "anonymised_at": isoformat(self.anonymised_at) if self.anonymised_at else None,
            "converted_from": self.converted_from,
            "converted_at": isoformat(self.converted_at) if self.converted_at else None,
            "process": self.process,
        }
        if timeline is not None:
            answer["timeline"] = timeline
        return answer

    def answer_facts(self, branch: Branch | None) -> dict:
        """What a standard answer's placeholders say about this case: the masked name (None when
        there is none), the branch's name, the reference, the deadlines in the branch's local
        time (UTC for a branch the policy no longer has)."""
        zone = branch.zone if branch is not None else timezone.utc
        local = lambda at: at.astimezone(zone).strftime("%Y-%m-%d %H:%M")  # noqa: E731
        return {"customer": (self.customer_masked or {}).get("name") or None,
                "branch": branch.name if branch is not None else self.branch_code, "reference": self.reference or "",
                "first_response_due": local(self.clocks["first_response"].due),
                "resolution_due": local(self.clocks["resolution"].due)}

    def _follow_up_view(self) -> dict | None:
        if not self.follow_up:
            return None
        return {"outcome": self.follow_up.get("outcome"), "pending": self.follow_up.get("pending"),
                "rounds": self.follow_up.get("rounds", [])}

    def task_view(self, task: OpenTask) -> dict:
        clock = self.clocks.get(task.clock) if task.clock else None
        running = clock is not None and clock.running
        due = isoformat(clock.due) if running else None
        warning = isoformat(clock.warning_at) if running else None
        remedy = self.current_remedy
        if task.name == "fulfil" and remedy is not None and remedy.is_promise:
            due = isoformat(remedy.deadline)  # a promise is due by its own deadline
            warning = isoformat(remedy.deadline - DEADLINE_WARNING)
        elif task.name == "close_corrective_action" and self.corrective_action:
            due = self.corrective_action["due"]
            warning = isoformat(datetime.fromisoformat(due) - DEADLINE_WARNING)
        return {"name": task.name, "title": task.title, "roles": list(task.roles),
                "owner_may_complete": task.owner_may_complete, "clock": task.clock, "due": due,
                "warning_at": warning, "system": task.system}


def _converted_at(registered: dict, now: datetime) -> datetime:
    """When intake converted the inquiry (an older producer's payload without it: now)."""
    return datetime.fromisoformat(registered["converted_at"]) if registered.get("converted_at") else now


def _planned_clocks(registered: dict, received: datetime, branch: Branch, rules) -> dict[str, SlaClock]:
    """Both clocks from the receipt to intake's deadlines (`first_response_due`, `resolution_due`)."""
    urgent, levels = registered["priority"] == "urgent", len(rules.escalation) - 1
    return {name: SlaClock.plan(name, received, datetime.fromisoformat(registered[f"{name}_due"]), urgent=urgent,
                                branch=branch, warning_at=rules.warning_at, levels=levels)
            for name in CLOCKS}


# A promise's or a corrective action's deadline (days away, set by people, not by an SLA clock)
# is "breaching soon" from a day before it.
DEADLINE_WARNING = timedelta(hours=24)

_CLOCK_TITLES = {"first_response": "first response", "resolution": "resolution", "approval": "approval"}

_WRITTEN_RESULT = {
    "zh": "您的投诉（{reference}）处理结果：{measures}。完成时间：{completed_at}。负责人：{responsible}。"
          "后续安排：{follow_up}。感谢您的耐心与理解。",
    "en": "The result of your complaint {reference}: {measures}. Completed: {completed_at}. Responsible: "
          "{responsible}. Follow-up: {follow_up}. Thank you for your patience.",
}


def written_result_text(language: str, **facts: str) -> str:
    """The written result in the customer's language (Chinese when we have no text in theirs),
    cut to what one message carries."""
    text = _WRITTEN_RESULT.get(language, _WRITTEN_RESULT["zh"]).format(**facts)
    return text if len(text) <= 2000 else text[:1999] + "…"
