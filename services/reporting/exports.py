"""Reporting's exports: one row per case with its KPIs, streamed. A nameko worker's
dependencies are torn down when its method returns, before the body is sent, so the rows are
read on a connection of the stream's own: memory stays the same for ten rows or a million. No
contact data: the customer is the masked name and number intake published and the customer_ref.

The CSV is written by PostgreSQL (COPY ... TO STDOUT, FORMAT csv), values, quoting and all: the
process only passes its lines on (shared.persistence.copy_out), as the body is sent: a slow
client slows the COPY (PostgreSQL waits on a full socket), and a client that goes away closes
the body, which cancels the COPY and drops the connection."""
from __future__ import annotations

import csv
import io
import json
import logging
import re
import tempfile
from decimal import Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from services.reporting import queries
from services.reporting.queries import Scope
from shared.persistence.copy_out import CopyOut

log = logging.getLogger("closeloop.reporting.exports")
FETCH = 5000         # rows a server-side cursor hands over at a time (XLSX)
CHUNK = 128 * 1024   # bytes of CSV lines sent at a time

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
_HOURS = "round((extract(epoch FROM (c.{} - c.received_at)) / 3600)::numeric, 2)"
# Each column's SQL and what it holds: text, free text (inert in the export), a truth value,
# the region (the policy's, by branch) or anything else (never empty text).
_FIELDS = (
    ("case_id", "c.case_id::text", ""), ("reference", "c.facts->>'reference'", "free"),
    ("branch_code", "c.branch_code", "text"), ("region", "NULL", "region"), ("kind", "c.kind", "text"),
    ("category", "c.category", "text"), ("priority", "c.priority", "text"), ("channel", "c.channel", "text"),
    ("technician_id", "c.technician_id", "free"), ("owner", "c.owner", "free"), ("state", "c.state", "text"),
    ("received_at", _AT.format("c.received_at"), ""), ("first_response_due", _AT.format("c.first_response_due"), ""),
    ("first_response_at", _AT.format("c.first_response_at"), ""),
    ("first_response_hours", _HOURS.format("first_response_at"), ""),
    ("first_response_within_sla", "c.first_response_at <= c.first_response_due", "bool"),
    ("resolution_due", _AT.format("c.resolution_due"), ""), ("resolved_at", _AT.format("c.resolved_at"), ""),
    ("resolution_hours", _HOURS.format("resolved_at"), ""),
    ("resolved_within_sla", "c.resolved_at <= c.resolution_due", "bool"),
    ("escalation_level", "c.escalation_level", ""), ("reopened", "c.reopened", ""),
    ("responsibility", "c.facts->>'responsibility'", "text"), ("remedies", "given.n", ""),
    ("remedies_cost", "given.cost", ""), ("outcome", "c.outcome", "text"), ("follow_up_score", "c.follow_up_score", ""),
    ("closed_at", _AT.format("c.closed_at"), ""), ("corrective_action_due", _AT.format("c.corrective_due"), ""),
    ("corrective_action_done_at", _AT.format("c.corrective_done_at"), ""),
    ("customer_ref", "c.facts->>'customer_ref'", "text"),
    ("customer_masked", "concat_ws(' ', c.facts->'customer_masked'->>'name', c.facts->'customer_masked'->>'phone')",
     "free"))
assert tuple(name for name, _, _ in _FIELDS) == COLUMNS

# The CSV's values as Python's csv.writer wrote them (the export before PostgreSQL wrote it):
# NULL and empty text both an empty field (COPY writes '' as ""), truth values True and False,
# free text that would start a formula with an apostrophe first (see _inert), the region from
# the policy given as a JSON object (a lookup a row: no join, so no sort before the first row).
_CSV = {"text": "nullif({}, '')",
        "free": "nullif(concat(CASE WHEN left({0}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r') THEN '''' END, {0}), '')",
        "bool": "CASE WHEN {0} THEN 'True' WHEN NOT {0} THEN 'False' END",
        "region": "nullif(CAST(:regions AS jsonb) ->> c.branch_code, '')",
        "": "{}"}
# A case's remedies given, looked up only for a case whose facts hold any (case_remedies are
# written from the facts' "remedies": repository.CaseFacts.save): more than half the cases have
# none, and the lookup is the dearest part of a row.
_FROM = """
FROM case_facts c
CROSS JOIN LATERAL (SELECT count(*) AS n, coalesce(sum(r.amount), 0) AS cost FROM case_remedies r
                    WHERE (c.facts->'remedies') IS DISTINCT FROM '{{}}'::jsonb
                      AND r.case_id = c.case_id AND r.status IN ('approved', 'fulfilled')) AS given
WHERE {where} ORDER BY c.received_at, c.case_id"""


