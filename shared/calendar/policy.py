"""The chain policy: one YAML file the operator edits, validated whole so that `closeloop
policy check` lists every problem at once.

This module reads the chain-wide part (branches with their regions and calendars, shared
holidays, product types, the default time zone and language). Each service owns its own
section (`intake:`, `investigation:`, `aftercare:`) and validates it in its `policy.py`
(`load_section(check, raw, chain)`), so business rules stay with the service that applies
them while the file stays one. Default: `default_policy.yaml` next to this module.
"""
from __future__ import annotations

import calendar
import importlib
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Iterable
from zoneinfo import ZoneInfo

import yaml

from shared.calendar.branches import Branch, Window

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")
VERSION = 2
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


class PolicyError(Exception):
    """The policy file is unusable; .problems names every problem found."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("invalid chain policy:\n" + "\n".join(f"- {p}" for p in self.problems))


# The longest duration a policy may give anything (a deadline, a retention, a limit's window):
# now plus or minus it must stay a date Python and PostgreSQL can hold, with room to spare.
MAX_DURATION = timedelta(days=3660)


def parse_duration(text: str) -> timedelta:
    """ISO-8601 style PT1H, PT24H, P7D, P1DT12H, PT30M -> timedelta; ValueError unless positive
    and at most MAX_DURATION."""
    given, text = text, text.strip().upper() if isinstance(text, str) else ""
    # at most 9 digits a part: no int() of thousands of digits, no timedelta overflow
    m = re.fullmatch(r"P(?:(\d{1,9})D)?(?:T(?:(\d{1,9})H)?(?:(\d{1,9})M)?)?", text)
    if not m or text.endswith("T") or not any(m.groups()):
        raise ValueError(f"{show(text if isinstance(given, str) else given)} is not a duration like PT1H, PT24H or P7D")
    days, hours, minutes = (int(g or 0) for g in m.groups())
    delta = timedelta(days=days, hours=hours, minutes=minutes)
    if delta <= timedelta(0):
        raise ValueError(f"{show(text)} is not a positive duration")
    if delta > MAX_DURATION:
        raise ValueError(f"{show(text)} is longer than {MAX_DURATION.days} days")
    return delta


@dataclass(frozen=True)
class Period:
    """A calendar duration as ISO 8601 writes it (P3Y, P18M, P2Y6M, P400D, P1Y2DT12H): years and
    months count on the calendar, as a retention "three years after closure" means (three years
    before 29 February is 28 February), weeks, days and times exactly."""

    text: str
    months: int = 0
    exact: timedelta = timedelta(0)

    def before(self, instant: datetime) -> datetime:
        """The instant this period before `instant`."""
        year, month = divmod(instant.year * 12 + instant.month - 1 - self.months, 12)
        day = min(instant.day, calendar.monthrange(year, month + 1)[1])
        return instant.replace(year=year, month=month + 1, day=day) - self.exact

    @property
    def approximate(self) -> timedelta:
        """Its length with a month of an average Gregorian month, for bounds."""
        return timedelta(days=self.months * 365.2425 / 12) + self.exact

    def __str__(self) -> str:
        return self.text


_PERIOD = re.compile(r"P(?:(\d{1,4})Y)?(?:(\d{1,5})M)?(?:(\d{1,6})W)?(?:(\d{1,7})D)?"
                     r"(?:T(?:(\d{1,8})H)?(?:(\d{1,9})M)?(?:(\d{1,9})S)?)?")


def parse_period(text: str) -> Period:
    """ISO 8601 P3Y, P18M, P2Y6M, P400D, P1Y2DT12H -> Period; ValueError unless positive and at
    most MAX_DURATION."""
    given, text = text, text.strip().upper() if isinstance(text, str) else ""
    m = _PERIOD.fullmatch(text)
    if not m or text.endswith("T") or not any(m.groups()):
        raise ValueError(f"{show(given)} is not a duration like P3Y, P18M or P400D")
    years, months, weeks, days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    period = Period(text, years * 12 + months, timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes,
                                                         seconds=seconds))
    if period.approximate <= timedelta(0):
        raise ValueError(f"{show(text)} is not a positive duration")
    if period.approximate > MAX_DURATION:
        raise ValueError(f"{show(text)} is longer than {MAX_DURATION.days} days")
    return period


# Personal data is kept at least this long after closure: a customer comes back, disputes or
# sues within months, and an anonymisation cannot be undone, so a slip (P3M for P3Y) must not
# empty the archive.
PERSONAL_DATA_AT_LEAST = timedelta(days=365)


@dataclass(frozen=True)
class Retention:
    """How long rows that only guard against repeats are kept before `closeloop relay` (or
    `closeloop purge`) deletes them, and how long personal data is kept after its record
    closed before `closeloop retention run` (and each service's daily timer) anonymises it."""

    idempotency_keys: timedelta = timedelta(days=7)   # a till retries within minutes, not weeks
    inbox: timedelta = timedelta(days=30)             # past any redelivery or dead-letter replay
    notifications: timedelta = timedelta(days=30)     # sent or given up: the outcome is recorded
    personal_data: Period = Period("P3Y", months=36)  # after closure; counts and KPIs stay


@dataclass(eq=False)
class ChainPolicy:
    """The loaded policy; build it with load_policy(). `section(name)` is a service's own
    rules, as its policy.py built them."""

    branches: dict[str, Branch]
    product_types: tuple[str, ...]
    default_language: str
    sections: dict[str, object] = field(default_factory=dict)
    source: Path | None = None
    retention: Retention = field(default_factory=Retention)

    def branch(self, code: str) -> Branch:
        try:
            return self.branches[code]
        except KeyError:
            raise KeyError(f"unknown branch {code!r}") from None

    def branches_in_region(self, region: str) -> list[str]:
        return sorted(code for code, b in self.branches.items() if b.region == region)

    def regions(self) -> set[str]:
        return {b.region for b in self.branches.values()}

    def section(self, service: str):
        try:
            return self.sections[service]
        except KeyError:
            raise KeyError(f"the policy has no {service!r} section") from None


# ---------------------------------------------------------------------------------------------
# Loading and validation


# libyaml's parser when PyYAML has it (the standard answers make the file long: 5x faster).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_DEPTH = 64  # no policy needs more; libyaml itself would take any depth


def yaml_doc(text: str):
    """A YAML text read plainly (no checks), with libyaml when there: tools and tests that edit a policy."""
    return yaml.load(text, Loader=_SAFE_LOADER)


def yaml_text(doc) -> str:
    """A document written as YAML, keys in their order, with libyaml when there."""
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True, sort_keys=False)


