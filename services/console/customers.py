"""The customer's file as a page (`/customers/{customer_ref}`, 客户档案): reporting's
`GET /v1/customers/{customer_ref}` read with the staff member's own token, so only the records of
their branches are in it (reporting leaves the others out, and answers 404 when none is left).

The page: who (masked) and whether they consented to be contacted, the figures, allergy reports,
satisfaction over time, the cases with their outcomes and remedies, the sales, the visits with
their scores and answers; each case and visit linked when the reader's role opens such pages.
Times are in each record's branch's zone. The customer is found by phone on the look-up page
(intake answers the customer_ref); the case and visit pages link here from their summary line
(customer_summary.py)."""
from __future__ import annotations

import logging

from services.console import call_list, cases, customer_summary, rendering, web
from services.console.clients import ServiceDown, ServiceRefused
from services.console.front_desk import CASE_READERS, FLAG_LABELS, ITEM_TYPE_LABELS, PRODUCT_TYPE_LABELS
from services.console.rendering import N_

log = logging.getLogger("closeloop.console")

NO_SUCH_CUSTOMER = N_("There is no customer with this reference in your branches.")
MAY_NOT_READ = N_("Your role may not read customers' files.")
FILE_DOWN = N_("The customer's file is not available right now: reporting is not answering. Try again in a moment.")
CONSENT = {True: N_("Agreed to be contacted"), False: N_("Did not agree to be contacted"),
           None: N_("Not known whether they agree to be contacted")}
SOURCES = {"complaint": N_("Complaint"), "visit": N_("Return visit")}
SATISFACTION_KINDS = {"return": N_("Return visit"), "follow_up": N_("Satisfaction follow-up")}
# The visit's answers as the visit page names them, in the questionnaire's order.
ANSWERS = (("met_expectations", N_("Met expectations")), ("discomfort", N_("Discomfort or allergy")),
           ("discomfort_description", N_("What discomfort or allergy (if any)")), ("item", N_("About which item")),
           ("packaging_ok", N_("Packaging and instructions fine")), ("satisfaction", N_("Satisfaction")),
           ("resolved", N_("Resolved")), ("suggestions", N_("Suggestions")))
YES, NO = N_("Yes"), N_("No")


def customer_page(store, request, customer_ref: str, *, services, tokens, policy, now):
    """GET /customers/{customer_ref}: the file, or the console's 404 page when reporting has none
    in the reader's branches (or the ref is malformed), its 403 for a role without files, 503
    when reporting does not answer."""
    caller = web.open_caller(store, request, now)
    if caller.staff.role not in customer_summary.FILE_ROLES:
        raise web.PageError(403, MAY_NOT_READ)
    if not customer_summary.REF.match(customer_ref):
        raise web.PageError(404, NO_SUCH_CUSTOMER)
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    try:
        answer = customer_summary.read(services, token, customer_ref)
    except ServiceRefused as refused:
        if refused.status in (400, 404):
            raise web.PageError(404, NO_SUCH_CUSTOMER) from None
        if refused.status == 403:
            raise web.PageError(403, MAY_NOT_READ) from None
        log.warning("reporting refused a customer's file: %s", refused)
        raise web.PageError(503, FILE_DOWN) from None
    except ServiceDown as down:
        log.warning("customer file unavailable: %s", down)
        raise web.PageError(503, FILE_DOWN) from None
    view = file_view(answer, caller.staff, caller.language, policy)
    response = web.html(request, caller, "customer.html", file=view, here=customer_summary.file_path(customer_ref))
    response.headers["Cache-Control"] = "no-store"
    return response


def _items(value) -> list:
    return value if isinstance(value, list) else []


def _named(text, labels: dict, value, default: str | None = None) -> str:
    """A code's label translated; an unknown code as it is (or `default`), never a lookup of an odd shape."""
    if isinstance(value, str) and value in labels:
        return text(labels[value])
    return str(value or "") if default is None else default


def _yes_no(value, text) -> str:
    return text(YES) if value is True else text(NO) if value is False else ""


