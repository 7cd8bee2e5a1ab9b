"""Chain policy: branches, calendars, categories, triage, deadlines and templates.

The whole policy is one YAML file the operator edits (default: default_policy.yaml next to this
module). Loading validates everything at once so `closeloop policy check` can list every problem
instead of failing on the first one.
"""
from __future__ import annotations

import os
import re
import string
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import ClassVar, Iterable
from zoneinfo import ZoneInfo

import yaml

DEFAULT_POLICY_PATH = Path(__file__).with_name("default_policy.yaml")

KINDS = ("complaint", "suggestion", "praise")
CHANNELS = ("front_desk", "phone", "wechat", "social_media", "email", "web_form", "online_chat")
# Fixed by the design: other services store and report on these codes.
CATEGORY_CODES = ("service_quality", "product_quality", "hygiene_environment", "booking", "price",
                  "staff_attitude", "after_sales", "safety")
SEVERITY_FLAGS = frozenset({"allergy", "burn", "injury", "infection", "legal_threat",
                            "media_threat", "wide_reach", "serious_service_failure"})
SAFETY_FLAGS = frozenset({"allergy", "burn", "injury", "infection"})
PRIORITIES = ("urgent", "general", "low")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SEARCH_DAYS = 800  # how far next_opening looks ahead; validation guarantees some open day
_PLACEHOLDERS = {"greeting", "reference", "kind", "due", "branch_code", "branch_name"}

_RANGE = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")
Window = tuple[int, int]  # opening and closing, minutes after local midnight (closing may be 1440)


