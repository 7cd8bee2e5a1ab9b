"""Aftercare's rules, as data: its section of the chain policy file (`aftercare:`). When a
return visit falls due after a sale (days by product type), when the satisfaction follow-up
falls due after a resolved case, when customers may be called, how hard a visit tries, and how
long an agent's claim on a visit lasts unless they say.
Who may do what (PERMISSIONS) is code: it is the API's contract, not a chain's choice."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import time, timedelta

from shared.calendar.policy import MAX_DURATION, ChainPolicy, Checker, parse_duration, show
from shared.security.permissions import Permissions

_SECTION = {"visit_delays", "contact_hours", "follow_up_after", "call_attempts", "attempts_apart", "abandon_after",
            "claim_for"}
DEFAULTS = {"follow_up_after": "P3D", "attempts_apart": "P1D", "abandon_after": "P7D"}
CLAIM_FOR = timedelta(minutes=10)
CLAIM_LIMITS = (timedelta(minutes=1), timedelta(minutes=60))  # what POST /v1/visits/{id}/claim accepts too

_CALLERS = {"aftercare_agent", "store_manager", "hq_admin"}
PERMISSIONS = Permissions({
    # The queue and a visit's record (its contact is read from intake, which checks its own).
    "visit:read": _CALLERS | {"regional_manager", "hq_analyst"},
    # Recording an attempt: the roles the visit process's `call` task names may complete it.
    "visit:attempt": _CALLERS,
    # Claiming a visit (working it now, so colleagues' "next" passes it by) and releasing it: who calls.
    "visit:claim": _CALLERS,
})


@dataclass(frozen=True)
class AftercareRules:
    visit_delays: dict[str, int]  # product type -> days after the sale
    contact_hours: tuple[time, time]  # local time at the branch
    follow_up_after: timedelta = timedelta(days=3)  # a resolved case's satisfaction follow-up
    call_attempts: int = 3                          # calls before a message is sent instead
    attempts_apart: timedelta = timedelta(days=1)
    abandon_after: timedelta = timedelta(days=7)    # no answer this long after due: abandoned
    claim_for: timedelta = CLAIM_FOR                # an agent's claim on a visit, unless they ask for another


def load_section(c: Checker, doc: dict, chain: ChainPolicy) -> AftercareRules:
    c.mapping(doc, "aftercare", _SECTION)
    visit_delays = c.mapping(doc.get("visit_delays"), "aftercare.visit_delays")
    for product_type, days in visit_delays.items():
        if product_type not in chain.product_types:
            c.bad(f"aftercare.visit_delays.{product_type}",
                  f"unknown product type (product_types: {', '.join(chain.product_types)})")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DURATION.days:
            c.bad(f"aftercare.visit_delays.{product_type}",
                  f"{show(days)} is not a positive number of days (at most {MAX_DURATION.days})")
    window = c.window(doc.get("contact_hours", "09:00-21:00"), "aftercare.contact_hours") or (540, 1260)
    as_time = lambda m: time.max if m == 1440 else time(m // 60, m % 60)  # noqa: E731 (24:00 = end of day)
    periods = {name: c.duration(doc.get(name, default), f"aftercare.{name}") for name, default in DEFAULTS.items()}
    attempts = doc.get("call_attempts", 3)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 10:
        c.bad("aftercare.call_attempts", f"{show(attempts)} is not a number of calls from 1 to 10")
        attempts = 3
    return AftercareRules(visit_delays=dict(visit_delays), contact_hours=(as_time(window[0]), as_time(window[1])),
                          call_attempts=attempts, claim_for=_claim_for(c, doc.get("claim_for", "PT10M")), **periods)


def _claim_for(c: Checker, value) -> timedelta:
    """How long a claim lasts when the agent does not say: PT1M to PT60M."""
    try:
        claim_for = parse_duration(value)
    except ValueError as exc:
        c.bad("aftercare.claim_for", str(exc))
        return CLAIM_FOR
    if not CLAIM_LIMITS[0] <= claim_for <= CLAIM_LIMITS[1]:
        c.bad("aftercare.claim_for", f"{show(value)} is not a duration from PT1M to PT60M")
        return CLAIM_FOR
    return claim_for
