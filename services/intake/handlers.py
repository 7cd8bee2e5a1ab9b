"""Intake's use cases: plain functions over a unit of work. service.py calls them after
authentication; they do scope, validation, the state change, its events and its
notifications in one transaction."""
from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from marshmallow import ValidationError

from shared.persistence import idempotency
from shared.security.auth import Identity
from shared.web.http import bad_text
from shared.web.errors import Forbidden, NotFound, ValidationFailed
from services.intake import models
from services.intake.domain import Complaint, Customer, Sale
from services.intake.schemas import ComplaintIn, ComplaintQuery, SaleIn, flatten_errors

COMPLAINT_IN, SALE_IN, COMPLAINT_QUERY = ComplaintIn(), SaleIn(), ComplaintQuery()

# Clocks of front-desk tills drift: an occurred_at this far ahead is still "now".
CLOCK_SKEW = timedelta(minutes=5)


def _load(schema, body: dict) -> tuple[dict, dict]:
    """The loaded data and the errors by field path. With errors, the data is what did
    validate, so the checks that need the policy or the clock can still name their fields."""
    try:
        return schema.load(body), {}
    except ValidationError as exc:
        valid = exc.valid_data if isinstance(exc.valid_data, dict) else {}
        return valid, flatten_errors(exc.messages)


def _branch_for(identity: Identity, requested: str | None, policy, errors: dict) -> str | None:
    """The branch a write is for: the one in the body, else the token's only branch."""
    if requested is None:
        if identity.branches is not None and len(identity.branches) == 1:
            return next(iter(identity.branches))
        errors["branch_code"] = ["required: your token covers several branches"]
        return None
    if requested not in policy.branches:
        errors["branch_code"] = [f"unknown branch {requested!r}"]
        return None
    if not identity.can_see(requested):
        raise Forbidden(f"branch {requested} is outside your token's scope")
    return requested


EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _plausible(value: datetime | None, now: datetime, name: str, errors: dict) -> None:
    """Not in the future, and not before this century (also keeps UTC conversion in range)."""
    if value is None:
        return
    if value.year < 2000 or value.astimezone(timezone.utc) < EARLIEST:
        errors.setdefault(name, []).append("must not be before 2000-01-01")
    elif value > now + CLOCK_SKEW:
        errors.setdefault(name, []).append("must not be in the future")


def _next_sequence(store, branch_code: str, day) -> int:
    """The branch's next number of the day, committed on its own (migration 0002): holding the
    counter's row lock until the complaint commits would serialize a branch's requests. A
    complaint that then fails to commit leaves a gap in the numbers, never a duplicate."""
    with store.engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        dbapi.autocommit = True  # the statement is its own transaction: one round trip
        try:
            with dbapi.cursor() as cursor:
                cursor.execute("SELECT next_reference_number(%s, %s)", (branch_code, day))
                return cursor.fetchone()[0]
        finally:
            dbapi.autocommit = False


def register_complaint(store, *, identity: Identity, body: dict, policy, now: datetime, ref_key: bytes,
                       idempotency_key: str | None = None, causation_id: str | None = None) -> tuple[int, dict]:
    retry = idempotency.Retry.of(identity, idempotency_key, "/v1/complaints", body)
    earlier = retry.earlier(store.engine)  # 409 comes before 403 and 400
    if earlier is not None:
        return earlier
    data, errors = _load(COMPLAINT_IN, body)
    requested_branch = body.get("branch_code") if isinstance(body.get("branch_code"), str) else None
    branch_code = _branch_for(identity, requested_branch, policy, errors)
    if data.get("category") is not None and data["category"] not in policy.categories:
        errors["category"] = [f"must be one of: {', '.join(policy.categories)}"]
    unknown_flags = sorted(set(data.get("severity_flags") or []) - set(policy.severity_flags))
    if unknown_flags:
        errors["severity_flags"] = [f"unknown flag(s) {', '.join(unknown_flags)}; "
                                    f"known: {', '.join(sorted(policy.severity_flags))}"]
    _plausible(data.get("occurred_at"), now, "occurred_at", errors)
    if errors:
        raise ValidationFailed("the complaint is invalid", fields=errors)
    local_day = now.astimezone(policy.branch(branch_code).zone).date()
    sequence = _next_sequence(store, branch_code, local_day)
    with store.unit_of_work() as uow:
        earlier = retry.claim(uow.conn)
        if earlier is not None:  # a concurrent twin committed first
            return earlier
        complaint = Complaint.register(data, branch_code=branch_code, policy=policy, received_at=now,
                                       sequence=sequence,
                                       recorded_by=identity.subject, recorded_by_role=identity.role)
        uow.insert(models.complaints, _complaint_row(complaint, ref_key))
        uow.publish(complaint.registered_event(ref_key, causation_id))
        notification = complaint.acknowledgement_notification()
        if notification is not None:
            uow.notify(notification)
        answer = complaint.view()
        retry.record(uow.conn, 201, answer)
    return 201, answer


