"""Intake's domain: what a complaint and a sale are when intake registers them.
Plain Python: no ORM, no framework; the policy and the clock come in as arguments."""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from shared.calendar.clock import isoformat
from shared.messaging.envelope import build_event
from shared.messaging.outbox import Notification
from shared.security.privacy import customer_ref, mask_email, mask_name, mask_phone, normalize_phone


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

    def reply_channel(self) -> tuple[str, str] | None:
        if self.phone:
            return "sms", self.phone
        if self.email:
            return "email", self.email
        return None


def human_reference(branch_code: str, local_day, sequence: int) -> str:
    return f"{branch_code}-{local_day:%Y%m%d}-{sequence:04d}"


@dataclass
class Complaint:
    """A complaint, suggestion or praise as received; investigation owns what follows."""

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
    first_response_due: datetime
    resolution_due: datetime
    acknowledgement: str  # as staff see it: the customer's name masked
    recorded_by: str
    recorded_by_role: str
    status: str = "received"
    # The text the customer receives, greeted by name; sent, never stored with the complaint.
    customer_acknowledgement: str | None = None

    @classmethod
    def register(cls, data: dict, *, branch_code: str, policy, received_at: datetime, sequence: int,
                 recorded_by: str, recorded_by_role: str) -> "Complaint":
        branch = policy.branch(branch_code)
        if data.get("category"):
            category, source = data["category"], "manual"
        else:
            category, source = policy.classify(data["description"]), "automatic"
        flags = sorted(set(data.get("severity_flags") or []))
        priority = policy.priority(data["kind"], category, flags, data["description"])
        due = policy.deadlines(priority, branch_code, received_at)
        local_day = received_at.astimezone(branch.zone).date()
        reference = human_reference(branch_code, local_day, sequence)
        customer = Customer.from_request(data["customer"])
        def acknowledgement(name):
            return policy.acknowledgement(customer.language, name=name, reference=reference, kind=data["kind"],
                                          first_response_due=due.first_response_due, branch_code=branch_code)
        return cls(
            id=str(uuid.uuid4()), reference=reference, branch_code=branch_code, region=branch.region,
            kind=data["kind"], channel=data["channel"], category=category, category_source=source,
            priority=priority, severity_flags=flags, description=data["description"],
            occurred_at=data.get("occurred_at"), received_at=received_at, service=data.get("service"),
            products=data.get("products") or [], customer=customer,
            first_response_due=due.first_response_due, resolution_due=due.resolution_due,
            acknowledgement=acknowledgement(mask_name(customer.name)),
            customer_acknowledgement=acknowledgement(customer.name),
            recorded_by=recorded_by, recorded_by_role=recorded_by_role)

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
        }

    def registered_event(self, ref_key: bytes, causation_id: str | None) -> dict:
        event_type = "complaint_registered" if self.kind == "complaint" else "feedback_registered"
        payload = {
            "complaint_id": self.id, "reference": self.reference, "kind": self.kind,
            "channel": self.channel, "category": self.category, "category_source": self.category_source,
            "priority": self.priority, "severity_flags": list(self.severity_flags),
            "description": self.description,
            "occurred_at": isoformat(self.occurred_at) if self.occurred_at else None,
            "received_at": isoformat(self.received_at), "region": self.region,
            "service": self.service, "products": self.products,
            "customer_ref": self.customer.ref(ref_key), "customer_masked": self.customer.masked(),
            "customer_language": self.customer.language,
            "first_response_due": isoformat(self.first_response_due),
            "resolution_due": isoformat(self.resolution_due),
        }
        # A case's id is its complaint's id: the complaint id is the correlation id.
        return build_event(event_type, payload, branch_code=self.branch_code, correlation_id=self.id, sequence=1,
                           causation_id=causation_id, occurred_at=self.received_at)

    def acknowledgement_notification(self) -> Notification | None:
        channel = self.customer.reply_channel()
        if channel is None:
            return None
        return Notification(channel=channel[0], recipient=channel[1], language=self.customer.language,
                            body=self.customer_acknowledgement or self.acknowledgement, subject_id=self.id)


@dataclass
class Sale:
    id: str
    branch_code: str
    region: str
    sold_at: datetime
    recorded_at: datetime
    customer: Customer
    contact_consent: bool
    items: list[dict] = field(default_factory=list)
    recorded_by: str = ""

    @classmethod
    def record(cls, data: dict, *, branch_code: str, policy, recorded_at: datetime, recorded_by: str) -> "Sale":
        customer = Customer.from_request(data["customer"])
        return cls(id=str(uuid.uuid4()), branch_code=branch_code, region=policy.branch(branch_code).region,
                   sold_at=data["sold_at"], recorded_at=recorded_at, customer=customer,
                   contact_consent=bool(data["customer"]["contact_consent"]), items=data["items"],
                   recorded_by=recorded_by)

    def view(self) -> dict:
        return {"id": self.id, "branch_code": self.branch_code, "sold_at": isoformat(self.sold_at),
                "recorded_at": isoformat(self.recorded_at), "contact_consent": self.contact_consent,
                "customer": {**self.customer.masked(), "language": self.customer.language},
                "items": self.items}

    def recorded_event(self, ref_key: bytes, causation_id: str | None) -> dict:
        payload = {"sale_id": self.id, "sold_at": isoformat(self.sold_at),
                   "recorded_at": isoformat(self.recorded_at), "region": self.region,
                   "customer_ref": self.customer.ref(ref_key), "customer_masked": self.customer.masked(),
                   "contact_consent": self.contact_consent, "items": self.items}
        return build_event("sale_recorded", payload, branch_code=self.branch_code, correlation_id=self.id, sequence=1,
                           causation_id=causation_id, occurred_at=self.recorded_at)
