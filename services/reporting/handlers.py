"""Reporting's use cases: a batch of consumed events logged and folded into the read models
in one transaction, the alerts they complete raised (and published once), the read models
rebuilt from the log, and the reads HQ and the branches make. Plain functions over a store of
units of work."""
from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.reporting import alerts, customers, exports, facts, library, models, queries, repository, schemas
from services.reporting.kpis import add_to_cells, case_measures, sale_measures, visit_measures
from services.reporting.policy import PERMISSIONS, ReportingRules
from shared.calendar.clock import isoformat
from shared.messaging.envelope import build_event
from shared.security.auth import Identity
from shared.web.errors import NotFound, ValidationFailed
from shared.web.requests import load, load_query, page

log = logging.getLogger("closeloop.reporting")
REBUILD_BATCH = 2000
ALERT_NAMESPACE = uuid.UUID("6f0c1e57-4d52-4b0e-9a57-2a7c0f3e0b11")
# GET /v1/alerts: the records an alert lists (its count says how many it has; `records=all` lists
# them all): 28 open alerts holding 13,060 cases made a 542 KB answer when each listed all.
ALERT_RECORDS = 50
_REACH = 1  # how many windows either side of new records their episodes are looked for in


def _fold(uow, events: list[dict], now: datetime, cells: bool = True) -> dict[str, set]:
    """The events folded into the read models (and, with `cells`, what they change added to the
    KPI cells, when those are kept); what they may raise alerts about:
    {"complaints": case ids, "batches": {product batch: when its new reactions were reported}}."""
    zone = uow.rollups.kept_in() if cells else None
    zone = ZoneInfo(zone) if zone else None
    changes: dict = {}

    def count(record: dict, at: str, category, measures: dict, sign: int) -> None:
        add_to_cells(changes, record.get(at), category, measures, zone, sign)

    cases = [(facts.case_of(e), e) for e in events]
    cases = [(case_id, e) for case_id, e in cases if case_id]
    counted = set()  # complaints whose place in an alert's count changed
    if cases:
        current = uow.cases.lock([case_id for case_id, _ in cases], now)
        before = {case_id: facts.alert_keys(f) for case_id, f in current.items()}
        for f in current.values():
            count(f, "received_at", f.get("category"), case_measures(f), -1)
        for case_id, event in cases:
            current[case_id] = facts.apply(current[case_id], event)
        for f in current.values():
            count(f, "received_at", f.get("category"), case_measures(f), 1)
        uow.cases.save(current, now)
        counted = {case_id for case_id, f in current.items() if facts.alert_keys(f) != before[case_id]}
    visits = [(facts.visit_of(e), e) for e in events]
    visits = [(visit_id, e) for visit_id, e in visits if visit_id]
    if visits:
        current = uow.visits.lock([visit_id for visit_id, _ in visits], now)
        for v in current.values():
            count(v, "due_at", None, visit_measures(v), -1)
        for visit_id, event in visits:
            current[visit_id] = facts.apply_visit(current[visit_id], event)
        for v in current.values():
            count(v, "due_at", None, visit_measures(v), 1)
        uow.visits.save(current, now)
    sales, sold, reactions, reads = [], [], [], []
    for e in events:
        if e["source"] == "intake" and e["type"] == "sale_recorded":
            sales += facts.sale_items(e)
            whole = facts.sale(e)
            if whole:
                sold.append(whole)
        elif e["source"] == "aftercare" and e["type"] == "adverse_reaction_reported":
            reactions.append(facts.adverse_reaction(e))
        elif e["source"] == "investigation" and e["type"] == "archive_accessed":
            reads.append(facts.archive_access(e))
    kept = {(uuid.UUID(str(sale_id)), line) for sale_id, line in uow.records.add(models.sale_items, sales)}
    for item in sales:  # a sale heard twice (two events of one sale) counts once
        if (uuid.UUID(str(item["sale_id"])), item["line"]) in kept:
            count(item, "sold_at", None, sale_measures(item), 1)
    uow.records.add(models.sales, sold)
    uow.records.add(models.adverse_reactions, reactions)
    uow.records.add(models.access_log, reads)
    uow.rollups.add(changes)
    batches: dict[str, list[datetime]] = {}
    for r in reactions:
        if r["batch"]:
            batches.setdefault(r["batch"], []).append(datetime.fromisoformat(r["reported_at"]))
    return {"complaints": counted, "batches": batches}


