"""Intake's use cases: plain functions over a store of units of work. service.py calls them
after authentication; each does scope, validation, the state change, its events and its
messages in one transaction. The store is IntakeStore (repository.py) in the service and an
in-memory fake in the service-layer tests."""
from __future__ import annotations

import logging
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Callable


from services.intake import events
from services.intake.repository import IntakeUnitOfWork
from services.intake.domain import Complaint, Customer, InquiryClosed, NotAnInquiry, Sale
from services.intake.exceptions import ClosedConflict, NotAnInquiryConflict
from services.intake.policy import PERMISSIONS
from services.intake.schemas import ComplaintIn, ComplaintQuery, ConvertIn, CustomerLookupIn, SaleIn
from shared.calendar.clock import isoformat
from shared.notifications.queue import CustomerMessage
from shared.security.privacy import customer_ref, mask_contact, mask_phone, normalize_phone, redact
from shared.persistence import idempotency
from shared.security.auth import Identity
from shared.web.errors import ApiError, Forbidden, NotFound, RuleRefused, TooManyRequests, ValidationFailed
from shared.web import fields as datetimes
from shared.web.http import bad_text
from shared.web.requests import load, load_query, page, path_id
from shared.web.text import TextRefused, clean_text

COMPLAINT_IN, SALE_IN, COMPLAINT_QUERY, LOOKUP_IN = ComplaintIn(), SaleIn(), ComplaintQuery(), CustomerLookupIn()
CONVERT_IN = ConvertIn()
log = logging.getLogger("closeloop.intake")

# Clocks of front-desk tills drift: an occurred_at this far ahead is still "now".
CLOCK_SKEW = timedelta(minutes=5)


def _branch(identity: Identity, data: dict, policy, errors: dict) -> str | None:
    """The branch a write is for: the one in the body, else the token's only branch."""
    if "branch_code" in errors:  # the schema has said what is wrong with it
        return None
    requested = data.get("branch_code")
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


PLAUSIBLE_FROM = datetime(2000, 1, 1, tzinfo=timezone.utc)


def _plausible(value: datetime | None, now: datetime, name: str, errors: dict) -> None:
    """Not in the future, and not before this century (an instant: 1999-12-31T23:30-01:00 is
    in 2000)."""
    if value is None:
        return
    wrong = datetimes.problem(value)  # the schemas' field refuses these; a caller passing a datetime may not
    if wrong:
        errors.setdefault(name, []).append(wrong)
    elif value < PLAUSIBLE_FROM:
        errors.setdefault(name, []).append("must not be before 2000-01-01")
    elif value > now + CLOCK_SKEW:
        errors.setdefault(name, []).append("must not be in the future")


