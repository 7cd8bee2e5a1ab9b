"""The console's use cases: staff accounts (the `closeloop staff` commands) and the pages a
signed-in staff member works in. Pages read and write the four services through clients.py with
the staff member's own token; they never read another service's database."""
from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime
from urllib.parse import urlencode

from services.console import passwords, rendering, sessions, web
from services.console.clients import ServiceDown, ServiceRefused
from services.console.exceptions import StaffRefused, UnknownStaff
from services.console.policy import LANGUAGES
from services.console.rendering import N_
from services.console.repository import StaffMember
from services.console.schemas import LanguageForm, StaffIn, password_problem
from shared.web.requests import load

log = logging.getLogger("closeloop.console")
STAFF_IN, LANGUAGE_FORM = StaffIn(), LanguageForm()


# -- staff accounts ----------------------------------------------------------------------------------

def _scope(data: dict, policy, errors: dict) -> tuple[str, str | None]:
    branch, region = data.get("branch"), data.get("region")
    if (branch is None) == (region is None):
        errors.setdefault("scope", []).append("give exactly one: --branch CODE, --region NAME or --branch '*'")
        return "all", None
    if branch == "*":
        return "all", None
    if branch is not None:
        if branch not in policy.branches:
            errors.setdefault("branch", []).append(f"unknown branch; branches: {', '.join(sorted(policy.branches))}")
        return "branch", branch
    if region not in policy.regions():
        errors.setdefault("region", []).append(f"unknown region; regions: {', '.join(sorted(policy.regions()))}")
    return "region", region


def add_staff(store, *, login: str, name: str, role: str, branch: str | None, region: str | None, password: str,
              policy, now: datetime) -> StaffMember:
    """A new, active staff member; StaffRefused naming every wrong field (a taken login too)."""
    body = {"login": login, "name": name, "role": role, "branch": branch, "region": region}
    data, errors = load(STAFF_IN, body)
    kind, value = _scope(body, policy, errors)
    problem = password_problem(password)
    if problem:
        errors["password"] = [problem]
    if errors:
        raise StaffRefused("the staff member was not added", errors)
    member = StaffMember(id=str(uuid.uuid4()), login=data["login"], display_name=data["name"], role=data["role"],
                         scope_kind=kind, scope_value=value, active=True,
                         password_hash=passwords.hash_password(password))
    with store.unit_of_work() as uow:
        if not uow.staff.add(member, now):
            raise StaffRefused("the staff member was not added", {"login": ["already taken"]})
    return member


def _change_staff(store, login: str, now: datetime, **changes) -> int:
    """The staff member changed; every session of theirs ends now. The count of sessions ended."""
    with store.unit_of_work() as uow:
        member = uow.staff.by_login(login)
        if member is None:
            raise UnknownStaff(login)
        uow.staff.update(login, now, **changes)
        return uow.sessions.end_all_of(member.id)


def disable_staff(store, *, login: str, now: datetime) -> int:
    """The staff member may no longer sign in; every session of theirs ends now. The count of
    sessions ended."""
    return _change_staff(store, login, now, active=False)


def reset_password(store, *, login: str, password: str, now: datetime) -> int:
    """A new password; the staff member's sessions end (whoever knew the old one is signed out).
    The count of sessions ended."""
    problem = password_problem(password)
    if problem:
        raise StaffRefused("the password was not changed", {"password": [problem]})
    return _change_staff(store, login, now, password_hash=passwords.hash_password(password))


def purge_sessions(store, *, now: datetime, rules) -> int:
    """Sessions and failure counts nobody will use again (a request would end them anyway)."""
    with store.unit_of_work() as uow:
        ended = uow.sessions.purge(idle_before=now - rules.sessions.idle,
                                   anonymous_idle_before=now - rules.sessions.anonymous, now=now)
        uow.failures.purge(now - max(rules.throttle.window, rules.throttle.lock_for))
    return ended


# -- my work: the tasks waiting for the staff member's role in its scope --------------------------

TASKS_PAGE = 100
DEADLINES = ("breached", "soon")
PRIORITIES = ("urgent", "general", "low")
_CURSOR = re.compile(r"\A[A-Za-z0-9_=-]{1,400}\Z")


def branches_in_scope(member, policy) -> list[str]:
    if member.scope_kind == "branch":
        return [member.scope_value]
    if member.scope_kind == "region":
        return policy.branches_in_region(member.scope_value)
    return sorted(policy.branches)


def work_filters(args, member, policy) -> dict:
    """The view in the URL (bookmarkable): `deadline` breached|soon, `branch` (one in the staff
    member's scope), `priority`. A value that does not fit (an old bookmark) is left out."""
    wanted = {"deadline": args.get("deadline"), "branch": args.get("branch"), "priority": args.get("priority")}
    fits = {"deadline": DEADLINES, "priority": PRIORITIES, "branch": branches_in_scope(member, policy)}
    return {name: value for name, value in wanted.items() if value in fits[name]}


def work_url(filters: dict, **changes) -> str:
    chosen = {k: v for k, v in {**filters, **changes}.items() if v}
    return "/?" + urlencode(chosen) if chosen else "/"


