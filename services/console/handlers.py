"""The console's use cases: staff accounts (the `closeloop staff` commands) and the pages a
signed-in staff member works in. Pages read and write the four services through clients.py with
the staff member's own token; they never read another service's database."""
from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

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

SOON = timedelta(hours=2)  # "breaching soon": due within this


def _task(item: dict, policy, now: datetime, language: str) -> dict:
    due = rendering.parse_instant(item.get("due"))
    branch = item.get("branch_code")
    zone = policy.branches[branch].timezone if branch in policy.branches else None
    state = "none" if due is None else "breached" if due <= now else "soon" if due - now <= SOON else "ok"
    return {"case_id": str(item.get("case_id", "")), "reference": str(item.get("reference") or ""),
            "title": str(item.get("title") or item.get("name") or ""), "name": str(item.get("name") or ""),
            "priority": str(item.get("priority") or ""), "branch_code": str(branch or ""),
            "paused": bool(item.get("paused")), "state": state,
            "due_iso": due.isoformat() if due else "", "due": rendering.format_instant(due, zone, language),
            "remaining": rendering.format_remaining((due - now).total_seconds(), language) if due else ""}


def _tasks(caller, *, services, tokens, policy, now: datetime) -> tuple[list[dict], str | None]:
    """The first page of the caller's tasks, soonest deadline first (investigation's order), and
    a message when they could not be read."""
    token = tokens.for_session(caller.session.id_hash, caller.staff)
    try:
        answer = services.investigation.get("/v1/tasks", token, limit=100)
    except ServiceRefused as refused:
        if refused.status == 403:
            return [], N_("Your role has no case tasks.")
        log.warning("investigation refused the task list: %s", refused)
        return [], N_("The task list is not available right now.")
    except ServiceDown as down:
        log.warning("task list unavailable: %s", down)
        return [], N_("The task list is not available right now.")
    items = answer.get("items") if isinstance(answer.get("items"), list) else []
    return [_task(item, policy, now, caller.language) for item in items if isinstance(item, dict)], None


def my_work(store, request, *, services, tokens, policy, now: datetime):
    caller = web.open_caller(store, request, now)
    tasks, problem = _tasks(caller, services=services, tokens=tokens, policy=policy, now=now)
    template = "_tasks.html" if web.is_htmx(request) else "my_work.html"
    response = web.html(request, caller, template, tasks=tasks, problem=problem, now_iso=now.isoformat(),
                        breached=sum(t["state"] == "breached" for t in tasks),
                        soon=sum(t["state"] == "soon" for t in tasks))
    response.headers["Vary"] = "HX-Request, Cookie"  # one URL, two answers: the page and its list
    return response


# -- language -----------------------------------------------------------------------------------------

def choose_language(store, request, *, now: datetime):
    """POST /language: kept in the browser's session (one is made for a browser without)."""
    values = web.form(request)
    caller = web.open_caller(store, request, now, staff_required=False, values=values)
    data, errors = load(LANGUAGE_FORM, values)
    if errors:
        raise web.PageError(400, N_("The form is invalid."), errors)
    with store.unit_of_work() as uow:
        uow.sessions.set_language(caller.session.id_hash, data["language"])
    caller.language = data["language"] if data["language"] in LANGUAGES else caller.language
    return web.redirect(request, caller, web.safe_next(data["next"]))


def not_found(store, request, *, now: datetime):
    if request.method in sessions.SAFE_METHODS:
        web.open_caller(store, request, now, staff_required=False)  # only for the page's language
    raise web.PageError(404, N_("There is no such page."))