def register_complaint(store, *, identity: Identity, body: dict, policy, rules, now: datetime, ref_key: bytes,
                       idempotency_key: str | None = None, causation_id: str | None = None) -> tuple[int, dict]:
    PERMISSIONS.require(identity, "complaint:create")
    retry = idempotency.Retry.of(identity, idempotency_key, "/v1/complaints", body)
    earlier = retry.earlier(store)  # a retry gets its first answer, even if the policy changed since
    if earlier is not None:
        return earlier
    data, errors = load(COMPLAINT_IN, body)
    branch_code = _branch(identity, data, policy, errors)
    _check_triage(data, rules, errors)
    _plausible(data.get("occurred_at"), now, "occurred_at", errors)
    if errors:
        raise ValidationFailed("the complaint is invalid", fields=errors)
    branch = policy.branch(branch_code)
    limits = rules.customer_messages
    reply = Customer.from_request(data["customer"]).reply_channel(limits.sms_allowed)
    numbered = store.number_complaint(branch_code, now.astimezone(branch.zone).date(), poster=identity.subject,
                                      recipient=_recipient_key(reply, ref_key), limits=limits)
    if numbered.reference_number is None:
        raise TooManyRequests(f"more than {limits.per_poster.messages} complaints in "
                              f"{limits.per_poster.per} from {identity.subject}; nothing was stored",
                              retry_after=numbered.poster_wait_seconds)
    number = numbered.reference_number
    with store.unit_of_work() as uow:
        earlier = retry.claim(uow)
        if earlier is not None:  # a concurrent twin committed first
            return earlier
        complaint = Complaint.register(data, branch=branch, rules=rules, received_at=now, number=number,
                                       recorded_by=identity.subject, recorded_by_role=identity.role, ref_key=ref_key)
        uow.complaints.add(complaint)
        for envelope in events.envelopes(complaint, causation_id=causation_id):
            uow.publish(envelope)
        acknowledgement = complaint.acknowledgement_message(limits.sms_allowed)
        if acknowledgement is not None and not numbered.recipient_allowed:
            # Kept, not acknowledged again: this contact had its share (SMS pumping, floods).
            log.warning("complaint %s: acknowledgement to %s not sent, over %d per %s", complaint.reference,
                        mask_contact(acknowledgement.recipient), limits.per_recipient.messages,
                        limits.per_recipient.per)
        elif acknowledgement is not None:
            uow.notify(CustomerMessage(channel=acknowledgement.channel, recipient=acknowledgement.recipient,
                                       language=acknowledgement.language, body=acknowledgement.text,
                                       log_text=acknowledgement.masked_text, subject_id=acknowledgement.subject_id))
        answer = complaint.view()
        retry.record(uow, 201, answer)
    return 201, answer


def _check_triage(data: dict, rules, errors: dict) -> None:
    """The category and severity flags a body gives, against the policy's."""
    if data.get("category") is not None and data["category"] not in rules.categories:
        errors["category"] = [f"must be one of: {', '.join(rules.categories)}"]
    unknown_flags = sorted(set(data.get("severity_flags") or []) - set(rules.severity_flags))
    if unknown_flags:
        errors["severity_flags"] = [f"unknown flag(s) {', '.join(unknown_flags)}; "
                                    f"known: {', '.join(sorted(rules.severity_flags))}"]


def convert_complaint(store, *, identity: Identity, complaint_id: str, read_body: Callable[[], dict], policy,
                      rules, now: datetime, idempotency_key: str | None = None,
                      causation_id: str | None = None) -> dict:
    """An inquiry that proves to be a complaint becomes one (Complaint.convert), registered again
    as complaint_registered in the same transaction. Its row is locked: of two conversions at
    once, the second waits and finds a complaint (409 not_an_inquiry, saying when), unless it is
    a retry with the first one's Idempotency-Key: it gets the first answer. In the API's order:
    404, 409 (not an inquiry, closed), 403, 409 (a key another request used), 400 (every wrong
    field), 422 (its branch is gone)."""
    complaint_id = path_id(complaint_id, "complaint")
    path = f"/v1/complaints/{complaint_id}/convert"
    with store.unit_of_work() as uow:
        complaint = _in_scope(uow.complaints.get(complaint_id, for_update=True), identity, "complaint",
                              complaint_id)
        if complaint.kind != "inquiry":
            earlier = _earlier_conversion(uow, identity, idempotency_key, path, read_body)
            if earlier is not None:
                return earlier[1]
        try:
            complaint.check_convertible()
        except NotAnInquiry as conflict:
            raise NotAnInquiryConflict(str(conflict)) from None
        except InquiryClosed as conflict:
            raise ClosedConflict(str(conflict)) from None
        PERMISSIONS.require(identity, "complaint:convert")
        body = read_body()
        errors = {}
        try:
            key = idempotency.check_key(idempotency_key)
        except ValidationFailed as wrong:
            key, errors = None, dict(wrong.fields)
        retry = idempotency.Retry.of(identity, key, path, body)
        if key is not None:  # a key another request used: 409, before the body is judged (400)
            uow.idempotency.lookup(retry.principal, retry.key, retry.digest)
        data, invalid = load(CONVERT_IN, body)
        errors.update(invalid)
        _check_triage(data, rules, errors)
        if errors:
            raise ValidationFailed("the conversion is invalid", fields=errors)
        branch = policy.branches.get(complaint.branch_code)
        if branch is None:
            raise RuleRefused(f"branch {complaint.branch_code} is no longer in the policy: its hours, which the "
                              f"deadlines need, are unknown", fields={"branch_code": ["not in the policy"]})
        earlier = retry.claim(uow)
        if earlier is not None:  # cannot be: the key's conversion would have made it a complaint
            return earlier[1]
        complaint.convert(data, branch=branch, rules=rules, at=now, by=identity.subject)
        uow.complaints.save_conversion(complaint)
        for envelope in events.envelopes(complaint, causation_id=causation_id):
            uow.publish(envelope)
        answer = complaint.view()
        retry.record(uow, 200, answer)
    return answer


