"""Aftercare's domain: what return visits a sale plans, when a resolved case's satisfaction
follow-up falls due, and a visit worked to its outcome. Plain Python: no ORM, no framework, no
wire format. The visit's process (processes/return_visit.bpmn, on shared.workflow) says what
comes after what; this says what each step means for the visit.

A sale plans one visit per day its items fall due (the product type's delay, policy
`aftercare.visit_delays`): items due the same day make one visit. A visit falls due only within
the contact hours (the branch's local time, every day): a due time outside them moves to the
next contact hour, never at night. No consent to contact, no visit. Visit ids come from what
planned them, so a duplicated event plans the same visits (and the store refuses the second).

Working a visit: an agent claims it first (a Claim: "I am calling this customer", for a few
minutes), so a colleague's "next" passes it by; the claim runs out on its own, the same agent
claiming again extends it, and an attempt ends it. An agent calls when it is due; not reached,
the next call is `attempts_apart` later (in contact hours); after `call_attempts` calls not
reached, intake sends the customer a message; `abandon_after` past the due time with no answer,
the visit is abandoned. Reached, the customer answers seed 004's questions: discomfort or allergy
after a sale reports an adverse reaction (investigation opens an urgent case); a follow-up scored
1-2 or "not resolved" reports the dissatisfaction (investigation reopens the case). A customer
may ask to be called back another time, within the same rules."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from services.aftercare.exceptions import VisitClaimed, VisitRuleBroken, VisitStateConflict
from shared.calendar.branches import Branch
from shared.calendar.clock import isoformat
from shared.messaging.aggregate import Aggregate

KINDS = ("return", "follow_up")
OPEN = ("scheduled", "in_progress")
FINISHED = ("completed", "abandoned", "cancelled")
OUTCOMES = ("reached", "not_reached", "call_back")
ALLERGY_CHECKS = frozenset({"hair_colour", "perm"})  # product types whose visit asks about reactions first
LOW_SCORE = 2  # a follow-up scored this or lower: the customer is not satisfied
MESSAGE_CHANNELS = ("sms", "wechat")  # after the calls, in this order of preference (intake picks)
_VISITS = uuid.UUID("0b8f5c7e-9d7a-4f51-8a3c-1f2e6d4b9a20")  # the namespace of visit ids
_MESSAGES = uuid.UUID("c3d5a1f2-7b64-4e0a-9f1d-5a8e2c7b3d90")  # of a visit's message requests


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
    customer_language: str = "zh"
    items: tuple[dict, ...] = ()   # a return visit's items (product type, sku, batch, technician)
    allergy_check: bool = False    # asks about discomfort or allergy first; first in the agent's queue
    record_type: str = "sale"      # whose customer intake contacts: the sale's, or the complaint's
    record_id: str | None = None
    follows: dict = field(default_factory=dict)  # what the agent sees of the sale or case it follows

    @property
    def correlation_id(self) -> str:
        """What the visit's events carry: the sale's id, or the case's."""
        return self.sale_id if self.kind == "return" else self.case_id


