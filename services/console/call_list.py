"""Aftercare agents' pages: the call list (aftercare's queue, allergy checks first), "next"
that opens the first due visit, a visit with what it follows, its attempts and the questionnaire
inline, and the outcome of a call posted to aftercare with the staff member's own token.

What the services offer and what follows from it here:
- Aftercare's claims (`POST|DELETE /v1/visits/{id}/claim`): opening a visit's page claims it for
  the staff member (for the policy's minutes; opening it again extends it), so colleagues' "next"
  passes it by. "Next" asks for the queue without what colleagues hold (`unclaimed=true`) and
  claims the first visit; one that a colleague won meanwhile (409) is passed for the following
  one, so two agents pressing "next" together open different visits. A visit a colleague holds
  opens read-only, saying who calls it until when; the call list tags it. Saving a call ends the
  claim (aftercare does), and the page the save leads back to does not claim it again; "put it
  back" releases it, and so does "next" from the visit's page (the agent leaves it).
- The contact: aftercare reads it from intake only when asked (`GET /v1/visits/{id}?contact=true&
  purpose=`); the page reads the visit without it. "Show the contact" sends the purpose the agent
  chose (the visit's kind, or their own words) with the CSRF header, and intake logs the read with
  it; the contact is shown in place and kept nowhere.
- The urgent case an allergy answer opens: aftercare answers the visit with
  `outcome.adverse_reaction`; investigation opens the case from the event, moments later. The page
  says so at once, then asks investigation's case list (the staff member's scope, urgent safety
  cases) for the one whose `origin.visit_id` is this visit, until it is there.
- Who the customer is: one line from their file (reporting's, customer_summary.py; left out when
  reporting is slow or away) linking to it; the call offers the standard answers for a visit's
  follow-up (standard_answers.py), the one chosen sent to aftercare with the attempt."""
from __future__ import annotations

import logging
import re
from datetime import datetime
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from services.console import customer_summary, rendering, sessions, standard_answers, web
from services.console.clients import ServiceDown, ServiceRefused
from services.console.policy import RULES
from services.console.rendering import N_

log = logging.getLogger("closeloop.console")

ROLES = ("aftercare_agent", "store_manager")
STATUSES = ("open", "scheduled", "in_progress", "completed", "abandoned", "cancelled")
OUTCOMES = ("reached", "not_reached", "call_back")
CHANNELS = ("phone", "sms", "wechat", "email", "in_person")
PAGE = 50
NEXT_TRIES = 10  # "next": due visits claimed in turn until one is won (colleagues pressing it too)
_ID = re.compile(r"\A[0-9a-fA-F-]{32,36}\Z")
_CURSOR = re.compile(r"\A[A-Za-z0-9_=-]{1,400}\Z")
_LOCAL = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?\Z")

STATUS_LABELS = {"open": N_("Open"), "scheduled": N_("Scheduled"), "in_progress": N_("In progress"),
                 "completed": N_("Completed"), "abandoned": N_("Abandoned"), "cancelled": N_("Cancelled")}
OUTCOME_LABELS = {"reached": N_("Reached"), "not_reached": N_("Not reached"), "call_back": N_("Call back")}
CHANNEL_LABELS = {"phone": N_("Phone"), "sms": N_("SMS"), "wechat": N_("WeChat"), "email": N_("E-mail"),
                  "in_person": N_("In person")}
KIND_LABELS = {"return": N_("Return visit"), "follow_up": N_("Satisfaction follow-up")}
PRODUCT_TYPE_LABELS = {"skincare": N_("Skincare"), "cosmetics": N_("Cosmetics"), "fragrance": N_("Fragrance"),
                       "hair_colour": N_("Hair colour"), "perm": N_("Perm"), "treatment": N_("Treatment")}
RESPONSIBILITY_LABELS = {"ours": N_("Ours"), "customer_misuse": N_("Customer misuse"),
                         "third_party": N_("Third party"), "unfounded": N_("Unfounded")}
# Why the agent reads the contact (logged by intake in the agent's language), offered first by the visit's kind.
CONTACT_PURPOSES = {"return": N_("Return visit"), "follow_up": N_("Satisfaction follow-up")}
REASON_LABELS = {"no answer": N_("No answer"), "not worked": N_("Not worked"),
                 "case_reopened": N_("The case was reopened")}