def _earlier_conversion(uow, identity: Identity, key: str | None, path: str,
                        read_body: Callable[[], dict]) -> tuple[int, dict] | None:
    """The first answer to a retried conversion (the same Idempotency-Key and body), if any."""
    if key is None:
        return None
    try:
        retry = idempotency.Retry.of(identity, idempotency.check_key(key), path, read_body())
    except ApiError:  # a body or key no conversion was made with: nothing to answer but the conflict
        return None
    return uow.idempotency.lookup(retry.principal, retry.key, retry.digest)


def _recipient_key(reply: tuple[str, str] | None, ref_key: bytes) -> str | None:
    """The acknowledgement's recipient as the limits know it: a keyed hash, never the contact."""
    if reply is None:
        return None
    channel, contact = reply
    return customer_ref(ref_key, contact if channel == "sms" else None, contact if channel == "email" else None)


def _in_scope(record, identity: Identity, what: str, record_id: str):
    """The record, or 404 when it does not exist or lies outside the caller's scope."""
    if record is None or not identity.can_see(record.branch_code):
        raise NotFound(f"no {what} {record_id}")
    return record


def get_complaint(store, *, identity: Identity, complaint_id: str) -> dict:
    complaint_id = path_id(complaint_id, "complaint")
    with store.unit_of_work() as uow:
        complaint = _in_scope(uow.complaints.get(complaint_id), identity, "complaint", complaint_id)
    PERMISSIONS.require(identity, "complaint:read")
    return complaint.view()


def list_complaints(store, *, identity: Identity, query: dict) -> dict:
    PERMISSIONS.require(identity, "complaint:read")
    params, after = load_query(COMPLAINT_QUERY, query)
    limit = params["limit"]
    with store.unit_of_work() as uow:
        complaints = uow.complaints.page(branches=identity.branches, filters=params, after=after, limit=limit + 1)
    return page(complaints, limit, lambda c: c.view(), lambda c: (c.received_at, c.id))


def record_sale(store, *, identity: Identity, body: dict, policy, rules, now: datetime, ref_key: bytes,
                idempotency_key: str | None = None, causation_id: str | None = None) -> tuple[int, dict]:
    PERMISSIONS.require(identity, "sale:create")
    retry = idempotency.Retry.of(identity, idempotency_key, "/v1/sales", body)
    earlier = retry.earlier(store)
    if earlier is not None:
        return earlier
    data, errors = load(SALE_IN, body)
    branch_code = _branch(identity, data, policy, errors)
    _plausible(data.get("sold_at"), now, "sold_at", errors)
    known = set(policy.product_types)
    raw_items = body.get("items") if isinstance(body.get("items"), list) else []
    for i, item in enumerate(raw_items):
        product_type = item.get("product_type") if isinstance(item, dict) else None
        if isinstance(product_type, str) and product_type not in known:
            errors[f"items.{i}.product_type"] = [f"must be one of: {', '.join(sorted(known))}"]
    if errors:
        raise ValidationFailed("the sale is invalid", fields=errors)
    with store.unit_of_work() as uow:
        earlier = retry.claim(uow)
        if earlier is not None:  # a concurrent twin committed first
            return earlier
        sale = Sale.register(data, branch=policy.branch(branch_code), recorded_at=now, recorded_by=identity.subject,
                             ref_key=ref_key)
        uow.sales.add(sale)
        for envelope in events.envelopes(sale, causation_id=causation_id):
            uow.publish(envelope)
        answer = sale.view()
        retry.record(uow, 201, answer)
    return 201, answer


