"""Intake's domain: what a complaint and a sale are when intake registers them, and how a
complaint's status follows its case. Plain Python: no ORM, no framework, no wire format;
the rules, the branch, the clock's reading and the customer-reference key come in as
arguments. Records note what happened as domain events (shared.messaging.aggregate);
services/intake/events.py turns them into envelopes."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, NamedTuple

from shared.calendar.branches import Branch
from shared.calendar.clock import isoformat
from shared.messaging.aggregate import Aggregate
from shared.security.privacy import (anonymise_text, customer_ref, mask_email, mask_name, mask_phone,
                                     normalize_phone)

STATUSES = ("received", "acknowledged", "investigating", "resolved", "closed")
# A complaint's status as its case moves (investigation's case events), for the front desk
# telling a customer where it stands: received until the customer has had a first response,
# then acknowledged; investigating once the investigation shows (findings, waiting for the
# customer, a reopened case); resolved when the written result went out; closed. An inquiry's
# case converted into the complaint intake made of it is received again (it starts over at its
# assignment), even when the inquiry's answer closed it meanwhile (the two crossed).
STATUS_AFTER_CASE_EVENT = {
    "case_opened": "received",
    "case_assigned": "received",
    "case_acknowledged": "acknowledged",
    "sla_paused": "investigating",
    "findings_recorded": "investigating",
    "case_resolved": "resolved",
    "case_reopened": "investigating",
    "case_closed": "closed",
    "case_converted": "received",
}
# A legal hold an HQ admin sets on the case keeps the complaint's personal data past the retention.
LEGAL_HOLD_EVENTS = ("legal_hold_set", "legal_hold_released")


@dataclass(frozen=True)
class Customer:
    name: str | None
    phone: str | None
    email: str | None
    language: str

    @classmethod
    def from_request(cls, data: dict) -> "Customer":
        phone = normalize_phone(data["phone"]) if data.get("phone") else None
        email = data["email"].strip() if data.get("email") else None
        return cls(name=data.get("name"), phone=phone, email=email, language=data.get("language") or "zh")

    def masked(self) -> dict:
        return {"name": mask_name(self.name), "phone": mask_phone(self.phone), "email": mask_email(self.email)}

    def ref(self, key: bytes) -> str | None:
        return customer_ref(key, self.phone, self.email)

    def reply_channel(self, sms_allowed: Callable[[str], bool] | None = None) -> tuple[str, str] | None:
        """SMS to the phone (when its country may get one), else email."""
        if self.phone and (sms_allowed is None or sms_allowed(self.phone)):
            return "sms", self.phone
        if self.email:
            return "email", self.email
        return None


class NotAnInquiry(Exception):
    """Only an inquiry is converted (one converted already is a complaint: the message says when)."""


class InquiryClosed(Exception):
    """The inquiry's case is closed: answered, there is nothing left to convert."""


class Numbered(NamedTuple):
    """What numbering a complaint gave: its number of the day (None when the poster is over
    its limit, with how long to wait), and whether its acknowledgement may be sent."""
    reference_number: int | None
    poster_wait_seconds: float | None
    recipient_allowed: bool | None


# -- domain events -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComplaintRegistered:
    complaint: "Complaint"


@dataclass(frozen=True)
class SaleRecorded:
    sale: "Sale"


@dataclass(frozen=True)
class CustomerMessageSent:
    request_event_id: str
    record_type: str
    record_id: str
    branch_code: str
    at: datetime
    channel: str


@dataclass(frozen=True)
class CustomerMessageFailed:
    request_event_id: str
    record_type: str
    record_id: str
    branch_code: str | None
    at: datetime
    reason: str  # one of shared.messaging.catalogue.intake.FAILURE_REASONS
    detail: str | None = None


@dataclass(frozen=True)
class Delivery:
    """Where a requested message goes: the first channel asked for that the customer can be
    reached on (SMS and WeChat by phone, email by address)."""
    channel: str
    recipient: str


@dataclass(frozen=True)
class Acknowledgement:
    """The text sent to the customer when a complaint is registered."""
    channel: str
    recipient: str
    language: str
    text: str          # greets the customer by name
    masked_text: str   # what staff and logs see
    subject_id: str


