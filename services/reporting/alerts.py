"""Reporting's alert rules, first part (issue 11 groundwork, not wired): plain functions over
what the read models hold, on a window that ends at `now`.

- A recurring problem: `at_least` (3) complaints of one category at one branch, or about one
  technician (at any branch), received within `within` (14 days).
- A product safety signal: `at_least` (2) adverse reactions on one product batch within
  `within` (30 days), counted across the whole chain: the alert no single branch can see. It
  names the branches the reactions came from.
Each alert has a key (what it is about) and lasts while its records keep coming within the
window of each other (an episode), so it is raised (and published) once, not at every new
complaint; a quiet spell as long as the window ends it, and the next run is a new alert.
`episodes` finds them in any order the records arrive."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

RECURRING_WITHIN, RECURRING_AT_LEAST = timedelta(days=14), 3
SAFETY_WITHIN, SAFETY_AT_LEAST = timedelta(days=30), 2


@dataclass(frozen=True)
class Complaint:
    case_id: str
    branch_code: str
    category: str | None
    technician_id: str | None
    received_at: datetime


@dataclass(frozen=True)
class AdverseReaction:
    visit_id: str
    branch_code: str
    batch: str | None
    sku: str | None
    reported_at: datetime


@dataclass(frozen=True)
class Alert:
    kind: str                 # recurring_problem | safety_signal
    key: tuple                # what it is about: (by, value...), stable while it lasts
    count: int
    first_at: datetime
    last_at: datetime
    records: tuple[str, ...]  # the cases or visits it counts, oldest first
    branches: tuple[str, ...]


def _alert(kind: str, key: tuple, items: list, at, record, branch) -> Alert:
    items = sorted(items, key=at)
    return Alert(kind, key, len(items), at(items[0]), at(items[-1]), tuple(record(i) for i in items),
                 tuple(sorted({branch(i) for i in items})))


def keys_of(c: Complaint) -> list[tuple]:
    """What a complaint counts towards: its branch's category, and its technician."""
    return ([("branch_category", c.branch_code, c.category)] if c.category else []) + \
        ([("technician", c.technician_id)] if c.technician_id else [])


def episodes(items: list, at, *, within: timedelta, at_least: int) -> list[list]:
    """The items that lie in some window of length `within` holding `at_least` items, grouped
    into runs (a gap of `within` or more between two counted items starts a new run), oldest
    first. Any order in; the same runs out."""
    items = sorted(items, key=at)
    counted = set()
    start = 0
    for end, item in enumerate(items):  # the window (at(end) - within, at(end)]
        while at(items[start]) <= at(item) - within:
            start += 1
        if end - start + 1 >= at_least:
            counted.update(range(start, end + 1))
    runs: list[list] = []
    for index in sorted(counted):
        if runs and at(items[index]) - at(runs[-1][-1]) < within:
            runs[-1].append(items[index])
        else:
            runs.append([items[index]])
    return runs


def recurring_problems(complaints: Iterable[Complaint], now: datetime, *, within: timedelta = RECURRING_WITHIN,
                       at_least: int = RECURRING_AT_LEAST) -> list[Alert]:
    """Categories at a branch, and technicians, with `at_least` complaints in the window."""
    groups: dict[tuple, list[Complaint]] = {}
    for c in complaints:
        if not now - within < c.received_at <= now:
            continue
        for key in keys_of(c):
            groups.setdefault(key, []).append(c)
    return sorted((_alert("recurring_problem", key, items, lambda c: c.received_at, lambda c: c.case_id,
                          lambda c: c.branch_code)
                   for key, items in groups.items() if len(items) >= at_least), key=lambda a: (a.first_at, a.key))


def safety_signals(reactions: Iterable[AdverseReaction], now: datetime, *, within: timedelta = SAFETY_WITHIN,
                   at_least: int = SAFETY_AT_LEAST) -> list[Alert]:
    """Product batches with `at_least` adverse reactions in the window, chain-wide."""
    groups: dict[tuple, list[AdverseReaction]] = {}
    for r in reactions:
        if r.batch and now - within < r.reported_at <= now:
            groups.setdefault(("batch", r.batch), []).append(r)
    return sorted((_alert("safety_signal", key, items, lambda r: r.reported_at, lambda r: r.visit_id,
                          lambda r: r.branch_code)
                   for key, items in groups.items() if len(items) >= at_least), key=lambda a: (a.first_at, a.key))
