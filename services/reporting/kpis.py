"""Reporting's KPIs over case facts (facts.py), first part (issue 11 groundwork, not wired):
plain functions, the figures DESIGN.md groups and what the tests compute by hand against the
service's SQL. Percentiles interpolate as PostgreSQL's percentile_cont does, so the two agree.

SLA compliance counts each clock that has a verdict: met (answered or resolved by its due),
breached (answered or resolved late, or still running past its due at `now`); a clock still
running before its due has none yet."""
from __future__ import annotations

import math
from collections import Counter
from datetime import datetime


def percentile(values: list[float], q: float) -> float | None:
    """The q-th (0-1) percentile, interpolated between the two nearest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _hours(start: str, end: str) -> float:
    return (_at(end) - _at(start)).total_seconds() / 3600


def _share(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(100 * part / whole, 1)


def _clock(done: str | None, due: str | None, now: datetime) -> str | None:
    """met | breached | None (no verdict yet, or no deadline)."""
    if due is None:
        return None
    if done is not None:
        return "met" if _at(done) <= _at(due) else "breached"
    return "breached" if now > _at(due) else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def case_kpis(cases: list[dict], now: datetime) -> dict:
    """The case figures of queries.kpis for one group, from the folded facts."""
    complaints = [c for c in cases if c["kind"] == "complaint"]
    first = [_hours(c["received_at"], c["first_response_at"]) for c in complaints if c["first_response_at"]]
    resolution = [_hours(c["received_at"], c["resolved_at"]) for c in complaints if c["resolved_at"]]
    verdicts = Counter(v for c in complaints for v in (_clock(c["first_response_at"], c["first_response_due"], now),
                                                       _clock(c["resolved_at"], c["resolution_due"], now)) if v)
    resolved = [c for c in complaints if c["resolved_at"]]
    scores = [c["follow_up_score"] for c in cases if c["follow_up_score"] is not None]
    remedies = [r for c in cases for r in c["remedies"].values() if r.get("status") in ("approved", "fulfilled")]
    promises = Counter(r["promise"] for c in cases for r in c["remedies"].values() if r.get("promise"))
    actions = [c["corrective_action"] for c in cases if c["corrective_action"]]
    done = [a for a in actions if a.get("done_at")]
    suggestions = [c for c in cases if c["kind"] == "suggestion"]
    cost: Counter = Counter()
    for r in remedies:
        cost[r["type"]] += r["amount"]
    by = lambda name: dict(Counter(c[name] or "unknown" for c in complaints))  # noqa: E731
    return {
        "volume": {"total": len(cases), "complaints": len(complaints),
                   "by_kind": dict(Counter(c["kind"] or "unknown" for c in cases)), "by_category": by("category"),
                   "by_priority": by("priority"), "by_channel": by("channel")},
        "response": {"first_response_hours": {"median": _round(percentile(first, 0.5)),
                                              "p90": _round(percentile(first, 0.9))},
                     "resolution_hours": {"median": _round(percentile(resolution, 0.5)),
                                          "p90": _round(percentile(resolution, 0.9))},
                     "sla_compliance_pct": _share(verdicts["met"], verdicts["met"] + verdicts["breached"]),
                     "escalations_by_level": {str(level): n for level in (1, 2, 3) if (n := sum(
                         1 for c in complaints if c["escalation_level"] >= level))},
                     "resolution_rate_pct": _share(len(resolved), len(complaints)),
                     "reopen_rate_pct": _share(sum(1 for c in resolved if c["reopened"]), len(resolved))},
        "satisfaction": {"mean_score": round(sum(scores) / len(scores), 2) if scores else None,
                         "share_4_5_pct": _share(sum(1 for s in scores if s >= 4), len(scores)),
                         "praise": sum(1 for c in cases if c["kind"] == "praise")},
        "remedies": {"count_by_type": dict(Counter(r["type"] for r in remedies)),
                     "cost_by_type": {k: float(v) for k, v in cost.items()},
                     "promises_kept_pct": _share(promises["kept"], promises["kept"] + promises["broken"])},
        "closed_loop": {"corrective_actions_open": len(actions) - len(done),
                        "done_on_time_pct": _share(sum(1 for a in done if a.get("on_time")), len(done)),
                        "suggestions": len(suggestions),
                        "suggestions_adopted": sum(1 for c in suggestions if c["decision"] == "adopted")},
    }
