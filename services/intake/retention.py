"""Intake's retention of personal data: once a record has been closed longer than the policy's
`retention.personal_data` (P3Y), its customer's name, phone, email and reference are anonymised,
and so are the names and numbers in its texts; the record and what counts stay (kind, category,
priority, branch, times, status, items), so counts and KPIs survive.

- A complaint is closed when its case closed (`closed_at`, from investigation's `case_closed`;
  a reopened case clears it). One whose case is open, or held by an HQ admin (`legal_hold`, from
  `legal_hold_set` / `legal_hold_released`), is kept.
- A sale is closed when it was made (`sold_at`): nothing follows a sale here yet. When aftercare
  follows sales with visits, a sale will close when its last visit does.
- A customer's contact is kept on each record, not shared between records, so each record is
  anonymised on its own clock.
- The contact-access log keeps who read a record's contact and when; the purposes they gave lose
  the customer's name and numbers with the record, and so do those of the look-ups by phone that
  found its customer (logged under the customer_ref).

The mechanism (batches, locks, the run log, the timer) is shared.persistence.anonymisation, which
runs KINDS."""
from __future__ import annotations

from datetime import datetime

from shared.persistence.anonymisation import RecordKind


def _kind(name: str, repository: str) -> RecordKind:
    """A kind of record through its repository on the unit of work (`uow.complaints`)."""
    def records(uow):
        return getattr(uow, repository)

    def anonymise(uow, due, now: datetime) -> None:
        for record in due:
            uow.contact_access.scrub_purposes(record.id, record.scrubber())
            if record.customer_ref:  # the look-ups of its customer by phone
                uow.contact_access.scrub_purposes(record.customer_ref, record.scrubber())
            record.anonymise(now)
            records(uow).save_anonymised(record)

    return RecordKind(name, due=lambda uow, before, **how: records(uow).due_for_anonymisation(before, **how),
                      anonymise=anonymise, held=lambda uow, before: records(uow).held_past_retention(before))


KINDS = (_kind("complaint", "complaints"), _kind("sale", "sales"))