def _complaint_row(c: Complaint, ref_key: bytes) -> dict:
    return {
        "id": c.id, "reference": c.reference, "branch_code": c.branch_code, "region": c.region,
        "kind": c.kind, "channel": c.channel, "category": c.category, "category_source": c.category_source,
        "priority": c.priority, "severity_flags": c.severity_flags, "description": c.description,
        "occurred_at": c.occurred_at, "received_at": c.received_at, "service": c.service,
        "products": c.products, "customer_name": c.customer.name, "customer_phone": c.customer.phone,
        "customer_email": c.customer.email, "customer_language": c.customer.language,
        "customer_ref": c.customer.ref(ref_key), "status": c.status,
        "first_response_due": c.first_response_due, "resolution_due": c.resolution_due,
        "acknowledgement": c.acknowledgement, "recorded_by": c.recorded_by,
        "recorded_by_role": c.recorded_by_role,
    }


def _complaint_from_row(row) -> Complaint:
    return Complaint(
        id=str(row.id), reference=row.reference, branch_code=row.branch_code, region=row.region,
        kind=row.kind, channel=row.channel, category=row.category, category_source=row.category_source,
        priority=row.priority, severity_flags=row.severity_flags, description=row.description,
        occurred_at=row.occurred_at, received_at=row.received_at, service=row.service,
        products=row.products, customer=Customer(row.customer_name, row.customer_phone,
                                                 row.customer_email, row.customer_language),
        first_response_due=row.first_response_due, resolution_due=row.resolution_due,
        acknowledgement=row.acknowledgement, recorded_by=row.recorded_by,
        recorded_by_role=row.recorded_by_role, status=row.status)


def _find(conn, table, record_id: str, identity: Identity, what: str):
    """The row, or 404 when it does not exist or lies outside the caller's scope."""
    try:
        record_id = str(uuid.UUID(record_id))  # canonical form: urn:uuid:..., braces, upper case
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"no {what} {str(record_id)[:100]}") from None
    row = conn.execute(sa.select(table).where(table.c.id == record_id)).first()
    if row is None or not identity.can_see(row.branch_code):
        raise NotFound(f"no {what} {record_id}")
    return row


def get_complaint(store, *, identity: Identity, complaint_id: str) -> dict:
    with store.unit_of_work() as uow:
        row = _find(uow.conn, models.complaints, complaint_id, identity, "complaint")
    identity.require("complaint:read")
    return _complaint_from_row(row).view()


