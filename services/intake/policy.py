"""Intake's rules, as data: its section of the chain policy file (`intake:`) and who may
do what at intake. Categories and their keywords, triage into priorities, response and
resolution deadlines, and the acknowledgement texts are intake's; the file's other sections
belong to the services that apply them."""
from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable

from shared.calendar.branches import Branch, aware
from shared.calendar.policy import ChainPolicy, Checker, show
from shared.messaging.catalogue.intake import KINDS
from shared.security.permissions import Permissions

CHANNELS = ("front_desk", "phone", "wechat", "social_media", "email", "web_form", "online_chat")
# Fixed by the design: other services store and report on these codes.
CATEGORY_CODES = ("service_quality", "product_quality", "hygiene_environment", "booking", "price",
                  "staff_attitude", "after_sales", "safety")
SEVERITY_FLAGS = frozenset({"allergy", "burn", "injury", "infection", "legal_threat",
                            "media_threat", "wide_reach", "serious_service_failure"})
PRIORITIES = ("urgent", "general", "low")
# Inquiries (consultations, 咨询) came with issue 13: a policy file written before them may leave
# out their deadline and their word in the acknowledgements; these stand in.
INQUIRY_DEADLINE = timedelta(hours=24)
INQUIRY_WORDS = {"zh": "咨询", "en": "inquiry"}  # another language without its own: the English word
_KINDS_BEFORE_INQUIRIES = ("complaint", "suggestion", "praise")
_PLACEHOLDERS = {"greeting", "reference", "kind", "due", "branch_code", "branch_name"}
# What intake fills the acknowledgement templates with (all text), to try each template.
_SAMPLE = {"name": "王女士", "greeting": "您好！", "reference": "SH001-20261122-0001", "kind": "投诉",
           "due": "2026-11-22 11:00", "branch_code": "SH001", "branch_name": "上海静安店"}
_SECTION = {"categories", "default_category", "keywords", "triage", "deadlines", "acknowledgement",
            "customer_messages"}
_COUNTRY_CODE = re.compile(r"\+[1-9]\d{0,2}")

# Who may do what at intake; `PERMISSIONS.require(identity, action)` in the handlers.
_STAFF = {"front_desk", "store_manager", "aftercare_agent", "investigator", "regional_manager",
          "hq_analyst", "hq_admin", "branch_integration"}
PERMISSIONS = Permissions({
    "complaint:create": {"front_desk", "store_manager", "aftercare_agent", "branch_integration", "hq_admin"},
    "complaint:read": _STAFF,
    "sale:create": {"front_desk", "store_manager", "branch_integration", "hq_admin"},
    # Reading a customer's phone and name in clear (logged in intake's contact-access log).
    "contact:read": {"front_desk", "store_manager", "aftercare_agent", "investigator", "regional_manager",
                     "hq_admin"},
    # ...and with a closed case's record from investigation's archive (get_archived_contact).
    "contact:archive": {"hq_admin", "hq_analyst", "auditor"},
    # Finding a customer's complaints and sales by phone (POST /v1/customers/lookup, logged in the
    # contact-access log): the roles that work a front desk or handle cases. Not analysts and
    # auditors, who work with figures and the archive, nor machines, nor aftercare agents, whose
    # visits already name their customer.
    "customer:lookup": {"front_desk", "store_manager", "investigator", "regional_manager", "hq_admin"},
    # Turning an inquiry that proves to be a complaint into one (POST /v1/complaints/{id}/convert).
    "complaint:convert": {"front_desk", "investigator", "store_manager", "regional_manager", "hq_admin"},
})


@dataclass(frozen=True)
class Category:
    code: str
    label_zh: str
    label_en: str
    keywords_zh: tuple[str, ...] = ()
    keywords_en: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limit:
    """At most `messages` per `per`, spread out: a burst of `messages`, then one each
    per/messages (the database keeps one time per key; see migration 0005)."""
    messages: int
    per: timedelta