class PolicyError(Exception):
    """The policy file is unusable; .problems names every problem found."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("invalid chain policy:\n" + "\n".join(f"- {p}" for p in self.problems))


def _aware(instant: datetime) -> datetime:
    if not isinstance(instant, datetime) or instant.utcoffset() is None:
        raise ValueError(f"an aware datetime is needed, got {instant!r}")
    return instant


@dataclass(frozen=True)
class Branch:
    code: str
    name: str
    region: str
    timezone: str
    weekly_hours: tuple[Window | None, ...]  # mon..sun, None = closed
    holidays: frozenset[date] = field(default=frozenset(), repr=False)
    extra_working_days: frozenset[date] = field(default=frozenset(), repr=False)
    extra_working_day_hours: Window | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances, so this is cheap

    def hours_on(self, day: date) -> Window | None:
        # An extra working day wins over a holiday, so a branch can open on a chain-wide holiday.
        if day in self.extra_working_days:
            return self.extra_working_day_hours or next((w for w in self.weekly_hours if w), None)
        if day in self.holidays:
            return None
        return self.weekly_hours[day.weekday()]

    def _bounds(self, day: date, window: Window) -> tuple[datetime, datetime]:
        midnight = datetime.combine(day, time())
        return tuple((midnight + timedelta(minutes=m)).replace(tzinfo=self.zone) for m in window)

    def is_open(self, instant: datetime) -> bool:
        local = _aware(instant).astimezone(self.zone)
        window = self.hours_on(local.date())
        if window is None:
            return False
        start, end = self._bounds(local.date(), window)
        return start <= local < end

    def next_opening(self, instant: datetime) -> datetime:
        """The instant itself when open, else the next opening (in the instant's time zone)."""
        local = _aware(instant).astimezone(self.zone)
        for offset in range(_SEARCH_DAYS):
            day = local.date() + timedelta(days=offset)
            window = self.hours_on(day)
            if window is None:
                continue
            start, end = self._bounds(day, window)
            if local < start:
                return start.astimezone(instant.tzinfo)
            if local < end:
                return instant
        raise ValueError(f"branch {self.code} does not open within {_SEARCH_DAYS} days")


@dataclass(frozen=True)
class Category:
    code: str
    label_zh: str
    label_en: str
    keywords_zh: tuple[str, ...] = ()
    keywords_en: tuple[str, ...] = ()


@dataclass(frozen=True)
class Deadlines:
    first_response_due: datetime
    resolution_due: datetime


def _normalize(text: str) -> str:
    # NFKC folds full-width letters and digits (ＲＵＤＥ, １２３１５) so they match too.
    return unicodedata.normalize("NFKC", text or "").casefold()


class _Keywords:
    """Chinese keywords match as substrings; English ones as whole words (plus plural/-ed/-ing)."""

    def __init__(self, zh: Iterable[str], en: Iterable[str]):
        self.zh = tuple(_normalize(k) for k in zh)
        self.en = tuple(re.compile(r"(?<![a-z0-9])" + r"\s+".join(map(re.escape, _normalize(k).split()))
                                   + r"(?:s|es|ed|d|ing)?(?![a-z0-9])") for k in en)

    def count(self, normalized: str) -> int:
        return sum(k in normalized for k in self.zh) + sum(bool(p.search(normalized)) for p in self.en)


def parse_duration(text: str) -> timedelta:
    """ISO-8601 style PT1H, PT24H, P7D, P1DT12H, PT30M -> timedelta; ValueError unless positive."""
    text = text.strip().upper() if isinstance(text, str) else ""
    m = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?", text)
    if not m or text.endswith("T") or not any(m.groups()):
        raise ValueError(f"{text!r} is not a duration like PT1H, PT24H or P7D")
    days, hours, minutes = (int(g or 0) for g in m.groups())
    delta = timedelta(days=days, hours=hours, minutes=minutes)
    if delta <= timedelta(0):
        raise ValueError(f"{text!r} is not a positive duration")
    return delta


@dataclass(eq=False)
class ChainPolicy:
    """The loaded policy; build it with load_policy()."""

    branches: dict[str, Branch]
    categories: dict[str, Category]  # in tie-break order
    default_category: str
    urgent_categories: frozenset[str]
    urgent_flags: frozenset[str]
    urgent_keywords: tuple[tuple[str, ...], tuple[str, ...]]  # (zh, en)
    first_response: dict[str, timedelta]  # priority -> duration
    resolution: dict[str, timedelta]
    around_the_clock: frozenset[str]  # priorities whose deadlines are never moved
    authority: dict  # role -> CNY limit (None: no limit), raw for the remedy service
    visit_delays: dict  # product type -> days
    contact_hours: tuple[time, time]
    acknowledgements: dict  # language -> {greeting, greeting_anonymous, kinds, text}
    default_language: str
    source: Path | None = None

    kinds: ClassVar = KINDS
    channels: ClassVar = CHANNELS
    severity_flags: ClassVar = SEVERITY_FLAGS
    safety_flags: ClassVar = SAFETY_FLAGS
    priorities: ClassVar = PRIORITIES

    def __post_init__(self):
        # Compile the keyword matchers once; classify runs on every intake.
        self._category_keywords = {code: _Keywords(c.keywords_zh, c.keywords_en)
                                   for code, c in self.categories.items()}
        self._urgent_keywords = _Keywords(*self.urgent_keywords)

    def branch(self, code: str) -> Branch:
        try:
            return self.branches[code]
        except KeyError:
            raise KeyError(f"unknown branch {code!r}") from None

    def branches_in_region(self, region: str) -> list[str]:
        return sorted(code for code, b in self.branches.items() if b.region == region)

    def regions(self) -> set[str]:
        return {b.region for b in self.branches.values()}

    def classify(self, text: str) -> str:
        normalized = _normalize(text)
        best, best_hits = self.default_category, 0
        for code in self.categories:  # file order is the tie-break order: strict > keeps the first
            hits = self._category_keywords[code].count(normalized)
            if hits > best_hits:
                best, best_hits = code, hits
        return best

    def priority(self, kind: str, category: str | None, severity_flags: Iterable[str] = (),
                 text: str = "") -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        if kind != "complaint":
            return "low"
        flags = set(severity_flags or ())
        if flags - SEVERITY_FLAGS:
            raise ValueError(f"unknown severity flags: {', '.join(sorted(flags - SEVERITY_FLAGS))}")
        if (category in self.urgent_categories or flags & self.urgent_flags
                or self._urgent_keywords.count(_normalize(text))):
            return "urgent"
        return "general"

    def deadlines(self, priority: str, branch_code: str, received_at: datetime) -> Deadlines:
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        branch = self.branch(branch_code)
        received = _aware(received_at).astimezone(timezone.utc)
        first, resolution = received + self.first_response[priority], received + self.resolution[priority]
        if priority not in self.around_the_clock:
            first, resolution = branch.next_opening(first), branch.next_opening(resolution)
        return Deadlines(first.astimezone(timezone.utc), resolution.astimezone(timezone.utc))

    def language(self, language: str | None) -> str:
        """'zh-CN' -> 'zh'; a language without templates falls back to the default."""
        base = re.split(r"[-_]", (language or "").strip().lower())[0]
        return base if base in self.acknowledgements else self.default_language

    def acknowledgement(self, language: str | None, *, name: str | None, reference: str, kind: str,
                        first_response_due: datetime, branch_code: str) -> str:
        template = self.acknowledgements[self.language(language)]
        if kind not in template["kinds"]:
            raise ValueError(f"unknown kind {kind!r}")
        branch = self.branch(branch_code)
        name = (name or "").strip()
        greeting = template["greeting"].format(name=name) if name else template["greeting_anonymous"]
        due = _aware(first_response_due).astimezone(branch.zone).strftime("%Y-%m-%d %H:%M")
        return template["text"].format(greeting=greeting, reference=reference, kind=template["kinds"][kind],
                                       due=due, branch_code=branch.code, branch_name=branch.name)


# ---------------------------------------------------------------------------------------------
# Loading and validation


class _Loader(yaml.SafeLoader):
    """Safe loader that records duplicate keys (plain YAML silently keeps the last one)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = getattr(key_node, "value", None)
            if isinstance(key, str) and key != "<<":
                if key in seen:
                    self.duplicates.append(f"line {key_node.start_mark.line + 1}: duplicate key {key!r}")
                seen.add(key)
        return super().construct_mapping(node, deep)


class _Checker:
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
            self.bad(where, f"{value!r} is not a range 'HH:MM-HH:MM' (quote it)")
            return None
        (oh, om, ch, cm), ok = map(int, m.groups()), True
        for h, mi, closing in ((oh, om, False), (ch, cm, True)):
            if not (h < 24 and mi < 60 or closing and (h, mi) == (24, 0)):
                self.bad(where, f"{value!r}: {h:02d}:{mi:02d} is not a valid time")
                ok = False
        if ok and ch * 60 + cm <= oh * 60 + om:
            self.bad(where, f"{value!r} closes before it opens")
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
                    first, _, last = str(item).partition("..")
                    start, end = (date.fromisoformat(d.strip()) for d in (first, last or first))
                if not timedelta(0) <= end - start <= timedelta(days=366):
                    raise ValueError
            except ValueError:
                self.bad(f"{where}[{i}]", f"{item!r} is not a day YYYY-MM-DD or a range A..B of days")
                continue
            result.update(start + timedelta(days=n) for n in range((end - start).days + 1))
        return frozenset(result)

    def zone(self, value, where) -> str:
        try:
            ZoneInfo(value)
            return value
        except Exception:  # ZoneInfoNotFoundError, ValueError, TypeError for odd names
            self.bad(where, f"unknown time zone {value!r}")
            return "UTC"

    def duration(self, value, where) -> timedelta:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.bad(where, str(exc))
            return timedelta(hours=1)

    def subset(self, value, allowed, where, what) -> frozenset[str]:
        items = self.words(value, where)
        for item in items:
            if item and item not in allowed:
                self.bad(where, f"unknown {what} {item!r}")
        return frozenset(items) & frozenset(allowed)


_TOP = {"version", "default_timezone", "default_language", "calendar", "branches", "categories",
        "default_category", "keywords", "triage", "deadlines", "authority", "visit_delays",
        "contact_hours", "acknowledgement"}
_BRANCH = {"name", "region", "timezone", "opening_hours", "extra_working_day_hours", "holidays",
           "extra_working_days"}


def _branches(c: _Checker, doc: dict) -> dict[str, Branch]:
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


def _categories(c: _Checker, doc: dict) -> dict[str, Category]:
    labels = c.mapping(doc.get("categories"), "categories", set(CATEGORY_CODES))
    keywords = c.mapping(doc.get("keywords"), "keywords", set(CATEGORY_CODES))
    categories = {}
    for code in labels:
        if code not in CATEGORY_CODES:
            continue  # already reported as an unknown key
        spec = c.mapping(labels[code], f"categories.{code}", {"zh", "en"}, required=("zh", "en"))
        words = c.mapping(keywords.get(code), f"keywords.{code}", {"zh", "en"})
        categories[code] = Category(code, str(spec.get("zh") or ""), str(spec.get("en") or ""),
                                    c.words(words.get("zh"), f"keywords.{code}.zh"),
                                    c.words(words.get("en"), f"keywords.{code}.en"))
    for code in CATEGORY_CODES:
        if code not in labels:
            c.bad(f"categories.{code}", "missing")
    return categories


def _acknowledgements(c: _Checker, doc: dict) -> dict:
    raw = c.mapping(doc.get("acknowledgement"), "acknowledgement", required=("zh", "en"))
    templates = {}
    for lang, spec in raw.items():
        where = f"acknowledgement.{lang}"
        if not isinstance(lang, str) or not re.fullmatch(r"[a-z]{2,3}", lang):
            c.bad(where, "a language is a lower-case code such as zh or en")
        spec = c.mapping(spec, where, {"greeting", "greeting_anonymous", "kinds", "text"},
                         required=("greeting", "greeting_anonymous", "kinds", "text"))
        kinds = c.mapping(spec.get("kinds"), f"{where}.kinds", set(KINDS), required=KINDS)
        for key, allowed in (("greeting", {"name"}), ("greeting_anonymous", set()), ("text", _PLACEHOLDERS)):
            try:
                parsed = string.Formatter().parse(str(spec.get(key) or ""))
                used = {f for _, f, _, _ in parsed if f is not None}
            except ValueError as exc:
                c.bad(f"{where}.{key}", f"bad template: {exc}")
                continue
            for name in sorted(used - allowed):
                c.bad(f"{where}.{key}", f"unknown placeholder {{{name}}}")
        template = {key: str(spec.get(key) or "") for key in ("greeting", "greeting_anonymous", "text")}
        template["kinds"] = {k: c.text(kinds[k], f"{where}.kinds.{k}") for k in KINDS if kinds.get(k)}
        templates[str(lang)] = template
    return templates


def _build(doc, source: Path | None, problems: list[str]) -> ChainPolicy:
    c = _Checker()
    c.problems.extend(problems)
    if not isinstance(doc, dict):  # an empty file or a bare list: nothing else can be checked
        raise PolicyError(c.problems + ["policy: must be a mapping of sections"])
    c.mapping(doc, "policy", _TOP)
    if doc.get("version", 1) != 1:
        c.bad("version", "only version 1 is understood")
    branches = _branches(c, doc)
    categories = _categories(c, doc)
    default_category = doc.get("default_category", "service_quality")
    if default_category not in CATEGORY_CODES:
        c.bad("default_category", f"unknown category {default_category!r}")

    triage = c.mapping(doc.get("triage"), "triage", {"urgent_categories", "urgent_flags", "urgent_keywords"})
    urgent_categories = c.subset(triage.get("urgent_categories"), CATEGORY_CODES, "triage.urgent_categories",
                                 "category")
    urgent_flags = c.subset(triage.get("urgent_flags"), SEVERITY_FLAGS, "triage.urgent_flags",
                            "severity flag")
    urgent_words = c.mapping(triage.get("urgent_keywords"), "triage.urgent_keywords", {"zh", "en"})
    urgent_keywords = (c.words(urgent_words.get("zh"), "triage.urgent_keywords.zh"),
                       c.words(urgent_words.get("en"), "triage.urgent_keywords.en"))

    deadlines = c.mapping(doc.get("deadlines"), "deadlines", {"first_response", "resolution",
                                                              "around_the_clock"},
                          required=("first_response", "resolution"))
    durations = {}
    for key in ("first_response", "resolution"):
        spec = c.mapping(deadlines.get(key), f"deadlines.{key}", set(PRIORITIES), required=PRIORITIES)
        durations[key] = {p: c.duration(spec[p], f"deadlines.{key}.{p}") for p in PRIORITIES if p in spec}
    around_the_clock = c.subset(deadlines.get("around_the_clock"), PRIORITIES, "deadlines.around_the_clock",
                                "priority")

    authority = c.mapping(doc.get("authority"), "authority")
    for role, limit in authority.items():
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                                  or limit < 0):
            c.bad(f"authority.{role}", f"{limit!r} is not an amount in CNY (or null for no limit)")
    visit_delays = c.mapping(doc.get("visit_delays"), "visit_delays")
    for product_type, days in visit_delays.items():
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            c.bad(f"visit_delays.{product_type}", f"{days!r} is not a positive number of days")
    contact = c.window(doc.get("contact_hours", "09:00-21:00"), "contact_hours") or (540, 1260)

    acknowledgements = _acknowledgements(c, doc)
    default_language = doc.get("default_language", "zh")
    if default_language not in acknowledgements:
        c.bad("default_language", f"{default_language!r} has no acknowledgement template")

    if c.problems:
        raise PolicyError(c.problems)
    as_time = lambda m: time.max if m == 1440 else time(m // 60, m % 60)  # noqa: E731 (24:00 = end of day)
    return ChainPolicy(
        branches=branches, categories=categories, default_category=default_category,
        urgent_categories=urgent_categories, urgent_flags=urgent_flags, urgent_keywords=urgent_keywords,
        first_response=durations["first_response"], resolution=durations["resolution"],
        around_the_clock=around_the_clock, authority=dict(authority), visit_delays=dict(visit_delays),
        contact_hours=(as_time(contact[0]), as_time(contact[1])), acknowledgements=acknowledgements,
        default_language=default_language, source=source)


def load_policy(path: str | os.PathLike | None = None) -> ChainPolicy:
    """Load and validate the policy file; PolicyError lists every problem found."""
    source = Path(path) if path is not None else DEFAULT_POLICY_PATH
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([f"{source}: cannot read the policy file ({exc})"]) from None
    loader = _Loader(text)
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: not valid YAML ({exc})"]) from None
    finally:
        loader.dispose()
    return _build(doc, source, loader.duplicates)


def check_policy(path: str | os.PathLike | None = None) -> list[str]:
    """Every problem in the policy file; [] when it is fine."""
    try:
        load_policy(path)
    except PolicyError as exc:
        return exc.problems
    return []