def _raise_alerts(uow, touched: dict, rules: ReportingRules, now: datetime, publish: bool) -> int:
    """Alerts the touched records complete, raised once per episode (published when `publish`),
    and the episodes raised before brought up to date. How many were raised."""
    wanted: dict[tuple, list[datetime]] = {}
    if touched["complaints"]:
        for c in uow.alerts.complaints_by_id(sorted(touched["complaints"])):
            for key in alerts.keys_of(c):
                wanted.setdefault(("recurring_problem", key), []).append(c.received_at)
    for batch, times in touched["batches"].items():
        wanted.setdefault(("safety_signal", ("batch", batch)), []).extend(times)
    if not wanted:
        return 0
    texts = {(kind, key): _key_text(kind, key) for kind, key in wanted}
    uow.alerts.lock_keys(list(texts.values()))
    before = uow.alerts.raised(list(texts.values()))
    found: dict[tuple, list] = {}  # what counts towards each key near its new records
    for kind, rule in (("recurring_problem", rules.recurring_problem), ("safety_signal", rules.safety_signal)):
        keys = [key for k, key in wanted if k == kind]
        if not keys:
            continue
        times = [t for k, key in wanted if k == kind for t in wanted[(k, key)]]
        lo, hi = min(times) - _REACH * rule.within, max(times) + _REACH * rule.within
        if kind == "recurring_problem":
            for c in uow.alerts.complaints(keys, lo, hi):
                for key in alerts.keys_of(c):
                    found.setdefault((kind, key), []).append(c)
        else:
            for r in uow.alerts.reactions([key[1] for key in keys], lo, hi):
                found.setdefault((kind, ("batch", r.batch)), []).append(r)
    raised = 0
    for (kind, key) in sorted(wanted):
        rule = rules.recurring_problem if kind == "recurring_problem" else rules.safety_signal
        if kind == "recurring_problem":
            at, record = (lambda c: c.received_at), (lambda c: c.case_id)
        else:
            at, record = (lambda r: r.reported_at), (lambda r: r.visit_id)
        for run in alerts.episodes(found.get((kind, key), []), at, within=rule.within, at_least=rule.at_least):
            raised += _raise(uow, kind, key, run, [{"id": record(i), "branch": i.branch_code} for i in run], at,
                             rule, before.get(texts[(kind, key)], []), now, publish)
    return raised


def _ids(records: list[dict]) -> set[str]:
    return {r["id"] for r in records}


def _raise(uow, kind: str, key: tuple, run: list, records: list[dict], at, rule, before: list[dict], now: datetime,
           publish: bool) -> int:
    """An episode stored: a new alert (1, published when `publish`), or one raised before seen
    further (0; its older records may lie beyond this look, so they are kept). `records`: the
    cases or visits it counts, each with its branch (a reader sees those of its scope)."""
    known = next((a for a in before if _ids(a["records"]) & _ids(records)), None)
    row = {"alert_id": str(uuid.uuid5(ALERT_NAMESPACE, f"{kind}|{key}|{records[0]['id']}")), "kind": kind,
           "key": _key_text(kind, key), "count": len(run), "first_at": at(run[0]), "last_at": at(run[-1]),
           "records": records, "branches": sorted({i.branch_code for i in run}), "raised_at": now}
    if known:
        if _ids(records) <= _ids(known["records"]):
            return 0
        seen = _ids(known["records"])
        row.update(alert_id=known["alert_id"], raised_at=known["raised_at"],
                   records=[*known["records"], *(r for r in records if r["id"] not in seen)],
                   branches=sorted({*known["branches"], *row["branches"]}),
                   first_at=min(known["first_at"], row["first_at"]), last_at=max(known["last_at"], row["last_at"]))
        row["count"] = len(row["records"])
    row["active_until"] = row["last_at"] + rule.within
    uow.alerts.put(row)
    if known is not None:
        return 0
    if publish:
        uow.publish(_alert_event(row, key, run, rule.within, now))
    return 1


