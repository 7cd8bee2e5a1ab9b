"""Reporting's rules, as data: its section of the chain policy file (`reporting:`). When a
run of complaints is a recurring problem, and when adverse reactions on one batch are a product
safety signal (alerts.py applies them)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from shared.calendar.policy import ChainPolicy, Checker, show
from shared.security.permissions import Permissions

_SECTION = {"recurring_problem", "safety_signal"}

# Who reads what (code: the API's contract). Branch roles read their own branch's figures, a
# region's its branches', HQ's the chain's (the token's scope); auditors read the access log.
_MANAGERS = {"store_manager", "investigator", "regional_manager", "hq_analyst", "hq_admin"}
PERMISSIONS = Permissions({
    "kpi:read": _MANAGERS,
    "alert:read": _MANAGERS,
    "export:read": _MANAGERS,
    "access_log:read": {"auditor", "hq_admin"},
    # the customer file: whoever serves a returning customer, in their scope
    "customer:read": {"front_desk", "aftercare_agent", "investigator", "store_manager", "regional_manager",
                      "hq_admin", "hq_analyst"},
})
_RULE = {"at_least", "within"}
DEFAULTS = {"recurring_problem": (3, "P14D"), "safety_signal": (2, "P30D")}


@dataclass(frozen=True)
class AlertRule:
    at_least: int       # records within the window that raise the alert
    within: timedelta   # the window, ending now


@dataclass(frozen=True)
class ReportingRules:
    recurring_problem: AlertRule = AlertRule(3, timedelta(days=14))  # complaints: a branch's category, a technician
    safety_signal: AlertRule = AlertRule(2, timedelta(days=30))      # adverse reactions on one batch, chain-wide


def load_section(c: Checker, doc: dict, chain: ChainPolicy) -> ReportingRules:
    c.mapping(doc, "reporting", _SECTION)
    rules = {}
    for name, (at_least, within) in DEFAULTS.items():
        rule = c.mapping(doc.get(name) or {}, f"reporting.{name}", _RULE)
        count = rule.get("at_least", at_least)
        if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= 1000:
            c.bad(f"reporting.{name}.at_least", f"{show(count)} is not a count from 2 to 1000")
            count = at_least
        rules[name] = AlertRule(count, c.duration(rule.get("within", within), f"reporting.{name}.within"))
    return ReportingRules(**rules)
