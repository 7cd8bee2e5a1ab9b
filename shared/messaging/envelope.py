"""The envelope and the schema of every event type on the bus.

Producers build events with `build_event`, which refuses anything that fails its
schema (unknown payload fields included, so contact data cannot slip onto the bus).
Consumers read them with `parse_event`, which tolerates fields added later.
Ids and times are plain strings on the wire: kombu's JSON would tag UUID and datetime.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from shared.calendar.clock import isoformat
from shared.calendar.policy import KINDS


class EventSchemaError(ValueError):
    def __init__(self, event_type: str, errors: dict):
        super().__init__(f"event {event_type!r} fails its schema: {errors}")
        self.event_type = event_type
        self.errors = errors


def _check_uuid(value: str) -> None:
    try:
        uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise ValidationError("Not a valid UUID string.") from None


def _check_instant(value: str) -> None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, TypeError, AttributeError):
        raise ValidationError("Not an ISO 8601 date-time string.") from None
    if parsed.tzinfo is None:
        raise ValidationError("The date-time needs a time zone offset.")


class ValidatedEvent(dict):
    """An envelope that passed its schema. Only `build_event` makes one, and the outbox
    accepts nothing else, so an invalid event cannot be published."""


def IdString(**kwargs):
    return fields.String(validate=_check_uuid, **kwargs)


def InstantString(**kwargs):
    return fields.String(validate=_check_instant, **kwargs)


class Envelope(Schema):
    event_id = IdString(required=True)
    type = fields.String(required=True, validate=validate.Length(min=1))
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = InstantString(required=True)
    source = fields.String(required=True, validate=validate.Length(min=1))
    branch_code = fields.String(required=True, allow_none=True)
    correlation_id = fields.String(required=True, validate=validate.Length(min=1))
    causation_id = fields.String(required=True, allow_none=True)
    payload = fields.Dict(required=True)


class Tolerant(Schema):
    """Nested shapes ignore fields they do not know, so an older consumer reads a newer
    event; producers are held to the exact shape by `_unknown_fields` instead."""

    class Meta:
        unknown = EXCLUDE


class MaskedCustomer(Tolerant):
    name = fields.String(allow_none=True)
    phone = fields.String(allow_none=True)
    email = fields.String(allow_none=True)


class ServiceRendered(Tolerant):
    code = fields.String(required=True)
    name = fields.String(allow_none=True)
    technician_id = fields.String(allow_none=True)


class ProductUsed(Tolerant):
    sku = fields.String(required=True)
    name = fields.String(allow_none=True)
    batch = fields.String(allow_none=True)




class ComplaintRegisteredV1(Schema):
    complaint_id = IdString(required=True)
    reference = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    channel = fields.String(required=True)
    category = fields.String(required=True)
    category_source = fields.String(required=True, validate=validate.OneOf(("manual", "automatic")))
    priority = fields.String(required=True, validate=validate.OneOf(("urgent", "general", "low")))
    severity_flags = fields.List(fields.String(), required=True)
    description = fields.String(required=True)
    occurred_at = InstantString(required=True, allow_none=True)
    received_at = InstantString(required=True)
    region = fields.String(required=True)
    service = fields.Nested(ServiceRendered, required=True, allow_none=True)
    products = fields.List(fields.Nested(ProductUsed), required=True)
    customer_ref = fields.String(required=True, allow_none=True)
    customer_masked = fields.Nested(MaskedCustomer, required=True)
    customer_language = fields.String(required=True)
    first_response_due = InstantString(required=True)
    resolution_due = InstantString(required=True)


class FeedbackRegisteredV1(ComplaintRegisteredV1):
    kind = fields.String(required=True, validate=validate.OneOf(("suggestion", "praise")))


class SaleItem(Tolerant):
    type = fields.String(required=True, validate=validate.OneOf(("product", "service")))
    sku = fields.String(allow_none=True)
    code = fields.String(allow_none=True)
    name = fields.String(allow_none=True)
    product_type = fields.String(required=True)
    batch = fields.String(allow_none=True)
    technician_id = fields.String(allow_none=True)


class SaleRecordedV1(Schema):
    sale_id = IdString(required=True)
    sold_at = InstantString(required=True)
    recorded_at = InstantString(required=True)
    region = fields.String(required=True)
    customer_ref = fields.String(required=True, allow_none=True)
    customer_masked = fields.Nested(MaskedCustomer, required=True)
    contact_consent = fields.Boolean(required=True)
    items = fields.List(fields.Nested(SaleItem), required=True, validate=validate.Length(min=1))


# (type, version) -> payload schema; a type's shape changes only under a new version.
SCHEMAS: dict[tuple[str, int], type[Schema]] = {
    ("complaint_registered", 1): ComplaintRegisteredV1,
    ("feedback_registered", 1): FeedbackRegisteredV1,
    ("sale_recorded", 1): SaleRecordedV1,
}
# Which service publishes which type (the exchange is `<source>.events`).
SOURCES = {
    "complaint_registered": "intake",
    "feedback_registered": "intake",
    "sale_recorded": "intake",
}


# Schema instances are reusable and costly to build: one strict and one tolerant of each.
_STRICT_ENVELOPE, _TOLERANT_ENVELOPE = Envelope(unknown=RAISE), Envelope(unknown=EXCLUDE)
_STRICT = {key: cls(unknown=RAISE) for key, cls in SCHEMAS.items()}
_TOLERANT = {key: cls(unknown=EXCLUDE) for key, cls in SCHEMAS.items()}


def build_event(event_type: str, payload: dict, *, branch_code: str | None, correlation_id: str,
                occurred_at: datetime, causation_id: str | None = None, version: int = 1,
                event_id: str | None = None) -> dict:
    """A validated envelope, ready for the outbox. Raises EventSchemaError."""
    schema = _STRICT.get((event_type, version))
    if schema is None:
        raise EventSchemaError(event_type, {"type": [f"no schema for version {version}"]})
    envelope = {
        "event_id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "version": version,
        "occurred_at": isoformat(occurred_at),
        "source": SOURCES[event_type],
        "branch_code": branch_code,
        "correlation_id": str(correlation_id),
        "causation_id": None if causation_id is None else str(causation_id),
        "payload": payload,
    }
    errors = _STRICT_ENVELOPE.validate(envelope)
    errors.update({f"payload.{k}": v for k, v in schema.validate(payload).items()})
    errors.update({f"payload.{path}": ["Unknown field."] for path in _unknown_fields(schema, payload)})
    if errors:
        raise EventSchemaError(event_type, errors)
    return ValidatedEvent(envelope)


def _unknown_fields(schema: Schema, data, prefix: str = "") -> list[str]:
    """Paths of fields the schema does not define, at every depth."""
    if not isinstance(data, dict):
        return []
    known = {f.data_key or name: f for name, f in schema.fields.items()}
    found = [f"{prefix}{key}" for key in data if key not in known]
    for key, field in known.items():
        value, inner = data.get(key), field.inner if isinstance(field, fields.List) else field
        if isinstance(inner, fields.Nested) and value is not None:
            items = value if isinstance(field, fields.List) and isinstance(value, list) else [value]
            for i, item in enumerate(items):
                where = f"{prefix}{key}.{i}." if isinstance(field, fields.List) else f"{prefix}{key}."
                found += _unknown_fields(inner.schema, item, where)
    return found


def parse_event(body) -> dict:
    """Check an arriving event: its envelope and its payload. Raises EventSchemaError."""
    if not isinstance(body, dict):
        raise EventSchemaError("?", {"_schema": ["the body is not a JSON object"]})
    event_type = body.get("type", "?")
    try:
        envelope = _TOLERANT_ENVELOPE.load(body)
        schema = _TOLERANT.get((envelope["type"], envelope["version"]))
        if schema is None:
            raise ValidationError({"type": [f"unknown type/version {event_type}/{body.get('version')}"]})
        envelope["payload"] = schema.load(envelope["payload"])
    except ValidationError as exc:
        raise EventSchemaError(str(event_type), exc.messages) from None
    return envelope