class _TooDeep(Exception):
    pass


class _Loader(_SAFE_LOADER):
    """Safe loader that records duplicate keys (plain YAML silently keeps the last one) and
    refuses a document nested deeper than MAX_DEPTH."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        level, depth = [node], 1
        while level:
            if depth > MAX_DEPTH:
                raise _TooDeep()
            level = [child for n in level if isinstance(n, yaml.SequenceNode) for child in n.value] + \
                    [item for n in level if isinstance(n, yaml.MappingNode) for pair in n.value for item in pair]
            depth += 1
        return self.construct_document(node)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = getattr(key_node, "value", None)
            if isinstance(key, str) and key != "<<":
                if key in seen:
                    self.duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
                seen.add(key)
        return super().construct_mapping(node, deep)


def show(value) -> str:
    """A value as a problem may quote it: scalars as they are (cut short), anything else by its
    kind only, never expanded (a YAML alias bomb is small on disk and huge when printed)."""
    if isinstance(value, (str, int, float, bool, date)) or value is None:
        text = repr(value)
        return text if len(text) <= 80 else text[:77] + "..."
    return f"a {type(value).__name__}"


class Checker:
    """Collects every problem of a policy file, each named by its place in the file; each
    service's section loader reports through it too."""

    def __init__(self):
        self.problems: list[str] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value, where, allowed=None, required=()) -> dict:
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            self.bad(where, "must be a mapping")
            return {}
        for key in value:
            if allowed is not None and key not in allowed:
                self.bad(f"{where}.{key}", f"unknown key (expected one of {', '.join(sorted(allowed))})")
        for key in required:
            if value.get(key) in (None, ""):
                self.bad(f"{where}.{key}", "missing")
        return value

    def text(self, value, where) -> str:
        if not isinstance(value, str) or not value.strip():
            self.bad(where, "must be a non-empty string")
            return ""
        return value.strip()

    def words(self, value, where) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.bad(where, "must be a list")
            return ()
        # A bare number such as 12315 (the consumer hotline) is read by YAML as an int: accept it.
        value = [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return tuple(self.text(v, f"{where}[{i}]") for i, v in enumerate(value))

    def window(self, value, where) -> Window | None:
        m = _RANGE.fullmatch(value if isinstance(value, str) else "")
        if not m:
            self.bad(where, f"{show(value)} is not a range 'HH:MM-HH:MM' (quote it)")
            return None
        (oh, om, ch, cm), ok = map(int, m.groups()), True
        for h, mi, closing in ((oh, om, False), (ch, cm, True)):
            if not (h < 24 and mi < 60 or closing and (h, mi) == (24, 0)):
                self.bad(where, f"{show(value)}: {h:02d}:{mi:02d} is not a valid time")
                ok = False
        if ok and ch * 60 + cm <= oh * 60 + om:
            self.bad(where, f"{show(value)} closes before it opens")
            ok = False
        return (oh * 60 + om, ch * 60 + cm) if ok else None

    def days(self, value, where) -> frozenset[date]:
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            self.bad(where, "must be a list of dates")
            return frozenset()
        result = set()
        for i, item in enumerate(value):
            try:
                if isinstance(item, date) and not isinstance(item, datetime):
                    start = end = item
                else:
                    if not isinstance(item, str):
                        raise ValueError
                    first, _, last = item.partition("..")
                    start, end = (date.fromisoformat(d.strip()) for d in (first, last or first))
                if not timedelta(0) <= end - start <= timedelta(days=366):
                    raise ValueError
            except ValueError:
                self.bad(f"{where}[{i}]", f"{show(item)} is not a day YYYY-MM-DD or a range A..B of days")
                continue
            result.update(start + timedelta(days=n) for n in range((end - start).days + 1))
        return frozenset(result)

    def zone(self, value, where) -> str:
        try:
            if not isinstance(value, str):
                raise ValueError
            ZoneInfo(value)
            return value
        except Exception:  # ZoneInfoNotFoundError, ValueError, TypeError for odd names
            self.bad(where, f"unknown time zone {show(value)}")
            return "UTC"

    def duration(self, value, where) -> timedelta:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.bad(where, str(exc))
            return timedelta(hours=1)

    def period(self, value, where) -> Period | None:
        try:
            return parse_period(value)
        except ValueError as exc:
            self.bad(where, str(exc))
            return None

    def subset(self, value, allowed, where, what) -> frozenset[str]:
        items = self.words(value, where)
        for item in items:
            if item and item not in allowed:
                self.bad(where, f"unknown {what} {show(item)}")
        return frozenset(items) & frozenset(allowed)


_CHAIN = {"version", "default_timezone", "default_language", "calendar", "branches", "product_types", "retention"}
_BRANCH = {"name", "region", "timezone", "opening_hours", "extra_working_day_hours", "holidays",
           "extra_working_days"}


def section_loaders() -> dict:
    """service -> its section loader: `services.<name>.policy.load_section`, for each service
    that has one."""
    from shared.runtime.config import SERVICES

    loaders = {}
    for name in SERVICES:
        try:
            module = importlib.import_module(f"services.{name}.policy")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.{name}.policy":
                raise
            continue
        loaders[name] = module.load_section
    return loaders


def _branches(c: Checker, doc: dict) -> dict[str, Branch]:
    default_zone = c.zone(doc.get("default_timezone", "Asia/Shanghai"), "default_timezone")
    calendar = c.mapping(doc.get("calendar"), "calendar", {"holidays", "extra_working_days"})
    shared_holidays = c.days(calendar.get("holidays"), "calendar.holidays")
    shared_extra = c.days(calendar.get("extra_working_days"), "calendar.extra_working_days")
    branches = {}
    raw = c.mapping(doc.get("branches"), "branches")
    if not raw:
        c.bad("branches", "at least one branch is needed")
    for code, spec in raw.items():
        where = f"branches.{code}"
        if not isinstance(code, str) or not re.fullmatch(r"[A-Z0-9]{1,16}", code):
            c.bad(where, "a branch code is 1-16 upper-case letters or digits")
        spec = c.mapping(spec, where, _BRANCH, required=("name", "region", "opening_hours"))
        name, region = (c.text(spec[k], f"{where}.{k}") if spec.get(k) not in (None, "") else ""
                        for k in ("name", "region"))
        hours = spec.get("opening_hours")
        if isinstance(hours, dict):
            c.mapping(hours, f"{where}.opening_hours", set(WEEKDAYS))
            for day in WEEKDAYS:
                if day not in hours:
                    c.bad(f"{where}.opening_hours.{day}", "missing (use null for closed)")
            weekly = tuple(None if hours.get(d) is None else c.window(hours[d], f"{where}.opening_hours.{d}")
                           for d in WEEKDAYS)
        else:
            weekly = (c.window(hours, f"{where}.opening_hours") if hours is not None else None,) * 7
        extra_hours = spec.get("extra_working_day_hours")
        if extra_hours is not None:
            extra_hours = c.window(extra_hours, f"{where}.extra_working_day_hours")
        extra_days = shared_extra | c.days(spec.get("extra_working_days"), f"{where}.extra_working_days")
        all_closed = isinstance(hours, dict) and all(hours.get(d) is None for d in WEEKDAYS)
        if all_closed and not (extra_days and extra_hours):
            c.bad(f"{where}.opening_hours", "the branch is never open")
        branches[code] = Branch(
            code=str(code), name=name, region=region,
            timezone=c.zone(spec["timezone"], f"{where}.timezone") if "timezone" in spec else default_zone,
            weekly_hours=weekly, holidays=shared_holidays | c.days(spec.get("holidays"), f"{where}.holidays"),
            extra_working_days=extra_days, extra_working_day_hours=extra_hours)
    return branches


def _retention(c: Checker, doc: dict) -> Retention:
    from shared.messaging.topology import retry_delays

    raw = c.mapping(doc.get("retention"), "retention", {"idempotency_keys", "inbox", "notifications",
                                                        "personal_data"})
    default = Retention()
    kept = {name: c.duration(raw[name], f"retention.{name}") if name in raw else getattr(default, name)
            for name in ("idempotency_keys", "inbox", "notifications")}
    kept["personal_data"] = _personal_data(c, raw) or default.personal_data
    # A redelivery that comes after its inbox row is gone is handled a second time.
    try:
        retrying = timedelta(milliseconds=sum(retry_delays()))
    except ValueError:
        retrying = timedelta(0)  # a bad CLOSELOOP_RETRY_DELAYS_MS is the consumer's to report
    if timedelta(0) < kept["inbox"] <= max(retrying, timedelta(days=1)):
        given = show(raw["inbox"]) if "inbox" in raw else f"the default ({default.inbox.days} days)"
        c.bad("retention.inbox", f"{given} is too short: keep the inbox longer than a day and than "
                                 f"every retry of a failing handler ({retrying} in all), so that a redelivered "
                                 f"or replayed event is still recognised")
    return Retention(**kept)


def _personal_data(c: Checker, raw: dict) -> Period | None:
    if "personal_data" not in raw:
        return None
    period = c.period(raw["personal_data"], "retention.personal_data")
    if period is not None and period.approximate < PERSONAL_DATA_AT_LEAST:
        c.bad("retention.personal_data", f"{show(raw['personal_data'])} is too short: keep personal data at least "
                                         f"a year (P1Y) after a record closed, as an anonymisation cannot be undone")
        return None
    return period


def _build(doc, source: Path | None, problems: list[str]) -> ChainPolicy:
    c = Checker()
    c.problems.extend(problems)
    if not isinstance(doc, dict):  # an empty file or a bare list: nothing else can be checked
        raise PolicyError(c.problems + ["policy: must be a mapping of sections"])
    if doc.get("version") != VERSION:
        c.bad("version", f"must be {VERSION}" + (" (version 1 kept every rule at the top level: move them under "
                                                  "intake:, investigation: and aftercare:, as in the bundled file)"
                                                  if doc.get("version", 1) == 1 else ""))
        raise PolicyError(c.problems)  # the rest would be read with the wrong layout: noise
    loaders = section_loaders()
    c.mapping(doc, "policy", _CHAIN | set(loaders))
    branches = _branches(c, doc)
    product_types = c.words(doc.get("product_types"), "product_types")
    if not product_types:
        c.bad("product_types", "list the product and service types sales may name (e.g. skincare, other)")
    default_language = doc.get("default_language", "zh")
    if not isinstance(default_language, str) or not re.fullmatch(r"[a-z]{2,3}", default_language):
        c.bad("default_language", "a language is a lower-case code such as zh or en")
    chain = ChainPolicy(branches=branches, product_types=tuple(product_types),
                        default_language=str(default_language), source=source, retention=_retention(c, doc))
    for name, load in loaders.items():
        if doc.get(name) is None:
            c.bad(name, "missing")
            continue
        chain.sections[name] = load(c, c.mapping(doc.get(name), name), chain)
    if c.problems:
        raise PolicyError(c.problems)
    return chain


def load_policy(path: str | os.PathLike | None = None) -> ChainPolicy:
    """Load and validate the policy file; PolicyError lists every problem found."""
    source = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{source}: cannot read the policy file ({exc})"]) from None
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # e.g. a NUL or another character YAML does not allow
        raise PolicyError([f"{source}: not valid YAML ({exc})"]) from None
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: not valid YAML ({exc})"]) from None
    except (RecursionError, _TooDeep):
        raise PolicyError([f"{source}: nested too deeply"]) from None
    finally:
        loader.dispose()
    try:
        return _build(doc, source, loader.duplicates)
    except RecursionError:
        raise PolicyError([f"{source}: nested too deeply"]) from None


def check_policy(path: str | os.PathLike | None = None) -> list[str]:
    """Every problem in the policy file; [] when it is fine."""
    try:
        load_policy(path)
    except PolicyError as exc:
        return exc.problems
    return []