def _t(language: str, labels: dict, key) -> str:
    """A label of a known key, translated; anything else shown as it came (data, escaped)."""
    return rendering.gettext(language, labels[key]) if key in labels else str(key or "")


# -- who may, and where ---------------------------------------------------------------------------

def _caller(store, request, now, values=None):
    caller = web.open_caller(store, request, now, values=values)
    if caller.staff.role not in ROLES:
        raise web.PageError(403, N_("Your role does not work the call list."))
    return caller


def _token(caller, tokens) -> str:
    return tokens.for_session(caller.session.id_hash, caller.staff)


def _branches(staff, policy) -> list[str]:
    """The branches of the staff member's scope, for the branch filter."""
    if staff.scope_kind == "all":
        return sorted(policy.branches)
    if staff.scope_kind == "region":
        return policy.branches_in_region(staff.scope_value)
    return [staff.scope_value]


def _zone(policy, branch: str | None) -> ZoneInfo:
    if branch in policy.branches:
        return policy.branches[branch].zone
    return ZoneInfo(getattr(policy, "default_timezone", None) or "Asia/Shanghai")


def _local_input(instant, zone) -> str:
    """An instant as a datetime-local input's value, in the branch's zone."""
    instant = rendering.parse_instant(instant) if isinstance(instant, str) else instant
    return instant.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if instant else ""


def _parse_local(text: str, zone) -> datetime | None:
    """A datetime-local input's value (the branch's wall clock) as an aware instant, or None."""
    if not _LOCAL.match(text or ""):
        return None
    try:
        return datetime.fromisoformat(text).replace(tzinfo=zone)
    except ValueError:
        return None


# -- the call list --------------------------------------------------------------------------------

def _filters(request, branches: list[str]) -> tuple[dict, dict]:
    """The list's filters from the URL (kept there: a view can be bookmarked), and what was wrong."""
    args = request.args
    wrong = {}
    status = args.get("status") or "open"
    if status not in STATUSES:
        wrong["status"], status = [N_("Invalid")], "open"
    branch = args.get("branch") or ""
    if branch and branch not in branches:
        wrong["branch"], branch = [N_("Invalid")], ""
    due_before = args.get("due_before") or ""
    if due_before and not _LOCAL.match(due_before):
        wrong["due_before"], due_before = [N_("Invalid")], ""
    cursor = args.get("cursor") or ""
    if cursor and not _CURSOR.match(cursor):
        cursor = ""
    return {"status": status, "branch": branch, "due_before": due_before, "cursor": cursor}, wrong


def _query_string(filters: dict, **changes) -> str:
    shown = {k: v for k, v in {**filters, **changes}.items() if v}
    if shown.get("status") == "open":
        shown.pop("status")
    return urlencode(shown)


def _holders(store, items) -> dict[str, str]:
    """The display names of the staff claiming these visits (their logins are the claims' subjects)."""
    logins = {str(i.get("claimed_by")) for i in items if isinstance(i, dict) and i.get("claimed_by")}
    if not logins:
        return {}
    with store.unit_of_work() as uow:
        return uow.staff.names(logins)


def _claim_shown(item: dict, caller, zone, names: dict[str, str]) -> dict | None:
    """Who claims the visit now, as the page shows it (`mine`: the staff member themself), or None."""
    login = item.get("claimed_by")
    until = rendering.parse_instant(item.get("claimed_until"))
    if not login or until is None:
        return None
    login = str(login)
    return {"mine": login == caller.staff.login, "by": names.get(login, login),
            "until": until.astimezone(zone).strftime("%H:%M"), "until_iso": until.isoformat()}


def _row(item: dict, policy, now: datetime, language: str) -> dict:
    branch = str(item.get("branch_code") or "")
    zone = _zone(policy, branch)
    masked = item.get("customer_masked") if isinstance(item.get("customer_masked"), dict) else {}
    items = [i for i in item.get("items") or [] if isinstance(i, dict)]
    call_at = rendering.parse_instant(item.get("call_at"))
    return {"id": str(item.get("id") or ""), "kind": _t(language, KIND_LABELS, item.get("kind")),
            "status": str(item.get("status") or ""), "status_label": _t(language, STATUS_LABELS, item.get("status")),
            "branch_code": branch, "allergy_check": bool(item.get("allergy_check")),
            "overdue": bool(item.get("overdue")), "attempts": rendering.integer(item.get("attempts_made")),
            "customer": " ".join(str(v) for v in (masked.get("name"), masked.get("phone")) if v),
            "what": "、".join(str(i.get("name") or i.get("sku") or i.get("code") or "") for i in items
                             if i.get("name") or i.get("sku") or i.get("code")),
            "call_at": rendering.format_instant(call_at, zone, language),
            "call_at_iso": call_at.isoformat() if call_at else "",
            "late": bool(call_at and call_at <= now),
            "claimed_by": str(item.get("claimed_by") or ""), "claimed_until": str(item.get("claimed_until") or "")}


