"""The customer file (客户档案): one customer's cases, sales and visits in the reader's scope,
newest first (LIST_MOST of each), with a summary, their allergy reports and their satisfaction
over time. A customer is the keyed hash of their contact intake makes (`customer_ref`): the
case, visit and sale rows hold it, indexed (customer_ref, time), so a file reads a few index
ranges however many customers there are.

A list cut at LIST_MOST says so (`more`); the summary's counts then come from all of the
customer's records in scope (counted apart), else from the rows read. The allergies (newest
first) and the satisfaction (oldest first) are lists too: the newest LIST_MOST of each, read by
their own time when a list was cut (a customer of 10,000 records gets a file of the same size as
one of 200), `more` saying when there were more. No contact in clear: the customer is the ref and
the masks intake published."""
from __future__ import annotations

import json
import re
from datetime import datetime

import sqlalchemy as sa

from shared.calendar.clock import isoformat

LIST_MOST = 200
# shared.security.privacy.customer_ref: "c_" and 32 hex digits of an HMAC-SHA256.
CUSTOMER_REF = re.compile(r"c_[0-9a-f]{32}")
_SCOPE = " AND {table}.branch_code = ANY(:branches)"


def _iso(column: str) -> str:
    """shared.calendar.clock.isoformat in SQL: UTC, a Z, microseconds only when there are some."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (f"(to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') || CASE WHEN extract(microseconds FROM {column})::bigint "
            f"% 1000000 <> 0 THEN to_char({utc}, '.US') ELSE '' END || 'Z')")


# Each list's records are written as JSON by PostgreSQL (`item`: the record as the file shows it);
# the process reads beside it only the few columns its summary needs: a big file's 600 records
# are not parsed into Python and serialised again.
_CASE_ITEM = f"""json_build_object(
    'case_id', c.case_id, 'reference', f.reference, 'kind', c.kind, 'branch_code', c.branch_code,
    'category', c.category, 'priority', c.priority, 'severity_flags', coalesce(f.severity_flags, '[]'),
    'received_at', {_iso('c.received_at')}, 'state', c.state, 'outcome', c.outcome,
    'closed_at', {_iso('c.closed_at')}, 'responsibility', f.responsibility,
    'remedies', (SELECT coalesce(json_agg(json_build_object('type', r ->> 'type', 'amount', r -> 'amount',
                                                            'status', r ->> 'status', 'promise', r ->> 'promise')
                                          ORDER BY r ->> 'type', r -> 'amount'), '[]')
                 FROM jsonb_each(coalesce(f.remedies, '{{}}')) AS given(id, r) WHERE r ->> 'type' IS NOT NULL),
    'follow_up_score', c.follow_up_score, 'batches', coalesce(f.batches, '[]'))::text"""
_ALLERGIC = "(c.kind = 'complaint' AND (c.category = 'safety' OR coalesce(f.severity_flags ? 'allergy', false)))"
# A case's parts, from its facts in one pass (jsonb_to_record: the facts detoasted once a row).
_CASES = f"""
SELECT c.case_id::text AS case_id, c.kind, c.received_at, c.closed_at, c.follow_up_score, f.follow_up_at,
       {_ALLERGIC} AND coalesce(f.origin ->> 'type', '') <> 'adverse_reaction' AS allergic,
       CASE WHEN {_ALLERGIC} THEN f.products END AS products, CASE WHEN {_ALLERGIC} THEN f.batches END AS batches,
       f.customer_masked::text AS masked{{item}}
FROM case_facts c
CROSS JOIN LATERAL jsonb_to_record(c.facts) AS f(reference text, severity_flags jsonb, responsibility text,
                                               remedies jsonb, batches jsonb, products jsonb, customer_masked jsonb,
                                               origin jsonb, follow_up_at timestamptz)