@dataclass(frozen=True)
class CustomerMessages:
    """What may be sent to customers at intake, so a poster cannot use the chain's sender
    for its own ends (phishing in a name, SMS pumping to premium numbers abroad)."""
    sms_country_codes: tuple[str, ...] = ("+86",)
    per_recipient: Limit = Limit(3, timedelta(hours=1))   # acknowledgements to one contact
    per_poster: Limit = Limit(120, timedelta(minutes=1))  # complaints posted by one token subject
    greeting_name_max: int = 20  # a longer name is not repeated to the customer

    def sms_allowed(self, phone: str) -> bool:
        """Chinese numbers are stored without +86 (13812346138, 02112345678)."""
        international = phone if phone.startswith("+") else "+86" + phone.lstrip("0")
        return international.startswith(self.sms_country_codes)


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


@dataclass(eq=False)
class IntakeRules:
    """Intake's section of the policy, loaded by `load_section`."""

    categories: dict[str, Category]  # in tie-break order
    default_category: str
    urgent_categories: frozenset[str]
    urgent_flags: frozenset[str]
    urgent_keywords: tuple[tuple[str, ...], tuple[str, ...]]  # (zh, en)
    first_response: dict[str, timedelta]  # priority -> duration
    resolution: dict[str, timedelta]
    around_the_clock: frozenset[str]  # priorities whose deadlines are never moved
    acknowledgements: dict  # language -> {greeting, greeting_anonymous, kinds, text}
    default_language: str
    customer_messages: CustomerMessages = CustomerMessages()
    inquiry: timedelta = INQUIRY_DEADLINE  # an inquiry's first response and resolution, from its receipt

    kinds = KINDS
    channels = CHANNELS
    severity_flags = SEVERITY_FLAGS
    priorities = PRIORITIES

    def __post_init__(self):
        # Compile the keyword matchers once; classify runs on every intake.
        self._category_keywords = {code: _Keywords(c.keywords_zh, c.keywords_en)
                                   for code, c in self.categories.items()}
        self._urgent_keywords = _Keywords(*self.urgent_keywords)

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

    def deadlines(self, priority: str, branch: Branch, received_at: datetime, *,
                  kind: str = "complaint") -> Deadlines:
        """By priority; an inquiry's both at `inquiry` after its receipt (moved as its priority's are)."""
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}")
        if not isinstance(branch, Branch):
            raise TypeError(f"deadlines need the Branch, not {branch!r}")
        received = aware(received_at).astimezone(timezone.utc)
        if kind == "inquiry":
            first = resolution = received + self.inquiry
        else:
            first, resolution = received + self.first_response[priority], received + self.resolution[priority]
        if priority not in self.around_the_clock:
            first, resolution = branch.next_opening(first), branch.next_opening(resolution)
        return Deadlines(first.astimezone(timezone.utc), resolution.astimezone(timezone.utc))

    def language(self, language: str | None) -> str:
        """'zh-CN' -> 'zh'; a language without templates falls back to the default."""
        base = re.split(r"[-_]", (language or "").strip().lower())[0]
        return base if base in self.acknowledgements else self.default_language

    def acknowledgement(self, language: str | None, *, name: str | None, reference: str, kind: str,
                        first_response_due: datetime, branch: Branch) -> str:
        template = self.acknowledgements[self.language(language)]
        if kind not in template["kinds"]:
            raise ValueError(f"unknown kind {kind!r}")
        name = (name or "").strip()
        if name and len(name) <= self.customer_messages.greeting_name_max:
            greeting = template["greeting"].format(name=name)
        else:
            greeting = template["greeting_anonymous"]
        due = aware(first_response_due).astimezone(branch.zone).strftime("%Y-%m-%d %H:%M")
        return template["text"].format(greeting=greeting, reference=reference, kind=template["kinds"][kind],
                                       due=due, branch_code=branch.code, branch_name=branch.name)


