"""What a customer is given, and who may give it (issue 9's domain, not yet wired to the case
process): a remedy proposed within the proposer's authority goes ahead; above it, it waits for a
role whose authority covers it (policy: `investigation.authority`). A remedy with a deadline is a
promise: fulfilled by then it is kept, the deadline passing first breaks it. Plain Python."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from services.investigation.exceptions import CaseRuleBroken
from shared.calendar.clock import isoformat

AWAITING, APPROVED, REJECTED, FULFILLED = "awaiting_approval", "approved", "rejected", "fulfilled"


def cny(amount: float) -> str:
    """An amount as staff read it, to the fen (never 1.23457e+06)."""
    return f"{amount:.2f}"


class RemedyRefused(CaseRuleBroken):
    """A rule refused the step (422): `fields` names what is wrong, `needed` the role that may."""

    def __init__(self, message: str, fields: dict, needed: str | None = None):
        super().__init__(message, fields)
        self.needed = needed


@dataclass(frozen=True)
class Remedy:
    id: str
    type: str
    amount: float                      # CNY
    deadline: datetime | None          # set: the remedy is a promise
    note: str | None
    proposed_by: str
    proposed_role: str
    proposed_at: datetime
    status: str
    approvers: tuple[str, ...] = ()    # who may approve it, lowest authority first (none: within the proposer's)
    decided_by: str | None = None
    decided_at: datetime | None = None
    reason: str | None = None          # why it was rejected
    fulfilled_at: datetime | None = None
    promise: str | None = None         # kept | broken (a promise only)
    deadline_given: bool = False       # the proposal named it (else the policy's period, run from approval)

    @classmethod
    def propose(cls, data: dict, *, by: str, role: str, now: datetime, rules) -> "Remedy":
        """`data`: type, amount, deadline (None: the policy's for the type, if any), note."""
        deadline = data.get("deadline")
        given = deadline is not None
        if deadline is None and data["type"] in rules.promises:
            deadline = now + rules.promises[data["type"]]
        if deadline is not None and deadline <= now:
            raise RemedyRefused("a promise's deadline must be ahead", {"deadline": ["must be after now"]})
        within = rules.may_grant(role, data["type"], data["amount"])
        approvers = () if within else rules.approvers(data["type"], data["amount"])
        if not within and not approvers:
            raise RemedyRefused(f"no role may grant a {data['type']} of {cny(data['amount'])} CNY",
                                {"amount": ["above every role's authority"]})
        return cls(str(uuid.uuid4()), data["type"], data["amount"], deadline, data.get("note"), by, role, now,
                   APPROVED if within else AWAITING, approvers, deadline_given=given)

    @property
    def is_promise(self) -> bool:
        return self.deadline is not None

    def approve(self, *, by: str, role: str, now: datetime, rules) -> "Remedy":
        self._decided_by(role, rules)
        deadline = self.deadline
        if self.is_promise and not self.deadline_given:  # the policy's period runs from the approval
            deadline = now + (self.deadline - self.proposed_at)
        elif self.is_promise and self.deadline <= now:
            raise RemedyRefused(f"the promised deadline {isoformat(self.deadline)} has passed: reject it and "
                                f"propose the remedy again with a deadline ahead", {"deadline": ["has passed"]})
        return replace(self, status=APPROVED, decided_by=by, decided_at=now, deadline=deadline)

    def postponed(self, pause) -> "Remedy":
        """A promise still to keep, its deadline moved on by a wait for the customer."""
        if not self.is_promise or self.promise is not None or self.status in (FULFILLED, REJECTED):
            return self
        return replace(self, deadline=self.deadline + pause)

    def reject(self, *, by: str, role: str, reason: str, now: datetime, rules) -> "Remedy":
        """Refused by a role that could have granted it: a new proposal follows."""
        self._decided_by(role, rules)
        return replace(self, status=REJECTED, decided_by=by, decided_at=now, reason=reason)

    def fulfil(self, *, now: datetime) -> "Remedy":
        """Given to the customer. A promise fulfilled by its deadline is kept; one broken stays
        broken (it is recorded, and was escalated, when the deadline passed)."""
        if self.status != APPROVED:
            raise RemedyRefused(f"only an approved remedy is fulfilled (this one is {self.status})",
                                {"remedy": [self.status]})
        promise = self.promise
        if self.is_promise and promise is None:
            promise = "kept" if now <= self.deadline else "broken"
        return replace(self, status=FULFILLED, fulfilled_at=now, promise=promise)

    def deadline_passed(self, now: datetime) -> "Remedy | None":
        """The promise broken, when its deadline passed unfulfilled; None when nothing changes."""
        if not self.is_promise or self.promise is not None or self.status in (FULFILLED, REJECTED):
            return None
        if now < self.deadline:
            return None
        return replace(self, promise="broken")

    def _decided_by(self, role: str, rules) -> None:
        """Awaiting approval, and `role`'s authority covers it (else refused naming who may decide)."""
        self._awaiting()
        if not rules.may_grant(role, self.type, self.amount):
            needed = self.approvers[0]
            raise RemedyRefused(f"a {self.type} of {cny(self.amount)} CNY is decided by a {needed} (or higher), "
                                f"not a {role}", {"role": [f"needs {needed}"]}, needed)

    def _awaiting(self) -> None:
        if self.status != AWAITING:
            raise RemedyRefused(f"the remedy is {self.status}, not awaiting approval", {"remedy": [self.status]})

    def to_json(self) -> dict:
        return self.view()

    @classmethod
    def from_json(cls, data: dict) -> "Remedy":
        at = lambda v: datetime.fromisoformat(v) if v else None  # noqa: E731
        return cls(data["id"], data["type"], data["amount"], at(data["deadline"]), data.get("note"),
                   data["proposed_by"], data["proposed_role"], at(data["proposed_at"]), data["status"],
                   tuple(data.get("approvers") or ()), data.get("decided_by"), at(data.get("decided_at")),
                   data.get("reason"), at(data.get("fulfilled_at")), data.get("promise"),
                   data.get("deadline_given", False))

    def view(self) -> dict:
        at = lambda v: isoformat(v) if v else None  # noqa: E731
        return {"id": self.id, "type": self.type, "amount": self.amount, "currency": "CNY",
                "deadline": at(self.deadline), "note": self.note, "proposed_by": self.proposed_by,
                "proposed_role": self.proposed_role, "proposed_at": at(self.proposed_at), "status": self.status,
                "approvers": list(self.approvers), "decided_by": self.decided_by, "decided_at": at(self.decided_at),
                "reason": self.reason, "fulfilled_at": at(self.fulfilled_at), "promise": self.promise,
                "deadline_given": self.deadline_given}