class CustomerRecord(Aggregate):
    """A complaint or a sale: a record whose customer intake can reach for other services."""

    record_type = "?"
    customer: Customer

    @property
    def may_contact(self) -> bool:
        return True

    def delivery_for(self, request_event_id: str, channels: list[str], at: datetime) -> Delivery | None:
        """Where a message another service asked for goes, or None after recording why it
        cannot go anywhere (no consent, no contact for the channels asked)."""
        if not self.may_contact:
            self._refuse(request_event_id, at, "no_consent", "the customer did not consent to be contacted")
            return None
        for channel in channels:
            recipient = self.customer.email if channel == "email" else self.customer.phone
            if recipient:
                return Delivery(channel, recipient)
        self._refuse(request_event_id, at, "no_contact", f"no contact for {', '.join(channels)}")
        return None

    def message_outcome(self, request_event_id: str, channel: str, delivered: bool, error: str | None,
                        at: datetime) -> None:
        """What became of a requested message, once the notification port is done with it."""
        if delivered:
            self.record(CustomerMessageSent(request_event_id, self.record_type, self.id, self.branch_code, at,
                                            channel))
        else:
            # Not the gateway's own words: they may quote the number or the text in clear.
            self._refuse(request_event_id, at, "delivery_failed", "the notification gateway did not take it")

    def _refuse(self, request_event_id: str, at: datetime, reason: str, detail: str | None) -> None:
        self.record(CustomerMessageFailed(request_event_id, self.record_type, self.id, self.branch_code, at,
                                          reason, detail))

    def scrubber(self) -> Callable[[str], str]:
        """What takes this customer (and any other number, address or masked name) out of a text."""
        customer = self.customer
        return lambda text: anonymise_text(text, name=customer.name, phone=customer.phone, email=customer.email)

    def anonymise(self, now: datetime) -> None:
        """Retention: the customer's name, phone, email and reference go, and so do they from the
        record's texts; what counts stays (kind, category, branch, times, items). The language
        stays: it says nothing of who."""
        customer = self.customer
        self._scrub(self.scrubber())
        self.customer = Customer(None, None, None, customer.language)
        self.customer_ref = None
        self.anonymised_at = now

    def _scrub(self, scrub: Callable[[str], str]) -> None:
        """Apply `scrub` to the record's free texts (a sale has none)."""


def human_reference(branch_code: str, local_day, sequence: int) -> str:
    return f"{branch_code}-{local_day:%Y%m%d}-{sequence:04d}"


