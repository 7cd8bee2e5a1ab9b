"""Investigation's rules, as data: its section of the chain policy file (`investigation:`).
- authority: what each role may grant on its own as a remedy: an amount in CNY (null: no
  limit) and the remedy types (all, only `types`, or all `except`); above it an approver waits;
- promises: the default deadline of a remedy that is a promise (a free redo within 3 days);
- sla: when a clock warns (a fraction of its target) and who a case is escalated to at each
  breach level (level 0 is the branch's own, the first entry);
- standard_answers: the chain's prepared replies (标准应答语), one per category, purpose and
  language, with placeholders the case's facts fill (standard_answers.py ranks and fills them).
Who may do what (PERMISSIONS) is code: it is the API's contract, not a chain's choice; who may
complete each task is in the process file (the task's `roles` property)."""
from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import timedelta

from shared.calendar.policy import ChainPolicy, Checker, show
from shared.messaging.catalogue.investigation import ANSWER_ID_MAX
from shared.security.auth import ROLES
from shared.security.permissions import Permissions

_SECTION = {"authority", "sla", "promises", "adverse_reaction", "standard_answers"}
_SLA = {"warning_at", "escalation", "approval"}
_ADVERSE = {"first_response", "resolution"}
_GRANT = {"limit", "types", "except"}
REMEDY_TYPES = ("apology", "redo_service", "redye", "refund", "partial_refund", "exchange", "gift", "discount",
                "voucher", "medical_expense")
DEFAULT_PROMISES = {"redo_service": "P3D", "redye": "P10D"}
DEFAULT_WARNING_AT = 0.8
DEFAULT_ESCALATION = ("store_manager", "regional_manager", "hq_admin")
DEFAULT_APPROVAL = "PT24H"  # an approval's deadline, counted every hour
DEFAULT_ADVERSE = {"first_response": "PT1H", "resolution": "P7D"}  # an adverse reaction's case (urgent)
# Standard answers: what each is for, its languages, the facts its text may name, its length.
ANSWER_PURPOSES = ("first_response", "written_result", "visit_follow_up", "inquiry")
ANSWER_LANGUAGES = ("zh", "en")
ANSWER_PLACEHOLDERS = ("customer", "branch", "reference", "first_response_due", "resolution_due")
ANSWER_FIELDS = ("id", "category", "purpose", "language", "title", "text")
ANSWER_TEXT_MAX, ANSWER_TITLE_MAX = 2000, 200
_ANSWER_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")
# Where a role is addressed when a case of a branch is escalated to it.
BRANCH_ROLES = frozenset({"front_desk", "store_manager", "aftercare_agent", "investigator"})
REGION_ROLES = frozenset({"regional_manager"})

_MANAGERS = {"store_manager", "regional_manager", "hq_admin"}
PERMISSIONS = Permissions({
    # Auditors read closed cases through the archive (with a purpose, logged), not here.
    "case:read": {"front_desk", "aftercare_agent", "investigator", "hq_analyst"} | _MANAGERS,
    # The standard answers, ranked by their category's complaints in the caller's scope.
    "standard_answer:read": {"front_desk", "aftercare_agent", "investigator", "hq_analyst"} | _MANAGERS,
    # Waiting for the customer (pausing the clocks) and back: the owner may too, whatever the role.
    "case:pause": {"investigator"} | _MANAGERS,
    # The archive: a closed case's whole record with the customer's contact, read with a stated
    # purpose and logged (archive_accessed); HQ and auditors only.
    "case:archive": {"hq_admin", "hq_analyst", "auditor"},
    # An open case's customer contact, read through intake with a stated purpose (intake logs it):
    # the roles that work cases.
    "case:contact": {"investigator", "store_manager", "regional_manager", "hq_admin"},
    # Keeping a case's personal data past the retention (a dispute, a lawsuit), and letting it go.
    "case:legal_hold": {"hq_admin"},
})


@dataclass(frozen=True)
class Grant:
    """What one role may grant on its own: remedies of `types` up to `limit` CNY each (None: no limit)."""
    limit: float | None
    types: frozenset[str]

    def covers(self, remedy_type: str, amount: float) -> bool:
        return remedy_type in self.types and (self.limit is None or amount <= self.limit)


@dataclass(frozen=True)
class StandardAnswer:
    """A prepared reply: what it answers (a category), what for (a purpose), in which language;
    its text names the case's facts as {customer}, {branch}, {reference}, {first_response_due},
    {resolution_due}."""
    id: str
    category: str
    purpose: str
    language: str
    title: str
    text: str