def _key_text(kind: str, key: tuple) -> str:
    """The alert's subject as stored: JSON, so that no id can run into the next part."""
    return json.dumps([kind, *key], ensure_ascii=False)


def _duration(within: timedelta) -> str:
    days, seconds = within.days, within.seconds
    return f"P{days}D" if not seconds else f"P{days}DT{seconds}S"


def _alert_event(row: dict, key: tuple, run: list, within: timedelta, now: datetime):
    common = {"alert_id": row["alert_id"], "count": row["count"], "within": _duration(within),
              "first_at": isoformat(row["first_at"]), "last_at": isoformat(row["last_at"]),
              "branches": row["branches"]}
    event_id = str(uuid.uuid5(ALERT_NAMESPACE, f"raised|{row['alert_id']}"))
    if row["kind"] == "recurring_problem":
        by = key[0]
        payload = {**common, "by": by, "branch_code": key[1] if by == "branch_category" else None,
                   "category": key[2] if by == "branch_category" else None,
                   "technician_id": key[1] if by == "technician" else None,
                   "case_ids": [r["id"] for r in row["records"]]}
        return build_event("recurring_problem_detected", payload,
                           branch_code=row["branches"][0] if len(row["branches"]) == 1 else None,
                           correlation_id=row["alert_id"], occurred_at=now, sequence=1, event_id=event_id)
    payload = {**common, "batch": key[1], "skus": sorted({r.sku for r in run if r.sku}),
               "visit_ids": [r["id"] for r in row["records"]]}
    return build_event("safety_signal_raised", payload, branch_code=None, correlation_id=row["alert_id"],
                       occurred_at=now, sequence=1, event_id=event_id)


def ingest(store, *, events: list[dict], rules: ReportingRules, now: datetime) -> int:
    """A batch of parsed envelopes: each logged once (a copy, or one logged before, is left
    out), the new ones folded into the read models and the alerts they complete raised, all in
    one transaction. How many were new."""
    with store.unit_of_work() as uow:
        fresh = uow.log.append(events, now)
        if fresh:
            _raise_alerts(uow, _fold(uow, fresh, now), rules, now, publish=True)
    return len(fresh)


def rebuild(store, *, rules: ReportingRules, now: datetime, zone: str, batch: int = REBUILD_BATCH) -> int:
    """`closeloop projections rebuild`: the read models dropped and folded again from the whole
    log, and the KPI cells made again from them in `zone` (the chain's), in one transaction
    (readers see the old figures until it commits, batches wait). The alerts raised stay (what
    was raised and published is history): the episodes found again update them, and nothing is
    published. Events folded."""
    done = 0
    with store.unit_of_work() as uow:
        uow.rollups.lock_all()
        for model in (uow.cases, uow.visits, uow.records):
            model.clear()
        last = 0
        while True:
            rows = uow.log.after(last, batch)
            if not rows:
                break
            _raise_alerts(uow, _fold(uow, [envelope for _, envelope in rows], now, cells=False), rules, now,
                          publish=False)
            done += len(rows)
            last = rows[-1][0]
        uow.rollups.make(zone, now)
    log.info("projections rebuilt from %d logged event(s)", done)
    return done


def make_cells(store, *, policy, now: datetime) -> int | None:
    """The KPI cells made from the facts when they are not complete in the chain's zone (a new or
    upgraded database, a zone changed in the policy): until then KPIs are read from the facts."""
    zone = str(chain_zone(policy))
    made = repository.refresh_rollups(store.engine, zone, now, only_if_needed=True)
    if made is not None:
        log.info("KPI cells made from the facts in %s: %d values", zone, made)
    return made


# -- reads: KPIs, alerts, exports, the access log ---------------------------------------------------