def _categories(c: Checker, doc: dict) -> dict[str, Category]:
    labels = c.mapping(doc.get("categories"), "intake.categories", set(CATEGORY_CODES))
    keywords = c.mapping(doc.get("keywords"), "intake.keywords", set(CATEGORY_CODES))
    categories = {}
    for code in labels:
        if code not in CATEGORY_CODES:
            continue  # already reported as an unknown key
        spec = c.mapping(labels[code], f"intake.categories.{code}", {"zh", "en"}, required=("zh", "en"))
        words = c.mapping(keywords.get(code), f"intake.keywords.{code}", {"zh", "en"})
        categories[code] = Category(code, str(spec.get("zh") or ""), str(spec.get("en") or ""),
                                    c.words(words.get("zh"), f"intake.keywords.{code}.zh"),
                                    c.words(words.get("en"), f"intake.keywords.{code}.en"))
    for code in CATEGORY_CODES:
        if code not in labels:
            c.bad(f"intake.categories.{code}", "missing")
    return categories


def _acknowledgements(c: Checker, doc: dict) -> dict:
    raw = c.mapping(doc.get("acknowledgement"), "intake.acknowledgement", required=("zh", "en"))
    templates = {}
    for lang, spec in raw.items():
        where = f"intake.acknowledgement.{lang}"
        if not isinstance(lang, str) or not re.fullmatch(r"[a-z]{2,3}", lang):
            c.bad(where, "a language is a lower-case code such as zh or en")
        spec = c.mapping(spec, where, {"greeting", "greeting_anonymous", "kinds", "text"},
                         required=("greeting", "greeting_anonymous", "kinds", "text"))
        kinds = c.mapping(spec.get("kinds"), f"{where}.kinds", set(KINDS), required=_KINDS_BEFORE_INQUIRIES)
        for key, allowed in (("greeting", {"name"}), ("greeting_anonymous", set()), ("text", _PLACEHOLDERS)):
            try:
                parsed = string.Formatter().parse(str(spec.get(key) or ""))
                used = {f for _, f, _, _ in parsed if f is not None}
            except ValueError as exc:
                c.bad(f"{where}.{key}", f"bad template: {exc}")
                continue
            for name in sorted(used - allowed):
                c.bad(f"{where}.{key}", f"unknown placeholder {{{name}}}")
            if used <= allowed:
                try:  # as intake will: a format spec such as {name:d} fails only when rendered
                    str(spec.get(key) or "").format(**_SAMPLE)
                except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                    c.bad(f"{where}.{key}", f"the template cannot be filled in: {exc}")
        template = {key: str(spec.get(key) or "") for key in ("greeting", "greeting_anonymous", "text")}
        template["kinds"] = {k: c.text(kinds[k], f"{where}.kinds.{k}") for k in KINDS if kinds.get(k)}
        if "inquiry" not in kinds:  # a file from before inquiries
            template["kinds"]["inquiry"] = INQUIRY_WORDS.get(str(lang), INQUIRY_WORDS["en"])
        templates[str(lang)] = template
    return templates


# A count over what the SQL counter holds (an integer) would find no function. (The window is
# bounded as every policy duration is: parse_duration.)
MAX_LIMIT_MESSAGES = 1_000_000


def _limit(c: Checker, value, where: str, default: Limit) -> Limit:
    spec = c.mapping(value, where, {"messages", "per"}, required=("messages", "per") if value is not None else ())
    if not spec:
        return default
    messages = spec.get("messages")
    if isinstance(messages, bool) or not isinstance(messages, int) or not 1 <= messages <= MAX_LIMIT_MESSAGES:
        c.bad(f"{where}.messages", f"{show(messages)} is not a whole number from 1 to {MAX_LIMIT_MESSAGES:,}")
        messages = default.messages
    return Limit(messages, c.duration(spec.get("per"), f"{where}.per"))