@dataclass(frozen=True)
class InvestigationRules:
    authority: dict[str, Grant]  # role -> what it may grant
    warning_at: float = DEFAULT_WARNING_AT  # a clock warns at this fraction of its target
    escalation: tuple[str, ...] = DEFAULT_ESCALATION  # role at level 0, 1, 2...
    promises: dict[str, timedelta] = field(default_factory=dict)  # remedy type -> its default deadline
    approval_time: timedelta = timedelta(hours=24)  # an approval's deadline after the proposal
    # An adverse reaction's case: urgent, its deadlines from the report's receipt.
    adverse_reaction: dict[str, timedelta] = field(default_factory=lambda: {"first_response": timedelta(hours=1),
                                                                            "resolution": timedelta(days=7)})

    # The chain's standard answers in the file's order, and the categories' order (intake's).
    standard_answers: tuple[StandardAnswer, ...] = ()
    categories: tuple[str, ...] = ()

    def __post_init__(self):
        # By id, built once at load: a task's body names the answer it used (its ids are unique).
        object.__setattr__(self, "_answers_by_id", {a.id: a for a in self.standard_answers})

    def standard_answer(self, answer_id: str) -> StandardAnswer | None:
        return self._answers_by_id.get(answer_id)

    def may_grant(self, role: str, remedy_type: str, amount: float) -> bool:
        grant = self.authority.get(role)
        return grant is not None and grant.covers(remedy_type, amount)

    def approvers(self, remedy_type: str, amount: float) -> tuple[str, ...]:
        """The roles that may grant this remedy, the lowest limit first (ties: as listed)."""
        able = [(role, grant) for role, grant in self.authority.items() if grant.covers(remedy_type, amount)]
        able.sort(key=lambda rg: float("inf") if rg[1].limit is None else rg[1].limit)
        return tuple(role for role, _ in able)

    def escalation_role(self, level: int) -> str:
        """The role a case at `level` is escalated to (the last one beyond the ladder's end)."""
        return self.escalation[min(level, len(self.escalation) - 1)]


def load_section(c: Checker, doc: dict, chain: ChainPolicy) -> InvestigationRules:
    c.mapping(doc, "investigation", _SECTION)
    authority = {role: _grant(c, role, given) for role, given in
                 c.mapping(doc.get("authority"), "investigation.authority").items()}
    if authority and not any(g.limit is None for g in authority.values()):
        c.bad("investigation.authority", "no role may grant without limit: a large remedy could never be approved")
    promises = {}
    for remedy_type, text in c.mapping(doc.get("promises", DEFAULT_PROMISES), "investigation.promises").items():
        if remedy_type not in REMEDY_TYPES:
            c.bad(f"investigation.promises.{remedy_type}", f"unknown remedy type (types: {', '.join(REMEDY_TYPES)})")
        promises[remedy_type] = c.duration(text, f"investigation.promises.{remedy_type}")
    sla = c.mapping(doc.get("sla", {}), "investigation.sla", _SLA)
    warning_at = sla.get("warning_at", DEFAULT_WARNING_AT)
    if isinstance(warning_at, bool) or not isinstance(warning_at, (int, float)) or not 0 < warning_at < 1:
        c.bad("investigation.sla.warning_at", f"{show(warning_at)} is not a fraction of the target between 0 and 1")
        warning_at = DEFAULT_WARNING_AT
    escalation = sla.get("escalation", list(DEFAULT_ESCALATION))
    if not isinstance(escalation, list) or len(escalation) < 2:
        c.bad("investigation.sla.escalation", "a list of at least two roles: the branch's first, then each level up")
        escalation = list(DEFAULT_ESCALATION)
    for i, role in enumerate(escalation):
        if role not in ROLES:
            c.bad(f"investigation.sla.escalation.{i}", f"{show(role)} is not a role (roles: {', '.join(ROLES)})")
    if len(set(map(str, escalation))) != len(escalation):
        c.bad("investigation.sla.escalation", "a role appears twice: each level goes to someone higher")
    approval = c.duration(sla.get("approval", DEFAULT_APPROVAL), "investigation.sla.approval")
    adverse = c.mapping(doc.get("adverse_reaction", DEFAULT_ADVERSE), "investigation.adverse_reaction", _ADVERSE)
    adverse = {name: c.duration(adverse.get(name, DEFAULT_ADVERSE[name]), f"investigation.adverse_reaction.{name}")
               for name in _ADVERSE}
    categories = tuple(getattr(chain.sections.get("intake"), "categories", None) or ())
    answers = _standard_answers(c, doc.get("standard_answers"), categories)
    return InvestigationRules(authority=authority, warning_at=float(warning_at),
                              escalation=tuple(map(str, escalation)), promises=promises,
                              approval_time=approval or timedelta(hours=24), adverse_reaction=adverse,
                              standard_answers=answers, categories=categories)