WHERE c.customer_ref = :ref{{scope}}{{where}}
ORDER BY c.received_at DESC NULLS LAST, c.case_id DESC"""
_CASE_COUNTS = """
SELECT count(*) FILTER (WHERE kind = 'complaint') AS complaints, count(*) FILTER (WHERE kind = 'inquiry') AS inquiries,
       count(*) FILTER (WHERE closed_at IS NULL) AS open_cases
FROM case_facts WHERE customer_ref = :ref{scope}"""
# What the allergies and the satisfaction need of the cases, when the list was cut: the newest
# allergic ones (by when they came, as the allergies are ordered), and the newest follow-up scores
# whose visit is not in the file (by when they were given).
_CASES_ALLERGIC = f" AND {_ALLERGIC} AND coalesce(f.origin ->> 'type', '') <> 'adverse_reaction'"
_CASES_FOLLOWED = _CASES.replace("ORDER BY c.received_at DESC NULLS LAST, c.case_id DESC",
                                 "ORDER BY f.follow_up_at DESC, c.case_id DESC")
# (NOT IN, not NOT EXISTS: the visits' case ids hashed once, whatever the statistics say; without
# them the planner ran NOT EXISTS as a nested loop, 13 s for a customer of 10,000 cases and visits.)
_FOLLOWED = """ AND c.follow_up_score IS NOT NULL AND f.follow_up_at IS NOT NULL AND c.case_id::text NOT IN (
    SELECT v.facts ->> 'case_id' FROM visit_facts v WHERE v.customer_ref = :ref{scope} AND v.kind = 'follow_up'
      AND v.status = 'completed' AND v.score IS NOT NULL AND v.finished_at IS NOT NULL
      AND v.facts ->> 'case_id' IS NOT NULL)"""

_SALE_ITEM = f"""json_build_object(
    'sale_id', s.sale_id, 'branch_code', s.branch_code, 'sold_at', {_iso('s.sold_at')},
    'contact_consent', s.contact_consent, 'items', s.items)::text"""
_SALES = """
SELECT s.contact_consent, s.sold_at, s.customer_masked::text AS masked{item}
FROM sales s WHERE s.customer_ref = :ref{scope}{where}
ORDER BY s.sold_at DESC, s.sale_id DESC"""
_SALE_COUNT = "SELECT count(*) FROM sales WHERE customer_ref = :ref{scope}"

_VISIT_ITEM = f"""json_build_object(
    'visit_id', v.visit_id, 'kind', v.kind, 'branch_code', v.branch_code, 'due_at', {_iso('v.due_at')},
    'status', v.status, 'finished_at', {_iso('v.finished_at')}, 'score', v.score, 'answers', f.answers,
    'adverse_reaction', v.adverse_reaction, 'sale_id', f.sale_id, 'case_id', f.case_id)::text"""
_VISITS = """
SELECT v.visit_id::text AS visit_id, v.kind, v.status, v.finished_at, v.score, v.adverse_reaction, f.case_id,
       a.batch, a.sku, a.reported_at{item}
