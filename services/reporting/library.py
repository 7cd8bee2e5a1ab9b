"""The case library (培训案例库): closed complaints as training material, CSV or XLSX, streamed
as the cases export is (exports.py: a connection of the stream's own, rows in chunks).

One row per complaint case closed in the period: what happened (the description and the
findings), the root cause, the responsibility, the measures of the written result, the
corrective action, the remedies given, the outcome and the satisfaction, with the case's id in
place of its reference. Nobody is named: no customer, no contact, no staff or technician id.
The texts were scrubbed as they were folded (facts.py, scrub.py) and are scrubbed again here,
with the scrubber's newest rules and the customer's masked name: the case's own, else the newest
the customer's sales or other cases have (a case opened for a return visit's adverse reaction has
no registration, so no mask of its own). The ids of the staff the case's events name (its
technician, its handlers, the findings' signer) and the case's reference are taken out of them,
and every text is made inert against spreadsheet formulas."""
from __future__ import annotations

import csv
import io
import logging
import re
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from services.reporting import customers, exports
from services.reporting.queries import Scope, period_where
from services.reporting.scrub import scrub_text
from shared.security.privacy import ANONYMISED

log = logging.getLogger("closeloop.reporting.library")

COLUMNS = ("case_id", "category", "branch_code", "region", "received_month", "channel", "severity_flags",
           "what_happened", "root_cause", "responsibility", "measures", "corrective_action", "remedies", "outcome",
           "follow_up_score", "reopened", "escalation_level", "first_response_hours", "resolution_hours")
GIVEN = ("approved", "fulfilled")
_HOURS = "round((extract(epoch FROM (c.{} - c.received_at)) / 3600)::numeric, 2)"
_SELECT = f"""
SELECT c.case_id::text AS case_id, c.category, c.branch_code,
       to_char(c.received_at AT TIME ZONE :zone, 'YYYY-MM') AS received_month, c.channel, f.severity_flags, f.texts,
       c.technician_id, c.owner, f.corrective_action ->> 'owner' AS action_owner, f.staff, f.reference,
       coalesce(f.customer_masked ->> 'name', {customers.NEWEST_NAME.format(ref="c.customer_ref")}) AS masked_name,
       f.responsibility, f.remedies,
       c.outcome, c.follow_up_score, c.reopened, c.escalation_level,
       {_HOURS.format('first_response_at')} AS first_response_hours, {_HOURS.format('resolved_at')} AS resolution_hours
FROM case_facts c
CROSS JOIN LATERAL jsonb_to_record(c.facts) AS f(severity_flags jsonb, texts jsonb, responsibility text,
                                               remedies jsonb, corrective_action jsonb, staff jsonb, reference text,
                                               customer_masked jsonb)
WHERE c.kind = 'complaint' AND {{where}}
ORDER BY c.closed_at, c.case_id"""


def _query(scope: Scope, filters: dict) -> tuple[str, dict]:
    where = [period_where("c.closed_at", scope, branch="c.branch_code")]
    params = {"lo": scope.lo, "hi": scope.hi, "zone": scope.zone,
              "branches": sorted(scope.branches) if scope.branches is not None else None}
    if filters.get("category"):
        where.append("c.category = :category")
        params["category"] = filters["category"]
    return _SELECT.format(where=" AND ".join(where)), params


def _unnamed(text: str | None, ids: list[str], masked_name: str | None = None) -> str | None:
    """The text scrubbed (with the customer's masked name) and without the case's staff ids and
    reference (`ids`)."""
    if not text:
        return text
    text = scrub_text(text, masked_name)
    for staff in sorted(ids, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(staff)}(?![\w-])", ANONYMISED, text)
    return text


def _remedies(remedies: dict | None) -> str:
    given = sorted((r["type"], Decimal(str(r.get("amount") or 0)).quantize(Decimal("0.01")))
                   for r in (remedies or {}).values() if r.get("type") and r.get("status") in GIVEN)
    return "; ".join(f"{kind} {amount}" for kind, amount in given)


def row_of(r, regions: dict[str, str]) -> list:
    """One case's row of the library, as COLUMNS."""
    texts = r.texts or {}
    named = {r.technician_id, r.owner, r.action_owner, r.reference, *(r.staff or ())}
    staff = [s for s in named if isinstance(s, str) and len(s) >= 2]
    happened = "\n\n".join(t for t in (texts.get("description"), texts.get("findings")) if t)
    written = {"what_happened": happened, "root_cause": texts.get("root_cause"), "measures": texts.get("measures"),
               "corrective_action": texts.get("action")}
    clean = {name: _unnamed(text, staff, r.masked_name) or None for name, text in written.items()}
    row = [r.case_id, r.category, r.branch_code, regions.get(r.branch_code), r.received_month, r.channel,
           ", ".join(r.severity_flags or []), clean["what_happened"], clean["root_cause"], r.responsibility,
           clean["measures"], clean["corrective_action"], _remedies(r.remedies), r.outcome, r.follow_up_score,
           r.reopened, r.escalation_level, r.first_response_hours, r.resolution_hours]
    # Every text inert, codes too: they came over the bus from another service.
    return [exports._inert(v) if isinstance(v, str) else v for v in row]


def rows(engine: sa.Engine, scope: Scope, filters: dict):
    """The library's rows in chunks, read on the stream's own connection (a server-side cursor)."""
    sql, params = _query(scope, filters)
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT set_config('jit', 'off', true)"))
        result = conn.execution_options(stream_results=True, max_row_buffer=exports.FETCH).execute(sa.text(sql),
                                                                                                   params)
        for chunk in result.partitions(exports.FETCH):
            yield [row_of(r, scope.regions) for r in chunk]


def csv_stream(engine: sa.Engine, scope: Scope, filters: dict) -> exports.Streamed:
    """UTF-8 with a byte-order mark, a header line, the rows (CRLF-ended, quoted where needed);
    the query run and its first rows read here, in the request's handler (exports.Streamed: the
    database away is a 503, a failure part way a cut body)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(COLUMNS)
    return exports.Streamed(("\ufeff" + buffer.getvalue()).encode(), _csv_chunks(engine, scope, filters),
                            "the case library export")


def _csv_chunks(engine: sa.Engine, scope: Scope, filters: dict):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    for chunk in rows(engine, scope, filters):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(chunk)
        yield buffer.getvalue().encode()


def xlsx_file(engine: sa.Engine, scope: Scope, filters: dict):
    """The same rows as a workbook (exports.workbook: rows to disk as they come)."""
    return exports.workbook("case library", COLUMNS, rows(engine, scope, filters))


def filename(kind: str, scope: Scope, zone: ZoneInfo) -> str:
    return f"closeloop-case-library-{scope.lo.astimezone(zone):%Y%m%d}-{scope.hi.astimezone(zone):%Y%m%d}.{kind}"