def _queue(caller, services, tokens, policy, filters: dict, now: datetime):
    """A page of aftercare's queue for the filters: (rows, next cursor, problem)."""
    branch = filters["branch"] or None
    params = {"status": filters["status"], "branch": branch, "limit": PAGE, "cursor": filters["cursor"] or None}
    if filters["due_before"]:
        due = _parse_local(filters["due_before"], _zone(policy, branch or _branches(caller.staff, policy)[0]))
        params["due_before"] = due.isoformat() if due else None
    try:
        answer = services.aftercare.get("/v1/visits", _token(caller, tokens), **params)
    except ServiceRefused as refused:
        log.warning("aftercare refused the call list: %s", refused)
        return [], None, N_("The call list is not available right now.")
    except ServiceDown as down:
        log.warning("call list unavailable: %s", down)
        return [], None, N_("The call list is not available right now.")
    items = answer.get("items") if isinstance(answer.get("items"), list) else []
    rows = [_row(item, policy, now, caller.language) for item in items if isinstance(item, dict)]
    cursor = answer.get("next_cursor")
    return rows, cursor if isinstance(cursor, str) and _CURSOR.match(cursor) else None, None


def call_list(store, request, *, services, tokens, policy, now: datetime):
    """GET /visits: the page, or (an htmx poll) its list alone. Visits colleagues call now are
    listed, tagged with who ("next" passes them by)."""
    caller = _caller(store, request, now)
    branches = _branches(caller.staff, policy)
    filters, wrong = _filters(request, branches)
    rows, cursor, problem = _queue(caller, services, tokens, policy, filters, now)
    names = _holders(store, rows)
    for row in rows:
        row["claim"] = _claim_shown(row, caller, _zone(policy, row["branch_code"]), names)
    query = _query_string(filters, cursor="")
    context = dict(rows=rows, problem=problem, filters=filters, wrong=wrong, branches=branches,
                   statuses=[(s, _t(caller.language, STATUS_LABELS, s)) for s in STATUSES],
                   more=("/visits?" + _query_string(filters, cursor=cursor)) if cursor else "",
                   poll_url="/visits" + ("?" + query if query else ""), here="/visits" + ("?" + query if query else ""),
                   now_iso=now.isoformat(), empty=request.args.get("empty") == "1",
                   allergy=sum(r["allergy_check"] for r in rows), overdue=sum(r["overdue"] for r in rows))
    template = "_call_list.html" if web.is_htmx(request) else "call_list.html"
    response = web.html(request, caller, template, **context)
    response.headers["Vary"] = "HX-Request, Cookie"
    return response


def _claim(caller, services, tokens, visit_id: str) -> dict | None:
    """The visit claimed for the staff member (aftercare answers it), or None when aftercare did
    not give it to them: a colleague calls it, or it is finished (409), or aftercare did not answer
    (the page reads the visit then, and says what it can)."""
    try:
        return services.aftercare.post(f"/v1/visits/{visit_id}/claim", _token(caller, tokens), {})
    except ServiceRefused as refused:
        if refused.status in (400, 404):
            raise web.PageError(404, N_("There is no such visit.")) from None
        if refused.status == 403:
            raise web.PageError(403, N_("Your role does not work the call list.")) from None
        if refused.status != 409:
            log.warning("claim of visit %s refused: %s", visit_id, refused)
        return None
    except ServiceDown as down:
        log.warning("claim of visit %s not made: %s", visit_id, down)
        return None


