"""Investigation's rules, as data: its section of the chain policy file (`investigation:`).
- authority: the amount in CNY each role may grant on its own as a remedy (null: no limit);
- sla: when a clock warns (a fraction of its target) and who a case is escalated to at each
  breach level (level 0 is the branch's own, the first entry).
Who may do what (PERMISSIONS) is code: it is the API's contract, not a chain's choice; who may
complete each task is in the process file (the task's `roles` property)."""
from __future__ import annotations

from dataclasses import dataclass

from shared.calendar.policy import ChainPolicy, Checker, show
from shared.security.auth import ROLES
from shared.security.permissions import Permissions

_SECTION = {"authority", "sla"}
_SLA = {"warning_at", "escalation"}
DEFAULT_WARNING_AT = 0.8
DEFAULT_ESCALATION = ("store_manager", "regional_manager", "hq_admin")
# Where a role is addressed when a case of a branch is escalated to it.
BRANCH_ROLES = frozenset({"front_desk", "store_manager", "aftercare_agent", "investigator"})
REGION_ROLES = frozenset({"regional_manager"})

_MANAGERS = {"store_manager", "regional_manager", "hq_admin"}
PERMISSIONS = Permissions({
    # Auditors read closed cases through the archive (with a purpose, logged), not here.
    "case:read": {"front_desk", "aftercare_agent", "investigator", "hq_analyst"} | _MANAGERS,
    # Waiting for the customer (pausing the clocks) and back: the owner may too, whatever the role.
    "case:pause": {"investigator"} | _MANAGERS,
})


@dataclass(frozen=True)
class InvestigationRules:
    authority: dict[str, float | None]  # role -> CNY limit (None: no limit)
    warning_at: float = DEFAULT_WARNING_AT  # a clock warns at this fraction of its target
    escalation: tuple[str, ...] = DEFAULT_ESCALATION  # role at level 0, 1, 2...

    def escalation_role(self, level: int) -> str:
        """The role a case at `level` is escalated to (the last one beyond the ladder's end)."""
        return self.escalation[min(level, len(self.escalation) - 1)]


def load_section(c: Checker, doc: dict, chain: ChainPolicy) -> InvestigationRules:
    c.mapping(doc, "investigation", _SECTION)
    authority = c.mapping(doc.get("authority"), "investigation.authority")
    for role, limit in authority.items():
        if role not in ROLES:
            c.bad(f"investigation.authority.{role}", f"unknown role (roles: {', '.join(ROLES)})")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0):
            c.bad(f"investigation.authority.{role}", f"{show(limit)} is not an amount in CNY (or null for no limit)")
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
    return InvestigationRules(authority=dict(authority), warning_at=float(warning_at),
                              escalation=tuple(map(str, escalation)))
