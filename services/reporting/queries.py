"""Reporting's reads in SQL over the read models: the KPIs of a period grouped one way, open
alerts, cases breaching their SLA now, the archive access log. The figures mean what kpis.py
computes in Python over the same facts (the tests hold the two to each other).

KPIs of the whole chain over whole days, without a grouping or by category, day, week or month,
add up the KPI cells (kpi_values: a few months, weeks and days) and count live only the clocks
still running; any other read takes the measures from the case, visit and sale rows.

A case counts in the period it was received in, a visit in the period it fell due in, a sale
in the period it was sold in. Days, weeks and months are the chain's local ones."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from services.reporting.kpis import LIVE
from services.reporting.kpis import figures as kpi_figures

GROUPINGS = ("branch", "region", "category", "technician", "handler", "day", "week", "month")


@dataclass(frozen=True)
class Scope:
    lo: datetime                      # the period: lo <= t < hi
    hi: datetime
    branches: frozenset[str] | None   # None: every branch
    regions: dict[str, str]           # branch -> region (the policy's)
    zone: str                         # the chain's time zone, for days, weeks and months


# Branches' regions come from the policy (a branch moved to another region is reported under its
# new one): joined as a list of (code, region) pairs, a hash join however many branches.
REGION_JOIN = ("LEFT JOIN unnest(CAST(:region_codes AS text[]), CAST(:region_names AS text[])) "
               "AS branch_region(code, region) ON branch_region.code = {table}.branch_code")


def region_params(regions: dict[str, str]) -> dict:
    codes = sorted(regions)
    return {"region_codes": codes, "region_names": [regions[c] for c in codes]}


def _group_sql(group_by: str | None, at: str, table: str, scope: Scope) -> str:
    """The grouping expression for `table` (case_facts, visit_facts, sale_items); NULL where the
    table does not know it (a sale has no handler)."""
    if group_by is None:
        return "'all'"
    if group_by in ("day", "week", "month"):
        return f"to_char(date_trunc('{group_by}', {at} AT TIME ZONE :zone), 'YYYY-MM-DD')"
    if group_by == "branch":
        return "branch_code"
    if group_by == "region":
        return "branch_region.region"
    column = {("category", "case_facts"): "category", ("technician", "case_facts"): "technician_id",
              ("technician", "sale_items"): "technician_id", ("handler", "case_facts"): "owner"}.get(
        (group_by, table))
    return column or "NULL::text"


def period_where(at: str, scope: Scope, branch: str = "branch_code") -> str:
    """The SQL condition of the scope: `at` in its period, `branch` one of its branches."""
    where = f"{at} >= :lo AND {at} < :hi"
    return where + (f" AND {branch} = ANY(:branches)" if scope.branches is not None else "")


# -- the measures of each group (kpis.py), in SQL over the read models: rows (g, c, measure, key, value);
# c is the category of a KPI cell when the cells are made (repository.refresh_rollups), else ''.

_CASE_SCALARS = {
    "total": "count(*)",
    "complaints": "count(*) FILTER (WHERE kind = 'complaint')",
    "sla_met": "count(*) FILTER (WHERE kind = 'complaint' AND first_response_at <= first_response_due)"
               " + count(*) FILTER (WHERE kind = 'complaint' AND resolved_at <= resolution_due)",
    "sla_late": "count(*) FILTER (WHERE kind = 'complaint' AND first_response_at > first_response_due)"
                " + count(*) FILTER (WHERE kind = 'complaint' AND resolved_at > resolution_due)",
    **{f"escalated_{n}": f"count(*) FILTER (WHERE kind = 'complaint' AND escalation_level >= {n})" for n in (1, 2, 3)},
    "resolved": "count(*) FILTER (WHERE kind = 'complaint' AND resolved_at IS NOT NULL)",
    "reopened": "count(*) FILTER (WHERE kind = 'complaint' AND resolved_at IS NOT NULL AND reopened > 0)",
    "score_sum": "coalesce(sum(follow_up_score), 0)",
    "scored": "count(follow_up_score)",
    "scored_4_5": "count(*) FILTER (WHERE follow_up_score >= 4)",
    "praise": "count(*) FILTER (WHERE kind = 'praise')",
    "suggestions": "count(*) FILTER (WHERE kind = 'suggestion')",
    "suggestions_adopted": "count(*) FILTER (WHERE kind = 'suggestion' AND decision = 'adopted')",
    # kpis.inquiry_measures
    "inquiries": "count(*) FILTER (WHERE kind = 'inquiry' OR converted_from = 'inquiry')",
    "inquiries_converted": "count(*) FILTER (WHERE converted_from = 'inquiry')",
    "inquiries_answered": "count(*) FILTER (WHERE kind = 'inquiry' AND converted_from IS DISTINCT FROM 'inquiry' "
                          "AND first_response_at IS NOT NULL)",
    "inquiries_in_time": "count(*) FILTER (WHERE kind = 'inquiry' AND converted_from IS DISTINCT FROM 'inquiry' "
                         "AND first_response_at <= first_response_due)",
    "actions_open": "count(*) FILTER (WHERE corrective_due IS NOT NULL AND corrective_done_at IS NULL)",
    "actions_done": "count(*) FILTER (WHERE corrective_done_at IS NOT NULL)",
    "actions_on_time": "count(*) FILTER (WHERE corrective_done_at IS NOT NULL AND corrective_on_time)",
}
_PAST_DUE = ("count(*) FILTER (WHERE {complaint}first_response_at IS NULL AND :now > first_response_due)"
             " + count(*) FILTER (WHERE {complaint}resolved_at IS NULL AND :now > resolution_due)")
_OPEN_BREACHED = _PAST_DUE.format(complaint="kind = 'complaint' AND ")
_VISIT_SCALARS = {
    "visits_due": "count(*)",
    "visits_completed": "count(*) FILTER (WHERE status = 'completed')",
    "visits_abandoned": "count(*) FILTER (WHERE status = 'abandoned')",
    "visit_score_sum": "coalesce(sum(score), 0)",
    "visit_scored": "count(score)",
    "adverse_reactions": "count(*) FILTER (WHERE adverse_reaction)",
    "visit_suggestions": "count(*) FILTER (WHERE suggestions)",
}


def _unpivot(table: str, aggregates: dict, g: str, c: str, join: str, where: str) -> str:
    """One row per group and measure from one aggregate per measure (zeros left out)."""
    names = list(aggregates)
    return (f"SELECT s.g, s.c, v.measure, '' AS key, v.value::numeric FROM ("
            f"SELECT {g} AS g, {c} AS c, {', '.join(f'{sql} AS {name}' for name, sql in aggregates.items())} "
            f"FROM {table} {join} WHERE {where} GROUP BY 1, 2) AS s "
            f"CROSS JOIN LATERAL (VALUES {', '.join(f'({chr(39)}{n}{chr(39)}, s.{n})' for n in names)}) "
            f"AS v(measure, value) WHERE v.value <> 0")


def _wide(table: str, aggregates: dict, g: str, join: str, where: str) -> str:
    """One row per group, a column per measure."""
    return (f"SELECT {g} AS g, {', '.join(f'{sql} AS {name}' for name, sql in aggregates.items())} "
            f"FROM {table} {join} WHERE {where} GROUP BY 1")


_CASE_KEYED = """
SELECT {g} AS g, {c} AS c, m.measure, m.key, count(*)::numeric FROM case_facts {join}
CROSS JOIN LATERAL (VALUES
  ('by_kind', coalesce(kind, 'unknown')),
  ('by_category', CASE WHEN kind = 'complaint' THEN coalesce(category, 'unknown') END),
  ('by_priority', CASE WHEN kind = 'complaint' THEN coalesce(priority, 'unknown') END),
  ('by_channel', CASE WHEN kind = 'complaint' THEN coalesce(channel, 'unknown') END){durations}) AS m(measure, key)