def _release(caller, services, tokens, visit_id: str) -> None:
    """The staff member's claim on the visit ended (a colleague's is left alone: aftercare's 409)."""
    try:
        services.aftercare.delete(f"/v1/visits/{visit_id}/claim", _token(caller, tokens))
    except ServiceRefused as refused:
        if refused.status == 404:
            raise web.PageError(404, N_("There is no such visit.")) from None
        if refused.status == 403:
            raise web.PageError(403, N_("Your role does not work the call list.")) from None
        log.info("claim of visit %s not released: %s", visit_id, refused)
    except ServiceDown as down:  # it runs out on its own
        log.warning("claim of visit %s not released: %s", visit_id, down)


def next_visit(store, request, *, services, tokens, policy, now: datetime):
    """POST /visits/next: the first due visit of the queue (with the list's branch) that no
    colleague calls, claimed and opened; one a colleague claimed meanwhile is passed for the next.
    From a visit's page (`from`), that visit is put back first and not opened again."""
    values = web.form(request)
    caller = _caller(store, request, now, values=values)
    branch = values.get("branch") or ""
    if branch not in _branches(caller.staff, policy):
        branch = ""
    left = values.get("from") or ""
    if _ID.match(left):
        _release(caller, services, tokens, left)
    try:
        answer = services.aftercare.get("/v1/visits", _token(caller, tokens), status="open", branch=branch or None,
                                        unclaimed="true", limit=NEXT_TRIES + 1)
    except (ServiceRefused, ServiceDown) as failed:
        log.warning("next visit unavailable: %s", failed)
        raise web.PageError(503, N_("The call list is not available right now.")) from None
    items = [i for i in answer.get("items") or [] if isinstance(i, dict) and _ID.match(str(i.get("id") or ""))
             and str(i["id"]) != left]
    for item in items[:NEXT_TRIES]:
        if _claim(caller, services, tokens, str(item["id"])) is not None:
            return web.redirect(request, caller, f"/visits/{item['id']}")
    return web.redirect(request, caller, "/visits?" + urlencode({k: v for k, v in
                                                                 (("branch", branch), ("empty", "1")) if v}))


def release(store, request, visit_id: str, *, services, tokens, policy, now: datetime):
    """POST /visits/{id}/release: the staff member puts the visit back (their claim ends), then
    the call list."""
    values = web.form(request)
    caller = _caller(store, request, now, values=values)
    if not _ID.match(visit_id):
        raise web.PageError(404, N_("There is no such visit."))
    _release(caller, services, tokens, visit_id)
    return web.redirect(request, caller, "/visits")


# -- a visit --------------------------------------------------------------------------------------

def _read_visit(caller, services, tokens, visit_id: str, purpose: str | None = None) -> dict:
    """The visit from aftercare, without the contact; with `purpose`, with the contact read now
    (a purpose aftercare refuses: ServiceRefused 400, for the form)."""
    if not _ID.match(visit_id):
        raise web.PageError(404, N_("There is no such visit."))
    params = {} if purpose is None else {"contact": "true", "purpose": purpose}
    try:
        return services.aftercare.get(f"/v1/visits/{visit_id}", _token(caller, tokens), **params)
    except ServiceRefused as refused:
        if refused.status == 400 and purpose is not None and "purpose" in refused.fields:
            raise
        if refused.status in (400, 404):
            raise web.PageError(404, N_("There is no such visit.")) from None
        if refused.status == 403:
            raise web.PageError(403, N_("Your role does not work the call list.")) from None
        raise web.PageError(refused.status, N_("The request is invalid.")) from None
    except ServiceDown as down:
        log.warning("visit %s unavailable: %s", visit_id, down)
        raise web.PageError(503, N_("The visit is not available right now.")) from None


def _item(item: dict, language: str) -> dict:
    return {"name": str(item.get("name") or ""), "ref": str(item.get("sku") or item.get("code") or ""),
            "type": _t(language, PRODUCT_TYPE_LABELS, item.get("product_type")),
            "allergy": item.get("product_type") in ("hair_colour", "perm"),
            "batch": str(item.get("batch") or ""), "technician": str(item.get("technician_id") or "")}