PURPOSE_MIN_LETTERS, PURPOSE_MAX_CHARS = 2, 500
PURPOSE_RULE = (f"a purpose of at least {PURPOSE_MIN_LETTERS} letters (spaces and invisible characters do not "
                f"count, bidirectional controls are refused), at most {PURPOSE_MAX_CHARS} characters, is required "
                f"to read a customer's contact")


class _Refused(Exception):
    """A contact read refused: the error the caller gets, and why, for the access log."""

    def __init__(self, error, reason: str, record=None):
        super().__init__(reason)
        self.error, self.reason, self.record = error, reason, record


def _clean_purpose(purpose) -> str | None:
    """The purpose as it is logged (the free-text rule of every service), or None if it is no purpose."""
    if not isinstance(purpose, str) or bad_text(purpose) or len(purpose) > PURPOSE_MAX_CHARS:
        return None
    try:
        purpose = clean_text(purpose)
    except TextRefused:
        return None
    return purpose if sum(unicodedata.category(c).startswith("L") for c in purpose) >= PURPOSE_MIN_LETTERS else None


def read_contact(store, *, identity: Identity, record_id: str, purpose, now: datetime,
                 archived: bool = False) -> dict:
    """A customer's contact in clear, for the user working the case or visit (`archived`: for
    HQ or an auditor reading a closed case's archive, never an open complaint's); every read,
    and every refusal (who, which id, why), is logged with its purpose."""
    try:
        return _read_contact(store, identity=identity, record_id=record_id, purpose=purpose, now=now,
                             archived=archived)
    except _Refused as refused:
        _log_refusal(store, identity=identity, asked=record_id, purpose=purpose, now=now, refused=refused)
        raise refused.error from None


def _read_contact(store, *, identity: Identity, record_id: str, purpose, now: datetime, archived: bool) -> dict:
    try:
        record_id = path_id(record_id, "record")
    except NotFound as error:
        raise _Refused(error, "unknown_record") from None
    with store.unit_of_work() as uow:
        _, record = _complaint_or_sale(uow, record_id)
        if record is None:
            raise _Refused(NotFound(f"no record {record_id}"), "unknown_record")
        try:  # scope, role, purpose: in the error order
            _in_scope(record, identity, "record", record_id)
        except NotFound as error:
            raise _Refused(error, "out_of_scope", record) from None
        try:
            PERMISSIONS.require(identity, "contact:archive" if archived else "contact:read")
            if archived and record.record_type == "complaint" and record.status != "closed":
                raise Forbidden("the archive's contact is for closed complaints only")
        except Forbidden as error:
            raise _Refused(error, "role", record) from None
        logged_purpose = _clean_purpose(purpose)
        if logged_purpose is None:
            raise _Refused(ValidationFailed(PURPOSE_RULE, fields={"purpose": [PURPOSE_RULE]}), "purpose", record)
        if record.anonymised_at is not None:  # retention took it: nothing left to give
            raise _Refused(NotFound(f"the contact of {record.record_type} {record.id} was anonymised "
                                    f"{isoformat(record.anonymised_at)}"), "anonymised", record)
        record_type = record.record_type
        uow.contact_access.add(accessed_at=now, subject=identity.subject, role=identity.role,
                               record_type=record_type, record_id=record.id, branch_code=record.branch_code,
                               purpose=logged_purpose, outcome="granted")
        customer = record.customer
        answer = {"record_type": record_type, "record_id": record.id, "name": customer.name,
                  "phone": customer.phone, "email": customer.email, "language": customer.language}
        if record_type == "sale":
            answer["contact_consent"] = record.contact_consent
    return answer