WHERE {where} AND m.key IS NOT NULL GROUP BY 1, 2, 3, 4"""
# The histograms of the durations (kept in the cells; a read of the rows takes the percentiles in SQL).
_DURATIONS = """,
  ('first_response', CASE WHEN kind = 'complaint' THEN first_bucket::text END),
  ('resolution', CASE WHEN kind = 'complaint' THEN resolution_bucket::text END)"""
# kpis.bucket_hours in SQL: the same percentiles as kpis.bucket_percentile.
_BUCKET_HOURS = "CASE WHEN {b} = 0 THEN 0.5 / 60 ELSE power(1.02::float8, {b} - 0.5) / 60 END"
_PERCENTILES = {
    f"{name}_{label}": (f"percentile_cont({q}) WITHIN GROUP (ORDER BY {_BUCKET_HOURS.format(b=column)}) "
                        f"FILTER (WHERE kind = 'complaint')")
    for name, column in (("first_response", "first_bucket"), ("resolution", "resolution_bucket"))
    for label, q in (("median", 0.5), ("p90", 0.9))}

_REMEDIES = """
SELECT {g} AS g, {c} AS c, v.measure, v.key, sum(v.value) FROM case_facts {join}
JOIN case_remedies r ON r.case_id = case_facts.case_id
CROSS JOIN LATERAL (VALUES
  ('remedy_count', r.type, CASE WHEN r.status IN ('approved', 'fulfilled') THEN 1 END),
  ('remedy_cost', r.type, CASE WHEN r.status IN ('approved', 'fulfilled') THEN r.amount END),
  ('promises_kept', '', CASE WHEN r.promise = 'kept' THEN 1 END),
  ('promises_broken', '', CASE WHEN r.promise = 'broken' THEN 1 END)) AS v(measure, key, value)