@dataclass(eq=False)
class Complaint(CustomerRecord):
    """A complaint, suggestion, praise or inquiry as received; investigation owns what follows.
    An inquiry that proves to be a complaint is converted into one (`convert`)."""

    record_type = "complaint"

    id: str
    reference: str
    branch_code: str
    region: str
    kind: str
    channel: str
    category: str
    category_source: str
    priority: str
    severity_flags: list[str]
    description: str
    occurred_at: datetime | None
    received_at: datetime
    service: dict | None
    products: list[dict]
    customer: Customer
    customer_ref: str | None
    first_response_due: datetime
    resolution_due: datetime
    acknowledgement: str  # as staff see it: the customer's name masked
    recorded_by: str
    recorded_by_role: str
    status: str = "received"
    status_sequence: int = 0  # the last case event the status follows
    closed_at: datetime | None = None  # when its case closed (None while the case is open)
    legal_hold: dict | None = None  # {"reason", "by", "at"} while an HQ admin holds its case
    legal_hold_sequence: int = 0  # the last legal-hold event followed (case events are numbered per case)
    anonymised_at: datetime | None = None
    # An inquiry converted into a complaint: what it was, when, by whom and why (migration 0013).
    converted_from: str | None = None
    converted_at: datetime | None = None
    converted_by: str | None = None
    conversion_note: str | None = None
    # The text the customer receives, greeted by name; sent, never stored with the complaint.
    customer_acknowledgement: str | None = None

    @classmethod
    def register(cls, data: dict, *, branch: Branch, rules, received_at: datetime, number: int,
                 recorded_by: str, recorded_by_role: str, ref_key: bytes) -> "Complaint":
        """`number` is the branch's number of the day, for the human reference."""
        if data.get("category"):
            category, source = data["category"], "manual"
        else:
            category, source = rules.classify(data["description"]), "automatic"
        flags = sorted(set(data.get("severity_flags") or []))
        priority = rules.priority(data["kind"], category, flags, data["description"])
        due = rules.deadlines(priority, branch, received_at, kind=data["kind"])
        reference = human_reference(branch.code, received_at.astimezone(branch.zone).date(), number)
        customer = Customer.from_request(data["customer"])

        def acknowledgement(name):
            return rules.acknowledgement(customer.language, name=name, reference=reference, kind=data["kind"],
                                         first_response_due=due.first_response_due, branch=branch)
        complaint = cls(
            id=str(uuid.uuid4()), reference=reference, branch_code=branch.code, region=branch.region,
            kind=data["kind"], channel=data["channel"], category=category, category_source=source,
            priority=priority, severity_flags=flags, description=data["description"],
            occurred_at=data.get("occurred_at"), received_at=received_at, service=data.get("service"),
            products=data.get("products") or [], customer=customer, customer_ref=customer.ref(ref_key),
            first_response_due=due.first_response_due, resolution_due=due.resolution_due,
            acknowledgement=acknowledgement(mask_name(customer.name)),
            customer_acknowledgement=acknowledgement(customer.name),
            recorded_by=recorded_by, recorded_by_role=recorded_by_role)
        complaint.record(ComplaintRegistered(complaint))
        return complaint

    def check_convertible(self) -> None:
        """An inquiry whose case is not closed; else NotAnInquiry or InquiryClosed."""
        if self.kind != "inquiry":
            converted = (f": it was converted from an {self.converted_from} at {isoformat(self.converted_at)}"
                         if self.converted_at else "")
            raise NotAnInquiry(f"complaint {self.id} is a {self.kind}, not an inquiry{converted}")
        if self.status == "closed":
            raise InquiryClosed(f"inquiry {self.id} is closed" + (
                f" (since {isoformat(self.closed_at)})" if self.closed_at else "") + ": it cannot be converted")

    def convert(self, data: dict, *, branch: Branch, rules, at: datetime, by: str) -> None:
        """An inquiry that proves to be a complaint becomes one, triaged as a complaint: the
        category given, else the inquiry's own when staff chose it, else classified from the
        description; the priority from the category, the flags (given, else the inquiry's) and the
        text; the deadlines from the ORIGINAL receipt. Registered again (complaint_registered,
        the same id, the next sequence)."""
        self.check_convertible()
        if data.get("category"):
            self.category, self.category_source = data["category"], "manual"
        elif self.category_source != "manual":
            self.category, self.category_source = rules.classify(self.description), "automatic"
        if data.get("severity_flags") is not None:
            self.severity_flags = sorted(set(data["severity_flags"]))
        self.priority = rules.priority("complaint", self.category, self.severity_flags, self.description)
        due = rules.deadlines(self.priority, branch, self.received_at)
        self.first_response_due, self.resolution_due = due.first_response_due, due.resolution_due
        self.converted_from, self.kind = self.kind, "complaint"
        self.converted_at, self.converted_by, self.conversion_note = at, by, data.get("note")
        self.record(ComplaintRegistered(self))

    def follow_case(self, event_type: str, sequence: int, occurred_at: datetime | None = None) -> bool:
        """Take the status its case's event implies, unless a newer case event was already
        followed (queues and retries reorder events). True when the event was applied (the
        status may be the same: assigned and acknowledged both mean in progress). A closed
        case's time of closure starts the retention; a reopened one clears it."""
        status = STATUS_AFTER_CASE_EVENT[event_type]
        if sequence <= self.status_sequence:
            return False
        self.status, self.status_sequence = status, sequence
        self.closed_at = occurred_at if status == "closed" else None
        return True

    def follow_legal_hold(self, event_type: str, sequence: int, hold: dict | None) -> bool:
        """A legal hold set on (`hold`: reason, by, at) or released from the case, unless a newer
        hold event was already followed. True when applied."""
        if event_type not in LEGAL_HOLD_EVENTS or sequence <= self.legal_hold_sequence:
            return False
        self.legal_hold = hold if event_type == "legal_hold_set" else None
        self.legal_hold_sequence = sequence
        return True

    def _scrub(self, scrub: Callable[[str], str]) -> None:
        self.description = scrub(self.description)
        self.acknowledgement = scrub(self.acknowledgement)  # it greets the customer by the masked name
        if self.conversion_note:
            self.conversion_note = scrub(self.conversion_note)

    def view(self) -> dict:
        """What staff see: the customer's contact masked."""
        return {
            "id": self.id, "reference": self.reference, "kind": self.kind, "status": self.status,
            "branch_code": self.branch_code, "channel": self.channel, "category": self.category,
            "category_source": self.category_source, "priority": self.priority,
            "severity_flags": list(self.severity_flags), "description": self.description,
            "occurred_at": isoformat(self.occurred_at) if self.occurred_at else None,
            "received_at": isoformat(self.received_at),
            "first_response_due": isoformat(self.first_response_due),
            "resolution_due": isoformat(self.resolution_due),
            "acknowledgement": self.acknowledgement, "service": self.service, "products": self.products,
            "customer": {**self.customer.masked(), "language": self.customer.language},
            "closed_at": isoformat(self.closed_at) if self.closed_at else None,
            "anonymised_at": isoformat(self.anonymised_at) if self.anonymised_at else None,
            "converted_from": self.converted_from,
            "converted_at": isoformat(self.converted_at) if self.converted_at else None,
            "conversion_note": self.conversion_note,
        }

    def standing(self) -> dict:
        """Where it stands, for staff who looked its customer up by phone: no contact, no text."""
        return {"id": self.id, "reference": self.reference, "kind": self.kind, "category": self.category,
                "priority": self.priority, "status": self.status, "branch_code": self.branch_code,
                "received_at": isoformat(self.received_at),
                "first_response_due": isoformat(self.first_response_due),
                "resolution_due": isoformat(self.resolution_due),
                "closed_at": isoformat(self.closed_at) if self.closed_at else None}

    def acknowledgement_message(self, sms_allowed: Callable[[str], bool] | None = None) -> Acknowledgement | None:
        channel = self.customer.reply_channel(sms_allowed)
        if channel is None:
            return None
        return Acknowledgement(channel=channel[0], recipient=channel[1], language=self.customer.language,
                               text=self.customer_acknowledgement or self.acknowledgement,
                               masked_text=self.acknowledgement, subject_id=self.id)