def _task(item: dict, policy, now: datetime, language: str) -> dict:
    due, warn = rendering.parse_instant(item.get("due")), rendering.parse_instant(item.get("warning_at"))
    branch = item.get("branch_code")
    zone = policy.branches[branch].timezone if branch in policy.branches else None
    state = ("none" if due is None else "breached" if due <= now
             else "soon" if warn is not None and warn <= now else "ok")
    return {"case_id": str(item.get("case_id", "")), "reference": str(item.get("reference") or ""),
            "title": str(item.get("title") or item.get("name") or ""), "name": str(item.get("name") or ""),
            "priority": str(item.get("priority") or ""), "branch_code": str(branch or ""),
            "paused": bool(item.get("paused")), "state": state,
            "due_iso": due.isoformat() if due else "", "warn_iso": warn.isoformat() if warn else "",
            "due": rendering.format_instant(due, zone, language),
            "remaining": rendering.format_remaining((due - now).total_seconds(), language) if due else ""}


def _tasks(caller, filters: dict, cursor: str | None, *, services, tokens, policy, now: datetime) -> dict:
    """A page of the caller's tasks in the view, soonest deadline first (investigation's order),
    the counts of the view's tabs, the next page's cursor, and a message when they could not be read."""
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    answer, problem = {}, None
    try:
        answer = services.investigation.get("/v1/tasks", token, limit=TASKS_PAGE, cursor=cursor, **filters)
    except ServiceRefused as refused:
        if refused.status == 403:
            problem = N_("Your role has no case tasks.")
        elif refused.status == 400 and cursor:
            problem = N_("That page of the list is no longer available.")
        else:
            log.warning("investigation refused the task list: %s", refused)
            problem = N_("The task list is not available right now.")
    except ServiceDown as down:
        log.warning("task list unavailable: %s", down)
        problem = N_("The task list is not available right now.")
    items = answer.get("items") if isinstance(answer.get("items"), list) else []
    counts = answer.get("counts") if isinstance(answer.get("counts"), dict) else {}
    following = answer.get("next_cursor")
    return {"tasks": [_task(item, policy, now, caller.language) for item in items if isinstance(item, dict)],
            "counts": {k: rendering.integer(counts.get(k)) for k in ("waiting", "soon", "breached")},
            "more": work_url(filters, cursor=following) if isinstance(following, str) and _CURSOR.match(following)
            else None, "problem": problem}


def my_work(store, request, *, services, tokens, policy, now: datetime):
    caller = web.open_caller(store, request, now)
    filters = work_filters(request.args, caller.staff, policy)
    cursor = request.args.get("cursor")
    cursor = cursor if cursor and _CURSOR.match(cursor) else None
    listed = _tasks(caller, filters, cursor, services=services, tokens=tokens, policy=policy, now=now)
    tabs = [{"deadline": None, "label": N_("All waiting: %(n)s"), "n": listed["counts"]["waiting"]},
            {"deadline": "soon", "label": N_("Breaching soon: %(n)s"), "n": listed["counts"]["soon"]},
            {"deadline": "breached", "label": N_("Breached: %(n)s"), "n": listed["counts"]["breached"]}]
    for tab in tabs:  # translated here: a template's _() takes no variables (see test_console_pages)
        tab.update(label=rendering.gettext(caller.language, tab["label"]) % {"n": tab["n"]},
                   url=work_url(filters, deadline=tab["deadline"]), current=tab["deadline"] == filters.get("deadline"))
    template = "_tasks.html" if web.is_htmx(request) else "my_work.html"
    shown = {name: filters.get(name) for name in ("deadline", "branch", "priority")}
    response = web.html(request, caller, template, **listed, tabs=tabs, filters=shown, filtered=bool(filters),
                        older=bool(cursor),
                        view_url=work_url(filters), branches=branches_in_scope(caller.staff, policy),
                        priorities=PRIORITIES, now_iso=now.isoformat())
    response.headers["Vary"] = "HX-Request, Cookie"  # one URL, two answers: the page and its list
    return response


# -- language -----------------------------------------------------------------------------------------

def choose_language(store, request, *, now: datetime):
    """POST /language: kept in the signed-in staff member's session; a browser not signed in keeps
    it in a cookie of its own (nothing stored), which its sign-in takes along."""
    values = web.form(request)
    caller = web.open_caller(store, request, now, staff_required=False, values=values)
    data, errors = load(LANGUAGE_FORM, values)
    if errors:
        raise web.PageError(400, N_("The form is invalid."), errors)
    if caller.session is not None:
        with store.unit_of_work() as uow:
            uow.sessions.set_language(caller.session.id_hash, data["language"])
    caller.language = data["language"] if data["language"] in LANGUAGES else caller.language
    if caller.session is None:  # a browser not signed in: its own cookie (a sign-in takes it along)
        caller.new_language = caller.language
    return web.redirect(request, caller, web.safe_next(data["next"]))


def not_found(store, request, *, now: datetime):
    if request.method in sessions.SAFE_METHODS:
        web.open_caller(store, request, now, staff_required=False)  # only for the page's language
    raise web.PageError(404, N_("There is no such page."))
