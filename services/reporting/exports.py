"""Reporting's exports: one row per case with its KPIs, streamed. A nameko worker's
dependencies are torn down when its method returns, before the body is sent, so the rows are
read on a connection of the stream's own: memory stays the same for ten rows or a million. No
contact data: the customer is the masked name and number intake published and the customer_ref.

The CSV is written by PostgreSQL (COPY ... TO STDOUT, FORMAT csv), values, quoting and all: the
process only passes its lines on. psycopg2 refuses COPY on a connection made cooperative for
eventlet (copy_expert: "cannot be used with an asynchronous callback"), so the lines are read
through the connection's own libpq (psycopg2's `pgconn_ptr`, libpq's asynchronous COPY calls),
waiting on the socket through eventlet like every other query. The lines are read as the body
is sent: a slow client slows the COPY (PostgreSQL waits on a full socket), and a client that
goes away closes the body, which cancels the COPY and drops the connection."""
from __future__ import annotations

import csv
import ctypes
import io
import json
import logging
import re
import tempfile
from decimal import Decimal
from zoneinfo import ZoneInfo

import psycopg2
import sqlalchemy as sa
from eventlet.hubs import trampoline

from services.reporting import queries
from services.reporting.queries import Scope
from shared.runtime import green

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


def csv_stream(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """UTF-8 with a byte-order mark (Excel then reads Chinese right), a header line, the rows
    (CRLF-ended, quoted where needed, as Python's csv.writer would)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(COLUMNS)
    yield ("\ufeff" + buffer.getvalue()).encode()
    try:
        yield from _csv_lines(engine, scope, filters, zone)
    except Exception:  # the status line has gone: all a client can see is a cut body
        log.exception("the CSV export stopped part way")
        raise


def _csv_lines(engine: sa.Engine, scope: Scope, filters: dict, zone: ZoneInfo):
    """The rows as PostgreSQL's COPY writes them, about CHUNK bytes at a time, on a connection of
    the stream's own: returned to the pool once the COPY has ended, else (the body closed part
    way, an error) the COPY cancelled and the connection closed."""
    sql, params = _query(scope, filters, for_csv=True)
    compiled = sa.text(sql).compile(dialect=engine.dialect)
    copy = _Copy()
    connection = engine.raw_connection()
    try:
        dbapi = connection.dbapi_connection
        with dbapi.cursor() as cursor:
            # JIT compiles for a plan's estimated cost, not its streamed pace: half a second before
            # the first row, nothing gained after.
            cursor.execute("SELECT set_config('TimeZone', %s, true), set_config('jit', 'off', true)", (str(zone),))
            statement = cursor.mogrify(str(compiled), {**compiled.params, **params})
        yield from copy.lines(dbapi, b"COPY (" + statement + b") TO STDOUT WITH (FORMAT csv)")
    finally:
        if copy.running:  # cut short: the server stops, the connection (mid-COPY) is not reused
            copy.cancel()
            connection.invalidate()
        connection.close()


class _LibPQ:
    """libpq's asynchronous calls, from the libpq psycopg2 itself is linked to (symbols are
    looked up in its C extension's dependencies): the same library that made the connection."""
    COMMAND_OK, COPY_OUT = 1, 3  # ExecStatusType

    def __init__(self):
        from psycopg2 import _psycopg

        lib = ctypes.CDLL(_psycopg.__file__)
        pointer, number, text = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p

        def function(name, restype, *argtypes):
            f = getattr(lib, name)
            f.restype, f.argtypes = restype, argtypes
            return f

        self.send_query = function("PQsendQuery", number, pointer, text)
        self.flush = function("PQflush", number, pointer)
        self.consume_input = function("PQconsumeInput", number, pointer)
        self.is_busy = function("PQisBusy", number, pointer)
        self.get_result = function("PQgetResult", pointer, pointer)
        self.result_status = function("PQresultStatus", number, pointer)
        self.result_error = function("PQresultErrorMessage", text, pointer)
        self.clear = function("PQclear", None, pointer)
        self.error_message = function("PQerrorMessage", text, pointer)
        self.get_copy_data = function("PQgetCopyData", number, pointer, ctypes.POINTER(ctypes.c_void_p), number)
        self.free = function("PQfreemem", None, pointer)