def _shown(visit: dict, policy, language: str) -> dict:
    """The visit as the templates show it: labels translated, times in its branch's zone."""
    branch = str(visit.get("branch_code") or "")
    zone = _zone(policy, branch)
    when = lambda v: rendering.format_instant(v, zone, language)  # noqa: E731
    masked = visit.get("customer_masked") if isinstance(visit.get("customer_masked"), dict) else {}
    follows = visit.get("follows") if isinstance(visit.get("follows"), dict) else {}
    items = [_item(i, language) for i in visit.get("items") or [] if isinstance(i, dict)]
    attempts = []
    for a in visit.get("attempts") or []:
        if isinstance(a, dict):
            attempts.append({"n": a.get("n"), "at": when(a.get("at")), "by": str(a.get("by") or ""),
                             "channel": _t(language, CHANNEL_LABELS, a.get("channel")),
                             "outcome": str(a.get("outcome") or ""),
                             "outcome_label": _t(language, OUTCOME_LABELS, a.get("outcome")),
                             "call_back_at": when(a.get("call_back_at")), "note": str(a.get("note") or "")})
    outcome = visit.get("outcome") if isinstance(visit.get("outcome"), dict) else None
    answers = outcome.get("answers") if outcome and isinstance(outcome.get("answers"), dict) else None
    if answers is not None:  # every question, asked or not (the template reads each)
        answers = {k: answers.get(k) for k in ("met_expectations", "discomfort", "discomfort_description", "item",
                                                "packaging_ok", "satisfaction", "resolved", "suggestions")}
    message = visit.get("message") if isinstance(visit.get("message"), dict) else None
    return {
        "id": str(visit.get("id") or ""), "kind": str(visit.get("kind") or ""),
        "kind_label": _t(language, KIND_LABELS, visit.get("kind")), "status": str(visit.get("status") or ""),
        "status_label": _t(language, STATUS_LABELS, visit.get("status")), "branch_code": branch,
        "open": visit.get("status") in ("scheduled", "in_progress"),
        "allergy_check": bool(visit.get("allergy_check")), "overdue": bool(visit.get("overdue")),
        "customer": " ".join(str(v) for v in (masked.get("name"), masked.get("phone")) if v),
        "language": str(visit.get("customer_language") or ""),
        "due_at": when(visit.get("due_at")), "call_at": when(visit.get("call_at")),
        "abandon_at": when(visit.get("abandon_at")), "finished_at": when(visit.get("finished_at")),
        "lines": items, "attempts": attempts,
        "follows": {"type": str(follows.get("type") or ""), "id": str(follows.get("id") or ""),
                    "sold_at": when(follows.get("sold_at")), "reference": str(follows.get("reference") or ""),
                    "resolved_at": when(follows.get("resolved_at")),
                    "responsibility": _t(language, RESPONSIBILITY_LABELS, follows.get("responsibility")),
                    "remedy": _remedy(follows.get("remedy")), "plan": str(follows.get("follow_up_plan") or ""),
                    "lines": [_item(i, language) for i in follows.get("items") or [] if isinstance(i, dict)]},
        "message": {"text": str(message.get("text") or ""), "outcome": str(message.get("outcome") or ""),
                    "at": when(message.get("requested_at"))} if message else None,
        "outcome": {"score": outcome.get("score"), "by": str(outcome.get("by") or ""),
                    "at": when(outcome.get("completed_at") or outcome.get("at")),
                    "reason": _t(language, REASON_LABELS, outcome.get("reason")) if outcome.get("reason") else "",
                    "answers": answers, "adverse_reaction": bool(outcome.get("adverse_reaction")),
                    "dissatisfaction": bool(outcome.get("dissatisfaction"))} if outcome else None,
    }


def _remedy(remedy) -> str:
    if isinstance(remedy, dict):
        return " ".join(str(remedy.get(k)) for k in ("type", "amount", "currency") if remedy.get(k) is not None)
    return str(remedy or "")