FROM visit_facts v
CROSS JOIN LATERAL jsonb_to_record(v.facts) AS f(answers jsonb, sale_id text, case_id text)
LEFT JOIN adverse_reactions a ON v.adverse_reaction AND a.visit_id = v.visit_id
WHERE v.customer_ref = :ref{scope}{where}
ORDER BY v.due_at DESC NULLS LAST, v.visit_id DESC"""
_VISIT_COUNT = "SELECT count(*) FROM visit_facts WHERE customer_ref = :ref{scope}"
# The same, of the visits: the newest scored ones (by when they ended), the newest reactions.
_SCORED = " AND v.status = 'completed' AND v.score IS NOT NULL AND v.finished_at IS NOT NULL"
_VISITS_SCORED = _VISITS.replace("ORDER BY v.due_at DESC NULLS LAST, v.visit_id DESC",
                                 "ORDER BY v.finished_at DESC, v.visit_id DESC")
_VISITS_REACTED = _VISITS.replace("ORDER BY v.due_at DESC NULLS LAST, v.visit_id DESC",
                                  "ORDER BY coalesce(a.reported_at, v.finished_at) DESC NULLS LAST, v.visit_id DESC")
LISTS = {"cases": (_CASES, "c", _CASE_ITEM), "sales": (_SALES, "s", _SALE_ITEM), "visits": (_VISITS, "v", _VISIT_ITEM)}


# The newest name intake masked for the customer whose ref is {ref} (an SQL expression), from their
# sales and cases: what scrubs the texts of a case that has no mask of its own (one opened for a
# return visit's adverse reaction has no registration at intake).
NEWEST_NAME = """(SELECT known.name FROM (
    SELECT s.customer_masked ->> 'name' AS name, s.sold_at AS at FROM sales s WHERE s.customer_ref = {ref}
    UNION ALL
    SELECT o.facts -> 'customer_masked' ->> 'name', o.received_at FROM case_facts o WHERE o.customer_ref = {ref}
  ) AS known WHERE known.name IS NOT NULL ORDER BY known.at DESC NULLS LAST LIMIT 1)"""


def valid_ref(text: str) -> bool:
    return isinstance(text, str) and CUSTOMER_REF.fullmatch(text) is not None


def statement(sql: str, table: str, branches, where: str = "", item: str = "", limit: int | None = None) -> str:
    """`sql` for a customer (:ref) in scope (`table`: the alias the scope names; :branches, unless
    `branches` is None), the first `limit` rows; with `item`, each as the file shows it too."""
    scope = _SCOPE.format(table=table) if branches is not None else ""
    text = sql.format(scope=scope, where=where, item=f", {item} AS item" if item else "")
    return text + (f" LIMIT {int(limit)}" if limit else "")


def _read(conn: sa.Connection, sql: str, table: str, ref: str, branches, where: str = "", item: str = "",
          limit: int | None = None) -> list:
    """The rows of `statement(...)` for the customer `ref`."""
    return conn.execute(sa.text(statement(sql, table, branches, where, item, limit)),
                        {"ref": ref, "branches": sorted(branches or ())}).all()


def read(conn: sa.Connection, ref: str, branches: frozenset[str] | None, most: int = LIST_MOST) -> str | None:
    """The file of the customer `ref` as `branches` (None: every branch) may see it, as JSON
    text; None when none of their records is in that scope."""
    listed = {name: _read(conn, sql, alias, ref, branches, item=item, limit=most + 1)
              for name, (sql, alias, item) in LISTS.items()}
    if not any(listed.values()):
        return None
    more = {name: len(rows) > most for name, rows in listed.items()}
    cases, sales, visits = (listed[name][:most] for name in LISTS)

    if more["cases"]:
        counted = dict(_read(conn, _CASE_COUNTS, "case_facts", ref, branches)[0]._mapping)
        allergic = _read(conn, _CASES, "c", ref, branches, where=_CASES_ALLERGIC, limit=most + 1)
    else:
        counted = {"complaints": sum(c.kind == "complaint" for c in cases),
                   "inquiries": sum(c.kind == "inquiry" for c in cases),
                   "open_cases": sum(c.closed_at is None for c in cases)}
        allergic = [c for c in cases if c.allergic]
    sale_count = _read(conn, _SALE_COUNT, "sales", ref, branches)[0][0] if more["sales"] else len(sales)
    if more["visits"]:
        visit_count = _read(conn, _VISIT_COUNT, "visit_facts", ref, branches)[0][0]
        scored = _read(conn, _VISITS_SCORED, "v", ref, branches, where=_SCORED, limit=most + 1)
        reacted = _read(conn, _VISITS_REACTED, "v", ref, branches, where=" AND v.adverse_reaction", limit=most + 1)
    else:
        visit_count = len(visits)
        scored = [v for v in visits if v.status == "completed" and v.score is not None and v.finished_at]
        reacted = [v for v in visits if v.adverse_reaction]
    if more["cases"] or more["visits"]:
        visits_scope = _SCOPE.format(table="v") if branches is not None else ""
        followed = _read(conn, _CASES_FOLLOWED, "c", ref, branches, where=_FOLLOWED.format(scope=visits_scope),
                         limit=most + 1)
    else:
        by_visit = {v.case_id for v in scored if v.kind == "follow_up"}
        followed = [c for c in cases if c.follow_up_score is not None and c.follow_up_at and c.case_id not in by_visit]

    last = max(scored, key=lambda v: (v.finished_at, v.visit_id), default=None)
    allergies, satisfaction = _allergies(allergic, reacted), _satisfaction(followed, scored)
    more.update(allergies=len(allergies) > most, satisfaction=len(satisfaction) > most)
    head = {
        "customer_ref": ref,
        "customer_masked": _newest_mask(cases, sales),
        "contact_consent": sales[0].contact_consent if sales else None,
        "summary": {**counted, "sales": sale_count, "visits": visit_count,
                    "last_visit_score": last.score if last else None,
                    "last_visit_at": isoformat(last.finished_at) if last else None,
                    "allergies": allergies[:most]},
        "satisfaction": satisfaction[len(satisfaction) - most:] if more["satisfaction"] else satisfaction,
    }
    lists = "".join(f', "{name}": [{",".join(row.item for row in rows)}]'
                    for name, rows in (("cases", cases), ("sales", sales), ("visits", visits)))
    return json.dumps(head, ensure_ascii=False)[:-1] + lists + f', "more": {json.dumps(more)}}}'


def _newest_mask(cases: list, sales: list) -> dict:
    """The newest name and number intake masked, from the newest case or sale that has one."""
    known = [(c.received_at, c.masked) for c in cases if c.received_at and c.masked]
    known += [(s.sold_at, s.masked) for s in sales if s.masked]
    for _, text in sorted(known, key=lambda k: k[0], reverse=True):
        masked = json.loads(text)
        if masked and (masked.get("name") or masked.get("phone")):
            return {"name": masked.get("name"), "phone": masked.get("phone")}
    return {"name": None, "phone": None}


def _at(at: datetime | None) -> str | None:
    return isoformat(at) if at else None


def _allergies(cases: list, visits: list) -> list[dict]:
    """Adverse reactions a visit found (`visits`: those that found one), and complaints about
    safety or flagged `allergy` (`cases`: those; each product's batch; a case opened from a visit's
    reaction is that visit's, listed once), newest first."""
    found = [{"at": v.reported_at or v.finished_at, "batch": v.batch, "sku": v.sku, "source": "visit",
              "record_id": v.visit_id} for v in visits]
    for c in cases:
        if not c.received_at:
            continue
        products = c.products or [{"sku": None, "batch": b} for b in c.batches or []] or [{"sku": None, "batch": None}]
        found += [{"at": c.received_at, "batch": p.get("batch"), "sku": p.get("sku"), "source": "complaint",
                   "record_id": c.case_id} for p in products]
    found.sort(key=lambda a: (a["at"] is not None, a["at"] or datetime.min, a["record_id"]), reverse=True)
    return [{**a, "at": _at(a["at"])} for a in found]


def _satisfaction(cases: list, scored_visits: list) -> list[dict]:
    """Every score the customer gave, oldest first: each completed visit's, and a case's
    follow-up score whose visit is not in the file (`cases`: those; a follow-up heard before
    visits carried the customer's ref)."""
    points = [{"at": v.finished_at, "score": v.score, "kind": v.kind, "visit_id": v.visit_id, "case_id": v.case_id}
              for v in scored_visits]
    points += [{"at": c.follow_up_at, "score": c.follow_up_score, "kind": "follow_up", "visit_id": None,
                "case_id": c.case_id} for c in cases]
    points.sort(key=lambda p: (p["at"], p["visit_id"] or "", p["case_id"] or ""))
    return [{**p, "at": isoformat(p["at"])} for p in points]
