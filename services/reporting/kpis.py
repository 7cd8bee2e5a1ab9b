"""Reporting's KPIs as plain Python: what one case, visit or sale adds to a group's measures,
and the figures DESIGN.md lists computed from a group's measures.

A group's measures are sums: counts, sums of scores and costs, and histograms of durations
(logarithmic buckets, each 2% wider than the one before). Sums add up across days, categories
and branches, so the service keeps them per day, week and month (the KPI cells) and answers a
period of the whole chain by adding a few cells instead of reading every case; percentiles,
which do not add up, come from the added histograms. The SQL in queries.py computes the same
measures over the read models; the tests hold the two to each other.

Percentiles interpolate between the nearest ranks as PostgreSQL's percentile_cont does, over
each duration's bucket (its geometric middle): within 1% of the exact value.

SLA compliance counts each clock that has a verdict: met (answered or resolved by its due),
breached (answered or resolved late, or still running past its due at `now`); a clock still
running before its due has none yet. Only the last depends on `now`: it is counted live, never
kept in a cell (`open_breached`)."""
from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)

# The measures one number each; the keyed ones (a count per kind, a histogram's buckets...).
SCALARS = ("total", "complaints", "sla_met", "sla_late", "escalated_1", "escalated_2", "escalated_3", "resolved",
           "reopened", "score_sum", "scored", "scored_4_5", "praise", "suggestions", "suggestions_adopted",
           "actions_open", "actions_done", "actions_on_time", "promises_kept", "promises_broken", "services",
           "visits_due", "visits_completed", "visits_abandoned", "visit_score_sum", "visit_scored",
           "adverse_reactions", "visit_suggestions", "inquiries", "inquiries_answered", "inquiries_in_time",
           "inquiries_converted")
KEYED = ("by_kind", "by_category", "by_priority", "by_channel", "remedy_count", "remedy_cost", "first_response",
         "resolution")
LIVE = "open_breached"  # clocks running past their due at `now`: never in a cell
GIVEN = ("approved", "fulfilled")  # a remedy's statuses that count it as given

# A group's measures: {(measure, key): value}, key "" for a scalar.
Measures = dict


def bucket(seconds: float) -> int:
    """A duration's bucket: 0 under a minute, then 1 + floor(log base 1.02 of the minutes)."""
    minutes = seconds / 60
    return 0 if minutes < 1 else 1 + int(math.log(minutes) / _LOG_GAMMA)


def bucket_hours(b: int) -> float:
    """The duration a bucket stands for, in hours: its geometric middle (half a minute for 0)."""
    return 0.5 / 60 if b == 0 else GAMMA ** (b - 0.5) / 60


def percentile(values: list[float], q: float) -> float | None:
    """The q-th (0-1) percentile, interpolated between the two nearest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def bucket_percentile(histogram: dict, q: float) -> float | None:
    """`percentile` over a histogram {bucket: count}, each duration its bucket's middle."""
    counts = sorted((int(b), int(n)) for b, n in histogram.items() if n)
    total = sum(n for _, n in counts)
    if not total:
        return None
    position = (total - 1) * q
    low, high = math.floor(position), math.ceil(position)
    found, seen = {}, 0
    for b, n in counts:
        for rank in (low, high):
            if rank not in found and rank < seen + n:
                found[rank] = bucket_hours(b)
        seen += n
        if high in found:
            break
    return found[low] + (found[high] - found[low]) * (position - low)


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def duration_bucket(start: str | None, end: str | None) -> int | None:
    """The bucket of end - start (ISO instants); None unless both are known."""
    if not start or not end:
        return None
    return bucket(max(0.0, (_at(end) - _at(start)).total_seconds()))


def _money(amount) -> Decimal:
    """As the read model's numeric(14, 2) keeps it."""
    return Decimal(str(amount or 0)).quantize(Decimal("0.01"))