WHERE {where} AND v.value IS NOT NULL GROUP BY 1, 2, 3, 4"""

_SERVICES = """
SELECT {g} AS g, {c} AS c, 'services', '', count(*)::numeric FROM sale_items {join}
WHERE type = 'service' AND {where} GROUP BY 1, 2"""

# Where each table's records count: the instant that places them in a period.
_AT = {"case_facts": "received_at", "sale_items": "sold_at", "visit_facts": "due_at"}
_VISITS_WHERE = "status IS DISTINCT FROM 'cancelled' AND due_at IS NOT NULL AND "


def _parts(table: str, scope: Scope, group_by: str | None, cells: bool) -> dict:
    at = _AT[table]
    g = f"(({at} AT TIME ZONE :zone)::date)" if cells else _group_sql(group_by, at, table, scope)
    c = ("coalesce(category, '')" if table == "case_facts" else "''") if cells else "''"
    join = REGION_JOIN.format(table=table) if group_by == "region" and not cells else ""
    return {"g": g, "c": c, "join": join, "where": period_where(at, scope)}


def cells_sql(scope: Scope) -> str:
    """One statement: every measure of the period's facts by local day (g) and category (c), rows
    (g, c, measure, key, value): what the KPI cells of those days hold."""
    cases, visits = (_parts(t, scope, None, True) for t in ("case_facts", "visit_facts"))
    statements = [
        _unpivot("case_facts", _CASE_SCALARS, cases["g"], cases["c"], cases["join"], cases["where"]),
        _CASE_KEYED.format(**cases, durations=_DURATIONS),
        _REMEDIES.format(**cases),
        _SERVICES.format(**_parts("sale_items", scope, None, True)),
        _unpivot("visit_facts", _VISIT_SCALARS, visits["g"], visits["c"], visits["join"],
                 _VISITS_WHERE + visits["where"]),
    ]
    return "\nUNION ALL\n".join(f"({s.strip()})" for s in statements)


def _from_rows(conn: sa.Connection, scope: Scope, group_by: str | None, now: datetime) -> dict[str, dict]:
    """The measures of each group read from the case, visit and sale rows, and its percentiles."""
    params = _params(scope, now)
    cases, sales, visits = (_parts(t, scope, group_by, False) for t in ("case_facts", "sale_items", "visit_facts"))
    groups: dict[str, dict] = {}

    def group(g) -> dict:
        return groups.setdefault(str(g) if g is not None else "", {})

    def wide(sql: str, names) -> None:
        for row in conn.execute(sa.text(sql), params):
            m = group(row[0])
            for name, value in zip(names, row[1:]):
                m[(name, "")] = value

    case_columns = {**_CASE_SCALARS, LIVE: _OPEN_BREACHED, **_PERCENTILES}
    wide(_wide("case_facts", case_columns, cases["g"], cases["join"], cases["where"]), case_columns)
    keyed = (f"({_CASE_KEYED.format(**cases, durations='').strip()}) UNION ALL ({_REMEDIES.format(**cases).strip()})")
    for g, _, measure, key, value in conn.execute(sa.text(keyed), params):
        m = group(g)
        m[(measure, key)] = value
    wide(_wide("sale_items", {"services": "count(*)"}, sales["g"], sales["join"], "type = 'service' AND "
               + sales["where"]), ("services",))
    wide(_wide("visit_facts", _VISIT_SCALARS, visits["g"], visits["join"], _VISITS_WHERE + visits["where"]),
         _VISIT_SCALARS)
    return groups


def _params(scope: Scope, now: datetime) -> dict:
    return {"lo": scope.lo, "hi": scope.hi, "zone": scope.zone, "now": now,
            "branches": sorted(scope.branches) if scope.branches is not None else None,
            **region_params(scope.regions)}


# -- the KPI cells: the chain's measures per day, week and month (and category), kept as events
# come (repository.Rollups); a period of whole days of the whole chain adds up a few of them.

CELL_GROUPINGS = {None: ("month", "week", "day"), "category": ("month", "week", "day"),
                  "month": ("month", "day"), "week": ("week", "day"), "day": ("day",)}
_CELL_GROUP = {None: "'all'", "category": "v.category", "day": "to_char(v.period, 'YYYY-MM-DD')",
               "week": "to_char(date_trunc('week', v.period), 'YYYY-MM-DD')",
               "month": "to_char(date_trunc('month', v.period), 'YYYY-MM-DD')"}


def whole_days(scope: Scope) -> tuple[date, date] | None:
    """The first and last local day of a period of whole days (midnight to midnight), else None."""
    zone = ZoneInfo(scope.zone)
    lo, hi = scope.lo.astimezone(zone), scope.hi.astimezone(zone)
    if lo.time() != time() or hi.time() != time():
        return None
    return lo.date(), hi.date() - timedelta(days=1)


def cover(first: date, last: date, grains: tuple[str, ...]) -> dict[str, list[date]]:
    """The fewest cells of `grains` that cover first..last exactly: whole months, then whole
    weeks (from Monday), then days."""
    found: dict[str, list[date]] = {grain: [] for grain in ("month", "week", "day")}
    day = first
    while day <= last:
        following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
        if "month" in grains and day.day == 1 and following - timedelta(days=1) <= last:
            found["month"].append(day)
            day = following
        elif "week" in grains and day.weekday() == 0 and day + timedelta(days=6) <= last:
            found["week"].append(day)
            day += timedelta(days=7)
        else:
            found["day"].append(day)
            day += timedelta(days=1)
    return found


def cells_usable(conn: sa.Connection, scope: Scope, group_by: str | None) -> bool:
    """The cells answer this read: the whole chain, a grouping they hold, whole days, and cells
    made in the chain's zone (a zone changed in the policy: not until they are made again)."""
    if scope.branches is not None or group_by not in CELL_GROUPINGS or whole_days(scope) is None:
        return False
    state = conn.execute(sa.text("SELECT zone, complete FROM kpi_state")).first()
    return state is not None and state.complete and state.zone == scope.zone