def _page(store, request, caller, visit: dict, policy, *, services, tokens, typed: dict | None = None,
          errors: dict | None = None, problem: str | None = None, detail: str = "", status: int = 200,
          saved: str = ""):
    """The visit's page (an htmx request: its work section). A colleague's claim on it: `held`
    (who, until when), and it is shown read-only; the staff member's own: `mine`, to put it back.
    The whole page also with the customer's summary (reporting's; left out when it is slow or
    away); an open visit's call with the standard answers for a visit's follow-up."""
    shown = _shown(visit, policy, caller.language)
    claim = _claim_shown(visit, caller, _zone(policy, shown["branch_code"]), _holders(store, [visit])) \
        if shown["open"] else None
    typed = typed or {}
    if "outcome" not in typed:
        typed = {**typed, "outcome": "reached" if shown["allergy_check"] else ""}
    partial = web.is_htmx(request)
    token = _token(caller, tokens)
    case_id = str(visit.get("case_id") or "") or None
    file = None if partial else customer_summary.read_aside(caller.staff, services, token, visit.get("customer_ref"))
    answers = _answers(visit, shown, file, services, token, policy, caller.language) \
        if shown["open"] and not (claim and not claim["mine"]) else []
    context = dict(visit=shown, typed=typed, errors=_field_errors(errors or {}, caller.language), problem=problem,
                   answers=answers, answers_unavailable=rendering.gettext(caller.language, standard_answers.UNAVAILABLE)
                   if answers is None else "",
                   summary=customer_summary.line(file, caller.language, this_case=case_id),
                   contact_form=contact_form(visit, caller.language),
                   detail=detail,
                   saved=_t(caller.language, OUTCOME_LABELS, saved) if saved in OUTCOME_LABELS else "",
                   held=claim if claim and not claim["mine"] else None, mine=bool(claim and claim["mine"]),
                   here=f"/visits/{shown['id']}", outcomes=[(o, _t(caller.language, OUTCOME_LABELS, o)) for o in OUTCOMES],
                   channels=[(c, _t(caller.language, CHANNEL_LABELS, c)) for c in CHANNELS])
    template = "_visit_work.html" if partial else "visit.html"
    return web.html(request, caller, template, status=200 if partial else status, **context)


def _answers(visit: dict, shown: dict, file: dict | None, services, token: str, policy, language: str):
    """The standard answers for a case's follow-up visit (None: investigation could not say;
    none for a return visit after a sale): of the category of the case it follows (as the customer's file knows it; all categories
    without), in the customer's language, filled by the console with the visit's masked name,
    branch and case reference."""
    case_id = str(visit.get("case_id") or "")
    if not case_id:  # a return visit after a sale: the answers speak of a problem reported
        return []
    category = next((c.get("category") for c in rendering.objects((file or {}).get("cases"))
                     if str(c.get("case_id")) == case_id), None)
    masked = visit.get("customer_masked") if isinstance(visit.get("customer_masked"), dict) else {}
    branch = policy.branches.get(shown["branch_code"])
    facts = {"customer": masked.get("name"), "branch": branch.name if branch is not None else shown["branch_code"],
             "reference": shown["follows"]["reference"]}
    # Beside the visit (aftercare's): investigation is given the summary's short deadline, after
    # which the call goes without the answers (the form says so and still works).
    return standard_answers.offered(services, token, purpose=standard_answers.VISIT_PURPOSE,
                                    language=visit.get("customer_language"), policy=policy, page_language=language,
                                    category=category if isinstance(category, str) else None, facts=facts,
                                    timeout=RULES.aside_timeout_seconds)


KNOWN_MESSAGES = {"Missing data for required field.": N_("Required"), "Invalid": N_("Invalid"),
                  "Shorter than minimum length 1.": N_("Required"),
                  "Field may not be null.": N_("Required")}


def _field_errors(errors: dict, language: str) -> dict:
    """Aftercare's field names (`answers.satisfaction`) -> the form's (`satisfaction`), each with
    its messages: the ones the console knows in its own words, the others as the service said."""
    shown = {}
    for name, messages in errors.items():
        field = name[len("answers."):] if name.startswith("answers.") else name
        if isinstance(messages, dict):  # marshmallow's nested shape, should a service send it
            for inner, more in messages.items():
                shown.setdefault(str(inner), []).extend(more if isinstance(more, list) else [more])
            continue
        shown.setdefault(field, []).extend(messages if isinstance(messages, list) else [messages])
    return {k: [_t(language, KNOWN_MESSAGES, str(m)) for m in v] for k, v in shown.items()}


def visit_page(store, request, visit_id: str, *, services, tokens, policy, now: datetime):
    """GET /visits/{id}: the visit, what it follows, its attempts and (open) the questionnaire.
    Opening it claims it for the staff member (colleagues' "next" passes it by); a colleague's
    claim shows it read-only, saying who calls it until when. Back from saving a call (`saved`),
    it is read only: the call ended the claim."""
    caller = _caller(store, request, now)
    saved = request.args.get("saved") or ""
    visit = None if saved or not _ID.match(visit_id) else _claim(caller, services, tokens, visit_id)
    if visit is None:
        visit = _read_visit(caller, services, tokens, visit_id)
    return _page(store, request, caller, visit, policy, services=services, tokens=tokens, saved=saved)


