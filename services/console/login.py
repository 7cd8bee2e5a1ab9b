"""Signing in, in one module: the /login form, checking a password, holding back guessing, and
opening the staff member's session. A chain's single sign-on (any OIDC provider, WeCom,
DingTalk) plugs in here: its /login sends the browser to the provider, its callback maps the
provider's user to a staff account (`uow.staff.by_login`) and ends as `password_sign_in` does,
with `sessions.sign_in` (a new session id) — nothing else in the console knows how staff sign in.

Guessing (services.console.policy.Throttle), counted per login name as typed and per client
address, within 15 minutes:
- a login: 3 failures cost nothing; after them each attempt must wait 2, 4, 8, 16... s after the
  last failure; at 10 failures the login is locked for 15 minutes (the right password included);
- an address: 30 failures lock it for 15 minutes, whatever logins it tries;
- an attempt refused for these (429 with Retry-After) checks no password and does not count.
A login nobody has, or a disabled one, is checked against a dummy hash and counted like any
other: the answer, its time and the lockout say nothing about which logins exist."""
from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from services.console import passwords, sessions, web
from services.console.policy import RULES
from services.console.rendering import N_
from services.console.repository import Failures, StaffMember
from services.console.schemas import LoginForm
from shared.web.requests import load

log = logging.getLogger("closeloop.console.login")
FORM = LoginForm()
WRONG = N_("The login or the password is wrong.")


class Held(Exception):
    """Too many failures: try again after `retry_after` seconds."""

    def __init__(self, retry_after: timedelta):
        super().__init__("held back")
        self.retry_after = max(1, math.ceil(retry_after.total_seconds()))


def _keys(login: str, address: str) -> tuple[str, str]:
    return f"login:{login}", f"address:{address}"


def _current(found: Failures | None, now: datetime, rules=RULES.throttle) -> Failures | None:
    """The failures that still count: none once the window passed and no lock holds."""
    if found is None:
        return None
    locked = found.locked_until is not None and found.locked_until > now
    if not locked and now - found.first_failed_at > rules.window:
        return None
    return found


def _hold(login_failures: Failures | None, address_failures: Failures | None, now: datetime,
          rules=RULES.throttle) -> timedelta | None:
    waits = []
    for found in (login_failures, address_failures):
        if found is not None and found.locked_until is not None and found.locked_until > now:
            waits.append(found.locked_until - now)
    if login_failures is not None:
        ready_at = login_failures.last_failed_at + rules.wait_after(login_failures.failures)
        if ready_at > now:
            waits.append(ready_at - now)
    return max(waits) if waits else None


def _failed(found: Failures | None, now: datetime, lock_after: int, rules=RULES.throttle) -> Failures:
    failures = (found.failures if found else 0) + 1
    locked_until = now + rules.lock_for if failures >= lock_after else None
    return Failures(failures, found.first_failed_at if found else now, now, locked_until)


def check_password(uow, login: str, password: str, address: str, now: datetime,
                   rules=RULES.throttle) -> StaffMember | None:
    """The active staff member with this login and password, or None (a failure, counted);
    Held when guessing is being held back. The login's and the address's counts are locked
    (transaction locks taken in one order, whether or not their rows exist yet) until commit, so
    guesses at one login or from one address are counted one after the other: none lost, and no
    deadlock between two sign-ins at once."""
    login_key, address_key = _keys(login, address)
    uow.failures.lock([login_key, address_key])
    found = uow.failures.get([login_key, address_key], lock=True)
    by_login, by_address = _current(found.get(login_key), now), _current(found.get(address_key), now)
    wait = _hold(by_login, by_address, now)
    if wait is not None:
        raise Held(wait)
    member = uow.staff.by_login(login)
    if member is not None and passwords.verify(member.password_hash, password) and member.active:
        uow.failures.clear(login_key)
        if passwords.needs_rehash(member.password_hash):
            uow.staff.update(member.login, now, password_hash=passwords.hash_password(password))
        return member
    if member is None:
        passwords.verify_nobody(password)
    uow.failures.put(login_key, _failed(by_login, now, rules.lock_after))
    uow.failures.put(address_key, _failed(by_address, now, rules.address_lock_after))
    return None


# -- the pages -------------------------------------------------------------------------------------

ENDED = {"expired": N_("Your session has ended. Please sign in again."),
         "disabled": N_("Your account is disabled. Ask your manager.")}


def form(store, request, now):
    """GET /login: the form, with the CSRF token of the browser's id (a cookie: nothing stored)."""
    caller = web.open_caller(store, request, now, staff_required=False)
    if caller.staff is not None:
        return web.redirect(request, caller, "/")
    sessions.ensure(caller)
    notice = ENDED.get(request.args.get("ended", ""))
    return web.html(request, caller, "login.html", login="", errors={}, notice=notice, message=None)


def password_sign_in(store, request, now):
    """POST /login: the CSRF token of the form's session, then the password; a new session."""
    values = web.form(request)
    caller = web.open_caller(store, request, now, staff_required=False, values=values)
    data, errors = load(FORM, values)
    login = str(values.get("login", ""))[:64]
    if errors:
        errors = {k: ["required" if "required" in " ".join(v).lower() else "invalid"] for k, v in errors.items()}
        return web.html(request, caller, "login.html", status=400, login=login, errors=errors, notice=None,
                        message=N_("Please fill in the fields marked."))
    login = data["login"].strip().lower()
    try:
        with store.unit_of_work() as uow:
            member = check_password(uow, login, data["password"], web.client_address(request), now)
            if member is not None:
                caller = sessions.sign_in(uow, caller, member, now)
    except Held as held:
        log.warning("sign-in held back for %s s (login %r)", held.retry_after, login[:64])
        response = web.html(request, caller, "login.html", status=429, login=login, errors={}, notice=None,
                            message=N_("Too many failed attempts. Wait a moment and try again."),
                            retry_after=held.retry_after)
        response.headers["Retry-After"] = str(held.retry_after)
        return response
    if member is None:
        log.info("sign-in failed (login %r)", login[:64])
        return web.html(request, caller, "login.html", status=401, login=login, errors={}, notice=None,
                        message=WRONG)
    log.info("signed in: %s (%s)", member.login, member.role)
    return web.redirect(request, caller, "/")


def sign_out(store, request, now):
    """POST /logout: the session ends; back to the sign-in form."""
    try:
        caller = web.open_caller(store, request, now, values=web.form(request))
    except sessions.SignInNeeded:
        return web.redirect(request, sessions.Caller(None, clear_cookie=True), "/login")
    with store.unit_of_work() as uow:
        caller = sessions.sign_out(uow, caller)
    return web.redirect(request, caller, "/login")


def confirm_sign_out(store, request, now):
    """GET /logout (a link, a bookmark): a button that posts the form; signing out changes state,
    so it takes the session's CSRF token like any other."""
    caller = web.open_caller(store, request, now)
    return web.html(request, caller, "logout.html")
