"""Intake's repositories over its tables (models.py), opened on each unit of work: the
handlers ask for complaints and sales, not for rows. The in-memory fakes used by the
service-layer tests are in tests/unit/intake_fakes.py."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from services.intake import models
from services.intake.domain import Complaint, Customer, Numbered, Sale
from shared.persistence import idempotency
from shared.persistence.unit_of_work import Store, UnitOfWork


class Complaints:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, c: Complaint) -> None:
        self._uow.insert(models.complaints, {
            "id": c.id, "reference": c.reference, "branch_code": c.branch_code, "region": c.region,
            "kind": c.kind, "channel": c.channel, "category": c.category, "category_source": c.category_source,
            "priority": c.priority, "severity_flags": c.severity_flags, "description": c.description,
            "occurred_at": c.occurred_at, "received_at": c.received_at, "service": c.service,
            "products": c.products, "customer_name": c.customer.name, "customer_phone": c.customer.phone,
            "customer_email": c.customer.email, "customer_language": c.customer.language,
            "customer_ref": c.customer_ref, "status": c.status,
            "first_response_due": c.first_response_due, "resolution_due": c.resolution_due,
            "acknowledgement": c.acknowledgement, "recorded_by": c.recorded_by,
            "recorded_by_role": c.recorded_by_role, "last_sequence": c.sequence,
            "status_sequence": c.status_sequence})
        self._uow.track(c)

    def get(self, complaint_id: str, *, for_update: bool = False) -> Complaint | None:
        """`for_update` locks the row until commit: two events about one complaint wait
        for each other instead of overwriting each other's change."""
        statement = sa.select(models.complaints).where(models.complaints.c.id == complaint_id)
        row = self._uow.execute(statement.with_for_update() if for_update else statement).first()
        return None if row is None else self._uow.track(_complaint(row))

    def save_progress(self, c: Complaint) -> None:
        """The status, the legal hold and the event numbers: what changes after registration."""
        self._uow.execute(models.complaints.update().where(models.complaints.c.id == c.id).values(
            status=c.status, status_sequence=c.status_sequence, last_sequence=c.sequence, closed_at=c.closed_at,
            legal_hold=c.legal_hold, legal_hold_sequence=c.legal_hold_sequence))

    def save_conversion(self, c: Complaint) -> None:
        """An inquiry converted into a complaint: its triage, deadlines and conversion."""
        self._uow.execute(models.complaints.update().where(models.complaints.c.id == c.id).values(
            kind=c.kind, category=c.category, category_source=c.category_source, priority=c.priority,
            severity_flags=c.severity_flags, first_response_due=c.first_response_due,
            resolution_due=c.resolution_due, converted_from=c.converted_from, converted_at=c.converted_at,
            converted_by=c.converted_by, conversion_note=c.conversion_note, last_sequence=c.sequence))

    # -- retention ------------------------------------------------------------------------------

    @staticmethod
    def _past_retention(closed_before: datetime):
        t = models.complaints
        return sa.and_(t.c.status == "closed", t.c.closed_at < closed_before, t.c.anonymised_at.is_(None))

    def due_for_anonymisation(self, closed_before: datetime, *, limit: int | None, lock: bool) -> list[Complaint]:
        """Closed complaints whose case closed before `closed_before`, not held, oldest closure
        first; `lock` takes them (skipping those a case event is changing)."""
        t = models.complaints
        statement = (sa.select(t).where(self._past_retention(closed_before), t.c.legal_hold.is_(None))
                     .order_by(t.c.closed_at, t.c.id).limit(limit))
        rows = self._uow.execute(statement.with_for_update(skip_locked=True) if lock else statement).all()
        return [_complaint(row) for row in rows]

    def held_past_retention(self, closed_before: datetime) -> int:
        t = models.complaints
        return self._uow.execute(sa.select(sa.func.count()).where(
            self._past_retention(closed_before), t.c.legal_hold.is_not(None))).scalar_one()

    def save_anonymised(self, c: Complaint) -> None:
        self._uow.execute(models.complaints.update().where(models.complaints.c.id == c.id).values(
            **_contact_values(c), description=c.description, acknowledgement=c.acknowledgement,
            conversion_note=c.conversion_note))

    def page(self, *, branches: frozenset[str] | None, filters: dict, after: tuple | None,
             limit: int) -> list[Complaint]:
        """Newest first, in the given branches (None: all); `after` is (received_at, id)."""
        table = models.complaints
        statement = sa.select(table)
        if branches is not None:
            statement = statement.where(table.c.branch_code.in_(sorted(branches)))
        for name in ("status", "kind", "priority", "category"):
            if name in filters:
                statement = statement.where(table.c[name] == filters[name])
        if "branch" in filters:
            statement = statement.where(table.c.branch_code == filters["branch"])
        if "from_" in filters:
            statement = statement.where(table.c.received_at >= filters["from_"])
        if "to" in filters:
            statement = statement.where(table.c.received_at < filters["to"])
        if after is not None:
            statement = statement.where(sa.tuple_(table.c.received_at, table.c.id) < sa.tuple_(
                sa.literal(after[0], sa.DateTime(timezone=True)), sa.cast(after[1], table.c.id.type)))
        statement = statement.order_by(table.c.received_at.desc(), table.c.id.desc()).limit(limit)
        return [_complaint(row) for row in self._uow.execute(statement).all()]

    def of_customer(self, customer_ref: str, *, branches: frozenset[str] | None, limit: int) -> list[Complaint]:
        """The customer's complaints in the given branches (None: all), newest first, found through
        ix_complaints_customer_received (an anonymised one has no reference left, so it is not found)."""
        return [_complaint(row) for row in self._uow.execute(_of_customer(
            models.complaints, customer_ref, branches, "received_at", limit)).all()]