def contact_form(visit: dict, language: str, *, choice: str | None = None, purpose: str = "",
                 errors: list | None = None) -> dict:
    """What _visit_contact.html's form draws: the purposes offered (the visit's kind first), what
    was typed, the messages beside the purpose."""
    kind = str(visit.get("kind") or "")
    keys = sorted(CONTACT_PURPOSES, key=lambda k: k != kind)
    return {"visit_id": str(visit.get("id") or ""), "choice": keys[0] if choice is None else choice,
            "purpose": purpose, "purposes": [(k, _t(language, CONTACT_PURPOSES, k)) for k in keys],
            "errors": errors or []}


def contact(store, request, visit_id: str, *, services, tokens, policy, now: datetime):
    """GET /visits/{id}/contact (htmx, with the CSRF header: a read intake logs is the staff
    member's own act): the customer's contact read now, with the purpose chosen or typed
    (aftercare asks intake; intake logs it). Kept nowhere. A purpose refused: the form again,
    the message beside the field."""
    caller = _caller(store, request, now)
    if not _ID.match(visit_id):
        raise web.PageError(404, N_("There is no such visit."))
    sessions.check_csrf(caller, web.offered_csrf(request))
    own = (request.args.get("purpose") or "").strip()
    choice = request.args.get("purpose_choice") or ""
    purpose = own or (_t(caller.language, CONTACT_PURPOSES, choice) if choice in CONTACT_PURPOSES else "")
    form, shown, unavailable = None, None, ""
    if not purpose:  # the visit read without it (out of scope: 404), the form again
        visit = _read_visit(caller, services, tokens, visit_id)
        form = contact_form(visit, caller.language, choice=choice, errors=[rendering.gettext(caller.language,
                                                                                             N_("Required"))])
        return web.html(request, caller, "_visit_contact.html", contact=None, form=form, unavailable="")
    try:
        visit = _read_visit(caller, services, tokens, visit_id, purpose=purpose)
    except ServiceRefused as refused:  # the purpose, refused: beside its field
        messages = [_t(caller.language, KNOWN_MESSAGES, str(m)) for m in refused.fields.get("purpose", [])]
        form = contact_form({"id": visit_id}, caller.language, choice=choice, purpose=own, errors=messages)
    else:
        found = visit.get("contact") if isinstance(visit.get("contact"), dict) else None
        shown = {k: str(found.get(k) or "") for k in ("name", "phone", "email")} if found else None
        if shown:
            shown["purpose"] = purpose
        unavailable = str(visit.get("contact_unavailable") or "")
    response = web.html(request, caller, "_visit_contact.html", contact=shown, form=form, unavailable=unavailable)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- an attempt -------------------------------------------------------------------------------------

def _yes_no(value: str | None):
    return {"yes": True, "no": False}.get(value or "")


def _body(values: dict, zone) -> tuple[dict, dict]:
    """The attempt's JSON for aftercare from the form, and what the console could not even read
    (a time that is no time). Everything else aftercare checks and names."""
    wrong = {}
    outcome = values.get("outcome") or ""
    body = {"outcome": outcome, "channel": values.get("channel") or "phone"}
    note = (values.get("note") or "").strip()
    if note:
        body["note"] = note
    chosen = (values.get("standard_answer") or "").strip()
    if chosen:
        body["standard_answer"] = chosen
    if outcome == "call_back":
        text = values.get("call_back_at") or ""
        at = _parse_local(text, zone)
        if at is not None:
            body["call_back_at"] = at.isoformat()
        elif text:
            wrong["call_back_at"] = [N_("Invalid")]
    if outcome == "reached":
        answers = {}
        for name in ("met_expectations", "discomfort", "resolved"):
            value = _yes_no(values.get(name))
            if value is not None:
                answers[name] = value
        packaging = values.get("packaging_ok") or ""
        answers["packaging_ok"] = _yes_no(packaging)  # "not asked": null
        if (values.get("satisfaction") or "").isdigit():
            answers["satisfaction"] = int(values["satisfaction"])
        elif values.get("satisfaction"):
            wrong["satisfaction"] = [N_("Invalid")]
        for name in ("discomfort_description", "item", "suggestions"):
            text = (values.get(name) or "").strip()
            if text:
                answers[name] = text
        body["answers"] = answers
    return body, wrong


