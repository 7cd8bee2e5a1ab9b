"""The case library and the standard answers' use (`/library`, 案例库): for HQ and the managers
reporting lets read its exports and KPIs (its `export:read` and `kpi:read`: store managers,
investigators, regional managers, HQ analysts and admins; others get the 403 page).

- "Case library for training": a form (category with the chain policy's labels, from/to dates,
  by default the last 90 days in the chain's zone, CSV or XLSX) whose GET
  `/library/case-library` downloads reporting's `GET /v1/exports/case-library.csv|.xlsx` through
  the console with the staff member's own token. The file is not read whole: reporting's body goes
  to the browser a chunk at a time as it comes (clients.Download), under reporting's own
  Content-Disposition (when it is a plain file name), each read given the console's deadline
  rather than the whole body. A wrong field is the page again naming it (400), reporting
  refusing or away an error page saying so; a body that breaks off part way ends the download
  unfinished, so the browser says it failed.
- "Standard answers in use": reporting's `GET /v1/kpis/standard-answers` for the page's period as
  a table, most used first: the answer's id, its title (investigation's
  `GET /v1/standard-answers`, read once for all of them at the same time as reporting, joined by
  id), its purpose, how often it was used, how many were followed up, the mean score and the
  share satisfied. Investigation away: the ids without titles; reporting away: the form alone."""
from __future__ import annotations

import logging
import re
from datetime import date, datetime, timedelta

import eventlet
from werkzeug.wrappers import Response

from services.console import rendering, web
from services.console.clients import ServiceDown, ServiceRefused
from services.console.overview import _chain_zone
from services.console.rendering import N_

log = logging.getLogger("closeloop.console")