def _from_cells(conn: sa.Connection, scope: Scope, group_by: str | None, now: datetime) -> dict[str, dict]:
    first, last = whole_days(scope)
    cells = [(grain, period) for grain, periods in cover(first, last, CELL_GROUPINGS[group_by]).items()
             for period in periods]
    sql = (f"SELECT {_CELL_GROUP[group_by]} AS g, v.measure, v.key, sum(v.value)::float8 "
           "FROM unnest(CAST(:grains AS text[]), CAST(:periods AS date[])) AS p(grain, period) "
           "JOIN kpi_values v ON v.grain = p.grain AND v.period = p.period "
           f"WHERE v.category {'<>' if group_by == 'category' else '='} '*' GROUP BY 1, 2, 3 HAVING sum(v.value) <> 0")
    # Tens of thousands of (measure, key) rows for a year: summed in a hash table in memory, not
    # sorted on disk (PostgreSQL's default work_mem, 4 MB, would).
    conn.execute(sa.text("SELECT set_config('work_mem', '64MB', true)"))
    groups: dict[str, dict] = {}
    for g, measure, key, value in conn.execute(sa.text(sql), {"grains": [c[0] for c in cells],
                                                              "periods": [c[1] for c in cells]}):
        groups.setdefault(g, {})[(measure, key)] = value
    # What the cells cannot hold: the complaints' clocks running past due now.
    # (From the index alone: the complaints with a clock running, and the columns it includes.)
    live = (f"SELECT {_group_sql(group_by, 'received_at', 'case_facts', scope)} AS g, {_PAST_DUE.format(complaint='')} "
            f"FROM case_facts WHERE kind = 'complaint' AND (first_response_at IS NULL OR resolved_at IS NULL) "
            f"AND {period_where('received_at', scope)} GROUP BY 1")
    for g, n in conn.execute(sa.text(live), _params(scope, now)):
        g = str(g) if g is not None else ""
        if g in groups or n:
            groups.setdefault(g, {})[(LIVE, "")] = n
    return groups


