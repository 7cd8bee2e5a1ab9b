"""Reporting's retention of personal data. Reporting holds no contact in clear, but its event log
and case facts say who the customer is (`customer_ref`, `customer_masked`) and what was said
(a complaint's description, a visit's answers, messages). Once a case has been closed longer
than the policy's `retention.personal_data` (P3Y), or a sale was made that long ago, with no
legal hold on it (investigation's `legal_hold_set`, newest by sequence, read from the log), its
facts lose the customer and every logged event about it (by correlation id: the case's, or the
sale's and its return visits') loses the customer and the phone numbers, e-mail addresses and
names in its texts. The customer file's links go with it: the case's, the sale's and their
visits' `customer_ref` columns (and the sale's mask), and the texts the facts keep (a case's
library texts, a visit's answers) are scrubbed again. Figures keep their shape: KPIs and a
rebuild give the same counts.

The run mechanism is shared.persistence.anonymisation, which runs KINDS."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from services.reporting import customers, models
from services.reporting.scrub import scrub_text
from shared.persistence.anonymisation import RecordKind
from shared.security.privacy import scrub_json

# Payload fields that are free text (or hold some), scrubbed; the rest are codes, times and counts.
TEXT_FIELDS = ("description", "discomfort_description", "answers", "comment", "text", "note", "reason", "message",
               "measures", "follow_up", "facts", "root_cause", "purpose", "conversion_note", "action")
HOLDS = ("legal_hold_set", "legal_hold_released")


def scrubber(customer_masked: dict | None):
    """What anonymises a record's texts: the case library's scrubber (scrub.py: numbers,
    addresses, messaging ids, titles and the surname the mask kept), so that the texts the facts
    keep and the log's, folded again, are scrubbed alike."""
    name = (customer_masked or {}).get("name")
    return lambda text: scrub_text(text, name)


def _held_ids(uow) -> set[str]:
    """Cases and sales whose newest legal-hold event holds them (hold events are few)."""
    log = models.event_log
    newest: dict[str, tuple] = {}
    for row in uow.execute(sa.select(log.c.type, log.c.sequence, log.c.envelope).where(log.c.type.in_(HOLDS))):
        payload = row.envelope["payload"]
        for record in (payload.get("case_id"), payload.get("sale_id")):
            if record and (record not in newest or (row.sequence or 0) >= newest[record][0]):
                newest[record] = (row.sequence or 0, row.type)
    return {record for record, (_, kind) in newest.items() if kind == "legal_hold_set"}


def _unheld(uow, find, record_id, *, limit: int | None, lock: bool) -> list:
    """The rows `find` selects but those under a legal hold, locked (skipping rows another run
    holds) when `lock`."""
    held = _held_ids(uow)
    if held:
        find = find.where(record_id.not_in(sorted(held)))
    return uow.execute((find.with_for_update(skip_locked=True) if lock else find).limit(limit)).all()


def _count_held(uow, record_id, *due) -> int:
    """How many records past the retention (`due`) a legal hold keeps."""
    held = _held_ids(uow)
    if not held:
        return 0
    return uow.execute(sa.select(sa.func.count()).where(*due, record_id.in_(sorted(held)))).scalar_one()


def _cases_closed_before(closed_before: datetime) -> tuple:
    c = models.case_facts
    return c.c.closed_at < closed_before, c.c.anonymised_at.is_(None)


def _due_cases(uow, closed_before: datetime, *, limit: int | None, lock: bool) -> list:
    c = models.case_facts
    find = (sa.select(c.c.case_id.label("id"), c.c.facts).where(*_cases_closed_before(closed_before))
            .order_by(c.c.closed_at, c.c.case_id))
    return _unheld(uow, find, c.c.case_id, limit=limit, lock=lock)


def _held_cases(uow, closed_before: datetime) -> int:
    return _count_held(uow, models.case_facts.c.case_id, *_cases_closed_before(closed_before))