def case_measures(f: dict) -> Measures:
    """What one case's facts add to its group (nothing before its registration is known)."""
    if not f.get("received_at"):
        return {}
    m: dict = defaultdict(int)
    kind = f.get("kind")
    m[("total", "")] = 1
    m[("by_kind", kind or "unknown")] = 1
    if kind == "complaint":
        m[("complaints", "")] = 1
        for name in ("category", "priority", "channel"):
            m[(f"by_{name}", f.get(name) or "unknown")] = 1
        for done, due in (("first_response_at", "first_response_due"), ("resolved_at", "resolution_due")):
            if f.get(done) and f.get(due):
                m[("sla_met", "") if _at(f[done]) <= _at(f[due]) else ("sla_late", "")] += 1
        for name, end in (("first_response", "first_response_at"), ("resolution", "resolved_at")):
            b = duration_bucket(f["received_at"], f.get(end))
            if b is not None:
                m[(name, str(b))] = 1
        for level in (1, 2, 3):
            if (f.get("escalation_level") or 0) >= level:
                m[(f"escalated_{level}", "")] = 1
        if f.get("resolved_at"):
            m[("resolved", "")] = 1
            if f.get("reopened"):
                m[("reopened", "")] = 1
    score = f.get("follow_up_score")
    if score is not None:
        m[("score_sum", "")], m[("scored", "")] = score, 1
        if score >= 4:
            m[("scored_4_5", "")] = 1
    m.update(inquiry_measures(f))
    if kind == "praise":
        m[("praise", "")] = 1
    if kind == "suggestion":
        m[("suggestions", "")] = 1
        if f.get("decision") == "adopted":
            m[("suggestions_adopted", "")] = 1
    action = f.get("corrective_action") or {}
    if action.get("due") and not action.get("done_at"):
        m[("actions_open", "")] = 1
    if action.get("done_at"):
        m[("actions_done", "")] = 1
        if action.get("on_time"):
            m[("actions_on_time", "")] = 1
    for r in (f.get("remedies") or {}).values():
        if not r.get("type"):
            continue
        if r.get("status") in GIVEN:
            m[("remedy_count", r["type"])] += 1
            m[("remedy_cost", r["type"])] += _money(r.get("amount"))
        if r.get("promise") in ("kept", "broken"):
            m[(f"promises_{r['promise']}", "")] += 1
    return dict(m)


def inquiry_measures(f: dict) -> Measures:
    """Inquiries (consultations) counted apart: every case received as one (converted ones too),
    those answered (the first response) while inquiries, answered by their deadline, converted
    into complaints (which count as complaints from then on)."""
    converted = f.get("converted_from") == "inquiry"
    if f.get("kind") != "inquiry" and not converted:
        return {}
    m = {("inquiries", ""): 1}
    if converted:
        m[("inquiries_converted", "")] = 1
    elif f.get("first_response_at"):
        m[("inquiries_answered", "")] = 1
        if f.get("first_response_due") and _at(f["first_response_at"]) <= _at(f["first_response_due"]):
            m[("inquiries_in_time", "")] = 1
    return m


def open_breached(f: dict, now: datetime) -> int:
    """A complaint's clocks still running past their due at `now`."""
    if f.get("kind") != "complaint" or not f.get("received_at"):
        return 0
    return sum(1 for done, due in (("first_response_at", "first_response_due"), ("resolved_at", "resolution_due"))
               if not f.get(done) and f.get(due) and now > _at(f[due]))


def visit_measures(v: dict) -> Measures:
    """What one visit adds to the group of the day it fell due (a cancelled one: nothing)."""
    if v.get("status") == "cancelled" or not v.get("due_at"):
        return {}
    m = {("visits_due", ""): 1}
    for name, yes in (("visits_completed", v.get("status") == "completed"),
                      ("visits_abandoned", v.get("status") == "abandoned"),
                      ("adverse_reactions", bool(v.get("adverse_reaction"))),
                      ("visit_suggestions", bool(v.get("suggestions")))):
        if yes:
            m[(name, "")] = 1
    if v.get("score") is not None:
        m[("visit_score_sum", "")], m[("visit_scored", "")] = v["score"], 1
    return m


def sale_measures(item: dict) -> Measures:
    """What one sale item adds: a service sold counts towards complaints per 100 services."""
    return {("services", ""): 1} if item.get("type") == "service" else {}


def add(total: dict, measures: Measures, sign: int = 1) -> dict:
    for key, value in measures.items():
        total[key] = total.get(key, 0) + sign * value
    return total


# -- where a record counts: its day and category, in the chain's zone ---------------------------------

def local_day(at: str | datetime | None, zone: ZoneInfo) -> date | None:
    if not at:
        return None
    return (at if isinstance(at, datetime) else _at(at)).astimezone(zone).date()


def periods_of(day: date) -> list[tuple[str, date]]:
    """The cells a day adds to: itself, its week (from Monday), its month."""
    return [("day", day), ("week", day - timedelta(days=day.weekday())), ("month", day.replace(day=1))]