class Sales:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, s: Sale) -> None:
        self._uow.insert(models.sales, dict(
            id=s.id, branch_code=s.branch_code, region=s.region, sold_at=s.sold_at, recorded_at=s.recorded_at,
            customer_name=s.customer.name, customer_phone=s.customer.phone, customer_email=s.customer.email,
            customer_language=s.customer.language, customer_ref=s.customer_ref, contact_consent=s.contact_consent,
            items=s.items, recorded_by=s.recorded_by, last_sequence=s.sequence))
        self._uow.track(s)

    def get(self, sale_id: str, *, for_update: bool = False) -> Sale | None:
        statement = sa.select(models.sales).where(models.sales.c.id == sale_id)
        row = self._uow.execute(statement.with_for_update() if for_update else statement).first()
        return None if row is None else self._uow.track(_sale(row))

    def of_customer(self, customer_ref: str, *, branches: frozenset[str] | None, limit: int) -> list[Sale]:
        """The customer's sales in the given branches (None: all), newest first (ix_sales_customer_sold)."""
        return [_sale(row) for row in self._uow.execute(_of_customer(
            models.sales, customer_ref, branches, "sold_at", limit)).all()]

    def save_progress(self, s: Sale) -> None:
        self._uow.execute(models.sales.update().where(models.sales.c.id == s.id).values(
            last_sequence=s.sequence, legal_holds=s.legal_holds))

    def due_for_anonymisation(self, sold_before: datetime, *, limit: int | None, lock: bool) -> list[Sale]:
        """Sales made before `sold_before` not anonymised yet, oldest first (a sale closes when
        made: nothing follows it here yet)."""
        t = models.sales
        statement = (sa.select(t).where(t.c.sold_at < sold_before, t.c.anonymised_at.is_(None), ~_sale_held(t))
                     .order_by(t.c.sold_at, t.c.id).limit(limit))
        rows = self._uow.execute(statement.with_for_update(skip_locked=True) if lock else statement).all()
        return [_sale(row) for row in rows]

    def held_past_retention(self, sold_before: datetime) -> int:
        """Sales past the retention that a held adverse-reaction case keeps."""
        t = models.sales
        return self._uow.execute(sa.select(sa.func.count()).where(
            t.c.sold_at < sold_before, t.c.anonymised_at.is_(None), _sale_held(t))).scalar()

    def save_anonymised(self, s: Sale) -> None:
        self._uow.execute(models.sales.update().where(models.sales.c.id == s.id).values(**_contact_values(s)))


class ContactAccessLog:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def add(self, **entry) -> None:
        self._uow.execute(models.contact_access_log.insert().values(**entry))

    def scrub_purposes(self, record_id: str, scrub) -> None:
        """The purposes staff gave for reading a record's contact, once it is anonymised: they may
        name the customer ("回电王女士"). Who read it, when and the outcome stay."""
        log = models.contact_access_log
        for entry in self._uow.execute(sa.select(log.c.id, log.c.purpose).where(log.c.record_id == record_id)).all():
            purpose = scrub(entry.purpose)
            if purpose != entry.purpose:
                self._uow.execute(log.update().where(log.c.id == entry.id).values(purpose=purpose))