def _scrub_log(uow, record_id: str, customer_masked: dict | None, now: datetime) -> None:
    """The record's logged events scrubbed, and the visits they are about (a sale's return
    visits, a case's follow-ups) lose the customer."""
    log = models.event_log
    scrub = scrubber(customer_masked)
    visits = set()
    for row in uow.execute(sa.select(log.c.id, log.c.envelope).where(log.c.correlation_id == record_id,
                                                                      log.c.anonymised_at.is_(None))).all():
        envelope = dict(row.envelope)
        payload = dict(envelope["payload"])
        if row.envelope.get("source") == "aftercare" and payload.get("visit_id"):
            visits.add(payload["visit_id"])
        for name in TEXT_FIELDS:
            if payload.get(name) is not None:
                payload[name] = scrub_json(payload[name], scrub)
        if "customer_ref" in payload:
            payload["customer_ref"] = None
        if "customer_masked" in payload:
            payload["customer_masked"] = {}
        envelope["payload"] = payload
        uow.execute(log.update().where(log.c.id == row.id).values(envelope=envelope, anonymised_at=now))
    _anonymise_visits(uow, sorted(visits), scrub)


def _anonymise_visits(uow, visit_ids: list[str], scrub) -> None:
    v = models.visit_facts
    if not visit_ids:
        return
    for row in uow.execute(sa.select(v.c.visit_id, v.c.facts).where(v.c.visit_id.in_(visit_ids))).all():
        facts = {**row.facts, "customer_ref": None}
        if facts.get("answers") is not None:
            facts["answers"] = scrub_json(facts["answers"], scrub)
        uow.execute(v.update().where(v.c.visit_id == row.visit_id).values(facts=facts, customer_ref=None))


def _masked(uow, facts: dict) -> dict | None:
    """The case's masked customer; one without a masked name of its own (a case opened for an
    adverse reaction) the customer's newest elsewhere (customers.NEWEST_NAME), while it is held."""
    masked = facts.get("customer_masked")
    if (masked or {}).get("name") or not facts.get("customer_ref"):
        return masked
    name = uow.execute(sa.text("SELECT " + customers.NEWEST_NAME.format(ref=":ref")),
                       {"ref": facts["customer_ref"]}).scalar()
    return {**(masked or {}), "name": name} if name else masked


def _anonymise_cases(uow, rows: list, now: datetime) -> None:
    c = models.case_facts
    for row in rows:
        masked = _masked(uow, row.facts)
        facts = {**row.facts, "customer_ref": None, "customer_masked": None}
        if facts.get("texts"):
            facts["texts"] = scrub_json(facts["texts"], scrubber(masked))
        uow.execute(c.update().where(c.c.case_id == row.id).values(facts=facts, customer_ref=None,
                                                                   anonymised_at=now))
        _scrub_log(uow, str(row.id), masked, now)


def _sales_before(sold_before: datetime) -> tuple:
    log = models.event_log
    return log.c.type == "sale_recorded", log.c.occurred_at < sold_before, log.c.anonymised_at.is_(None)


def _due_sales(uow, sold_before: datetime, *, limit: int | None, lock: bool) -> list:
    log = models.event_log
    find = (sa.select(log.c.correlation_id.label("id"), log.c.envelope).where(*_sales_before(sold_before))
            .order_by(log.c.occurred_at, log.c.id))
    return _unheld(uow, find, log.c.correlation_id, limit=limit, lock=lock)


def _held_sales(uow, sold_before: datetime) -> int:
    return _count_held(uow, models.event_log.c.correlation_id, *_sales_before(sold_before))


def _anonymise_sales(uow, rows: list, now: datetime) -> None:
    s = models.sales
    for row in rows:
        _scrub_log(uow, row.id, row.envelope["payload"].get("customer_masked"), now)
        uow.execute(s.update().where(s.c.sale_id == row.id).values(customer_ref=None,
                                                                   customer_masked={"name": None, "phone": None}))


KINDS = (RecordKind("case", due=_due_cases, anonymise=_anonymise_cases, held=_held_cases),
         RecordKind("sale", due=_due_sales, anonymise=_anonymise_sales, held=_held_sales))
