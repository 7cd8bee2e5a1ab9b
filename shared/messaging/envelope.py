"""The envelope every event travels in, built strictly and read tolerantly.

Producers build events with `build_event`, which refuses anything that fails its schema
(unknown payload fields included, so contact data cannot slip onto the bus). Consumers
read them with `parse_event`, which tolerates fields added later, and tells an event of a
newer version than this code knows (`NewerVersion`: wait for the upgrade) from a malformed
one. Ids and times are plain strings on the wire: kombu's JSON would tag UUID and datetime.
The payload schemas of every type, by source, are in `shared.messaging.catalogue`.
"""
from __future__ import annotations

import uuid
from datetime import datetime

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate

from shared.calendar.clock import isoformat
from shared.web.fields import problem


class EventSchemaError(ValueError):
    def __init__(self, event_type: str, errors: dict):
        super().__init__(f"event {event_type!r} fails its schema: {errors}")
        self.event_type = event_type
        self.errors = errors


class NewerVersion(EventSchemaError):
    """A version of a known type that this code does not know yet: not malformed, early.
    The producer rolled out first; the consumer's upgrade will read it."""


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
    wrong = problem(parsed)  # a consumer could not store or move it: malformed, parked at once
    if wrong:
        raise ValidationError(f"The date-time {wrong}.")


class ValidatedEvent(dict):
    """An envelope that passed its schema. Only `build_event` makes one, and the outbox
    accepts nothing else, so an invalid event cannot be published."""


def IdString(**kwargs):
    return fields.String(validate=_check_uuid, **kwargs)


def _check_text(value: str) -> None:
    if "\x00" in value:
        raise ValidationError("Must not contain the NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError("Must be valid Unicode (no lone surrogates).") from None


def Text(*validators, **kwargs):
    """A string a consumer can store: no NUL, no lone surrogate (PostgreSQL refuses both, so
    such an event would fail for ever instead of being parked as malformed at once)."""
    return fields.String(validate=[_check_text, *validators], **kwargs)


def InstantString(**kwargs):
    return fields.String(validate=_check_instant, **kwargs)


class Tolerant(Schema):
    """Nested shapes ignore fields they do not know, so an older consumer reads a newer
    event; producers are held to the exact shape by `_unknown_fields` instead."""

    class Meta:
        unknown = EXCLUDE


class Envelope(Schema):
    event_id = IdString(required=True)
    type = fields.String(required=True, validate=validate.Length(min=1))
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = InstantString(required=True)
    source = fields.String(required=True, validate=validate.Length(min=1))
    branch_code = fields.String(required=True, allow_none=True)
    correlation_id = fields.String(required=True, validate=validate.Length(min=1))
    causation_id = fields.String(required=True, allow_none=True)
    # The n-th event its producer published about this record (complaint, case, sale, visit):
    # queues and retries reorder events, so a projection applies only what is newer.
    sequence = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=2**63 - 1))
    payload = fields.Dict(required=True)


# Schema instances are reusable and costly to build: one strict and one tolerant of each,
# made on first use (the catalogue imports this module).
_STRICT_ENVELOPE, _TOLERANT_ENVELOPE = Envelope(unknown=RAISE), Envelope(unknown=EXCLUDE)
_strict: dict = {}
_tolerant: dict = {}


def _schema(event_type: str, version: int, strict: bool) -> Schema | None:
    from shared.messaging.catalogue import SCHEMAS

    cache = _strict if strict else _tolerant
    schema = cache.get((event_type, version))
    if schema is None and (event_type, version) in SCHEMAS:
        schema = cache[(event_type, version)] = SCHEMAS[(event_type, version)](unknown=RAISE if strict else EXCLUDE)
    return schema


def build_event(event_type: str, payload: dict, *, branch_code: str | None, correlation_id: str,
                occurred_at: datetime, sequence: int, causation_id: str | None = None, version: int = 1,
                event_id: str | None = None, source: str | None = None) -> ValidatedEvent:
    """A validated envelope, ready for the outbox. `source` may be left out for a type only
    one service publishes. Raises EventSchemaError."""
    from shared.messaging.catalogue import SOURCES

    schema = _schema(event_type, version, strict=True)
    if schema is None:
        raise EventSchemaError(event_type, {"type": [f"no schema for version {version}"]})
    sources = SOURCES[event_type]
    if source is None and len(sources) == 1:
        source = next(iter(sources))
    if source not in sources:
        raise EventSchemaError(event_type, {"source": [f"must be one of {', '.join(sorted(sources))}"]})
    envelope = {
        "event_id": event_id or str(uuid.uuid4()),
        "type": event_type,
        "version": version,
        "occurred_at": isoformat(occurred_at),
        "source": source,
        "branch_code": branch_code,
        "correlation_id": str(correlation_id),
        "causation_id": None if causation_id is None else str(causation_id),
        "sequence": sequence,
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
    """Check an arriving event: its envelope and its payload. Raises NewerVersion for a
    later version of a known type, EventSchemaError for anything else that is wrong."""
    from shared.messaging.catalogue import LATEST

    if not isinstance(body, dict):
        raise EventSchemaError("?", {"_schema": ["the body is not a JSON object"]})
    event_type = body.get("type", "?")
    try:
        envelope = _TOLERANT_ENVELOPE.load(body)
        schema = _schema(envelope["type"], envelope["version"], strict=False)
        if schema is None:
            known = LATEST.get(envelope["type"])
            if known is not None and envelope["version"] > known:
                raise NewerVersion(envelope["type"], {"version": [
                    f"version {envelope['version']} is newer than this code knows ({known}): upgrade the consumer"]})
            raise ValidationError({"type": [f"unknown type/version {event_type}/{body.get('version')}"]})
        envelope["payload"] = schema.load(envelope["payload"])
    except ValidationError as exc:
        raise EventSchemaError(str(event_type), exc.messages) from None
    return envelope
