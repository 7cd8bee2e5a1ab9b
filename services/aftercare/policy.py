"""Aftercare's rules, as data: its section of the chain policy file (`aftercare:`). When a
return visit falls due after a sale (days by product type) and when customers may be called."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import time

from shared.calendar.policy import MAX_DURATION, ChainPolicy, Checker, show

_SECTION = {"visit_delays", "contact_hours"}


@dataclass(frozen=True)
class AftercareRules:
    visit_delays: dict[str, int]  # product type -> days after the sale
    contact_hours: tuple[time, time]  # local time at the branch


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
    return AftercareRules(visit_delays=dict(visit_delays), contact_hours=(as_time(window[0]), as_time(window[1])))