# -- a customer looked up by phone, for a front desk ----------------------------------------------

LOOKUP_LIMIT = 50  # complaints, and sales, in one answer
LOOKUP_PURPOSE_RULE = (f"a purpose of at least {PURPOSE_MIN_LETTERS} letters (spaces and invisible characters do "
                       f"not count, bidirectional controls are refused), at most {PURPOSE_MAX_CHARS} characters, "
                       f"is required to look a customer up")


def look_up_customer(store, *, identity: Identity, read_body: Callable[[], dict], ref_key: bytes,
                     now: datetime) -> dict:
    """A customer's complaints (where each stands) and sales in the caller's scope, newest first,
    found by phone: normalised as on complaints and sales, then through the keyed customer_ref
    (an index, never a scan of phones). The phone is not shown back but masked. Every look-up is
    logged in the contact-access log with who, the purpose and the customer_ref, whatever it
    found. An unknown phone, or one whose records are all in other branches, answers the same
    empty lists. In the API's order: 403 (role), then 413/415/400 (the body: every wrong field)."""
    PERMISSIONS.require(identity, "customer:lookup")
    body = read_body()
    data, errors = load(LOOKUP_IN, body)
    purpose = _clean_purpose(body.get("purpose"))  # the rule of contact reads
    if purpose is None:
        errors["purpose"] = [LOOKUP_PURPOSE_RULE]
    if errors:
        raise ValidationFailed("the look-up is invalid", fields=errors)
    phone = normalize_phone(data["phone"])
    ref = customer_ref(ref_key, phone)
    with store.unit_of_work() as uow:
        complaints = uow.complaints.of_customer(ref, branches=identity.branches, limit=LOOKUP_LIMIT + 1)
        sales = uow.sales.of_customer(ref, branches=identity.branches, limit=LOOKUP_LIMIT + 1)
        uow.contact_access.add(accessed_at=now, subject=identity.subject, role=identity.role,
                               record_type="customer", record_id=ref, branch_code=None, purpose=purpose,
                               outcome="granted")
    return {"customer_ref": ref, "customer": {"phone": mask_phone(phone)},
            "complaints": [c.standing() for c in complaints[:LOOKUP_LIMIT]],
            "more_complaints": len(complaints) > LOOKUP_LIMIT,
            "sales": [s.summary() for s in sales[:LOOKUP_LIMIT]], "more_sales": len(sales) > LOOKUP_LIMIT}


def _loggable(value, limit: int) -> str:
    """Any caller's value as text PostgreSQL takes (no NUL, no lone surrogate), cut short."""
    text = value if isinstance(value, str) else repr(value)
    text = text[:limit].replace("\x00", "\ufffd")
    return text.encode("utf-8", "replace").decode("utf-8")


def _log_refusal(store, *, identity: Identity, asked, purpose, now: datetime, refused: _Refused) -> None:
    """In a transaction of its own, after the read's rolled back. If it fails, the caller
    still gets its refusal; the failure is logged."""
    record = refused.record
    try:
        with store.unit_of_work() as uow:
            uow.contact_access.add(
                accessed_at=now, subject=identity.subject, role=identity.role,
                record_type=record.record_type if record else None,
                record_id=record.id if record else _loggable(asked, 100),
                branch_code=record.branch_code if record else None,
                purpose=_loggable(purpose, PURPOSE_MAX_CHARS), outcome="refused", reason=refused.reason)
    except Exception:  # noqa: BLE001 - the refusal must answer even when the log cannot be written
        log.exception("contact read refused but not logged", extra={"reason": refused.reason})


def follow_case(store, *, event: dict) -> bool:
    """A case event moves its complaint's status, unless a newer one already did (events of
    one case may arrive in any order). A case not opened for a complaint (an adverse
    reaction after a sale) has no complaint here. True when the event was applied."""
    at = datetime.fromisoformat(event["occurred_at"])
    return _follow(store, event, "complaints", event["payload"]["complaint_id"],
                   lambda complaint: complaint.follow_case(event["type"], event["sequence"], at))