def chain_zone(policy) -> ZoneInfo:
    """The chain's days, weeks and months: the time zone most of its branches keep."""
    zones = Counter(b.timezone for b in policy.branches.values())
    return ZoneInfo(zones.most_common(1)[0][0] if zones else "Asia/Shanghai")


def _scope(identity, params: dict, policy, now: datetime, errors: dict) -> queries.Scope:
    """The period and the branches a read covers: the caller's scope, narrowed by `branch`
    or `region` (a branch or region outside it covers nothing)."""
    zone = chain_zone(policy)
    lo, hi = schemas.period(params, zone, now, errors)
    branches = identity.branches
    if "region" in params:
        in_region = frozenset(policy.branches_in_region(params["region"]))
        if not in_region:
            errors["region"] = [f"no region {params['region'][:100]} in the chain policy"]
        branches = in_region if branches is None else branches & in_region
    if "branch" in params:
        branches = frozenset({params["branch"]}) & (branches if branches is not None else {params["branch"]})
    return queries.Scope(lo, hi, branches, {code: b.region for code, b in policy.branches.items()}, str(zone))


def _checked(identity, action: str, schema, query: dict, policy, now: datetime):
    PERMISSIONS.require(identity, action)
    params, errors = load(schema, query)
    scope = _scope(identity, params, policy, now, errors)
    if errors:
        raise ValidationFailed("invalid query", fields=errors)
    return params, scope


def kpis(store, *, identity: Identity, query: dict, policy, now: datetime) -> dict:
    params, scope = _checked(identity, "kpi:read", schemas.KpiQuery(), query, policy, now)
    group_by = params.get("group_by")
    with store.engine.connect() as conn:
        groups = queries.kpis(conn, scope, group_by, now)
        totals = queries.kpis(conn, scope, None, now).get("all") if group_by else None
    totals = totals or groups.get("all") or queries.empty_figures()
    return {"from": isoformat(scope.lo), "to": isoformat(scope.hi), "time_zone": scope.zone, "group_by": group_by,
            "branches": sorted(scope.branches) if scope.branches is not None else None, "totals": totals,
            "groups": [{"key": key, **figures} for key, figures in sorted(groups.items())] if group_by else []}


def standard_answers(store, *, identity: Identity, query: dict, policy, now: datetime) -> dict:
    """GET /v1/kpis/standard-answers: how often each standard answer was used in the period, and
    the satisfaction that followed (`satisfied`: the share of those scores of 4 or 5, in %)."""
    _, scope = _checked(identity, "kpi:read", schemas.PeriodQuery(), query, policy, now)
    with store.engine.connect() as conn:
        used = queries.standard_answers(conn, scope)
    return {"from": isoformat(scope.lo), "to": isoformat(scope.hi), "time_zone": scope.zone,
            "branches": sorted(scope.branches) if scope.branches is not None else None,
            "answers": [{"standard_answer": u["standard_answer"], "purpose": u["purpose"], "used": u["used"],
                         "followed_up": u["followed_up"],
                         "mean_score": round(u["mean_score"], 2) if u["mean_score"] is not None else None,
                         "satisfied": round(100 * u["satisfied"] / u["followed_up"], 1) if u["followed_up"] else None}
                        for u in used]}


def alerts_now(store, *, identity: Identity, query: dict, now: datetime) -> dict:
    PERMISSIONS.require(identity, "alert:read")
    params, errors = load(schemas.AlertQuery(), query)
    if errors:
        raise ValidationFailed("invalid query", fields=errors)
    with store.engine.connect() as conn:
        raised = queries.open_alerts(conn, identity.branches, now, params.get("kind"), params["status"] == "all",
                                     params["limit"])
        late = queries.breaching(conn, identity.branches, now)
    every = params.get("records") == "all"
    return {"alerts": [_alert_view(a, now, identity.branches, every) for a in raised],
            "breaching": [{**b, "worst": b["worst"] or []} for b in late], "as_of": isoformat(now)}


