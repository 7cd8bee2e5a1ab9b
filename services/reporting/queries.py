"""Reporting's reads in SQL over the read models: the KPIs of a period grouped one way, open
alerts, cases breaching their SLA now, the archive access log. The figures mean what kpis.py
computes in Python over the same facts (the tests hold the two to each other).

A case counts in the period it was received in, a visit in the period it fell due in, a sale
in the period it was sold in. Days, weeks and months are the chain's local ones."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

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


def _params(scope: Scope, now: datetime) -> dict:
    return {"lo": scope.lo, "hi": scope.hi, "zone": scope.zone, "now": now,
            "branches": sorted(scope.branches) if scope.branches is not None else None,
            **region_params(scope.regions)}


_HOURS = "extract(epoch FROM ({end} - received_at)) / 3600"
_CASES = """
SELECT {g} AS g,
  count(*) AS total,
  count(*) FILTER (WHERE kind = 'complaint') AS complaints,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY {first}) FILTER (WHERE kind = 'complaint') AS first_median,
  percentile_cont(0.9) WITHIN GROUP (ORDER BY {first}) FILTER (WHERE kind = 'complaint') AS first_p90,
  percentile_cont(0.5) WITHIN GROUP (ORDER BY {resolution}) FILTER (WHERE kind = 'complaint') AS resolution_median,
  percentile_cont(0.9) WITHIN GROUP (ORDER BY {resolution}) FILTER (WHERE kind = 'complaint') AS resolution_p90,
  count(*) FILTER (WHERE kind = 'complaint' AND first_response_at <= first_response_due)
    + count(*) FILTER (WHERE kind = 'complaint' AND resolved_at <= resolution_due) AS sla_met,
  count(*) FILTER (WHERE kind = 'complaint' AND (first_response_at > first_response_due
                   OR (first_response_at IS NULL AND :now > first_response_due)))
    + count(*) FILTER (WHERE kind = 'complaint' AND (resolved_at > resolution_due
                   OR (resolved_at IS NULL AND :now > resolution_due))) AS sla_breached,
  count(*) FILTER (WHERE kind = 'complaint' AND escalation_level >= 1) AS escalated_1,
  count(*) FILTER (WHERE kind = 'complaint' AND escalation_level >= 2) AS escalated_2,
  count(*) FILTER (WHERE kind = 'complaint' AND escalation_level >= 3) AS escalated_3,
  count(*) FILTER (WHERE kind = 'complaint' AND resolved_at IS NOT NULL) AS resolved,
  count(*) FILTER (WHERE kind = 'complaint' AND resolved_at IS NOT NULL AND reopened > 0) AS reopened,
  avg(follow_up_score) AS mean_score,
  count(follow_up_score) AS scored,
  count(*) FILTER (WHERE follow_up_score >= 4) AS scored_4_5,
  count(*) FILTER (WHERE kind = 'praise') AS praise,
  count(*) FILTER (WHERE kind = 'suggestion') AS suggestions,
  count(*) FILTER (WHERE kind = 'suggestion' AND decision = 'adopted') AS suggestions_adopted,
  count(*) FILTER (WHERE corrective_due IS NOT NULL AND corrective_done_at IS NULL) AS actions_open,
  count(*) FILTER (WHERE corrective_done_at IS NOT NULL) AS actions_done,
  count(*) FILTER (WHERE corrective_done_at IS NOT NULL AND corrective_on_time) AS actions_on_time
FROM case_facts {join} WHERE {where} GROUP BY 1"""

_VOLUME = """
SELECT {g} AS g, 'by_kind' AS dim, kind AS value, count(*) AS n FROM case_facts {join} WHERE {where} GROUP BY 1, 3
UNION ALL
SELECT {g}, 'by_' || dim, value, count(*) FROM case_facts {join} CROSS JOIN
  LATERAL (VALUES ('category', category), ('priority', priority), ('channel', channel)) AS d(dim, value)
WHERE kind = 'complaint' AND {where} GROUP BY 1, 2, 3"""

_REMEDIES = """
SELECT {g} AS g, r.type, count(*) FILTER (WHERE r.status IN ('approved', 'fulfilled')) AS n,
       coalesce(sum(r.amount) FILTER (WHERE r.status IN ('approved', 'fulfilled')), 0) AS cost,
       count(*) FILTER (WHERE r.promise = 'kept') AS kept, count(*) FILTER (WHERE r.promise = 'broken') AS broken
FROM case_remedies r JOIN case_facts USING (case_id) {join} WHERE {where} GROUP BY 1, 2"""

_SERVICES = """
SELECT {g} AS g, count(*) AS services FROM sale_items {join} WHERE type = 'service' AND {where} GROUP BY 1"""

_VISITS = """
SELECT {g} AS g,
  count(*) AS due,
  count(*) FILTER (WHERE status = 'completed') AS completed,
  count(*) FILTER (WHERE status = 'abandoned') AS abandoned,
  avg(score) AS mean_score,
  count(*) FILTER (WHERE adverse_reaction) AS adverse_reactions,
  count(*) FILTER (WHERE suggestions) AS suggestions