def _query(scope: Scope, filters: dict, for_csv: bool = False) -> tuple[str, dict]:
    """The export's SELECT and its parameters: each column as it is (the XLSX export and
    Python's checks), or `for_csv` as the CSV's text."""
    where = [queries.period_where("c.received_at", scope, branch="c.branch_code")]
    branches = sorted(scope.branches) if scope.branches is not None else None
    params = {"lo": scope.lo, "hi": scope.hi, "branches": branches}
    for name in ("kind", "category"):
        if filters.get(name):
            where.append(f"c.{name} = :{name}")
            params[name] = filters[name]
    if for_csv:
        columns = [_CSV[what].format(f"({sql})" if what in ("free", "bool") else sql) for _, sql, what in _FIELDS]
        params["regions"] = json.dumps(scope.regions, ensure_ascii=False)
    else:
        columns = [sql for _, sql, _ in _FIELDS]
    return "SELECT " + ",\n       ".join(columns) + _FROM.format(where=" AND ".join(where)), params


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


def csv_stream(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo) -> "Streamed":
    """UTF-8 with a byte-order mark (Excel then reads Chinese right), a header line, the rows
    (CRLF-ended, quoted where needed, as Python's csv.writer would). The COPY is begun here, in
    the request's handler (see Streamed)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(COLUMNS)
    return Streamed(("\ufeff" + buffer.getvalue()).encode(), _csv_lines(engine, scope, filters, zone), "the CSV export")


class Streamed:
    """A streamed body whose first chunk is read before the status line goes out (in the
    request's handler): the database away is then the API's 503 with Retry-After, as for every
    read, instead of the HTTP server's bare 500 (a generator first run by the server fails after
    the handler has answered). A failure after that can only cut the body: the connection ends
    without the chunked body's end, so no client takes it for a whole file (logged). `close`
    ends the query (a client gone, or the body never sent)."""

    def __init__(self, head: bytes, chunks, what: str):
        self._chunks, self._what = chunks, what
        self._first = [head, next(chunks, b"")]

    def __iter__(self):
        first, self._first = self._first, []
        yield from first
        try:
            yield from self._chunks
        except Exception:  # the status line has gone: all a client can see is a cut body
            log.exception("%s stopped part way", self._what)
            raise

    def close(self) -> None:
        self._chunks.close()


def _csv_lines(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """The rows as PostgreSQL's COPY writes them, about CHUNK bytes at a time, on a connection of
    the stream's own: returned to the pool once the COPY has ended, else (the body closed part
    way, an error) the COPY cancelled and the connection closed."""
    sql, params = _query(scope, filters, for_csv=True)
    compiled = sa.text(sql).compile(dialect=engine.dialect)
    copy = CopyOut()
    connection = engine.raw_connection()
    try:
        dbapi = connection.dbapi_connection
        with dbapi.cursor() as cursor:
            # JIT compiles for a plan's estimated cost, not its streamed pace: half a second before
            # the first row, nothing gained after.
            cursor.execute("SELECT set_config('TimeZone', %s, true), set_config('jit', 'off', true)", (str(zone),))
            statement = cursor.mogrify(str(compiled), {**compiled.params, **params})
        for lines in copy.lines(dbapi, b"COPY (" + statement + b") TO STDOUT WITH (FORMAT csv)", CHUNK):
            yield _crlf(lines)
    finally:
        if copy.running:  # cut short: the server stops, the connection (mid-COPY) is not reused
            copy.cancel()
            connection.invalidate()
        connection.close()


def _crlf(lines: list[bytes]) -> bytes:
    """COPY's lines (one a message, each ending in LF) ending in CRLF instead, as Python's
    csv.writer ended them. A field's own line breaks (quoted) stay as they are."""
    data = b"".join(lines)
    if data.count(b"\n") == len(lines):  # no line break in any field
        return data.replace(b"\n", b"\r\n")
    return b"".join(line[:-1] + b"\r\n" for line in lines)


def xlsx_file(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """A write-only workbook (rows go to disk as they come), then the file in chunks."""
    return workbook("cases", COLUMNS, _rows(engine, scope, filters, zone))


def workbook(title: str, columns, chunks):
    """A write-only workbook of one sheet: `columns`, then the rows of `chunks` (lists of rows)
    as they come (to disk), text as text cells; the file, spooled, from its start."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(title)
    sheet.append(list(columns))
    for chunk in chunks:
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
