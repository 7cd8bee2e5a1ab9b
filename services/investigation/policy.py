"""Investigation's rules, as data: its section of the chain policy file (`investigation:`).
Remedy authority: the amount in CNY each role may grant on its own (null: no limit)."""
from __future__ import annotations

from dataclasses import dataclass

from shared.calendar.policy import ChainPolicy, Checker, show
from shared.security.auth import ROLES

_SECTION = {"authority"}


@dataclass(frozen=True)
class InvestigationRules:
    authority: dict[str, float | None]  # role -> CNY limit (None: no limit)


def load_section(c: Checker, doc: dict, chain: ChainPolicy) -> InvestigationRules:
    c.mapping(doc, "investigation", _SECTION)
    authority = c.mapping(doc.get("authority"), "investigation.authority")
    for role, limit in authority.items():
        if role not in ROLES:
            c.bad(f"investigation.authority.{role}", f"unknown role (roles: {', '.join(ROLES)})")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0):
            c.bad(f"investigation.authority.{role}", f"{show(limit)} is not an amount in CNY (or null for no limit)")
    return InvestigationRules(authority=dict(authority))
