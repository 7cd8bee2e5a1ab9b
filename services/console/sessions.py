"""Server-side sessions: the browser holds a random id in a cookie (HttpOnly, SameSite=Lax,
Secure behind TLS), the console's database holds its SHA-256 with the staff member, the CSRF
token and the language. Checked on every request: past its absolute end, idle too long, or its
staff member disabled, a session ends there and then. A sign-in always starts a new session (the
id a browser had before is never the one it has after: no session fixation).

Lifetimes (services.console.policy.Sessions): idle 30 minutes, absolute 12 hours; a session not
signed in (the sign-in form's) 1 hour idle."""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from services.console.policy import DEFAULT_LANGUAGE, LANGUAGES, RULES
from services.console.repository import Session, StaffMember

COOKIE = "closeloop_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_ID = re.compile(r"^[A-Za-z0-9_-]{20,100}$")
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


@dataclass
class Caller:
    """The browser behind one request: its session (None: none yet) and what the answer must
    set (`new_cookie`: the raw id of a session made for this request; `clear_cookie`)."""

    session: Session | None
    language: str = DEFAULT_LANGUAGE
    new_cookie: str | None = None
    clear_cookie: bool = False
    ended: str | None = None  # why the browser's session just ended (expired, disabled)

    @property
    def staff(self) -> StaffMember | None:
        return self.session.staff if self.session else None

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token if self.session else ""


def _ended_why(session: Session, now: datetime, rules=RULES.sessions) -> str | None:
    if now >= session.expires_at:
        return "expired"
    idle = rules.idle if session.staff else rules.anonymous
    if now - session.last_seen_at >= idle:
        return "expired"
    if session.staff is not None and not session.staff.active:
        return "disabled"
    return None


def load(uow, raw_id: str | None, now: datetime, rules=RULES.sessions) -> Caller:
    """The browser's live session, or a Caller without one (`ended` says why one just ended).
    A disabled staff member's sessions all end here, whichever browser asks first."""
    if not raw_id or not _ID.match(raw_id):
        return Caller(None, clear_cookie=bool(raw_id))
    session = uow.sessions.get(_hash(raw_id))
    if session is None:
        return Caller(None, clear_cookie=True)
    why = _ended_why(session, now, rules)
    if why is not None:
        if why == "disabled":
            uow.sessions.end_all_of(session.staff.id)
        else:
            uow.sessions.end(session.id_hash)
        # an anonymous session that lapsed is simply replaced: nobody was signed out
        return Caller(None, language=session.language, clear_cookie=True,
                      ended=why if session.staff is not None else None)
    if now - session.last_seen_at >= rules.touch_every:
        uow.sessions.touch(session.id_hash, now)
    return Caller(session, language=session.language)


def _open(uow, staff: StaffMember | None, language: str, now: datetime, rules=RULES.sessions) -> tuple[str, Session]:
    raw = secrets.token_urlsafe(32)
    lifetime = rules.absolute if staff is not None else rules.anonymous
    session = Session(id_hash=_hash(raw), csrf_token=secrets.token_urlsafe(32),
                      language=language if language in LANGUAGES else DEFAULT_LANGUAGE, created_at=now,
                      last_seen_at=now, expires_at=now + lifetime, staff=staff)
    uow.sessions.add(id_hash=session.id_hash, staff_id=staff.id if staff else None, csrf_token=session.csrf_token,
                     language=session.language, now=now, expires_at=session.expires_at)
    return raw, session


def ensure(uow, caller: Caller, now: datetime) -> Caller:
    """A session for a browser that has none (the sign-in form's: its CSRF token, its language)."""
    if caller.session is None:
        raw, session = _open(uow, None, caller.language, now)
        caller.session, caller.new_cookie, caller.clear_cookie = session, raw, False
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
