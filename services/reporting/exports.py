"""Reporting's exports: one row per case with its KPIs, streamed. A nameko worker's
dependencies are torn down when its method returns, before the body is sent, so the rows are
read on a connection of the stream's own (a server-side cursor, a few thousand rows at a
time): memory stays the same for ten rows or a million. No contact data: the customer is the
masked name and number intake published and the customer_ref."""
from __future__ import annotations

import csv
import io
import logging
import re
import tempfile
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from services.reporting import queries
from services.reporting.queries import Scope

log = logging.getLogger("closeloop.reporting.exports")
FETCH = 5000

COLUMNS = ("case_id", "reference", "branch_code", "region", "kind", "category", "priority", "channel",
           "technician_id", "owner", "state", "received_at", "first_response_due", "first_response_at",
           "first_response_hours", "first_response_within_sla", "resolution_due", "resolved_at", "resolution_hours",
           "resolved_within_sla", "escalation_level", "reopened", "responsibility", "remedies", "remedies_cost",
           "outcome", "follow_up_score", "closed_at", "corrective_action_due", "corrective_action_done_at",
           "customer_ref", "customer_masked")
# Columns of text that came from outside (a branch system, a staff member): made inert.
_FREE_TEXT = ("reference", "technician_id", "owner", "customer_masked")

# Instants as text in the chain's zone (the transaction's TimeZone), ids as text: PostgreSQL
# formats them faster than Python would, row by row.
_AT = "to_char({}, 'YYYY-MM-DD\"T\"HH24:MI:SSTZH:TZM')"
_SQL = """
SELECT c.case_id::text, c.facts->>'reference', c.branch_code, NULL AS region, c.kind, c.category, c.priority,
       c.channel, c.technician_id, c.owner, c.state, {received}, {first_due}, {first_at},
       round((extract(epoch FROM (c.first_response_at - c.received_at)) / 3600)::numeric, 2),
       c.first_response_at <= c.first_response_due, {resolution_due}, {resolved_at},
       round((extract(epoch FROM (c.resolved_at - c.received_at)) / 3600)::numeric, 2),
       c.resolved_at <= c.resolution_due, c.escalation_level, c.reopened, c.facts->>'responsibility',
       given.n, given.cost,
       c.outcome, c.follow_up_score, {closed_at}, {corrective_due}, {corrective_done}, c.facts->>'customer_ref',
       concat_ws(' ', c.facts->'customer_masked'->>'name', c.facts->'customer_masked'->>'phone')
FROM case_facts c
CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(r.amount), 0) AS cost FROM case_remedies r
                    WHERE r.case_id = c.case_id AND r.status IN ('approved', 'fulfilled')) AS given
WHERE {where} ORDER BY c.received_at, c.case_id"""
_INSTANT_COLUMNS = {"received": "received_at", "first_due": "first_response_due", "first_at": "first_response_at",
                    "resolution_due": "resolution_due", "resolved_at": "resolved_at", "closed_at": "closed_at",
                    "corrective_due": "corrective_due", "corrective_done": "corrective_done_at"}


def _query(scope: Scope, filters: dict) -> tuple[str, dict]:
    where = [queries.period_where("c.received_at", scope, branch="c.branch_code")]
    branches = sorted(scope.branches) if scope.branches is not None else None
    params = {"lo": scope.lo, "hi": scope.hi, "branches": branches}
    for name in ("kind", "category"):
        if filters.get(name):
            where.append(f"c.{name} = :{name}")
            params[name] = filters[name]
    instants = {name: _AT.format(f"c.{column}") for name, column in _INSTANT_COLUMNS.items()}
    return _SQL.format(where=" AND ".join(where), **instants), params


# What a spreadsheet would run as a formula (=, +, -, @ first: "CSV injection"), and the control
# characters a workbook cannot hold.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _inert(value):
    """Text as plain data in any spreadsheet: text that would start a formula gets a leading
    apostrophe."""
    if value is not None and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _rows(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """The export's rows, read on the stream's own connection in chunks; instants in the chain's zone."""
    sql, params = _query(scope, filters)
    free = [COLUMNS.index(name) for name in _FREE_TEXT]
    # The region from the policy here, not joined in SQL: the rows then come in index order,
    # the first at once, instead of after a sort of them all.
    branch_at, region_at = COLUMNS.index("branch_code"), COLUMNS.index("region")
    regions = scope.regions
    with engine.connect() as conn:
        # JIT compiles for a plan's estimated cost, not its streamed pace: half a second before the
        # first row, nothing gained after.
        conn.execute(sa.text("SELECT set_config('TimeZone', :zone, true), set_config('jit', 'off', true)"),
                     {"zone": str(zone)})
        # A named (server-side) cursor: PostgreSQL hands the rows over FETCH at a time.
        result = conn.execution_options(stream_results=True, max_row_buffer=FETCH).execute(sa.text(sql), params)
        for chunk in result.partitions(FETCH):
            out = []
            for row in chunk:
                row = list(row)
                row[region_at] = regions.get(row[branch_at])
                for i in free:
                    row[i] = _inert(row[i])
                out.append(row)
            yield out


def csv_stream(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """UTF-8 with a byte-order mark (Excel then reads Chinese right), a header line, the rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield ("\ufeff" + buffer.getvalue()).encode()
    try:
        for chunk in _rows(engine, scope, filters, zone):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(chunk)
            yield buffer.getvalue().encode()
    except Exception:  # the status line has gone: all a client can see is a cut body
        log.exception("the CSV export stopped part way")
        raise


def xlsx_file(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """A write-only workbook (rows go to disk as they come), then the file in chunks."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("cases")
    sheet.append(list(COLUMNS))
    for chunk in _rows(engine, scope, filters, zone):
        for row in chunk:
            sheet.append([_text_cell(sheet, v) if isinstance(v, str) else float(v) if isinstance(v, Decimal) else v
                          for v in row])
    spool = tempfile.TemporaryFile()
    book.save(spool)
    spool.seek(0)
    return spool


def _text_cell(sheet, value: str):
    """A text cell, whatever the text looks like (openpyxl would take '=...' for a formula)."""
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=_CONTROL.sub("", value))  # a workbook cannot hold them
    cell.data_type = "s"
    return cell


def file_chunks(spool, size: int = 64 * 1024):
    try:
        while True:
            chunk = spool.read(size)
            if not chunk:
                return
            yield chunk
    finally:
        spool.close()


def filename(kind: str, scope: Scope, zone: ZoneInfo) -> str:
    return f"closeloop-cases-{scope.lo.astimezone(zone):%Y%m%d}-{scope.hi.astimezone(zone):%Y%m%d}.{kind}"
