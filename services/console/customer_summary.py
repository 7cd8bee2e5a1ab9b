"""The customer's file from reporting (`GET /v1/customers/{customer_ref}`) and the one line the
case and visit pages show of it: "2 earlier complaints, last visit score 2/5, allergic reaction
to B2026-11-03", linking to the file (`/customers/{customer_ref}`, customers.py).

The line is beside the page's own record: reporting is asked with a short deadline
(`aside_timeout_seconds`), and when it is slow, down or refuses, the page is shown without the
line (a service that did not answer in time rests for the next pages' lines, as clients.py says,
so they do not wait for it either; its own pages, given the whole deadline, still ask it)."""
from __future__ import annotations

import logging
import re

from services.console import rendering
from services.console.clients import ServiceDown, ServiceRefused
from services.console.policy import RULES
from services.console.rendering import N_

log = logging.getLogger("closeloop.console")

# Reporting's customer:read.
FILE_ROLES = frozenset({"front_desk", "aftercare_agent", "investigator", "store_manager", "regional_manager",
                        "hq_admin", "hq_analyst"})
REF = re.compile(r"\A[A-Za-z0-9_-]{1,100}\Z")  # intake's keyed hash, c_ and 32 hex digits; reporting checks it

ONE_EARLIER = N_("1 earlier complaint")
EARLIER = N_("%(n)s earlier complaints")
NONE_EARLIER = N_("no earlier complaints")
LAST_SCORE = N_("last visit score %(score)s/5")
ALLERGIC = N_("allergic reaction to %(what)s")
ALLERGIC_UNNAMED = N_("an allergic reaction reported")


def file_path(customer_ref: str) -> str:
    return f"/customers/{customer_ref}"


def read(services, token: str, customer_ref: str, *, timeout: float | None = None) -> dict:
    """The file as reporting answers it (its refusals ServiceRefused, reporting away ServiceDown)."""
    return services.reporting.get(f"/v1/customers/{customer_ref}", token, timeout=timeout)


def read_aside(staff, services, token: str, customer_ref) -> dict | None:
    """The file for a line beside a page, or None: no customer, a role without files, nothing in
    the reader's scope, or reporting slow or away (the page goes without it)."""
    if not isinstance(customer_ref, str) or not REF.match(customer_ref) or staff.role not in FILE_ROLES:
        return None
    try:
        return read(services, token, customer_ref, timeout=RULES.aside_timeout_seconds)
    except ServiceRefused as refused:
        if refused.status not in (403, 404):
            log.warning("reporting refused the file of a customer: %s", refused)
        return None
    except ServiceDown as down:
        log.warning("customer summary left out: %s", down)
        return None


def line(file: dict | None, language: str, *, this_case: str | None = None) -> dict | None:
    """{"text", "path"} for the page's summary of the customer, or None without a file. Earlier:
    other than `this_case` (the case shown, or the case a visit follows)."""
    if not isinstance(file, dict) or not REF.match(str(file.get("customer_ref") or "")):
        return None
    text = rendering.translations(language).gettext
    summary = file.get("summary") if isinstance(file.get("summary"), dict) else {}
    cases = rendering.objects(file.get("cases"))
    complaints = rendering.integer(summary.get("complaints"))
    if any(str(c.get("case_id")) == this_case and c.get("kind") == "complaint" for c in cases):
        complaints -= 1
    parts = [text(NONE_EARLIER) if complaints <= 0 else text(ONE_EARLIER) if complaints == 1
             else text(EARLIER) % {"n": complaints}]
    score = rendering.number(summary.get("last_visit_score"), None)
    if score is not None:
        parts.append(text(LAST_SCORE) % {"score": f"{score:g}"})
    allergies = [a for a in rendering.objects(summary.get("allergies"))
                 if this_case is None or str(a.get("record_id")) != this_case]
    named = []
    for allergy in allergies:
        what = str(allergy.get("batch") or allergy.get("sku") or "")
        if what and what not in named:
            named.append(what)
    if named:
        parts.append(text(ALLERGIC) % {"what": "、".join(named[:3]) + ("…" if len(named) > 3 else "")})
    elif allergies:
        parts.append(text(ALLERGIC_UNNAMED))
    shown = ("，" if language == "zh" else ", ").join(parts)
    return {"text": shown[:1].upper() + shown[1:], "path": file_path(file["customer_ref"])}