class IntakeUnitOfWork(UnitOfWork):
    def _open(self) -> None:
        self.complaints = Complaints(self)
        self.sales = Sales(self)
        self.contact_access = ContactAccessLog(self)
        self.idempotency = idempotency.Keys(self)


class IntakeStore(Store):
    unit_of_work_class = IntakeUnitOfWork

    def number_complaint(self, branch_code: str, day, *, poster: str, recipient: str | None,
                         limits) -> Numbered:
        """The branch's next number of the day and the message limits (policy's
        customer_messages) in one statement on its own (migrations 0005, 0008): the poster's
        allowance first; over it, no number is taken. Committed at once: holding the counter's
        row lock until the complaint commits would serialize a branch's requests, so a complaint
        that then fails to commit leaves a gap in the numbers, never a duplicate."""
        with self.engine.connect() as conn:
            dbapi = conn.connection.dbapi_connection
            dbapi.autocommit = True
            try:
                with dbapi.cursor() as cursor:
                    cursor.execute("SELECT * FROM number_complaint(%s, %s, %s, %s, %s, %s, %s, %s)",
                                   (branch_code, day, poster, limits.per_poster.per, limits.per_poster.messages,
                                    recipient, limits.per_recipient.per, limits.per_recipient.messages))
                    return Numbered(*cursor.fetchone())
            finally:
                dbapi.autocommit = False


def _of_customer(table: sa.Table, customer_ref: str, branches: frozenset[str] | None, newest: str, limit: int):
    """A customer's records by their keyed reference (an index, not a scan of phones), newest first."""
    statement = sa.select(table).where(table.c.customer_ref == customer_ref)
    if branches is not None:
        statement = statement.where(table.c.branch_code.in_(sorted(branches)))
    return statement.order_by(table.c[newest].desc(), table.c.id.desc()).limit(limit)


def _contact_values(record) -> dict:
    """What retention changes on every record that has a customer."""
    customer = record.customer
    return {"customer_name": customer.name, "customer_phone": customer.phone, "customer_email": customer.email,
            "customer_ref": record.customer_ref, "anonymised_at": record.anonymised_at}


def _customer(row) -> Customer:
    return Customer(row.customer_name, row.customer_phone, row.customer_email, row.customer_language)


def _complaint(row) -> Complaint:
    complaint = Complaint(
        id=str(row.id), reference=row.reference, branch_code=row.branch_code, region=row.region,
        kind=row.kind, channel=row.channel, category=row.category, category_source=row.category_source,
        priority=row.priority, severity_flags=row.severity_flags, description=row.description,
        occurred_at=row.occurred_at, received_at=row.received_at, service=row.service,
        products=row.products, customer=_customer(row), customer_ref=row.customer_ref,
        first_response_due=row.first_response_due, resolution_due=row.resolution_due,
        acknowledgement=row.acknowledgement, recorded_by=row.recorded_by,
        recorded_by_role=row.recorded_by_role, status=row.status, status_sequence=row.status_sequence,
        closed_at=row.closed_at, legal_hold=row.legal_hold, legal_hold_sequence=row.legal_hold_sequence,
        anonymised_at=row.anonymised_at, converted_from=row.converted_from, converted_at=row.converted_at,
        converted_by=row.converted_by, conversion_note=row.conversion_note)
    complaint.sequence = row.last_sequence
    return complaint


def _sale_held(t):
    """Some case of the sale's holds it: an entry with a reason (a released one keeps its sequence only)."""
    return sa.func.jsonb_path_exists(t.c.legal_holds, sa.text("'$.*.reason'::jsonpath"))


def _sale(row) -> Sale:
    sale = Sale(id=str(row.id), branch_code=row.branch_code, region=row.region, sold_at=row.sold_at,
                recorded_at=row.recorded_at, customer=_customer(row), customer_ref=row.customer_ref,
                contact_consent=row.contact_consent, items=row.items, recorded_by=row.recorded_by,
                anonymised_at=row.anonymised_at, legal_holds=dict(row.legal_holds or {}))
    sale.sequence = row.last_sequence
    return sale