def follow_legal_hold(store, *, event: dict) -> bool:
    """An HQ admin set a legal hold on a case, or released it: while held, the personal data of
    its complaint (or, for a case opened by an adverse reaction, of its sale) outlives the
    retention. True when the event was applied."""
    payload = event["payload"]
    hold = {"reason": payload.get("reason"), "by": payload.get("actor"), "at": event["occurred_at"]}
    if payload.get("sale_id"):
        return _follow(store, event, "sales", payload["sale_id"], lambda sale: sale.follow_legal_hold(
            payload["case_id"], event["type"], event["sequence"], hold))
    return _follow(store, event, "complaints", payload["complaint_id"],
                   lambda complaint: complaint.follow_legal_hold(event["type"], event["sequence"], hold))


def _follow(store, event: dict, records: str, record_id: str | None, apply) -> bool:
    """Apply a case event to the complaint or sale it names, locked; False when it names none here."""
    with store.unit_of_work() as uow:
        repository = getattr(uow, records)
        record = repository.get(record_id, for_update=True) if record_id else None
        if record is None or record.branch_code != event["branch_code"]:
            return False  # not ours, or not the branch the case says: a producer's mistake
        changed = apply(record)
        if changed:
            repository.save_progress(record)
    return changed


# -- messages to customers, on other services' request ------------------------------------------

def _complaint_or_sale(uow, record_id: str, *, record_type: str | None = None, for_update: bool = False):
    """(its repository, the record) for an id of a complaint or a sale (`record_type` when the
    caller knows which); the record may be None."""
    looked_in = [uow.complaints, uow.sales] if record_type is None else \
        [uow.complaints if record_type == "complaint" else uow.sales]
    for records in looked_in:
        record = records.get(record_id, for_update=for_update)
        if record is not None:
            return records, record
    return looked_in[-1], None


def _publish_recorded(uow, records, record, causation_id: str | None) -> None:
    """Queue what the record noted, and keep its event count."""
    for envelope in events.envelopes(record, causation_id=causation_id):
        uow.publish(envelope)
    records.save_progress(record)


def send_customer_message(store, *, event: dict, now: datetime) -> None:
    """Investigation or aftercare asks intake, the holder of the contact, to send a text to
    a complaint's or sale's customer. Queued for the notification sender in the handler's
    own transaction; what cannot go anywhere is answered with customer_message_failed."""
    request = event["payload"]
    with store.unit_of_work() as uow:
        records, record = _complaint_or_sale(uow, request["record_id"], record_type=request["record_type"],
                                             for_update=True)
        if record is None or record.branch_code != event["branch_code"]:  # a customer of another branch: refuse
            uow.publish(events.unknown_record(event, now))
            return
        delivery = record.delivery_for(event["event_id"], request["channels"], now)
        if delivery is not None:
            customer = record.customer
            uow.notify(CustomerMessage(
                channel=delivery.channel, recipient=delivery.recipient, language=request["language"],
                body=request["text"], subject_id=record.id, request_event_id=event["event_id"],
                log_text=redact(request["text"], name=customer.name, phone=customer.phone, email=customer.email)))
        _publish_recorded(uow, records, record, causation_id=event["event_id"])


def message_outcome(conn, row, delivered: bool, error: str | None) -> None:
    """The notification sender's hook: the final outcome of a message another service asked
    for, published in the transaction that records it."""
    if row.request_event_id is None:
        return  # intake's own acknowledgements: nobody waits for their outcome
    with IntakeUnitOfWork.joining(conn) as uow:
        records, record = _complaint_or_sale(uow, row.subject_id, for_update=True)
        if record is None:
            return
        record.message_outcome(str(row.request_event_id), row.channel, delivered, error,
                               at=datetime.now(timezone.utc))
        _publish_recorded(uow, records, record, causation_id=None)