def kpis(conn: sa.Connection, scope: Scope, group_by: str | None, now: datetime) -> dict[str, dict]:
    """{group: figures} for the period (group 'all' without a grouping): from the KPI cells
    where they answer it, else from the read models."""
    if cells_usable(conn, scope, group_by):
        return {g: kpi_figures(m) for g, m in _from_cells(conn, scope, group_by, now).items()}
    return {g: kpi_figures(m, percentiles=True) for g, m in _from_rows(conn, scope, group_by, now).items()}


def empty_figures() -> dict:
    return kpi_figures({})


def standard_answers(conn: sa.Connection, scope: Scope) -> list[dict]:
    """Each standard answer's uses in the period (by when it was used) and scope, per purpose,
    with the satisfaction that followed (the case's follow-up score, the visit's), most used first."""
    sql = (f"SELECT standard_answer, purpose, count(*) AS used, count(score) AS followed_up, "
           f"avg(score)::float8 AS mean_score, count(*) FILTER (WHERE score >= 4) AS satisfied "
           f"FROM answer_uses WHERE {period_where('used_at', scope)} "
           f"GROUP BY 1, 2 ORDER BY used DESC, standard_answer, purpose")
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), _params(scope, scope.lo))]


def open_alerts(conn: sa.Connection, branches: frozenset[str] | None, now: datetime, kind: str | None,
                include_closed: bool, limit: int) -> list[dict]:
    """Alerts raised, newest first: open ones (their window still running) unless
    `include_closed`; a caller sees those about a branch in its scope."""
    where, params = [], {"now": now, "limit": limit}
    if not include_closed:
        where.append("active_until > :now")
    if kind:
        where.append("kind = :kind")
        params["kind"] = kind
    if branches is not None:
        where.append("branches && :branches")
        params["branches"] = sorted(branches)
    sql = (f"SELECT * FROM alerts {'WHERE ' + ' AND '.join(where) if where else ''} "
           f"ORDER BY last_at DESC, alert_id LIMIT :limit")
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]


