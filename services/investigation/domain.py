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
from datetime import datetime, timedelta
from typing import Any

from services.investigation.exceptions import CaseRuleBroken, CaseStateConflict
from services.investigation.policy import BRANCH_ROLES, REGION_ROLES
from services.investigation.remedies import Remedy
from shared.calendar.branches import Branch
from shared.calendar.clock import isoformat
from shared.messaging.aggregate import Aggregate

KINDS = ("complaint", "suggestion", "praise")
CLOCKS = ("first_response", "resolution")
RESPONSE_CHANNELS = ("phone", "in_person", "sms", "wechat", "email")
MESSAGE_CHANNELS = ("sms", "wechat", "email")  # a response by these is sent to the customer by intake
# A case's state: where the case stands for staff (the process's waiting tasks say what is next).
STATES = ("open", "assigned", "acknowledged", "investigated", "closed")
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

    @classmethod
    def plan(cls, name: str, started_at: datetime, due: datetime, *, urgent: bool, branch: Branch,
             warning_at: float, levels: int) -> "SlaClock":
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
        return cls(name, started_at, due, min(warn, due), tuple(escalations))

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
                "paused_seconds": self.paused_seconds, "warned": self.warned, "breach_level": self.breach_level}

    @classmethod
    def from_json(cls, name: str, data: dict) -> "SlaClock":
        instant = datetime.fromisoformat
        return cls(name, instant(data["started_at"]), instant(data["due"]), instant(data["warning_at"]),
                   tuple(map(instant, data["escalations"])),
                   instant(data["stopped_at"]) if data.get("stopped_at") else None,
                   data.get("paused_seconds", 0), data.get("warned", False), data.get("breach_level", 0))


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

    @classmethod
    def from_properties(cls, name: str, title: str | None, properties: dict) -> "OpenTask":
        roles = tuple(r for r in (properties.get("roles") or "").replace(" ", "").split(",") if r)
        clock = properties.get("clock") if properties.get("clock") in CLOCKS else None
        return cls(name, title, roles, str(properties.get("owner_may_complete", "")).lower() == "true", clock)


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
                 origin: dict | None = None, legal_hold: dict | None = None, anonymised_at: datetime | None = None):
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
        self.timeline: list[TimelineEntry] = []   # entries added since loaded (the repository appends them)
        self.notices: list[StaffNotice] = []

    # -- opening ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, registered: dict, *, branch: Branch, rules, now: datetime, process: str) -> "Case":
        """A case for a registered complaint, suggestion or praise (intake's event payload)."""
        p = registered
        urgent = p["priority"] == "urgent"
        received = datetime.fromisoformat(p["received_at"])
        levels = len(rules.escalation) - 1
        clocks = {name: SlaClock.plan(name, received, datetime.fromisoformat(p[f"{name}_due"]), urgent=urgent,
                                      branch=branch, warning_at=rules.warning_at, levels=levels)
                  for name in CLOCKS}
        case = cls(id=p["complaint_id"], kind=p["kind"], complaint_id=p["complaint_id"], reference=p["reference"],
                   branch_code=branch.code, region=branch.region, category=p["category"], priority=p["priority"],
                   severity_flags=list(p.get("severity_flags") or []), channel=p.get("channel"),
                   description=p["description"], service=p.get("service"), products=list(p.get("products") or []),
                   customer_ref=p.get("customer_ref"), customer_masked=dict(p.get("customer_masked") or {}),
                   customer_language=p.get("customer_language") or "zh", received_at=received, opened_at=now,
                   process=process, clocks=clocks)
        case._happened("case_opened", now, None, None, kind=case.kind, reference=case.reference,
                       category=case.category, priority=case.priority, severity_flags=case.severity_flags,
                       region=case.region, customer_ref=case.customer_ref, received_at=isoformat(received),
                       first_response_due=isoformat(clocks["first_response"].due),
                       resolution_due=isoformat(clocks["resolution"].due), process=process)
        return case

    def process_data(self) -> dict:
        """What the process starts with, and reads its timers from."""
        return {"case_id": self.id, "kind": self.kind, "priority": self.priority, "branch_code": self.branch_code,
                "clocks": self.clock_data()}

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

    def may_complete(self, task: OpenTask, actor: Actor) -> bool:
        return actor.role in task.roles or (task.owner_may_complete and self.owner is not None
                                            and actor.subject == self.owner)

    def may_pause(self, actor: Actor, role_allowed: bool) -> bool:
        return role_allowed or (self.owner is not None and actor.subject == self.owner)

    # -- tasks -----------------------------------------------------------------------------------

    def complete(self, task: str, data: dict, actor: Actor, now: datetime) -> None:
        """What completing `task` with its validated data means for the case."""
        handler = getattr(self, f"_{task}", None)
        if handler is None:
            raise CaseRuleBroken(f"this version of investigation cannot complete {task!r} yet",
                                 {"task": [f"{task} is completed by a later version"]})
        handler(data, actor, now)

    def _assign(self, data: dict, actor: Actor, now: datetime) -> None:
        self.owner = data["owner"]
        if self.state == "open":
            self.state = "assigned"
        self._happened("case_assigned", now, actor, None, owner=self.owner)

    def _respond(self, data: dict, actor: Actor, now: datetime) -> None:
        clock = self.clocks["first_response"]
        within = now <= clock.due
        self.clocks["first_response"] = replace(clock, stopped_at=now)
        self.first_response = {"message": data["message"], "channel": data["channel"], "by": actor.subject,
                               "at": isoformat(now)}
        self.state = "acknowledged"
        if data["channel"] in MESSAGE_CHANNELS:
            message = CustomerMessage(now, "first_response", data["message"], self.customer_language,
                                      (data["channel"],))
            self.record(message)
            self.timeline.append(TimelineEntry(now, actor.subject, actor.role, "customer_message_requested",
                                               {"request_event_id": message.request_id,
                                                "channel": data["channel"]}))
        self._happened("case_acknowledged", now, actor, {"channel": data["channel"]},
                       channel=data["channel"], within_sla=within)

    _acknowledge = _respond  # the feedback case's first response

    def _record_findings(self, data: dict, actor: Actor, now: datetime) -> None:
        signed_at = data.get("signed_at") or now
        if signed_at < self.received_at:
            raise CaseRuleBroken("the findings cannot be signed before the complaint was received",
                                 {"signed_at": [f"must not be before {isoformat(self.received_at)}"]})
        self.findings = {**{k: v for k, v in data.items() if k != "signed_at"}, "signed_at": isoformat(signed_at),
                         "recorded_by": actor.subject, "recorded_at": isoformat(now)}
        self.state = "investigated"
        self._happened("findings_recorded", now, actor, {"responsibility": data["responsibility"]},
                       root_cause=data["root_cause"], responsibility=data["responsibility"],
                       signed_by=data["signed_by"], signed_at=isoformat(signed_at))

    def _decide(self, data: dict, actor: Actor, now: datetime) -> None:
        self.decision = {**data, "by": actor.subject, "at": isoformat(now)}
        self._happened("suggestion_decided", now, actor, {"decision": data["decision"]}, decision=data["decision"])

    def _pass_on(self, data: dict, actor: Actor, now: datetime) -> None:
        self.decision = {**data, "by": actor.subject, "at": isoformat(now)}
        self._happened("praise_passed_on", now, actor, {"to": data["to"]}, to=list(data["to"]))

    # -- the process moved on --------------------------------------------------------------------

    def process_moved(self, waiting: tuple[OpenTask, ...], completed: bool, now: datetime) -> None:
        """The tasks the process waits on now; a finished feedback process closes the case."""
        self.open_tasks = tuple(waiting)
        if completed and self.state != "closed":
            self.clocks = {n: c if not c.running else replace(c, stopped_at=now) for n, c in self.clocks.items()}
            self.outcome = self._feedback_outcome()
            self.state, self.closed_at, self.paused_since = "closed", now, None
            self._happened("case_closed", now, None, {"outcome": self.outcome}, outcome=self.outcome)

    def _feedback_outcome(self) -> str:
        if self.kind == "suggestion" and self.decision:
            return self.decision["decision"]
        return "passed_on" if self.kind == "praise" else "completed"

    # -- clocks ----------------------------------------------------------------------------------

    def clock_warning(self, name: str, now: datetime, rules) -> None:
        """The process's warning timer fired. Once per clock, and only while it runs."""
        clock = self.clocks[name]
        if not clock.running or clock.warned:
            return
        self.clocks[name] = replace(clock, warned=True)
        role = rules.escalation_role(self.escalation_level)
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
        if self.state == "closed":
            raise CaseStateConflict(f"case {self.reference} is closed")
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
            "process": self.process,
        }
        if timeline is not None:
            answer["timeline"] = timeline
        return answer

    def task_view(self, task: OpenTask) -> dict:
        clock = self.clocks.get(task.clock) if task.clock else None
        return {"name": task.name, "title": task.title, "roles": list(task.roles),
                "owner_may_complete": task.owner_may_complete, "clock": task.clock,
                "due": isoformat(clock.due) if clock is not None and clock.running else None}


_CLOCK_TITLES = {"first_response": "first response", "resolution": "resolution"}