def file_view(answer: dict, staff, language: str, policy) -> dict:
    """Reporting's file as the template draws it: labels translated, times in the branch's zone,
    links only to the pages the reader's role opens."""
    text = rendering.translations(language).gettext
    label = lambda group, value: _named(text, cases.LABELS[group], value)  # noqa: E731
    opens_cases, opens_visits = staff.role in CASE_READERS, staff.role in call_list.ROLES
    case_path = lambda case_id: f"/cases/{case_id}" if opens_cases and case_id else ""  # noqa: E731
    visit_path = lambda visit_id: f"/visits/{visit_id}" if opens_visits and visit_id else ""  # noqa: E731
    raw_cases, raw_sales, raw_visits = (rendering.objects(answer.get(key)) for key in ("cases", "sales", "visits"))
    branch_of = {str(r.get(key)): r.get("branch_code") for key, records in (("case_id", raw_cases),
                                                                            ("sale_id", raw_sales),
                                                                            ("visit_id", raw_visits))
                 for r in records}

    def when(instant, branch=None) -> str:
        return rendering.format_instant(instant, cases._zone(policy, branch), language)

    masked = answer.get("customer_masked") if isinstance(answer.get("customer_masked"), dict) else {}
    summary = answer.get("summary") if isinstance(answer.get("summary"), dict) else {}
    consent = answer.get("contact_consent") if isinstance(answer.get("contact_consent"), bool) else None
    score = rendering.number(summary.get("last_visit_score"), None)

    allergies = []
    for a in rendering.objects(summary.get("allergies")):
        record, source = str(a.get("record_id") or ""), a.get("source")
        allergies.append({"at": when(a.get("at"), branch_of.get(record)), "batch": str(a.get("batch") or ""),
                          "sku": str(a.get("sku") or ""), "source": _named(text, SOURCES, source, ""),
                          "path": case_path(record) if source == "complaint" else visit_path(record)
                          if source == "visit" else ""})

    satisfaction = []
    for point in rendering.objects(answer.get("satisfaction")):
        n = rendering.number(point.get("score"), None)
        if n is None:
            continue
        kind = point.get("kind")
        visit, case = str(point.get("visit_id") or ""), str(point.get("case_id") or "")
        satisfaction.append({"at": when(point.get("at"), branch_of.get(visit) or branch_of.get(case)),
                             "score": f"{n:g}", "level": max(1, min(5, round(n))),
                             "kind": _named(text, SATISFACTION_KINDS, kind, ""),
                             "path": visit_path(visit) or case_path(case)})

    shown_cases = []
    for c in raw_cases:
        branch, case_id = c.get("branch_code"), str(c.get("case_id") or "")
        follow = rendering.number(c.get("follow_up_score"), None)
        remedies = [{"type": label("remedy", r.get("type")),
                     "amount": f"{rendering.number(r.get('amount')):,.2f}" if r.get("amount") is not None else "",
                     "status": label("remedy_status", r.get("status")),
                     "promise": label("promise", r.get("promise")) if r.get("promise") else ""}
                    for r in rendering.objects(c.get("remedies"))]
        shown_cases.append({
            "id": case_id, "path": case_path(case_id), "reference": str(c.get("reference") or case_id),
            "kind": label("kind", c.get("kind")), "kind_code": str(c.get("kind") or ""),
            "branch_code": str(branch or ""), "category": label("category", c.get("category")),
            "priority": str(c.get("priority") or ""), "flags": [_named(text, FLAG_LABELS, f)
                                                      for f in _items(c.get("severity_flags"))],
            "received": when(c.get("received_at"), branch), "state": str(c.get("state") or ""),
            "state_label": label("state", c.get("state")), "outcome": label("outcome", c.get("outcome"))
            if c.get("outcome") else "", "closed": when(c.get("closed_at"), branch),
            "responsibility": label("responsibility", c.get("responsibility")) if c.get("responsibility") else "",
            "remedies": remedies, "follow_up_score": f"{follow:g}" if follow is not None else "",
            "batches": [str(b) for b in _items(c.get("batches"))]})

    shown_sales = []
    for sale in raw_sales:
        branch = sale.get("branch_code")
        lines = []
        for item in rendering.objects(sale.get("items")):
            kind, product_type = item.get("type"), item.get("product_type")
            lines.append({"type": _named(text, ITEM_TYPE_LABELS, kind),
                          "name": str(item.get("name") or item.get("sku") or item.get("code") or ""),
                          "code": str(item.get("sku") or item.get("code") or ""),
                          "product_type": _named(text, PRODUCT_TYPE_LABELS, product_type),
                          "batch": str(item.get("batch") or ""), "technician": str(item.get("technician_id") or "")})
        consented = sale.get("contact_consent")
        shown_sales.append({"id": str(sale.get("sale_id") or ""), "branch_code": str(branch or ""),
                            "sold": when(sale.get("sold_at"), branch), "lines": lines,
                            "consent": text(CONSENT[consented]) if isinstance(consented, bool) else ""})

    shown_visits = []
    for v in raw_visits:
        branch, visit_id = v.get("branch_code"), str(v.get("visit_id") or "")
        given = v.get("answers") if isinstance(v.get("answers"), dict) else {}
        answers = []
        for key, msgid in ANSWERS:
            value = given.get(key)
            if value is None or value == "":
                continue
            shown = _yes_no(value, text) if isinstance(value, bool) else (
                f"{value}/5" if key == "satisfaction" else str(value))
            answers.append((text(msgid), shown))
        n = rendering.number(v.get("score"), None)
        status = v.get("status")
        shown_visits.append({
            "id": visit_id, "path": visit_path(visit_id), "branch_code": str(branch or ""),
            "kind": _named(text, call_list.KIND_LABELS, v.get("kind"), ""),
            "status": _named(text, call_list.STATUS_LABELS, status),
            "due": when(v.get("due_at"), branch), "finished": when(v.get("finished_at"), branch),
            "score": f"{n:g}" if n is not None else "", "answers": answers,
            "adverse_reaction": bool(v.get("adverse_reaction")), "case_path": case_path(str(v.get("case_id") or ""))
            if v.get("case_id") else ""})

    more = answer.get("more") if isinstance(answer.get("more"), dict) else {}
    return {
        "ref": str(answer.get("customer_ref") or ""), "name": str(masked.get("name") or ""),
        "phone": str(masked.get("phone") or ""), "consent": text(CONSENT[consent]), "consented": consent,
        "figures": {key: rendering.integer(summary.get(key)) for key in ("complaints", "inquiries", "open_cases",
                                                                          "sales", "visits")},
        "last_visit_score": f"{score:g}" if score is not None else "",
        "last_visit_at": when(summary.get("last_visit_at")),
        "allergies": allergies, "satisfaction": satisfaction, "cases": shown_cases, "sales": shown_sales,
        "visits": shown_visits, "more": {k: bool(more.get(k)) for k in ("cases", "sales", "visits")},
    }