def contact_time(at: datetime, branch: Branch, rules) -> datetime:
    """`at` if it falls within the contact hours (the branch's local time), else the next
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
            customer_language=sale.get("customer_language") or "zh", items=items,
            allergy_check=any(item.get("product_type") in ALLERGY_CHECKS for item in items),
            record_type="sale", record_id=sale["sale_id"],
            follows={"type": "sale", "id": sale["sale_id"], "sold_at": sale["sold_at"],
                     "items": list(sale["items"])}))
    return visits


def follow_up_id(case_id: str, round_: int) -> str:
    """The follow-up of a case resolved after `round_` reopenings."""
    return str(uuid.uuid5(_VISITS, f"follow_up:{case_id}:{round_}"))


def plan_follow_up(resolved: dict, *, branch: Branch, rules) -> PlannedVisit:
    """The satisfaction follow-up `case_resolved`'s payload plans (`follow_up_after` later, in
    contact hours). A case resolved again after a reopening plans a follow-up of its own."""
    resolved_at = datetime.fromisoformat(resolved["resolved_at"])
    round_ = resolved.get("reopened", 0)
    follows = {"type": "case", "id": resolved["case_id"], "reference": resolved.get("reference"),
               "resolved_at": resolved["resolved_at"], "responsibility": resolved.get("responsibility"),
               "remedy": resolved.get("remedy"), "follow_up_plan": resolved.get("follow_up_plan"),
               "reopened": round_}
    return PlannedVisit(
        id=follow_up_id(resolved["case_id"], round_), kind="follow_up",
        branch_code=branch.code, due_at=contact_time(resolved_at + rules.follow_up_after, branch, rules),
        case_id=resolved["case_id"], sale_id=None, customer_ref=resolved.get("customer_ref"),
        customer_language=resolved.get("customer_language") or "zh",
        record_type=resolved.get("record_type") or "complaint", record_id=resolved.get("record_id") or resolved["case_id"],
        follows=follows)


@dataclass(frozen=True)
class VisitEvent:
    """A domain event about a visit: its type on the bus and its own payload fields
    (`own_payload`: the fields are the whole payload, not added to the visit's)."""
    type: str
    at: datetime
    fields: dict
    own_payload: bool = False
    event_id: str | None = None


@dataclass(frozen=True)
class Claim:
    """An agent working a visit now: `by` (their staff subject) until `until`. Running, it keeps
    colleagues off the visit; past `until` it is as if there were none."""
    by: str
    until: datetime

    def running(self, now: datetime) -> bool:
        return now < self.until

    def held_against(self, subject: str, now: datetime) -> bool:
        """A colleague's claim, still running: `subject` may not take the visit."""
        return self.running(now) and self.by != subject


@dataclass(frozen=True)
class Actor:
    subject: str
    role: str | None


SYSTEM = Actor("system", None)  # what the visit's process does on its own (its timers)

# What intake sends when the calls did not reach the customer, in the customer's language.
MESSAGES = {
    ("return", "zh"): "【{branch}】您好！我们是{branch}的售后回访专员，几次致电未能联系到您，想了解您近期"
                      "消费后的使用感受。方便时请回电门店或回复本消息，谢谢！",
    ("return", "en"): "{branch}: hello! We called a few times to hear how you find what you bought or had done "
                      "with us recently. Please call the salon or reply to this message when it suits you. Thank you!",
    ("follow_up", "zh"): "【{branch}】您好！我们是{branch}的售后回访专员，几次致电未能联系到您，想了解您对我们"
                         "处理结果是否满意。方便时请回电门店或回复本消息，谢谢！",
    ("follow_up", "en"): "{branch}: hello! We called a few times to hear whether you are satisfied with how we "
                         "resolved your complaint. Please call the salon or reply to this message. Thank you!",
}


class Visit(Aggregate):
    """A visit as it is stored and worked: when it is next called (`call_at`), when it is given
    up (`abandon_at`), its attempts, the message sent after the calls, and its outcome."""

    def __init__(self, planned: PlannedVisit, *, status: str = "scheduled", call_at: datetime | None = None,
                 abandon_at: datetime | None = None, attempts: list | None = None, outcome: dict | None = None,
                 message: dict | None = None, finished_at: datetime | None = None, claim: Claim | None = None):
        self.planned, self.status, self.outcome, self.message = planned, status, outcome, message
        self.call_at = call_at or planned.due_at
        self.abandon_at = abandon_at
        self.attempts: list[dict] = list(attempts or ())
        self.finished_at = finished_at
        self.claim = claim
        self.claim_ended = False  # an attempt, or the visit finished, ended the claim: stored with the change

    @property
    def id(self) -> str:
        return self.planned.id

    @classmethod
    def schedule(cls, planned: PlannedVisit, now: datetime, rules) -> "Visit":
        visit = cls(planned, abandon_at=planned.due_at + rules.abandon_after)
        visit.record(VisitEvent("visit_scheduled", now, {"due_at": isoformat(planned.due_at)}))
        return visit

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def unreached(self) -> int:
        return sum(1 for a in self.attempts if a["outcome"] == "not_reached")

    # -- what the process reads ------------------------------------------------------------------

    def process_data(self, rules) -> dict:
        """The visit process's start data (see processes/return_visit.bpmn)."""
        return {"visit_id": self.id, "kind": self.planned.kind, "branch_code": self.planned.branch_code,
                "due_at": isoformat(self.planned.due_at), "abandon_at": isoformat(self.abandon_at),
                "call_attempts": rules.call_attempts, **self.process_facts()}

    def process_facts(self) -> dict:
        """What the process's gateways read, merged into every completion of its `call` task."""
        last = self.attempts[-1]["outcome"] if self.attempts else None
        return {"outcome": last, "unreached": self.unreached, "messaged": self.message is not None}

    # -- who works it now -------------------------------------------------------------------------

    def claimed(self, now: datetime) -> Claim | None:
        """The claim running now on an open visit, else None."""
        if self.open and self.claim is not None and self.claim.running(now):
            return self.claim
        return None

    def check_claimable(self, subject: str | None, now: datetime) -> None:
        """`subject` may claim the visit now: it is open and no colleague's claim runs on it
        (theirs may: the same agent claiming again extends it; None: whoever claims). Else
        VisitStateConflict, or its VisitClaimed naming the colleague, says why not."""
        if not self.open:
            raise VisitStateConflict(f"visit {self.id} is {self.status}: nobody calls it any more")
        held = self.claimed(now)
        if subject is not None and held is not None and held.held_against(subject, now):
            raise VisitClaimed(self.id, held.by, held.until)

    def claim_for(self, actor: "Actor", now: datetime, length: timedelta) -> Claim:
        """`actor` works the visit from now for `length` (a new claim, or theirs extended, or
        shortened: the last word counts)."""
        self.check_claimable(actor.subject, now)
        self.claim, self.claim_ended = Claim(actor.subject, now + length), False
        return self.claim

    def release(self, actor: "Actor", now: datetime) -> bool:
        """`actor` puts the visit back: their claim ends. True when one ran; a colleague's
        running claim is theirs to release (VisitClaimed)."""
        held = self.claimed(now)
        if held is not None and held.held_against(actor.subject, now):
            raise VisitClaimed(self.id, held.by, held.until)
        self._end_claim()
        return held is not None

    def _end_claim(self) -> None:
        if self.claim is not None:
            self.claim, self.claim_ended = None, True

    # -- working it ------------------------------------------------------------------------------

    def check_workable(self, outcome: str | None, now: datetime) -> None:
        """An attempt fits the visit now: it is open and due (a call not reached, only once the
        next call is due: the calls are `attempts_apart`; None: whatever the outcome).
        VisitStateConflict says why not."""
        if not self.open:
            raise VisitStateConflict(f"visit {self.id} is {self.status}: no more attempts")
        if now < self.planned.due_at:
            raise VisitStateConflict(f"visit {self.id} is not due until {isoformat(self.planned.due_at)}")
        if outcome == "not_reached" and now < self.call_at:
            raise VisitStateConflict(f"visit {self.id}'s next call is due at {isoformat(self.call_at)} "
                                     f"(calls not reached are a day apart)")

    def record_attempt(self, data: dict, actor: Actor, now: datetime, branch: Branch, rules) -> None:
        """One attempt, validated in shape by schemas.AttemptIn: reached (with the answers), not
        reached, or reached and asked to be called back at `call_back_at`."""
        outcome = data["outcome"]
        self.check_workable(outcome, now)
        entry = {"n": len(self.attempts) + 1, "at": isoformat(now), "by": actor.subject, "role": actor.role,
                 "channel": data.get("channel") or "phone", "outcome": outcome, "note": data.get("note"),
                 "standard_answer": data.get("standard_answer")}
        if outcome == "reached":
            self._check_answers(data["answers"])
        elif outcome == "call_back":
            entry["call_back_at"] = isoformat(self._call_back_time(data["call_back_at"], now, branch, rules))
        self.attempts.append(entry)
        self._end_claim()  # the call is made: whoever claimed the visit no longer holds it
        fields = {"channel": entry["channel"], "reached": outcome != "not_reached", "attempt": entry["n"],
                  "outcome": outcome, "standard_answer": entry["standard_answer"]}
        if outcome == "not_reached":
            self.status = "in_progress"
            self.call_at = contact_time(now + rules.attempts_apart, branch, rules)
        elif outcome == "call_back":
            self.status = "in_progress"
            self.call_at = datetime.fromisoformat(entry["call_back_at"])
            fields["call_back_at"] = entry["call_back_at"]
        self.record(VisitEvent("visit_attempted", now, fields))
        if outcome == "reached":
            self._complete(data["answers"], actor, now, entry["standard_answer"])

    def _call_back_time(self, asked: datetime, now: datetime, branch: Branch, rules) -> datetime:
        if asked <= now:
            raise VisitRuleBroken("a call back is asked for a later time",
                                  fields={"call_back_at": ["must be in the future"]})
        at = contact_time(asked, branch, rules)
        if at >= self.abandon_at:
            raise VisitRuleBroken(
                f"visit {self.id} is given up at {isoformat(self.abandon_at)}: call back before then, or record "
                f"what the customer says now", fields={"call_back_at": [f"must be before {isoformat(self.abandon_at)}"
                                                                        f" (in contact hours)"]})
        return at

    def _check_answers(self, answers: dict) -> None:
        """What seed 004's questionnaire needs beyond its shape: a follow-up asks whether the
        problem was resolved; discomfort is described."""
        wrong = {}
        if self.planned.kind == "follow_up" and answers.get("resolved") is None:
            wrong["answers.resolved"] = ["a satisfaction follow-up asks whether the problem was resolved"]
        if answers.get("discomfort") and not (answers.get("discomfort_description") or "").strip():
            wrong["answers.discomfort_description"] = ["say what the discomfort or allergy is"]
        item = answers.get("item")
        if item is not None and not any(item in (i.get("sku"), i.get("code")) for i in self.planned.items):
            wrong["answers.item"] = [f"{item!r} is not an item of this visit"]
        if wrong:
            raise VisitRuleBroken("the answers are incomplete", fields=wrong)

    def _complete(self, answers: dict, actor: Actor, now: datetime, standard_answer: str | None = None) -> None:
        p = self.planned
        score = answers["satisfaction"]
        self.status, self.finished_at = "completed", now
        self.outcome = {"answers": answers, "score": score, "completed_at": isoformat(now), "by": actor.subject}
        self.record(VisitEvent("visit_completed", now, {"answers": _published_answers(answers), "score": score,
                                                        "standard_answer": standard_answer}))
        if answers.get("discomfort") and p.kind == "return" and p.sale_id:
            self.outcome["adverse_reaction"] = True
            self.record(VisitEvent("adverse_reaction_reported", now, self._adverse_reaction(answers, now)))
        # A follow-up's customer still unhappy, or in discomfort again: the case is not done.
        if p.kind == "follow_up" and (score <= LOW_SCORE or answers.get("resolved") is False
                                      or answers.get("discomfort")):
            self.outcome["dissatisfaction"] = True
            self.record(VisitEvent("dissatisfaction_reported", now, {
                "score": score, "resolved": answers.get("resolved"),
                "comment": answers.get("discomfort_description") or answers.get("suggestions")}))

    def _adverse_reaction(self, answers: dict, now: datetime) -> dict:
        """The item the customer names, else the allergy-checked one, else the first."""
        items = self.planned.items
        named = answers.get("item")
        item = (next((i for i in items if named in (i.get("sku"), i.get("code"))), None) if named else None) \
            or next((i for i in items if i.get("product_type") in ALLERGY_CHECKS), None) \
            or (items[0] if items else {})
        technician = item.get("technician_id") or next((i["technician_id"] for i in items
                                                        if i.get("technician_id")), None)
        return {"technician_id": technician,
                "product": {"sku": item.get("sku") or item.get("code"), "name": item.get("name"),
                            "product_type": item.get("product_type"), "batch": item.get("batch")},
                "description": answers["discomfort_description"],
                "severity_flags": ["allergy"], "reported_at": isoformat(now),
                "customer_masked": {k: v for k, v in self.planned.customer_masked.items() if isinstance(v, str)},
                "customer_language": self.planned.customer_language}

    def message_customer(self, now: datetime, branch: Branch) -> bool:
        """The calls did not reach the customer: intake sends them a message (once)."""
        if not self.open or self.message is not None:
            return False
        p = self.planned
        language = p.customer_language if (p.kind, p.customer_language) in MESSAGES else "zh"
        request_id = str(uuid.uuid5(_MESSAGES, self.id))
        text = MESSAGES[(p.kind, language)].format(branch=branch.name)
        self.message = {"request_event_id": request_id, "requested_at": isoformat(now), "text": text,
                        "language": language, "channels": list(MESSAGE_CHANNELS), "outcome": None}
        self.record(VisitEvent("customer_message_requested", now, {
            "record_type": p.record_type, "record_id": p.record_id, "purpose": "return_visit", "text": text,
            "language": language, "channels": list(MESSAGE_CHANNELS)}, own_payload=True, event_id=request_id))
        return True

    def message_outcome(self, event_type: str, payload: dict, now: datetime) -> bool:
        """Intake's answer to the message request: kept with the visit."""
        if self.message is None or self.message.get("request_event_id") != payload.get("request_event_id"):
            return False
        sent = event_type == "customer_message_sent"
        self.message = {**self.message, "outcome": "sent" if sent else "failed", "answered_at": isoformat(now),
                        "channel": payload.get("channel"), "reason": None if sent else payload.get("reason")}
        return True

    def abandon(self, now: datetime) -> bool:
        """No answer `abandon_after` past the due time."""
        if not self.open:
            return False
        reason = "no answer" if self.attempts else "not worked"
        self.status, self.finished_at = "abandoned", now
        self._end_claim()
        self.outcome = {"reason": reason, "at": isoformat(now), "attempts": len(self.attempts)}
        self.record(VisitEvent("visit_abandoned", now, {"attempts": len(self.attempts), "reason": reason}))
        return True

    def cancel(self, reason: str, now: datetime) -> bool:
        """A follow-up no longer wanted (its case reopened): True when it was still open."""
        if not self.open:
            return False
        self.status, self.finished_at = "cancelled", now
        self._end_claim()
        self.outcome = {"reason": reason, "at": isoformat(now)}
        self.record(VisitEvent("visit_cancelled", now, {"reason": reason}))
        return True

    # -- what the API shows ------------------------------------------------------------------------

    @property
    def standard_answer(self) -> str | None:
        """The standard answer the last attempt that used one used (agents pick one per call)."""
        return next((a["standard_answer"] for a in reversed(self.attempts) if a.get("standard_answer")), None)

    def overdue(self, now: datetime, branch: Branch | None) -> bool:
        """Open and due on an earlier day than today (the branch's; UTC's for a branch the policy
        no longer has): it should have been called."""
        zone = branch.zone if branch is not None else timezone.utc
        return self.open and self.call_at.astimezone(zone).date() < now.astimezone(zone).date()

    def view(self, now: datetime, branch: Branch | None, *, detail: bool = False) -> dict:
        p = self.planned
        shown = {"id": p.id, "kind": p.kind, "status": self.status, "branch_code": p.branch_code,
                 "due_at": isoformat(p.due_at), "call_at": isoformat(self.call_at),
                 "abandon_at": isoformat(self.abandon_at), "allergy_check": p.allergy_check,
                 "overdue": self.overdue(now, branch), "sale_id": p.sale_id, "case_id": p.case_id,
                 "customer_ref": p.customer_ref, "customer_masked": p.customer_masked,
                 "customer_language": p.customer_language, "attempts_made": len(self.attempts),
                 "standard_answer": self.standard_answer, "items": [_item_view(i) for i in p.items]}
        claim = self.claimed(now)  # only while it runs: a claim run out is nobody's
        shown.update(claimed_by=claim.by if claim else None,
                     claimed_until=isoformat(claim.until) if claim else None)
        if detail:
            shown.update(follows=p.follows, attempts=self.attempts, message=self.message, outcome=self.outcome,
                         finished_at=isoformat(self.finished_at) if self.finished_at else None)
        return shown


_ANSWERS = ("met_expectations", "discomfort", "packaging_ok", "satisfaction", "resolved", "suggestions",
            "discomfort_description", "item")


def _published_answers(answers: dict) -> dict:
    return {k: answers.get(k) for k in _ANSWERS}


def _item_view(item: dict) -> dict:
    return {k: item.get(k) for k in ("type", "sku", "code", "name", "product_type", "batch", "technician_id")}
