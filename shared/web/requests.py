"""What every service's request schemas share: strict schemas that name an unknown field,
free text, every wrong field by its path, and the opaque cursors of paginated lists."""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from shared.web import fields as datetimes
from shared.web.errors import NotFound, ValidationFailed
from shared.web.http import bad_text
from shared.web.text import CleanText


class Strict(Schema):
    class Meta:
        unknown = RAISE


def Text(max_length: int, *validators, **kwargs):
    """Free text: invisible characters removed, bidirectional controls refused (CleanText), at
    most `max_length` characters, then the `validators`."""
    return CleanText(validate=[validate.Length(min=1, max=max_length), *validators], max_length=max_length,
                     **kwargs)


class StrictBoolean(fields.Boolean):
    """true or false, nothing else: not 1, 0, "yes" or "true" (1 == True in Python, so
    marshmallow's truthy sets would let numbers through)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def flatten_errors(messages, prefix: str = "") -> dict[str, list[str]]:
    """{'customer': {'phone': [...]}} -> {'customer.phone': [...]}: every wrong field by its path."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema" and prefix:
                path = prefix
            flat.update({k: flat.get(k, []) + v for k, v in flatten_errors(value, path).items()})
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_body"] = list(messages)
    else:
        flat[prefix or "_body"] = [str(messages)]
    return flat


def load(schema: Schema, body: dict) -> tuple[dict, dict]:
    """The loaded data and the errors by field path. With errors, the data is what did
    validate, so the checks that need the policy or the clock can still name their fields."""
    try:
        return schema.load(body), {}
    except ValidationError as exc:
        valid = exc.valid_data if isinstance(exc.valid_data, dict) else {}
        return valid, flatten_errors(exc.messages)


def path_id(value, what: str) -> str:
    """A record's id from the path, in canonical form (urn:uuid:..., braces, upper case are
    accepted), or 404: an id that cannot exist names no record."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"no {what} {str(value)[:100]}") from None


# -- lists: a page of items and the cursor to the next ------------------------------------------

class PageQuery(Schema):
    """A list's query string: an unknown parameter is named, `limit` 1-200 (default 50), and the
    `cursor` a previous page gave. A list's own filters are added by subclassing."""

    class Meta:
        unknown = RAISE

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    cursor = fields.String()


def load_query(schema: PageQuery, query: dict, extra: int = 0) -> tuple[dict, tuple | None]:
    """The query's parameters and its cursor decoded (None: the first page), else a 400 naming
    every wrong parameter."""
    params, errors = load(schema, query)
    if errors:
        raise ValidationFailed("invalid query", fields=errors)
    return params, decode_cursor(params["cursor"], extra) if "cursor" in params else None


def page(rows: list, limit: int, view, cursor_of) -> dict:
    """`rows` read with limit + 1: the first `limit` as `view` shows them, and a cursor to the
    next page (`cursor_of(last row)` gives encode_cursor's arguments) when there is one."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [view(row) for row in rows], "next_cursor": encode_cursor(*cursor_of(rows[-1])) if more else None}


# -- cursors: (an instant, an id) of the last item a page showed -------------------------------

MAX_CURSOR = 200  # the API's own cursors are about 100 characters


def encode_cursor(at: datetime | None, record_id: str, *more: str) -> str:
    raw = json.dumps([at.isoformat() if at is not None else None, str(record_id), *more]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, extra: int = 0) -> tuple:
    """(instant or None, id, *extra texts) from a cursor this API gave out, else a 400."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, record_id, *rest = json.loads(raw)
        if len(rest) != extra or not all(isinstance(part, str) and len(part) <= 100 and not bad_text(part)
                                         for part in rest):
            raise ValueError("wrong shape, or text the database cannot take")
        after = None
        if at is not None:
            after = datetime.fromisoformat(at)
            if after.tzinfo is None or datetimes.problem(after):
                raise ValueError("no time zone, or out of range")
        return (after, str(uuid.UUID(record_id)), *rest)
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise ValidationFailed("invalid cursor", fields={"cursor": ["not a cursor this API gave out"]}) from None