def _encode_cursor(received_at: datetime, complaint_id: str) -> str:
    raw = json.dumps([received_at.isoformat(), str(complaint_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        if len(cursor) > 200:  # the API's own cursors are about 100 characters
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        received_at, complaint_id = json.loads(raw)
        after = datetime.fromisoformat(received_at)
        if after.tzinfo is None:
            raise ValueError("no time zone")
        return after, str(uuid.UUID(complaint_id))
    except (ValueError, TypeError, AttributeError, RecursionError):
        raise ValidationFailed("invalid cursor", fields={"cursor": ["not a cursor this API gave out"]}) from None


def list_complaints(store, *, identity: Identity, query: dict) -> dict:
    identity.require("complaint:read")
    params, errors = _load(COMPLAINT_QUERY, query)
    if errors:
        raise ValidationFailed("invalid query", fields=errors)
    table = models.complaints
    statement = sa.select(table)
    if identity.branches is not None:
        statement = statement.where(table.c.branch_code.in_(sorted(identity.branches)))
    for name in ("status", "kind", "priority", "category"):
        if name in params:
            statement = statement.where(table.c[name] == params[name])
    if "branch" in params:
        statement = statement.where(table.c.branch_code == params["branch"])
    if "from_" in params:
        statement = statement.where(table.c.received_at >= params["from_"])
    if "to" in params:
        statement = statement.where(table.c.received_at < params["to"])
    if "cursor" in params:
        after_time, after_id = _decode_cursor(params["cursor"])
        statement = statement.where(sa.tuple_(table.c.received_at, table.c.id) < sa.tuple_(
            sa.literal(after_time, sa.DateTime(timezone=True)), sa.cast(after_id, table.c.id.type)))
    limit = params["limit"]
    statement = statement.order_by(table.c.received_at.desc(), table.c.id.desc()).limit(limit + 1)
    with store.unit_of_work() as uow:
        rows = uow.execute(statement).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return {"items": [_complaint_from_row(r).view() for r in rows],
            "next_cursor": _encode_cursor(rows[-1].received_at, rows[-1].id) if more else None}


def record_sale(store, *, identity: Identity, body: dict, policy, now: datetime, ref_key: bytes,
                idempotency_key: str | None = None, causation_id: str | None = None) -> tuple[int, dict]:
    retry = idempotency.Retry.of(identity, idempotency_key, "/v1/sales", body)
    earlier = retry.earlier(store.engine)
    if earlier is not None:
        return earlier
    data, errors = _load(SALE_IN, body)
    requested_branch = body.get("branch_code") if isinstance(body.get("branch_code"), str) else None
    branch_code = _branch_for(identity, requested_branch, policy, errors)
    _plausible(data.get("sold_at"), now, "sold_at", errors)
    known = set(policy.visit_delays) | {"other"}
    raw_items = body.get("items") if isinstance(body.get("items"), list) else []
    for i, item in enumerate(raw_items):
        product_type = item.get("product_type") if isinstance(item, dict) else None
        if isinstance(product_type, str) and product_type not in known:
            errors[f"items.{i}.product_type"] = [f"must be one of: {', '.join(sorted(known))}"]
    if errors:
        raise ValidationFailed("the sale is invalid", fields=errors)
    with store.unit_of_work() as uow:
        earlier = retry.claim(uow.conn)
        if earlier is not None:  # a concurrent twin committed first
            return earlier
        sale = Sale.record(data, branch_code=branch_code, policy=policy, recorded_at=now,
                           recorded_by=identity.subject)
        uow.insert(models.sales, dict(
            id=sale.id, branch_code=sale.branch_code, region=sale.region, sold_at=sale.sold_at,
            recorded_at=sale.recorded_at, customer_name=sale.customer.name,
            customer_phone=sale.customer.phone, customer_email=sale.customer.email,
            customer_language=sale.customer.language, customer_ref=sale.customer.ref(ref_key),
            contact_consent=sale.contact_consent, items=sale.items, recorded_by=sale.recorded_by))
        uow.publish(sale.recorded_event(ref_key, causation_id))
        answer = sale.view()
        retry.record(uow.conn, 201, answer)
    return 201, answer


def read_contact(store, *, identity: Identity, record_id: str, purpose: str | None, now: datetime) -> dict:
    """A customer's contact in clear, for the user working the case or visit; every read is
    logged with its purpose."""
    if not isinstance(purpose, str) or bad_text(purpose):
        purpose = None  # refused below, after scope and role, in the error order
    with store.unit_of_work() as uow:
        try:
            row, record_type = _find(uow.conn, models.complaints, record_id, identity, "record"), "complaint"
        except NotFound:
            row, record_type = _find(uow.conn, models.sales, record_id, identity, "record"), "sale"
        identity.require("contact:read")
        if not purpose or not str(purpose).strip():
            raise ValidationFailed("a purpose is required to read a customer's contact",
                                   fields={"purpose": ["required"]})
        uow.execute(models.contact_access_log.insert().values(
            accessed_at=now, subject=identity.subject, role=identity.role, record_type=record_type,
            record_id=str(row.id), branch_code=row.branch_code, purpose=str(purpose).strip()[:500]))
        answer = {"record_type": record_type, "record_id": str(row.id), "name": row.customer_name,
                  "phone": row.customer_phone, "email": row.customer_email,
                  "language": row.customer_language}
        if record_type == "sale":
            answer["contact_consent"] = row.contact_consent
    return answer