def add_to_cells(changes: dict, at, category: str | None, measures: Measures, zone: ZoneInfo | None,
                 sign: int = 1) -> None:
    """What a record adds (sign 1) or no longer adds (-1) to the cells of its day, week and month,
    for its category and for every case: {(grain, period, category, measure, key): value}."""
    day = local_day(at, zone) if zone is not None and measures else None
    if day is None:
        return
    cells = [(grain, period, cell) for grain, period in periods_of(day) for cell in (category or "", "*")]
    for (measure, key), value in measures.items():
        value *= sign
        for grain, period, cell in cells:
            where = (grain, period, cell, measure, key)
            changes[where] = changes.get(where, 0) + value


# -- the figures ------------------------------------------------------------------------------------

def _share(part, whole) -> float | None:
    return None if not whole else round(100 * part / whole, 1)


def _mean(total, count) -> float | None:
    return None if not count else round(float(total) / count, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def figures(measures: Measures, percentiles: bool = False) -> dict:
    """The KPIs of a group (DESIGN.md's sections) from its measures (its `open_breached` too).
    `percentiles`: the measures hold them already (first_response_median...), computed over the
    same buckets, instead of the histograms."""
    one: dict = {}
    keyed: dict = defaultdict(dict)
    for (name, key), value in measures.items():
        if key == "" and name not in KEYED:
            one[name] = value
        elif value:
            keyed[name][key] = value
    n = lambda name: int(one.get(name) or 0)  # noqa: E731
    durations = {name: {label: _round(one.get(f"{name}_{label}") if percentiles else
                                      bucket_percentile(keyed[name], q))
                        for label, q in (("median", 0.5), ("p90", 0.9))} for name in ("first_response", "resolution")}
    given = {t: int(c) for t, c in keyed["remedy_count"].items() if c}
    complaints, services = n("complaints"), n("services")
    return {
        "volume": {"total": n("total"), "complaints": complaints, "services": services,
                   "complaints_per_100_services": round(100 * complaints / services, 2) if services else None,
                   **{f"by_{name}": {k: int(v) for k, v in sorted(keyed[f"by_{name}"].items())}
                      for name in ("kind", "category", "priority", "channel")}},
        "response": {"first_response_hours": durations["first_response"],
                     "resolution_hours": durations["resolution"],
                     "sla_compliance_pct": _share(n("sla_met"), n("sla_met") + n("sla_late") + n(LIVE)),
                     "escalations_by_level": {str(level): n(f"escalated_{level}") for level in (1, 2, 3)
                                              if n(f"escalated_{level}")},
                     "resolution_rate_pct": _share(n("resolved"), complaints),
                     "reopen_rate_pct": _share(n("reopened"), n("resolved"))},
        "satisfaction": {"mean_score": _mean(one.get("score_sum", 0), n("scored")),
                         "share_4_5_pct": _share(n("scored_4_5"), n("scored")), "praise": n("praise")},
        "remedies": {"count_by_type": dict(sorted(given.items())),
                     "cost_by_type": {t: float(keyed["remedy_cost"].get(t, 0)) for t in sorted(given)},
                     "promises_kept_pct": _share(n("promises_kept"), n("promises_kept") + n("promises_broken"))},
        "aftercare": {"visits_due": n("visits_due"), "completed": n("visits_completed"),
                      "reached_pct": _share(n("visits_completed"), n("visits_completed") + n("visits_abandoned")),
                      "abandoned": n("visits_abandoned"),
                      "mean_score": _mean(one.get("visit_score_sum", 0), n("visit_scored")),
                      "adverse_reactions": n("adverse_reactions"), "suggestions_recorded": n("visit_suggestions")},
        "inquiries": {"received": n("inquiries"), "answered": n("inquiries_answered"),
                      "answered_in_time": n("inquiries_in_time"), "converted": n("inquiries_converted"),
                      "answered_in_time_pct": _share(n("inquiries_in_time"), n("inquiries_answered"))},
        "closed_loop": {"corrective_actions_open": n("actions_open"),
                        "done_on_time_pct": _share(n("actions_on_time"), n("actions_done")),
                        "suggestions": n("suggestions"), "suggestions_adopted": n("suggestions_adopted")},
    }


def case_kpis(cases: list[dict], now: datetime) -> dict:
    """The figures of one group of cases, from their folded facts (what the tests compute by hand)."""
    total: dict = {}
    for f in cases:
        add(total, case_measures(f))
        total[(LIVE, "")] = total.get((LIVE, ""), 0) + open_breached(f, now)
    return figures(total)