# Reporting's export:read and kpi:read (services/reporting/policy.py: the same roles).
LIBRARY_ROLES = frozenset({"store_manager", "investigator", "regional_manager", "hq_analyst", "hq_admin"})
PATH = "/library"
DEFAULT_DAYS = 90
MOST_DAYS = 3 * 366  # reporting's longest period
FORMATS = {"csv": "text/csv; charset=utf-8",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
# What reporting names its files (closeloop-case-library-20260825-20261123.csv): anything else is
# not passed on in a header of the console's.
_FILENAME = re.compile(r'\Aattachment; filename="[A-Za-z0-9._-]{1,200}"\Z')

PURPOSES = {"first_response": N_("First response"), "written_result": N_("Written result"),
            "visit_follow_up": N_("Visit follow-up"), "inquiry": N_("Inquiry answer")}
MAY_NOT_READ = N_("Your role may not read the case library.")
LIBRARY_DOWN = N_("The case library is not available right now: reporting is not answering. Try again in a moment.")
LIBRARY_REFUSED = N_("Reporting refused the case library. Check the period and the category, then try again.")
USE_DOWN = N_("The standard answers' use is not available right now: reporting is not answering.")
TITLES_DOWN = N_("The answers' titles are not available right now: investigation is not answering.")
NOT_A_DATE = N_("Not a date (YYYY-MM-DD)")
TO_BEFORE_FROM = N_("Must not be before the start")
TOO_LONG = N_("At most 1098 days")
UNKNOWN_CATEGORY = N_("Not a category of the chain")
UNKNOWN_FORMAT = N_("CSV or XLSX")


def _allowed(store, request, now):
    caller = web.open_caller(store, request, now)
    if caller.staff.role not in LIBRARY_ROLES:
        raise web.PageError(403, MAY_NOT_READ)
    return caller


def _day(text) -> date | None:
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def period(args, policy, now: datetime) -> tuple[dict, dict]:
    """({"from", "to"} as typed, or the last 90 days in the chain's zone, today included;
    {field: [msgid]} for what is wrong)."""
    today = now.astimezone(_chain_zone(policy)).date()
    typed = {"from": (args.get("from") or "").strip()[:20] or (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat(),
             "to": (args.get("to") or "").strip()[:20] or today.isoformat()}
    errors: dict = {}
    days = {name: _day(typed[name]) for name in ("from", "to")}
    for name, day in days.items():
        if day is None:
            errors[name] = [NOT_A_DATE]
    if not errors:
        if days["to"] < days["from"]:
            errors["to"] = [TO_BEFORE_FROM]
        elif (days["to"] - days["from"]).days + 1 > MOST_DAYS:
            errors["from"] = [TOO_LONG]
    return typed, errors


def categories(policy, language: str) -> list[tuple[str, str]]:
    """(code, label) of the chain policy's complaint categories, in its order."""
    found = getattr(policy.sections.get("intake"), "categories", {}) or {}
    return [(code, c.label_zh if language == "zh" else c.label_en) for code, c in found.items()]


def download_form(args, policy, now: datetime) -> tuple[dict, dict]:
    """The download's fields as typed (with the period's defaults) and what is wrong with them."""
    typed, errors = period(args, policy, now)
    typed["category"] = (args.get("category") or "").strip()[:100]
    typed["format"] = (args.get("format") or "csv").strip()[:10]
    if typed["category"] and typed["category"] not in dict(categories(policy, "en")):
        errors["category"] = [UNKNOWN_CATEGORY]
    if typed["format"] not in FORMATS:
        errors["format"] = [UNKNOWN_FORMAT]
    return typed, errors


def library_page(store, request, *, services, tokens, policy, now: datetime):
    """GET /library: the download's form and the standard answers' use in the period
    (`?from=&to=`, by default the last 90 days)."""
    caller = _allowed(store, request, now)
    typed, errors = period(request.args, policy, now)
    return _page(request, caller, services, tokens, policy, typed, errors, status=400 if errors else 200)


def download(store, request, *, services, tokens, policy, now: datetime):
    """GET /library/case-library?category=&from=&to=&format=csv|xlsx: reporting's file, streamed."""
    caller = _allowed(store, request, now)
    typed, errors = download_form(request.args, policy, now)
    if errors:
        return _page(request, caller, services, tokens, policy, typed, errors, status=400)
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    params = {"from": typed["from"], "to": typed["to"], **({"category": typed["category"]} if typed["category"] else {})}
    try:
        got = services.reporting.download(f"/v1/exports/case-library.{typed['format']}", token, params=params,
                                          correlation_id=request.environ.get("closeloop.correlation_id"))
    except ServiceRefused as refused:
        if refused.status == 403:
            raise web.PageError(403, MAY_NOT_READ) from None
        log.warning("reporting refused the case library: %s", refused)
        raise web.PageError(400 if refused.status == 400 else 502, LIBRARY_REFUSED, refused.fields) from None
    except ServiceDown as down:
        log.warning("case library unavailable: %s", down)
        raise web.PageError(503, LIBRARY_DOWN) from None
    given = got.headers.get("Content-Disposition", "")
    disposition = given if _FILENAME.match(given) else f'attachment; filename="closeloop-case-library.{typed["format"]}"'
    headers = {"Content-Disposition": disposition, "Cache-Control": "no-store"}
    length = got.headers.get("Content-Length", "")
    if length.isdigit() and not got.headers.get("Content-Encoding"):  # the same bytes: the browser shows progress
        headers["Content-Length"] = length
    response = Response(got, status=200, headers=headers, content_type=FORMATS[typed["format"]],
                        direct_passthrough=True)
    return web.set_cookie(response, caller, web.behind_tls(request))


# -- the standard answers in use ------------------------------------------------------------------

def _score(value) -> str:
    n = rendering.number(value, None)
    return "" if n is None else f"{n:.2f}".rstrip("0").rstrip(".")


def usage_rows(used: dict, answers: dict | None, language: str) -> list[dict]:
    """Reporting's uses, most used first, each with its answer's title (investigation's, by id;
    "" when unknown) and its purpose in words."""
    titles = {}
    for item in rendering.objects((answers or {}).get("answers")):
        if item.get("id") and item.get("title"):
            titles[str(item["id"])] = str(item["title"])
    text = rendering.translations(language).gettext
    rows = []
    for u in rendering.objects(used.get("answers")):
        if not u.get("standard_answer"):
            continue
        answer_id, purpose = str(u["standard_answer"])[:100], u.get("purpose")
        satisfied = rendering.number(u.get("satisfied"), None)
        rows.append({"id": answer_id, "title": titles.get(answer_id, ""),
                     "purpose": text(PURPOSES[purpose]) if isinstance(purpose, str) and purpose in PURPOSES
                     else str(purpose or "")[:50],
                     "used": rendering.integer(u.get("used")), "followed_up": rendering.integer(u.get("followed_up")),
                     "mean_score": _score(u.get("mean_score")),
                     "satisfied": "" if satisfied is None else f"{_score(satisfied)}%"})
    rows.sort(key=lambda r: (-r["used"], r["id"], r["purpose"]))
    return rows


def _usage(services, token: str, typed: dict, language: str) -> tuple[list[dict], str | None, str | None]:
    """(rows, a problem with reporting, a problem with investigation's titles), both asked at once."""
    used = eventlet.spawn(services.reporting.get, "/v1/kpis/standard-answers", token,
                          **{"from": typed["from"], "to": typed["to"]})
    titles = eventlet.spawn(services.investigation.get, "/v1/standard-answers", token)
    answers, titles_problem = None, None
    try:
        answers = titles.wait()
    except (ServiceDown, ServiceRefused) as failed:
        log.warning("standard answers' titles left out: %s", failed)
        titles_problem = TITLES_DOWN
    try:
        return usage_rows(used.wait(), answers, language), None, titles_problem
    except (ServiceDown, ServiceRefused) as failed:
        log.warning("standard answers' use unavailable: %s", failed)
        return [], USE_DOWN, None


def _page(request, caller, services, tokens, policy, typed: dict, errors: dict, *, status: int) -> Response:
    """The page: the download's form (as typed, its errors beside its fields) and, for a period
    without errors, the standard answers' use."""
    language = caller.language
    text = rendering.translations(language).gettext
    rows, problem, titles_problem = [], None, None
    if not ({"from", "to"} & set(errors)):
        token = tokens.for_session(caller.session.id_hash, caller.staff)
        rows, problem, titles_problem = _usage(services, token, typed, language)
    shown = {name: [text(m) for m in messages] for name, messages in errors.items()}
    response = web.html(request, caller, "library.html", status=status, here=PATH,
                        typed={"category": "", "format": "csv", **typed}, errors=shown,
                        categories=categories(policy, language), formats=[("csv", "CSV"), ("xlsx", "XLSX")],
                        rows=rows, problem=problem, titles_note=text(titles_problem) if titles_problem else "")
    response.headers["Cache-Control"] = "no-store"
    return response
