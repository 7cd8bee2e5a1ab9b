"""Server-side sessions: the browser holds a random id in a cookie (HttpOnly, SameSite=Lax,
Secure behind TLS), the console's database holds its SHA-256 with the staff member, the CSRF
token and the language. Checked on every request: past its absolute end, idle too long, or its
staff member disabled, a session ends there and then. A sign-in always starts a new session (the
id a browser had before is never the one it has after: no session fixation).

A browser that is not signed in (the sign-in form, the language it chose) has nothing stored: its
cookie holds a random id as a signed-in one does, the form's CSRF token is derived from that id
(`anonymous_csrf`: only who holds the cookie can know it), and its language is a cookie of its
own. So a bot fetching /login a million times costs the database nothing.

Lifetimes (services.console.policy.Sessions): idle 30 minutes, absolute 12 hours. Only what the
staff member does counts as use: the requests a page makes by itself to refresh a list
(`background=True`, htmx's polls) neither keep a session alive nor end it early, so a console left
open on a shared front-desk PC signs its staff member out after 30 minutes like any other."""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from services.console.policy import DEFAULT_LANGUAGE, LANGUAGES, RULES
from services.console.repository import Session, StaffMember

COOKIE = "closeloop_session"
LANGUAGE_COOKIE = "closeloop_language"  # the language of a browser that is not signed in
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_ID = re.compile(r"\A[A-Za-z0-9_-]{20,100}\Z")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class SignInNeeded(Exception):
    """No live signed-in session: the page sends the browser to /login. `why`: expired, disabled
    or None (never signed in)."""

    def __init__(self, why: str | None = None, *, htmx: bool = False, secure: bool = False):
        super().__init__(why or "sign in")
        self.why, self.htmx, self.secure = why, htmx, secure


class CsrfRefused(Exception):
    """A state-changing request without the session's CSRF token (403)."""


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def anonymous_csrf(raw_id: str) -> str:
    """The CSRF token of a browser not signed in: a one-way function of its cookie's random id,
    which a page may show (the id itself never leaves the HttpOnly cookie)."""
    digest = hashlib.sha256(b"closeloop console sign-in form\x00" + raw_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass
class Caller:
    """The browser behind one request: its session (None: none yet) and what the answer must
    set (`new_cookie`: the raw id of a session made for this request; `clear_cookie`)."""

    session: Session | None
    language: str = DEFAULT_LANGUAGE
    new_cookie: str | None = None
    clear_cookie: bool = False
    ended: str | None = None  # why the browser's session just ended (expired, disabled)
    browser: str | None = None  # the cookie's id of a browser not signed in (nothing stored)
    new_language: str | None = None  # a language chosen now, for the browser's language cookie

    @property
    def staff(self) -> StaffMember | None:
        return self.session.staff if self.session else None

    @property
    def csrf_token(self) -> str:
        if self.session is not None:
            return self.session.csrf_token
        return anonymous_csrf(self.browser) if self.browser else ""


def _ended_why(session: Session, now: datetime, rules=RULES.sessions) -> str | None:
    if now >= session.expires_at:
        return "expired"
    idle = rules.idle if session.staff else rules.anonymous
    if now - session.last_seen_at >= idle:
        return "expired"
    if session.staff is not None and not session.staff.active:
        return "disabled"
    return None


def browser_language(value: str | None) -> str:
    return value if value in LANGUAGES else DEFAULT_LANGUAGE


def well_formed(raw_id: str | None) -> bool:
    return bool(raw_id) and bool(_ID.match(raw_id))


def load(uow, raw_id: str | None, now: datetime, rules=RULES.sessions, *, language: str | None = None,
         background: bool = False) -> Caller:
    """The browser's live session, or a Caller without one (`ended` says why one just ended;
    `browser`: the id of a browser not signed in, `language` its cookie's). A disabled staff
    member's sessions all end here, whichever browser asks first. A `background` request (a page
    refreshing itself) does not count as use: it does not move the idle clock."""
    language = browser_language(language)
    if not well_formed(raw_id):
        return Caller(None, language=language, clear_cookie=bool(raw_id))
    session = uow.sessions.get(_hash(raw_id))
    if session is None:  # a browser not signed in (or whose session was ended elsewhere)
        return Caller(None, language=language, browser=raw_id)
    why = _ended_why(session, now, rules)
    if why is not None:
        if why == "disabled":
            uow.sessions.end_all_of(session.staff.id)
        else:
            uow.sessions.end(session.id_hash)
        # an anonymous session that lapsed is simply replaced: nobody was signed out
        return Caller(None, language=session.language, clear_cookie=True,
                      ended=why if session.staff is not None else None)
    if not background and now - session.last_seen_at >= rules.touch_every:
        uow.sessions.touch(session.id_hash, now)
    return Caller(session, language=session.language)


def _open(uow, staff: StaffMember, language: str, now: datetime, rules=RULES.sessions) -> tuple[str, Session]:
    raw = secrets.token_urlsafe(32)
    lifetime = rules.absolute
    session = Session(id_hash=_hash(raw), csrf_token=secrets.token_urlsafe(32),
                      language=language if language in LANGUAGES else DEFAULT_LANGUAGE, created_at=now,
                      last_seen_at=now, expires_at=now + lifetime, staff=staff)
    uow.sessions.add(id_hash=session.id_hash, staff_id=staff.id, csrf_token=session.csrf_token,
                     language=session.language, now=now, expires_at=session.expires_at)
    return raw, session


def ensure(caller: Caller) -> Caller:
    """An id for a browser that has none (the sign-in form's CSRF token derives from it): a
    cookie, nothing stored."""
    if caller.session is None and caller.browser is None:
        caller.browser = caller.new_cookie = secrets.token_urlsafe(32)
        caller.clear_cookie = False
    return caller


def sign_in(uow, caller: Caller, staff: StaffMember, now: datetime) -> Caller:
    """A new session for `staff`, with a new id and CSRF token; the browser's old one ends."""
    if caller.session is not None:
        uow.sessions.end(caller.session.id_hash)
    raw, session = _open(uow, staff, caller.language, now)
    return Caller(session, language=session.language, new_cookie=raw)


def sign_out(uow, caller: Caller) -> Caller:
    if caller.session is not None:
        uow.sessions.end(caller.session.id_hash)
    return Caller(None, language=caller.language, clear_cookie=True)


def check_csrf(caller: Caller, offered: str | None) -> None:
    """The session's token, compared in constant time; a browser without a session has none to
    offer, so its state-changing request is refused too."""
    expected = caller.csrf_token
    if not expected or not isinstance(offered, str) or not hmac.compare_digest(offered.encode(), expected.encode()):
        raise CsrfRefused("the form's security token is missing or wrong")