def record_attempt(store, request, visit_id: str, *, services, tokens, policy, now: datetime):
    """POST /visits/{id}/attempts: one call's outcome to aftercare. Saved: back to the visit
    (its outcome, the urgent case an allergy opened); refused: the form again with what was
    typed and each error beside its field."""
    values = web.form(request)
    caller = _caller(store, request, now, values=values)
    if not _ID.match(visit_id):
        raise web.PageError(404, N_("There is no such visit."))
    typed = {k: v for k, v in values.items() if k != "csrf_token"}
    # The form names its visit's branch for the zone of a time typed (aftercare checks the scope).
    branch = values.get("branch") if values.get("branch") in _branches(caller.staff, policy) else None
    body, wrong = _body(values, _zone(policy, branch))
    if wrong:  # the page again: the visit read for it (without the contact)
        return _page(store, request, caller, _read_visit(caller, services, tokens, visit_id), policy,
                     services=services, tokens=tokens, typed=typed,
                     errors=wrong, status=400, problem=N_("Please fill in the fields marked."))
    try:
        services.aftercare.post(f"/v1/visits/{visit_id}/attempts", _token(caller, tokens), body)
    except ServiceRefused as refused:
        if refused.status == 404:
            raise web.PageError(404, N_("There is no such visit.")) from None
        if refused.status == 403:
            raise web.PageError(403, N_("Your role does not work the call list.")) from None
        visit = _read_visit(caller, services, tokens, visit_id)
        if refused.status == 409:
            return _page(store, request, caller, visit, policy, services=services, tokens=tokens, typed=typed,
                         status=409,
                         problem=N_("Aftercare did not take this call now."), detail=refused.message)
        problem = N_("Please fill in the fields marked.") if refused.fields else N_("The request is invalid.")
        return _page(store, request, caller, visit, policy, services=services, tokens=tokens, typed=typed,
                     errors=refused.fields, status=refused.status,
                     problem=problem, detail="" if refused.fields else refused.message)
    except ServiceDown as down:
        log.warning("attempt on visit %s not saved: %s", visit_id, down)
        visit = _read_visit(caller, services, tokens, visit_id)  # down still: the error page says so
        return _page(store, request, caller, visit, policy, services=services, tokens=tokens, typed=typed,
                     status=503,
                     problem=N_("Aftercare did not answer: the call was not saved. Try again."))
    return web.redirect(request, caller, f"/visits/{visit_id}?saved={body['outcome']}")


# -- the urgent case an allergy answer opened -------------------------------------------------------

def urgent_case(store, request, visit_id: str, *, services, tokens, policy, now: datetime):
    """GET /visits/{id}/urgent-case (htmx, polled until found): the case investigation opened for
    this visit's adverse reaction, from its case list in the staff member's scope (urgent safety
    cases, newest first) by `origin.visit_id`."""
    caller = _caller(store, request, now)
    if not _ID.match(visit_id):
        raise web.PageError(404, N_("There is no such visit."))
    branch = request.args.get("branch") or ""
    branch = branch if branch in _branches(caller.staff, policy) else None
    found, problem = None, None
    try:
        answer = services.investigation.get("/v1/cases", _token(caller, tokens), category="safety",
                                            priority="urgent", branch=branch, limit=50)
        for case in answer.get("items") or []:
            origin = case.get("origin") if isinstance(case, dict) and isinstance(case.get("origin"), dict) else {}
            if str(origin.get("visit_id") or "") == visit_id:
                found = case
                break
    except (ServiceRefused, ServiceDown) as failed:
        log.warning("urgent case of visit %s not readable: %s", visit_id, failed)
        problem = N_("Investigation's cases are not readable right now.")
    shown = None
    if found:
        zone = _zone(policy, found.get("branch_code"))
        due = ((found.get("sla") or {}).get("first_response") or {}).get("due") if isinstance(found.get("sla"), dict) else None
        shown = {"id": str(found.get("id") or ""), "reference": str(found.get("reference") or ""),
                 "state": str(found.get("state") or ""), "priority": str(found.get("priority") or ""),
                 "due": rendering.format_instant(due, zone, caller.language)}
    return web.html(request, caller, "_visit_urgent.html", case=shown, problem=problem, visit_id=visit_id,
                    branch=branch or "", polled=True)