def _standard_answers(c: Checker, given, categories: tuple[str, ...]) -> tuple[StandardAnswer, ...]:
    """The list of answers, each {id, category, purpose, language, title, text}: ids unique,
    categories intake's (unchecked when intake's section did not load: it says why), purposes
    and languages known, texts of at most ANSWER_TEXT_MAX characters naming only known
    placeholders. Every problem is named by the answer's place and id."""
    if given is None:
        return ()
    if not isinstance(given, list):
        c.bad("investigation.standard_answers", "must be a list of answers {id, category, purpose, language, "
                                                "title, text}")
        return ()
    answers, seen = [], {}
    for i, raw in enumerate(given):
        where = f"investigation.standard_answers[{i}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            where += f" ({raw['id'][:ANSWER_ID_MAX]})"
        ok = len(c.problems)
        spec = c.mapping(raw, where, set(ANSWER_FIELDS), required=ANSWER_FIELDS)
        given_now = {name: value for name, value in spec.items() if name in ANSWER_FIELDS and value not in (None, "")}
        answer_id = given_now.get("id")
        if answer_id is not None:
            if not isinstance(answer_id, str) or len(answer_id) > ANSWER_ID_MAX or not _ANSWER_ID.fullmatch(answer_id):
                c.bad(f"{where}.id", f"{show(answer_id)} is not an id: 1-{ANSWER_ID_MAX} lower-case letters, "
                                     "digits, - and _")
            elif answer_id in seen:
                c.bad(f"{where}.id", f"{show(answer_id)} is the id of answer [{seen[answer_id]}] too: ids are unique")
            else:
                seen[answer_id] = i
        for name, allowed, plural in (("category", categories, "categories"), ("purpose", ANSWER_PURPOSES, "purposes"),
                                      ("language", ANSWER_LANGUAGES, "languages")):
            if name in given_now and allowed and given_now[name] not in allowed:
                c.bad(f"{where}.{name}", f"unknown {name} {show(given_now[name])} ({plural}: {', '.join(allowed)})")
        for name, longest in (("title", ANSWER_TITLE_MAX), ("text", ANSWER_TEXT_MAX)):
            value = given_now.get(name)
            if value is None:
                continue
            if not isinstance(value, str) or not value.strip():
                c.bad(f"{where}.{name}", f"{show(value)} is not a text")
            elif len(value.strip()) > longest:
                c.bad(f"{where}.{name}", f"{len(value.strip())} characters: at most {longest}")
            elif name == "text":
                for problem in placeholder_problems(value):
                    c.bad(f"{where}.text", problem)
        if len(c.problems) == ok and len(given_now) == len(ANSWER_FIELDS):
            answers.append(StandardAnswer(*(given_now[name].strip() for name in ANSWER_FIELDS)))
    return tuple(answers)


def placeholder_problems(text: str) -> list[str]:
    """What is wrong with a text's placeholders: one not in ANSWER_PLACEHOLDERS, one with a
    format or conversion, a brace not closed (a literal brace is written {{ or }})."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return [f"a brace is not closed ({exc}): write a literal brace as {{{{ or }}}}"]
    problems = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in ANSWER_PLACEHOLDERS:
            problems.append(f"unknown placeholder {{{name}}} (placeholders: "
                            f"{', '.join('{' + p + '}' for p in ANSWER_PLACEHOLDERS)})")
        elif spec or conversion:
            problems.append(f"the placeholder {{{name}}} takes no format or conversion")
    return problems


def _grant(c: Checker, role: str, given) -> Grant:
    """A role's authority: a number (CNY, any type), null (no limit, any type), or
    {limit, types (only these), except (all but these)}."""
    where = f"investigation.authority.{role}"
    if role not in ROLES:
        c.bad(where, f"unknown role (roles: {', '.join(ROLES)})")
    if not isinstance(given, dict):
        given = {"limit": given}
    given = c.mapping(given, where, _GRANT)
    limit = given.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0):
        c.bad(f"{where}.limit" if "types" in given or "except" in given else where,
              f"{show(limit)} is not an amount in CNY (or null for no limit)")
        limit = 0
    if "types" in given and "except" in given:
        c.bad(where, "give types (only these) or except (all but these), not both")
    listed = given.get("types", given.get("except", []))
    if not isinstance(listed, list):
        c.bad(where, f"{show(listed)} is not a list of remedy types")
        listed = []
    for remedy_type in listed:
        if remedy_type not in REMEDY_TYPES:
            c.bad(where, f"{show(remedy_type)} is not a remedy type (types: {', '.join(REMEDY_TYPES)})")
    types = frozenset(listed) if "types" in given else frozenset(REMEDY_TYPES) - frozenset(listed)
    return Grant(limit=None if limit is None else float(limit), types=types)