@dataclass(eq=False)
class Sale(CustomerRecord):
    record_type = "sale"

    id: str
    branch_code: str
    region: str
    sold_at: datetime
    recorded_at: datetime
    customer: Customer
    customer_ref: str | None
    contact_consent: bool
    items: list[dict] = field(default_factory=list)
    recorded_by: str = ""
    anonymised_at: datetime | None = None
    legal_holds: dict = field(default_factory=dict)  # case id -> hold, for adverse-reaction cases held

    def follow_legal_hold(self, case_id: str, event_type: str, sequence: int, hold: dict | None) -> bool:
        """A case opened by an adverse reaction after this sale held or released (the case's
        events are numbered per case: an older one changes nothing)."""
        known = self.legal_holds.get(case_id, {})
        if event_type not in LEGAL_HOLD_EVENTS or sequence <= known.get("sequence", 0):
            return False
        holds = dict(self.legal_holds)
        holds[case_id] = {**hold, "sequence": sequence} if event_type == "legal_hold_set" else {"sequence": sequence}
        self.legal_holds = holds
        return True

    @property
    def held(self) -> bool:
        return any("reason" in hold for hold in self.legal_holds.values())

    @classmethod
    def register(cls, data: dict, *, branch: Branch, recorded_at: datetime, recorded_by: str,
                    ref_key: bytes) -> "Sale":
        customer = Customer.from_request(data["customer"])
        sale = cls(id=str(uuid.uuid4()), branch_code=branch.code, region=branch.region, sold_at=data["sold_at"],
                   recorded_at=recorded_at, customer=customer, customer_ref=customer.ref(ref_key),
                   contact_consent=bool(data["customer"]["contact_consent"]), items=data["items"],
                   recorded_by=recorded_by)
        sale.record(SaleRecorded(sale))
        return sale

    @property
    def may_contact(self) -> bool:
        return self.contact_consent

    def summary(self) -> dict:
        """For staff who looked its customer up by phone: what was sold, no contact."""
        return {"id": self.id, "branch_code": self.branch_code, "sold_at": isoformat(self.sold_at),
                "contact_consent": self.contact_consent, "items": self.items}

    def view(self) -> dict:
        return {"id": self.id, "branch_code": self.branch_code, "sold_at": isoformat(self.sold_at),
                "recorded_at": isoformat(self.recorded_at), "contact_consent": self.contact_consent,
                "customer": {**self.customer.masked(), "language": self.customer.language},
                "items": self.items, "anonymised_at": isoformat(self.anonymised_at) if self.anonymised_at else None}