def _customer_messages(c: Checker, doc: dict) -> CustomerMessages:
    where, default = "intake.customer_messages", CustomerMessages()
    spec = c.mapping(doc.get("customer_messages"), where,
                     {"sms_country_codes", "per_recipient", "per_poster", "greeting_name_max"})
    codes = default.sms_country_codes
    if "sms_country_codes" in spec:
        codes = c.words(spec["sms_country_codes"], f"{where}.sms_country_codes")
        for code in codes:
            if not _COUNTRY_CODE.fullmatch(code):
                c.bad(f"{where}.sms_country_codes", f"{show(code)} is not a country code such as '+86' (quote it)")
    name_max = spec.get("greeting_name_max", default.greeting_name_max)
    if isinstance(name_max, bool) or not isinstance(name_max, int) or not 0 <= name_max <= 100:
        c.bad(f"{where}.greeting_name_max", f"{show(name_max)} is not a whole number from 0 to 100")
        name_max = default.greeting_name_max
    return CustomerMessages(
        sms_country_codes=tuple(codes),
        per_recipient=_limit(c, spec.get("per_recipient"), f"{where}.per_recipient", default.per_recipient),
        per_poster=_limit(c, spec.get("per_poster"), f"{where}.per_poster", default.per_poster),
        greeting_name_max=name_max)


def load_section(c: Checker, doc: dict, chain: ChainPolicy) -> IntakeRules | None:
    """Validate the `intake:` section, reporting through `c`; None when it has problems."""
    before = len(c.problems)
    c.mapping(doc, "intake", _SECTION)
    categories = _categories(c, doc)
    default_category = doc.get("default_category", "service_quality")
    if default_category not in CATEGORY_CODES:
        c.bad("intake.default_category", f"unknown category {show(default_category)}")

    triage = c.mapping(doc.get("triage"), "intake.triage", {"urgent_categories", "urgent_flags", "urgent_keywords"})
    urgent_categories = c.subset(triage.get("urgent_categories"), CATEGORY_CODES, "intake.triage.urgent_categories",
                                 "category")
    urgent_flags = c.subset(triage.get("urgent_flags"), SEVERITY_FLAGS, "intake.triage.urgent_flags",
                            "severity flag")
    urgent_words = c.mapping(triage.get("urgent_keywords"), "intake.triage.urgent_keywords", {"zh", "en"})
    urgent_keywords = (c.words(urgent_words.get("zh"), "intake.triage.urgent_keywords.zh"),
                       c.words(urgent_words.get("en"), "intake.triage.urgent_keywords.en"))

    deadlines = c.mapping(doc.get("deadlines"), "intake.deadlines", {"first_response", "resolution",
                                                                     "around_the_clock", "inquiry"},
                          required=("first_response", "resolution"))
    durations = {}
    for key in ("first_response", "resolution"):
        spec = c.mapping(deadlines.get(key), f"intake.deadlines.{key}", set(PRIORITIES), required=PRIORITIES)
        durations[key] = {p: c.duration(spec[p], f"intake.deadlines.{key}.{p}") for p in PRIORITIES if p in spec}
    around_the_clock = c.subset(deadlines.get("around_the_clock"), PRIORITIES, "intake.deadlines.around_the_clock",
                                "priority")
    inquiry = (c.duration(deadlines["inquiry"], "intake.deadlines.inquiry") if "inquiry" in deadlines
               else INQUIRY_DEADLINE)

    acknowledgements = _acknowledgements(c, doc)
    customer_messages = _customer_messages(c, doc)
    if chain.default_language not in acknowledgements:
        c.bad("intake.acknowledgement", f"the default language {chain.default_language!r} has no template")
    if len(c.problems) > before:
        return None
    return IntakeRules(
        categories=categories, default_category=default_category,
        urgent_categories=urgent_categories, urgent_flags=urgent_flags, urgent_keywords=urgent_keywords,
        first_response=durations["first_response"], resolution=durations["resolution"],
        around_the_clock=around_the_clock, acknowledgements=acknowledgements,
        default_language=chain.default_language, customer_messages=customer_messages, inquiry=inquiry)