FROM visit_facts {join}
WHERE status IS DISTINCT FROM 'cancelled' AND due_at IS NOT NULL AND {where} GROUP BY 1"""


def _share(part, whole) -> float | None:
    return None if not whole else round(100 * part / whole, 1)


def _round(value, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)


def kpis(conn: sa.Connection, scope: Scope, group_by: str | None, now: datetime) -> dict[str, dict]:
    """{group: figures} for the period (group 'all' without a grouping)."""
    params = _params(scope, now)

    def run(template: str, table: str, at: str, **more) -> list:
        join = REGION_JOIN.format(table=table) if group_by == "region" else ""
        sql = template.format(g=_group_sql(group_by, at, table, scope), where=period_where(at, scope), join=join, **more)
        return conn.execute(sa.text(sql), params).all()

    groups: dict[str, dict] = {}

    def group(key) -> dict:
        return groups.setdefault(str(key) if key is not None else "", empty_figures())

    for r in run(_CASES, "case_facts", "received_at", first=_HOURS.format(end="first_response_at"),
                 resolution=_HOURS.format(end="resolved_at")):
        g = group(r.g)
        g["volume"]["total"], g["volume"]["complaints"] = r.total, r.complaints
        g["response"] = {
            "first_response_hours": {"median": _round(r.first_median), "p90": _round(r.first_p90)},
            "resolution_hours": {"median": _round(r.resolution_median), "p90": _round(r.resolution_p90)},
            "sla_compliance_pct": _share(r.sla_met, r.sla_met + r.sla_breached),
            "escalations_by_level": {str(level): n for level, n in
                                     ((1, r.escalated_1), (2, r.escalated_2), (3, r.escalated_3)) if n},
            "resolution_rate_pct": _share(r.resolved, r.complaints),
            "reopen_rate_pct": _share(r.reopened, r.resolved)}
        g["satisfaction"] = {"mean_score": _round(r.mean_score), "share_4_5_pct": _share(r.scored_4_5, r.scored),
                             "praise": r.praise}
        g["closed_loop"] = {"corrective_actions_open": r.actions_open,
                            "done_on_time_pct": _share(r.actions_on_time, r.actions_done),
                            "suggestions": r.suggestions, "suggestions_adopted": r.suggestions_adopted}
    for r in run(_VOLUME, "case_facts", "received_at"):
        group(r.g)["volume"][r.dim][r.value or "unknown"] = r.n
    for r in run(_REMEDIES, "case_facts", "received_at"):
        remedies = group(r.g)["remedies"]
        if r.n:
            remedies["count_by_type"][r.type] = r.n
            remedies["cost_by_type"][r.type] = float(r.cost)
        remedies["_kept"] += r.kept
        remedies["_broken"] += r.broken
    for r in run(_SERVICES, "sale_items", "sold_at"):
        group(r.g)["volume"]["services"] = r.services
    for r in run(_VISITS, "visit_facts", "due_at"):
        group(r.g)["aftercare"] = {
            "visits_due": r.due, "completed": r.completed,
            "reached_pct": _share(r.completed, r.completed + r.abandoned),
            "abandoned": r.abandoned, "mean_score": _round(r.mean_score), "adverse_reactions": r.adverse_reactions,
            "suggestions_recorded": r.suggestions}
    for g in groups.values():
        remedies = g["remedies"]
        kept, broken = remedies.pop("_kept"), remedies.pop("_broken")
        remedies["promises_kept_pct"] = _share(kept, kept + broken)
        services = g["volume"]["services"]
        g["volume"]["complaints_per_100_services"] = (round(100 * g["volume"]["complaints"] / services, 2)
                                                      if services else None)
    return groups


def empty_figures() -> dict:
    return {
        "volume": {"total": 0, "complaints": 0, "services": 0, "complaints_per_100_services": None, "by_kind": {},
                   "by_category": {}, "by_priority": {}, "by_channel": {}},
        "response": {"first_response_hours": {"median": None, "p90": None},
                     "resolution_hours": {"median": None, "p90": None}, "sla_compliance_pct": None,
                     "escalations_by_level": {}, "resolution_rate_pct": None, "reopen_rate_pct": None},
        "satisfaction": {"mean_score": None, "share_4_5_pct": None, "praise": 0},
        "remedies": {"count_by_type": {}, "cost_by_type": {}, "_kept": 0, "_broken": 0},
        "aftercare": {"visits_due": 0, "completed": 0, "reached_pct": None, "abandoned": 0, "mean_score": None,
                      "adverse_reactions": 0, "suggestions_recorded": 0},
        "closed_loop": {"corrective_actions_open": 0, "done_on_time_pct": None, "suggestions": 0,
                        "suggestions_adopted": 0},
    }


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
    resolved), the most overdue first."""
    sql = """
    SELECT branch_code, count(*) AS cases,
           count(*) FILTER (WHERE first_response_at IS NULL AND first_response_due < :now) AS first_response,
           count(*) FILTER (WHERE resolved_at IS NULL AND resolution_due < :now) AS resolution,
           (array_agg(json_build_object('case_id', case_id, 'reference', reference, 'priority', priority,
                                        'due', due, 'clock', clock) ORDER BY due))[1: :limit] AS worst
    FROM (SELECT case_id, branch_code, priority, first_response_at, first_response_due, resolved_at, resolution_due,
                 facts->>'reference' AS reference,
                 CASE WHEN first_response_at IS NULL AND first_response_due < :now THEN first_response_due
                      ELSE resolution_due END AS due,
                 CASE WHEN first_response_at IS NULL AND first_response_due < :now THEN 'first_response'
                      ELSE 'resolution' END AS clock
          FROM case_facts
          WHERE kind = 'complaint' AND coalesce(state, '') NOT IN ('resolved', 'closed')
            AND ((first_response_at IS NULL AND first_response_due < :now)
                 OR (resolved_at IS NULL AND resolution_due < :now)) {scope}) AS late
    GROUP BY branch_code ORDER BY count(*) DESC, branch_code"""
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