_libpq: _LibPQ | None = None


class _Copy:
    """One COPY ... TO STDOUT on a psycopg2 connection, its lines read as they come. `running`
    while the connection is within the statement."""

    def __init__(self):
        global _libpq
        if _libpq is None:
            _libpq = _LibPQ()
        self.pq, self.dbapi, self.running = _libpq, None, False

    def lines(self, dbapi, statement: bytes):
        """COPY's lines, CRLF-ended, joined about CHUNK bytes at a time."""
        pq = self.pq
        self.dbapi, self.pg, self.fd = dbapi, ctypes.c_void_p(dbapi.pgconn_ptr), dbapi.fileno()
        self.running = True
        if not pq.send_query(self.pg, statement):
            self._fail()
        while (flushed := pq.flush(self.pg)) == 1:
            self._wait(read=False)
        if flushed < 0:
            self._fail()
        result = self._result()
        status, message = pq.result_status(result), pq.result_error(result)
        pq.clear(result)
        if status != pq.COPY_OUT:  # the statement failed (its error), nothing else to read
            self._drain()
            self.running = False
            self._fail(message)
        buffer = ctypes.c_void_p()
        into, get, free, string_at = ctypes.byref(buffer), pq.get_copy_data, pq.free, ctypes.string_at
        lines, size = [], 0
        while True:
            n = get(self.pg, into, 1)
            if n > 0:
                lines.append(string_at(buffer, n))
                free(buffer)
                size += n
                if size >= CHUNK:
                    yield _crlf(lines)
                    lines, size = [], 0
            elif n == 0:  # no whole line in libpq's buffer: wait for more from the socket
                self._wait()
                if not pq.consume_input(self.pg):
                    self._fail()
            elif n == -1:  # the COPY's end
                break
            else:
                self._fail()
        failure = self._drain()  # its command status, or an error after the last line
        self.running = False
        if failure is not None:
            self._fail(failure)
        if lines:
            yield _crlf(lines)

    def cancel(self) -> None:
        """Asks the server to stop the statement."""
        try:
            self.dbapi.cancel()
        except psycopg2.Error:
            log.warning("could not cancel the CSV export's COPY", exc_info=True)

    def _fail(self, message: bytes | None = None):
        text = (message or self.pq.error_message(self.pg) or b"").decode("utf-8", "replace").strip()
        raise psycopg2.OperationalError(text or "the CSV export's COPY failed")

    def _wait(self, read: bool = True) -> None:
        """Until the socket can be read (or written), through eventlet: other greenlets run
        meanwhile. A database silent for DATABASE_WAIT_SECONDS fails the export."""
        trampoline(self.fd, read=read, write=not read, timeout=green.DATABASE_WAIT_SECONDS,
                   timeout_exc=green.DatabaseSilent(
                       f"the database did not answer within {green.DATABASE_WAIT_SECONDS:g} s"))

    def _result(self):
        """The statement's next result (NULL: none left), once libpq has it whole."""
        while self.pq.is_busy(self.pg):
            self._wait()
            if not self.pq.consume_input(self.pg):
                self._fail()
        return self.pq.get_result(self.pg)

    def _drain(self) -> bytes | None:
        """The statement's remaining results read: the first error's message, if any."""
        failure = None
        while result := self._result():
            if self.pq.result_status(result) != self.pq.COMMAND_OK and failure is None:
                failure = self.pq.result_error(result) or b"the CSV export's COPY failed"
            self.pq.clear(result)
        return failure


def _crlf(lines: list[bytes]) -> bytes:
    """COPY's lines (one a message, each ending in LF) ending in CRLF instead, as Python's
    csv.writer ended them. A field's own line breaks (quoted) stay as they are."""
    data = b"".join(lines)
    if data.count(b"\n") == len(lines):  # no line break in any field
        return data.replace(b"\n", b"\r\n")
    return b"".join(line[:-1] + b"\r\n" for line in lines)


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