def _alert_view(row: dict, now: datetime, branches: frozenset[str] | None, every: bool = False) -> dict:
    """An alert as the caller may see it: the records (and their count and branches) of its
    scope, the first ALERT_RECORDS of them (oldest first) unless `every` (`records=all`), and
    `records_more` when `count` holds more than `records`; a safety signal also says how many
    reactions the whole chain had (`chain_count`)."""
    _, by, *key = json.loads(row["key"])
    about = ({"branch_code": key[0], "category": key[1]} if by == "branch_category" else
             {"technician_id": key[0]} if by == "technician" else {"batch": key[0]})
    records = [r for r in row["records"] if branches is None or r["branch"] in branches]
    view = {"alert_id": str(row["alert_id"]), "kind": row["kind"], "by": by, "about": about, "count": len(records),
            "first_at": isoformat(row["first_at"]), "last_at": isoformat(row["last_at"]),
            "open": row["active_until"] > now, "open_until": isoformat(row["active_until"]),
            "branches": sorted({r["branch"] for r in records}),
            "records": [r["id"] for r in (records if every else records[:ALERT_RECORDS])],
            "records_more": not every and len(records) > ALERT_RECORDS, "raised_at": isoformat(row["raised_at"])}
    if row["kind"] == "safety_signal":
        view["chain_count"] = row["count"]
    return view


def export(store, *, identity: Identity, query: dict, policy, now: datetime, kind: str):
    """(headers, body chunks) of the CSV or XLSX export."""
    params, scope = _checked(identity, "export:read", schemas.ExportQuery(), query, policy, now)
    zone = chain_zone(policy)
    name = exports.filename(kind, scope, zone)
    headers = {"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"}
    if kind == "csv":
        return "text/csv; charset=utf-8", headers, exports.csv_stream(store.engine, scope, params, zone)
    spool = exports.xlsx_file(store.engine, scope, params, zone)
    return ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", headers,
            exports.file_chunks(spool))


def case_library(store, *, identity: Identity, query: dict, policy, now: datetime, kind: str):
    """(mimetype, headers, body chunks) of the case library, CSV or XLSX: closed complaints of
    the period, nobody named."""
    params, scope = _checked(identity, "export:read", schemas.LibraryQuery(), query, policy, now)
    zone = chain_zone(policy)
    headers = {"Content-Disposition": f'attachment; filename="{library.filename(kind, scope, zone)}"',
               "Cache-Control": "no-store"}
    if kind == "csv":
        return "text/csv; charset=utf-8", headers, library.csv_stream(store.engine, scope, params)
    return ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", headers,
            exports.file_chunks(library.xlsx_file(store.engine, scope, params)))


def access_log(store, *, identity: Identity, query: dict, policy, now: datetime) -> dict:
    PERMISSIONS.require(identity, "access_log:read")
    params, after = load_query(schemas.AccessLogQuery(), query)
    errors: dict = {}
    lo, hi = schemas.period(params, chain_zone(policy), now, errors)
    if errors:
        raise ValidationFailed("invalid query", fields=errors)
    case_id = str(params["case_id"]) if "case_id" in params else None
    with store.engine.connect() as conn:
        rows = queries.access_log(conn, lo, hi, identity.branches, case_id, after, params["limit"] + 1)
    view = lambda r: {**r, "accessed_at": isoformat(r["accessed_at"])}  # noqa: E731
    return page(rows, params["limit"], view, lambda r: (r["accessed_at"], r["event_id"]))


def customer_file(store, *, identity: Identity, customer_ref: str, query: dict) -> str:
    """GET /v1/customers/{customer_ref}: the customer's file as the caller's scope shows it, as
    JSON text (its lists written by PostgreSQL: customers.py)."""
    PERMISSIONS.require(identity, "customer:read")
    _, errors = load(schemas.CustomerQuery(), query)
    if not customers.valid_ref(customer_ref):
        errors["customer_ref"] = ["a customer reference: c_ and 32 hexadecimal digits (as intake's look-up gives it)"]
    if errors:
        raise ValidationFailed("invalid request", fields=errors)
    with store.engine.connect() as conn:
        found = customers.read(conn, customer_ref, identity.branches)
    if found is None:
        raise NotFound(f"no records of customer {customer_ref} in your scope")
    return found