def breaching(conn: sa.Connection, branches: frozenset[str] | None, now: datetime, limit: int = 50) -> list[dict]:
    """Per branch, the open cases past a deadline right now (first response not sent, or not
    resolved), the most overdue first (`limit` of them). The late cases are picked and sorted as
    narrow rows (id, branch, due, clock); the reference and priority are read for the few shown
    only (sorting whole case_facts rows, the facts JSON included, spilled to disk: 28 ms with
    10,000 open cases)."""
    sql = """
    WITH late AS (
        SELECT case_id, branch_code,
               first_response_at IS NULL AND first_response_due < :now AS first_late,
               resolved_at IS NULL AND resolution_due < :now AS resolution_late,
               CASE WHEN first_response_at IS NULL AND first_response_due < :now THEN first_response_due
                    ELSE resolution_due END AS due
        FROM case_facts
        WHERE kind = 'complaint' AND coalesce(state, '') NOT IN ('resolved', 'closed')
          AND ((first_response_at IS NULL AND first_response_due < :now)
               OR (resolved_at IS NULL AND resolution_due < :now)) {scope}),
    worst AS (
        SELECT w.branch_code,
               json_agg(json_build_object('case_id', w.case_id, 'reference', f.facts->>'reference',
                                          'priority', f.priority, 'due', w.due,
                                          'clock', CASE WHEN w.first_late THEN 'first_response' ELSE 'resolution' END)
                        ORDER BY w.n) AS worst
        FROM (SELECT case_id, branch_code, due, first_late,
                     row_number() OVER (PARTITION BY branch_code ORDER BY due, case_id) AS n FROM late) AS w
        JOIN case_facts AS f ON f.case_id = w.case_id
        WHERE w.n <= :limit
        GROUP BY w.branch_code)
    SELECT b.branch_code, b.cases, b.first_response, b.resolution, worst.worst
    FROM (SELECT branch_code, count(*) AS cases, count(*) FILTER (WHERE first_late) AS first_response,
                 count(*) FILTER (WHERE resolution_late) AS resolution
          FROM late GROUP BY branch_code) AS b
    LEFT JOIN worst ON worst.branch_code = b.branch_code
    ORDER BY b.cases DESC, b.branch_code"""
    params = {"now": now, "limit": limit}
    scope = ""
    if branches is not None:
        scope, params["branches"] = "AND branch_code = ANY(:branches)", sorted(branches)
    return [dict(r._mapping) for r in conn.execute(sa.text(sql.format(scope=scope)), params)]


def access_log(conn: sa.Connection, lo: datetime, hi: datetime, branches: frozenset[str] | None,
               case_id: str | None, after: tuple | None, limit: int) -> list[dict]:
    """Archive reads in the period, newest first, keyset-paginated by (accessed_at, event_id)."""
    where, params = ["accessed_at >= :lo", "accessed_at < :hi"], {"lo": lo, "hi": hi, "limit": limit}
    if branches is not None:
        where.append("branch_code = ANY(:branches)")
        params["branches"] = sorted(branches)
    if case_id:
        where.append("case_id = :case_id")
        params["case_id"] = case_id
    if after is not None:
        where.append("(accessed_at, event_id) < (:after_at, :after_id)")
        params.update(after_at=after[0], after_id=after[1])
    sql = (f"SELECT event_id::text, case_id::text, branch_code, actor, actor_role, purpose, contact_read, accessed_at "
           f"FROM access_log WHERE {' AND '.join(where)} ORDER BY accessed_at DESC, event_id DESC LIMIT :limit")
    return [dict(r._mapping) for r in conn.execute(sa.text(sql), params)]
