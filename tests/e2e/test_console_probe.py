"""An outsider's probe of the staff console: defects found by attacking it as one would (each test's
docstring says what was observed), and the probes that found nothing kept as guards. The console
runs once for the module on its own database, on a clock the tests move, in front of a stub of the
four services whose answers each test sets (garbage, hangs, HTML in every field)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import eventlet
import pytest
import requests
import sqlalchemy as sa
from eventlet import wsgi

from services.console import rendering
from shared.calendar.clock import ManualClock
from shared.testing.fixtures import free_port, proxied, run_service, wait_until
from tests.e2e.test_console import PASSWORD, Browser, csrf_of

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "127.0.0.2"  # the console believes X-Forwarded-For from this address only (TRUSTED_PROXIES)
TIMEOUT = 1.0  # the console's SERVICE_TIMEOUT_SECONDS here (5 s in production)
EXPORT_WAIT = 1.0  # its EXPORT_WAIT_SECONDS, a file's head (120 s in production)
START = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
CASE_ID = "5b0c5a52-3f7e-4d4f-9a51-6a3f4c1f0a11"
VISIT_ID = "0d8f7c0e-9a3b-4c52-8e7e-2a1b3c4d5e6f"


# -- a stub of the four services ---------------------------------------------------------------------

@dataclass
class Answer:
    status: int = 200
    body: bytes | dict | list | str = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0          # seconds before the head
    trickle: float | None = None  # seconds between pieces of the body (the first with the head)
    piece: int = 1              # bytes a piece, trickled
    headers: dict = field(default_factory=dict)


class Stub:
    """The four services on one port: `stub.answer("GET", "/v1/tasks", Answer(...))`; what no test
    set answers 404 in the services' JSON shape. Requests are recorded."""

    def __init__(self):
        self.routes: dict[tuple[str, str], Answer] = {}
        self.seen: list[tuple[str, str]] = []
        self.sock = eventlet.listen(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = eventlet.spawn(wsgi.server, self.sock, self.app, log_output=False, log=_Quiet(),
                                     socket_timeout=60, minimum_chunk_size=1)

    def answer(self, method: str, pattern: str, answer: Answer) -> None:
        self.routes[(method, pattern)] = answer

    def reset(self) -> None:
        self.routes.clear()
        self.seen.clear()

    def app(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        self.seen.append((method, path))
        found = next((a for (m, p), a in self.routes.items() if m == method and re.fullmatch(p, path)), None)
        answer = found or Answer(404, {"error": {"code": "not_found", "message": "no", "fields": {}}})
        if answer.delay:
            eventlet.sleep(answer.delay)
        body = answer.body
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        start_response(f"{answer.status} X", [("Content-Type", answer.content_type),
                                              ("Content-Length", str(len(body))), *answer.headers.items()])
        if answer.trickle is None:
            return [body]

        def slowly():
            for i in range(0, len(body), answer.piece):
                if i:
                    eventlet.sleep(answer.trickle)
                yield body[i:i + answer.piece]
        return slowly()

    def close(self):
        self.thread.kill()
        self.sock.close()


class _Quiet:
    def write(self, *args):
        pass


# -- the console ---------------------------------------------------------------------------------------

@dataclass
class Probe:
    base: str
    database_url: str
    clock: ManualClock
    stub: Stub
    runner: object

    def browser(self, **headers) -> Browser:
        return Browser(self.base, headers, timeout=20)

    def via_gateway(self, client: str, **headers) -> Browser:
        """A browser at `client` behind the gateway (which replaces X-Forwarded-For with it)."""
        return Browser(self.base, {**headers, "X-Forwarded-For": client}, source=GATEWAY, timeout=20)

    def awake(self) -> None:
        """The services a test left resting (they did not answer in time) asked again at once."""
        from services.console.service import Backends

        for container in self.runner.containers:
            for dependency in container.dependencies:
                if isinstance(dependency, Backends) and hasattr(dependency.services, "awake"):
                    dependency.services.awake()

    def signed_in(self, login: str, **headers) -> Browser:
        browser = self.browser(**headers)
        answer = browser.sign_in(login)
        assert answer.status_code == 303, answer.text[:500]
        return browser

    def sql(self, statement, **params):
        engine = sa.create_engine(self.database_url, poolclass=sa.NullPool)
        try:
            with engine.begin() as conn:
                result = conn.execute(sa.text(statement), params)
                return result.all() if result.returns_rows else result.rowcount
        finally:
            engine.dispose()


STAFF = (("amy", "store_manager", "SH001"), ("fred", "front_desk", "SH001"), ("ann", "aftercare_agent", "SH001"),
         ("ivan", "investigator", "SH001"), ("hq", "hq_admin", "*"), ("hana", "hq_analyst", "*"),
         ("audrey", "auditor", "*"), ("bo", "store_manager", "SH002"))


def start_console(amqp_uri: str, database_url: str, clock, stub: Stub, **overrides):
    urls = {f"{name.upper()}_URL": stub.url for name in ("intake", "investigation", "aftercare", "reporting")}
    console = run_service("console", amqp_uri, database_url, clock, TRUSTED_PROXIES=GATEWAY,
                          SERVICE_TIMEOUT_SECONDS=TIMEOUT, SERVICE_REST_SECONDS=60, EXPORT_WAIT_SECONDS=EXPORT_WAIT,
                          **{**urls, **overrides})
    return console.runner, console.base_url


def stop(runner) -> None:
    with eventlet.Timeout(15, False):
        runner.kill()


@pytest.fixture(scope="module")
def probe(amqp_uri, database_factory):
    from services.console import handlers
    from services.console.repository import ConsoleStore
    from shared.calendar.policy import load_policy
    from shared.persistence import db

    url = database_factory("console")
    engine = db.make_engine(url, 1)
    policy = load_policy(None)
    for login, role, branch in STAFF:
        handlers.add_staff(ConsoleStore(engine), login=login, name=f"{login} 名", role=role, branch=branch,
                           region=None, password=PASSWORD, policy=policy, now=START)
    engine.dispose()
    clock, stub = ManualClock(START), Stub()
    runner, base = start_console(amqp_uri, url, clock, stub)
    yield Probe(base, url, clock, stub, runner)
    stop(runner)
    stub.close()


@pytest.fixture
def p(probe):
    """The module's console, its stub emptied, its failed sign-ins forgotten and no service resting,
    for each test."""
    probe.stub.reset()
    probe.sql("DELETE FROM login_failures")
    probe.awake()
    return probe


def zh(msgid: str) -> str:
    """What the console shows for `msgid` (a staff member's pages are in Chinese by default)."""
    return rendering.gettext("zh", msgid)


def raw_request(base: str, head: bytes) -> bytes:
    """An HTTP exchange over a plain socket: the answer's bytes."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


# -- signing in, sessions ---------------------------------------------------------------------------

def test_a_bot_fetching_the_sign_in_form_stores_nothing_and_the_form_still_guards_the_sign_in(p):
    """Observed: every GET or HEAD of /login without a cookie inserted a session row (the form's CSRF
    token lived there, purged an hour later): a bot fetching the form 1,000 times a second added 3.6
    million rows an hour, each an INSERT. Expected: nothing stored before a sign-in; the form's token
    still that browser's own, the language chosen before signing in still taken along."""
    before = p.sql("SELECT count(*) FROM sessions")[0][0]
    for _ in range(25):
        assert requests.get(p.base + "/login", timeout=10).status_code == 200
        assert requests.head(p.base + "/login", timeout=10).status_code == 200
    assert p.sql("SELECT count(*) FROM sessions")[0][0] == before

    one, other = p.browser(), p.browser()
    token = one.csrf()
    assert other.csrf() != token
    for stranger in (other, p.browser()):  # another browser's token, or none at all: refused
        refused = stranger.post("/login", {"login": "amy", "password": PASSWORD, "csrf_token": token})
        assert refused.status_code == 403 and stranger.session_id != one.session_id
    assert one.post("/language", {"language": "en", "csrf_token": token, "next": "/login"}).status_code == 303
    assert 'lang="en"' in one.get("/login").text
    planted = one.session_id
    assert one.post("/login", {"login": "amy", "password": PASSWORD, "csrf_token": token}).status_code == 303
    assert one.session_id != planted  # no session fixation: a new id at sign-in
    assert 'lang="en"' in one.get("/notifications").text
    assert p.sql("SELECT count(*) FROM sessions")[0][0] == before + 1


def test_a_page_refreshing_itself_does_not_keep_an_unattended_session_alive(p):
    """Observed: every page of the console refreshes itself (my work and notifications every 30 s, the
    call list every 20 s, alerts every 60 s) and each refresh counted as use, so a console left open on
    a shared front-desk PC stayed signed in for the whole 12 hours, never idle. Expected: the pages'
    polls carry X-Closeloop-Poll and do not move the idle clock; after 30 minutes of polls alone the
    next poll sends the page to the sign-in form. What the staff member does (htmx or not) counts."""
    p.stub.answer("GET", "/v1/.*", Answer(200, {"items": []}))
    amy = p.signed_in("amy")
    for path in ("/", "/visits", "/alerts", "/notifications"):
        page = amy.get(path)
        polls = re.findall(r"<div[^>]* hx-trigger=\"every [^>]*>", page.text)
        assert polls and all("X-Closeloop-Poll" in tag for tag in polls), (path, polls)
    poll = {"HX-Request": "true", "X-Closeloop-Poll": "true"}
    for minutes in (10, 10, 9):
        p.clock.advance(minutes=minutes)
        polled = amy.get("/", headers=poll)
        assert polled.status_code == 200 and "HX-Redirect" not in polled.headers
    p.clock.advance(minutes=2)  # 31 minutes since she last did anything
    ended = amy.get("/", headers=poll)
    assert (ended.status_code, ended.headers.get("HX-Redirect")) == (200, "/login?ended=expired")

    amy = p.signed_in("amy")
    for _ in range(3):  # her own clicks, 20 minutes apart
        p.clock.advance(minutes=20)
        assert amy.get("/", headers={"HX-Request": "true"}).status_code == 200


def test_a_session_ends_after_12_hours_however_busy(p):
    """Found working: the absolute end holds while the session is in use."""
    amy = p.signed_in("amy")
    for _ in range(28):  # 11 h 40 min of use
        p.clock.advance(minutes=25)
        assert amy.get("/notifications").status_code == 200
    p.clock.advance(minutes=21)
    ended = amy.get("/notifications")
    assert (ended.status_code, ended.headers["Location"]) == (303, "/login?ended=expired")
    assert "Max-Age=0" in ended.headers["Set-Cookie"]


def test_x_forwarded_for_and_proto_are_believed_from_the_gateway_only(p):
    """Observed: X-Forwarded-For was believed whoever sent it: a client reaching the console's port
    itself (`closeloop serve console` listens on 0.0.0.0:8005) dodged the per-address lock by naming a
    new address each time, and locked a colleague's address out by naming it; X-Forwarded-Proto too.
    Expected: only a trusted proxy's headers count (TRUSTED_PROXIES or CLOSELOOP_TRUSTED_PROXIES;
    loopback by default; here the gateway is 127.0.0.2); any other peer is its socket's address."""
    now = p.clock.now()
    nearly = "INSERT INTO login_failures VALUES (:key, 29, :now, :now, NULL)"  # one failure from the lock
    p.sql(nearly, key="address:127.0.0.1", now=now)
    assert p.browser(**{"X-Forwarded-For": "203.0.113.1"}).sign_in("guess1", "wrong-password").status_code == 401
    assert p.browser(**{"X-Forwarded-For": "203.0.113.2"}).sign_in("amy").status_code == 429  # its own address

    p.sql("DELETE FROM login_failures")
    p.sql(nearly, key="address:198.51.100.23", now=now)
    assert p.browser(**{"X-Forwarded-For": "198.51.100.23"}).sign_in("guess2", "wrong-password").status_code == 401
    assert p.via_gateway("198.51.100.23").sign_in("amy").status_code == 303  # the colleague is not locked out

    # through the gateway each caller is their own address
    assert p.via_gateway("198.51.100.23").sign_in("guess3", "wrong-password").status_code == 401
    assert p.via_gateway("198.51.100.23").sign_in("amy").status_code == 429
    assert p.via_gateway("198.51.100.24").sign_in("amy").status_code == 303

    # the cookie is Secure behind the gateway's TLS, not because a client says so
    assert "Secure" in p.via_gateway("198.51.100.24", **{"X-Forwarded-Proto": "https"}).get("/login").headers[
        "Set-Cookie"]
    direct = p.browser(**{"X-Forwarded-Proto": "https"}).get("/login").headers["Set-Cookie"]
    assert "Secure" not in direct and "HttpOnly" in direct and "SameSite=Lax" in direct


def test_sign_ins_at_one_login_sent_at_once_are_counted_one_by_one_without_a_500(p):
    """Observed: eight wrong passwords for one login sent at once: some answered 500 (PostgreSQL
    found a deadlock between the login's and the address's counts) and the failures were counted as
    1 (SELECT ... FOR UPDATE locks rows that exist; the first guesses found none, and each wrote 1), so
    guessing in bursts went past the slow-down. Expected: every guess counted in turn: three 401s,
    then the 2 s wait (429) for the others, and no 500."""
    browsers = [p.browser() for _ in range(8)]
    forms = [{"login": "ivan", "password": "wrong-password", "csrf_token": b.csrf()} for b in browsers]
    pool = eventlet.GreenPool()
    codes = sorted(pool.imap(lambda pair: pair[0].post("/login", pair[1]).status_code, zip(browsers, forms)))
    assert codes == [401] * 3 + [429] * 5
    assert p.sql("SELECT key, failures FROM login_failures ORDER BY key") == [("address:127.0.0.1", 3),
                                                                             ("login:ivan", 3)]


def test_overlong_logins_and_passwords_are_refused_before_any_hashing(p):
    """Found working: a megabyte of password is a 400 at once, never a second of argon2."""
    browser = p.browser()
    token = browser.csrf()
    for login, password in (("amy", "x" * 1_000_000), ("a" * 100_000, "x" * 20), ("amy", "x" * 257)):
        started = time.monotonic()
        answer = browser.post("/login", {"login": login, "password": password, "csrf_token": token})
        assert answer.status_code == 400 and time.monotonic() - started < 1, (len(login), len(password))
    assert p.sql("SELECT count(*) FROM login_failures") == [(0,)]


# -- CSRF, redirects ----------------------------------------------------------------------------------

def _post_routes() -> list[str]:
    source = (ROOT / "services" / "console" / "service.py").read_text(encoding="utf-8")
    return [route.replace("<case_id>", CASE_ID).replace("<visit_id>", VISIT_ID).replace("<task>", "assign")
            for route in re.findall(r'@page\("POST", "([^"]+)"\)', source) if "<path:" not in route]


def test_every_post_without_the_session_s_own_token_is_refused_before_a_service_is_asked(p):
    """Found working: each POST route of service.py refuses a missing token, another session's, one in
    the query string or an htmx request without it (403), and asks no service."""
    routes = _post_routes()
    assert len(routes) >= 10 and "/login" in routes and f"/cases/{CASE_ID}/tasks/assign" in routes
    amy, bo = p.signed_in("amy"), p.signed_in("bo")
    mine, theirs = amy.csrf("/notifications"), bo.csrf("/notifications")
    for path in routes:
        for data, headers, query in (({}, {}, ""), ({"csrf_token": theirs}, {}, ""), ({}, {"X-CSRF-Token": theirs}, ""),
                                     ({}, {}, f"?csrf_token={mine}"), ({}, {"HX-Request": "true"}, "")):
            answer = amy.post(path + query, {**data, "language": "en", "login": "amy", "password": PASSWORD},
                              headers=headers)
            assert answer.status_code == 403, (path, data, headers, query, answer.status_code)
    assert [seen for seen in p.stub.seen if seen[0] != "GET"] == []
    assert amy.get("/notifications").status_code == 200  # still signed in, her language unchanged
    assert 'lang="zh-CN"' in amy.get("/notifications").text


def test_the_language_form_s_next_never_leads_off_the_console(p):
    """Observed: next="/<TAB>/evil.example" answered `Location: //evil.example` (browsers drop tabs
    and line breaks from a URL: another site) and `HX-Redirect: /<TAB>/evil.example` for htmx to
    follow; a next with a line break was a 500. Expected: anything but a plain path of the console
    goes to /."""
    amy = p.signed_in("amy")
    token = amy.csrf("/notifications")
    for target in ("/\t/evil.example", "/\n/evil.example", "/\r\nSet-Cookie: a=b", " //evil.example", "//evil.example",
                   "https://evil.example", "/\\evil.example", "/ /evil.example"):
        answer = amy.post("/language", {"language": "en", "csrf_token": token, "next": target})
        assert (answer.status_code, answer.headers.get("Location")) == (303, "/"), repr(target)
        answer = amy.post("/language", {"language": "zh", "csrf_token": token, "next": target},
                          headers={"HX-Request": "true"})
        assert (answer.status_code, answer.headers.get("HX-Redirect")) == (200, "/"), repr(target)
    kept = amy.post("/language", {"language": "zh", "csrf_token": token, "next": "/visits?branch=SH001&status=open"})
    assert kept.headers["Location"] == "/visits?branch=SH001&status=open"


# -- who may see what -----------------------------------------------------------------------------------

CUSTOMER = "/customers/c_" + "0" * 32
PAGES = ("/", "/complaints/new", "/sales/new", "/lookup", "/visits", f"/visits/{VISIT_ID}",
         f"/visits/{VISIT_ID}/urgent-case", "/alerts", "/notifications", f"/cases/{CASE_ID}", CUSTOMER, "/library")
# What the console itself allows each role (the services decide the rest: the stub allows all).
ALLOWED = {"store_manager": set(PAGES),
           "front_desk": {"/", "/complaints/new", "/sales/new", "/lookup", "/notifications", f"/cases/{CASE_ID}",
                          CUSTOMER},
           "aftercare_agent": {"/", "/visits", f"/visits/{VISIT_ID}", f"/visits/{VISIT_ID}/urgent-case",
                               "/notifications", f"/cases/{CASE_ID}", CUSTOMER},
           "investigator": {"/", "/alerts", "/notifications", f"/cases/{CASE_ID}", CUSTOMER, "/library"},
           "hq_admin": {"/", "/alerts", "/notifications", f"/cases/{CASE_ID}", CUSTOMER, "/library"},
           "hq_analyst": {"/", "/alerts", "/notifications", f"/cases/{CASE_ID}", CUSTOMER, "/library"},
           "auditor": {"/", "/notifications", f"/cases/{CASE_ID}"}}
DESK_POSTS, CALL_POSTS = ("/complaints/new", "/sales/new", "/lookup"), ("/visits/next", f"/visits/{VISIT_ID}/release")


def test_each_role_reaches_only_its_own_pages_and_forms(p):
    """Found working: the pages and forms the console keeps to some roles answer the others 403."""
    for method in ("GET", "POST", "DELETE"):
        p.stub.answer(method, "/v1/.*", Answer(200, {"items": [], "id": VISIT_ID}))
    for login, role, _ in STAFF[:-1]:
        browser = p.signed_in(login)
        token = browser.csrf("/notifications")
        for path in PAGES:
            answer = browser.get(path)
            assert answer.status_code == (200 if path in ALLOWED[role] else 403), (role, path, answer.status_code)
        for path in DESK_POSTS + CALL_POSTS:
            answer = browser.post(path, {"csrf_token": token})
            allowed = role in ("front_desk", "store_manager") if path in DESK_POSTS else role in (
                "aftercare_agent", "store_manager")
            assert (answer.status_code != 403) == allowed, (role, path, answer.status_code)


def test_ids_that_cannot_be_records_and_path_tricks_answer_404_without_asking_a_service(p):
    """Found working: odd ids and static paths (.., encoded slashes and dots, NUL, dot-files) are 404."""
    amy = p.signed_in("amy")
    for path in ("/cases/%00", "/cases/a%2f..%2flogin", "/cases/" + "a" * 65, "/visits/not-a-visit",
                 "/visits/%0d%0aX:1", "/visits/not-a-visit/urgent-case"):
        assert amy.get(path).status_code == 404, path
    assert p.stub.seen == []
    for path in ("/static/%2e%2e/service.py", "/static/..%2fservice.py", "/static/console.css%00.js",
                 "/static/vendor/VENDORED.md", "/static/.hidden.js", "/static/vendor", "/%2e%2e/etc/passwd"):
        assert amy.get(path).status_code == 404, path
    head = raw_request(p.base, b"GET /static/../services/console/service.py HTTP/1.1\r\nHost: x\r\n"
                               b"Connection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404")


# -- what the services say, shown inert ---------------------------------------------------------------

X = '<img src=x onerror=alert(1)>"\''
WHEN = "2026-11-22T09:00:00+00:00"


def _poisoned_stub(stub: Stub) -> None:
    """Every text a page shows from a service holds markup."""
    case = {"id": CASE_ID, "reference": X, "kind": X, "state": X, "priority": X, "category": X, "channel": X,
            "branch_code": "SH001", "owner": X, "description": X, "severity_flags": [X],
            "service": {"code": X, "name": X, "technician_id": X}, "products": [{"sku": X, "name": X, "batch": X}],
            "received_at": WHEN, "customer": {"masked": {"name": X, "phone": X}, "language": X},
            "waiting_for_customer": {"since": WHEN, "reason": X},
            "sla": {X: {"state": X, "due": X}, "first_response": {"state": "running", "due": WHEN}},
            "timeline": [{"at": WHEN, "actor": X, "role": X, "what": X, "detail": {X: X, "note": X, "to": [X]}}],
            "remedies": [{"id": X, "type": X, "amount": 3, "status": "awaiting_approval", "proposed_by": X,
                          "proposed_role": X, "note": X, "approvers": [X], "reason": X, "deadline": WHEN, "promise": X}],
            "open_tasks": [{"name": "approve", "roles": ["store_manager"], "due": WHEN},
                           {"name": "assign", "roles": ["store_manager"], "due": WHEN}, {"name": X, "roles": [X]}],
            "findings": {"facts": X, "root_cause": X, "responsibility": X, "signed_by": X, "signed_at": WHEN},
            "first_response": {"message": X, "channel": X, "by": X, "at": WHEN},
            "written_result": {"measures": X, "completed_at": WHEN, "responsible": X, "follow_up": X},
            "corrective_action": {"action": X, "owner": X, "due": WHEN, "status": X},
            "decision": {"decision": X, "note": X, "to": [X], "by": X, "at": WHEN}, "escalation_level": 1, "outcome": X}
    refused = {"error": {"code": X, "message": X, "fields": {X: [X], "owner": [X], "note": [X], "needed_role": [X],
                                                            "answers.satisfaction": [X], "items.0.sku": [X],
                                                            "customer.phone": [X], "purpose": [X]}}}
    visit = {"id": VISIT_ID, "kind": X, "status": "scheduled", "branch_code": "SH001", "allergy_check": True,
             "customer_masked": {"name": X, "phone": X}, "customer_language": X, "due_at": WHEN, "call_at": WHEN,
             "items": [{"name": X, "sku": X, "product_type": X, "batch": X, "technician_id": X}],
             "attempts": [{"n": X, "at": WHEN, "by": X, "channel": X, "outcome": X, "note": X, "call_back_at": WHEN}],
             "follows": {"type": "case", "id": X, "reference": X, "responsibility": X, "remedy": {"type": X},
                         "follow_up_plan": X, "items": [{"name": X}]},
             "message": {"text": X, "outcome": X, "requested_at": WHEN},
             "outcome": {"score": X, "by": X, "reason": X, "answers": {"item": X, "suggestions": X}},
             "claimed_by": X, "claimed_until": "2026-11-22T02:30:00+00:00",
             "contact": {"name": X, "phone": X, "email": X}, "contact_unavailable": X}
    complaint = {"id": CASE_ID, "reference": X, "branch_code": "SH001", "kind": X, "priority": X, "category": X,
                 "severity_flags": [X], "status": X, "received_at": WHEN, "description": X, "acknowledgement": X,
                 "customer": {"name": X, "phone": X, "email": X, "language": X}, "service": {"code": X, "name": X},
                 "products": [{"sku": X, "name": X, "batch": X}]}
    for method, path, answer in (
            ("GET", "/v1/tasks", Answer(200, {"items": [{"case_id": X, "reference": X, "title": X, "name": X,
                                                         "priority": X, "branch_code": X, "due": WHEN}]})),
            ("GET", f"/v1/cases/{CASE_ID}", Answer(200, case)),
            ("GET", f"/v1/cases/{CASE_ID}/contact", Answer(200, {"contact": {"name": X, "phone": X, "email": X},
                                                                 "purpose": X})),
            ("POST", f"/v1/cases/{CASE_ID}/tasks/assign", Answer(400, refused)),
            ("GET", "/v1/visits", Answer(200, {"items": [visit]})),
            ("POST", f"/v1/visits/{VISIT_ID}/claim", Answer(409, {"error": {"code": "claimed", "message": X}})),
            ("GET", f"/v1/visits/{VISIT_ID}", Answer(200, visit)),
            ("POST", f"/v1/visits/{VISIT_ID}/attempts", Answer(400, refused)),
            ("GET", "/v1/cases", Answer(200, {"items": [{"id": X, "reference": X, "state": X, "priority": X,
                                                         "origin": {"visit_id": VISIT_ID}}]})),
            ("GET", "/v1/alerts", Answer(200, {
                "alerts": [{"kind": X, "by": "branch_category", "about": {"branch_code": X, "category": X}, "count": 3,
                            "chain_count": X, "branches": [X], "records": [X], "first_at": WHEN, "open": True},
                           {"kind": "recurring_problem", "by": "technician", "about": {"technician_id": X},
                            "records": [X]},
                           {"kind": "safety_signal", "by": "batch", "about": {"batch": X}}],
                "breaching": [{"branch_code": X, "cases": 1, "worst": [{"case_id": X, "reference": X, "priority": X,
                                                                        "clock": X, "due": WHEN}]}]})),
            ("GET", "/v1/notifications", Answer(200, {"items": [{"id": X, "kind": X, "case_id": X, "reference": X,
                                                                 "branch_code": X, "text": X, "created_at": WHEN}]})),
            ("GET", f"/v1/complaints/{CASE_ID}", Answer(200, complaint)),
            ("POST", "/v1/customers/lookup", Answer(200, {"customer": {"phone": X}, "complaints": [complaint],
                                                          "sales": [{"id": X, "branch_code": X, "customer": {"name": X},
                                                                     "items": [{"type": X, "sku": X, "name": X}]}]})),
            ("POST", "/v1/complaints", Answer(201, complaint)),
            ("POST", "/v1/sales", Answer(400, refused)),
            ("GET", "/v1/kpis/standard-answers", Answer(200, {"answers": [
                {"standard_answer": X, "purpose": X, "used": 2, "followed_up": X, "mean_score": X, "satisfied": X}]})),
            ("GET", "/v1/standard-answers", Answer(200, {"answers": [{"id": X, "title": X, "text": X}]})),
            ("GET", "/v1/exports/case-library.csv", Answer(400, refused))):
        stub.answer(method, path, answer)


def test_markup_in_everything_the_services_say_is_shown_as_text(p):
    """Found working: complaint texts, names, notes, references, branch codes, notices, alerts, visit
    answers and the services' error messages with markup are escaped on every page and fragment."""
    _poisoned_stub(p.stub)
    amy = p.signed_in("amy")
    token = amy.csrf("/notifications")
    hx = {"HX-Request": "true", "X-CSRF-Token": token}
    answers = {
        "my work": amy.get("/"), "case": amy.get(f"/cases/{CASE_ID}"),
        "case fragment": amy.get(f"/cases/{CASE_ID}", headers={"HX-Request": "true"}),
        "contact": amy.post(f"/cases/{CASE_ID}/contact", {"csrf_token": token, "purpose_choice": "call_back"}),
        "contact fragment": amy.post(f"/cases/{CASE_ID}/contact", {"purpose": "call back"}, headers=hx),
        "task refused": amy.post(f"/cases/{CASE_ID}/tasks/assign", {"csrf_token": token, "owner": X}),
        "task refused fragment": amy.post(f"/cases/{CASE_ID}/tasks/assign", {"owner": X}, headers=hx),
        "call list": amy.get("/visits"), "visit": amy.get(f"/visits/{VISIT_ID}"),
        "visit contact": amy.get(f"/visits/{VISIT_ID}/contact?purpose_choice=return", headers=hx),
        "attempt refused": amy.post(f"/visits/{VISIT_ID}/attempts", {"csrf_token": token, "outcome": "reached"}),
        "urgent case": amy.get(f"/visits/{VISIT_ID}/urgent-case", headers={"HX-Request": "true"}),
        "alerts": amy.get("/alerts"), "notifications": amy.get("/notifications"),
        "look-up": amy.get(f"/lookup?q={CASE_ID}"),
        "look-up by phone": amy.post("/lookup", {"csrf_token": token, "q": "13812346138", "purpose_choice": "status"}),
        "complaint filed": amy.post("/complaints/new", {"csrf_token": token, "idempotency_key": "k" * 20}),
        "sale refused": amy.post("/sales/new", {"csrf_token": token, "idempotency_key": "k" * 20, "items.0.code": "A"}),
        "library": amy.get("/library"), "library refused": amy.get("/library/case-library?format=csv"),
    }
    for what, answer in answers.items():
        assert answer.status_code < 500, (what, answer.status_code)
        assert "<img" not in answer.text and "&lt;img src=x onerror=alert(1)&gt;" in answer.text, what
        assert answer.headers["Content-Security-Policy"].startswith("default-src 'self'"), what


def test_the_htmx_configuration_allows_no_eval_no_inline_scripts_and_no_other_origin(p):
    """Found working: htmx may not evaluate, run script tags or call another origin; the CSRF header
    rides along as JSON in an attribute."""
    page = p.signed_in("amy").get("/notifications").text
    config = json.loads(re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", page).group(1))
    assert (config["allowEval"], config["allowScriptTags"], config["selfRequestsOnly"]) == (False, False, True)
    assert "<script>" not in page and "unsafe-inline" not in page
    assert re.search(r"<body hx-headers='\{\"X-CSRF-Token\": \"[A-Za-z0-9_-]+\"\}'>", page)


def test_every_answer_carries_a_content_security_policy_and_nosniff(p):
    """Observed: what a page does not draw itself went out without either: a method a path does not
    take (PUT /login: 405), the transport's refusals (a body over the limit: 413) and the console's
    /health, /metrics and /health/live. Expected: JSON and text answers carry `default-src 'none'` and
    nosniff; pages their own policy."""
    answers = [requests.put(p.base + "/login", timeout=10), requests.get(p.base + "/health", timeout=10),
               requests.get(p.base + "/metrics", timeout=10), requests.get(p.base + "/health/live", timeout=10),
               requests.get(p.base + "/static/console.css", timeout=10), requests.get(p.base + "/nope", timeout=10),
               p.browser().get("/")]
    for answer in answers:
        assert answer.headers.get("X-Content-Type-Options") == "nosniff", (answer.url, answer.status_code)
        if answer.url.endswith("/health/live"):
            continue  # answered before any worker: no page, nothing to run
        assert "Content-Security-Policy" in answer.headers, (answer.url, answer.status_code)
    too_big = raw_request(p.base, b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n"
                                  b"Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\n")
    head = too_big.split(b"\r\n\r\n")[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 413") and "Content-Security-Policy: default-src 'none'" in head
    assert "X-Content-Type-Options: nosniff" in head


# -- malformed requests ---------------------------------------------------------------------------------

def test_malformed_forms_are_a_page_naming_the_field_never_a_500(p):
    """Found working: a field twice, NUL, a lone surrogate, bytes that are not UTF-8, a field of
    900 kB or 50,000 fields: a 4xx page (naming the field where one is wrong) or the form again."""
    amy = p.signed_in("amy")
    token = amy.csrf("/notifications").encode()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    bodies = {"twice": b"&description=a&description=b", "nul": b"&description=%00", "surrogate": b"&description=%ed%a0%80",
              "not utf-8": b"&description=%ff%fe&%ff=1", "bad escapes": b"&description=%zz%",
              "huge": b"&description=" + b"a" * 900_000, "many": b"".join(b"&f%d=1" % i for i in range(50_000))}
    for path in ("/complaints/new", f"/cases/{CASE_ID}/tasks/assign", f"/visits/{VISIT_ID}/attempts", "/lookup",
                 "/language", "/sales/new"):
        for name, body in bodies.items():
            answer = amy.post(path, b"csrf_token=" + token + body, headers=form)
            assert answer.status_code < 500 and answer.headers["Content-Type"].startswith("text/html"), (path, name)
            assert "Traceback" not in answer.text
            if name in ("twice", "nul"):
                assert answer.status_code == 400 and "<code>description</code>" in answer.text, (path, name)


def test_slow_clients_hold_connections_not_the_console(p):
    """Found working: a hundred clients trickling their headers do not keep others waiting."""
    parts = urlsplit(p.base)
    slow = [socket.create_connection((parts.hostname, parts.port)) for _ in range(100)]
    try:
        for sock in slow:
            sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert requests.get(p.base + "/login", timeout=10).status_code == 200
        assert time.monotonic() - started < 1
    finally:
        for sock in slow:
            sock.close()


# -- services down, slow, or talking nonsense ------------------------------------------------------

def test_a_service_trickling_its_answer_is_cut_at_the_timeout(p):
    """Observed: requests' timeout (5 s) bounds each read, not the call: an answer trickled a byte at
    a time held the page, and one of the console's 10 workers, for as long as it lasted (25 s for 25
    bytes a second apart). Expected: a call ends at the timeout (1 s here), its answer read or not."""
    amy = p.signed_in("amy")
    p.stub.answer("GET", "/v1/tasks", Answer(200, b'{"items": []}' + b" " * 30, trickle=0.2))
    started = time.monotonic()
    page = amy.get("/")
    assert page.status_code == 200 and zh("The task list is not available right now.") in page.text
    assert time.monotonic() - started < TIMEOUT + 1


def test_a_hung_service_costs_its_pages_the_timeout_once_not_every_worker(p):
    """Observed: with investigation hung, every "my work" held one of the console's 10 workers for the
    whole timeout, so a dozen staff opening it left none for the sign-in form or the stylesheet (4.5 s
    for the CSS) or for the pages of the services that were fine. Expected: a service that did not
    answer in time rests (not asked for SERVICE_REST_SECONDS): its pages say so at once, the other
    pages are not held up."""
    amy = p.signed_in("amy")
    unavailable = zh("The task list is not available right now.")
    p.stub.answer("GET", "/v1/tasks", Answer(200, {"items": []}, delay=8))
    assert unavailable in amy.get("/").text  # the first to find it hung waits for the timeout
    p.stub.answer("GET", "/v1/visits", Answer(200, {"items": []}))
    asked = len(p.stub.seen)
    pool = eventlet.GreenPool()

    def timed(path):
        started = time.monotonic()
        answer = amy.get(path) if path != "/static/console.css" else requests.get(p.base + path, timeout=20)
        return path, answer, time.monotonic() - started

    results = list(pool.imap(timed, ["/"] * 12 + ["/static/console.css", "/visits"]))
    for path, answer, took in results:
        assert answer.status_code == 200 and took < 1, (path, took)
    assert all(unavailable in answer.text for path, answer, _ in results if path == "/")
    assert zh("The call list is not available right now.") not in results[-1][1].text
    assert [seen for seen in p.stub.seen[asked:] if seen[1] == "/v1/tasks"] == []  # not asked while it rests


def test_an_answer_too_large_is_not_read_on(p):
    """Observed: an answer was read whole into memory whatever its size (a service answering a
    gigabyte would take the console's memory with it). Expected: more than 8 MB is not read on; the
    page says the service is not available."""
    amy = p.signed_in("amy")
    p.stub.answer("GET", "/v1/notifications", Answer(200, {"items": [], "pad": "x" * (9 * 1024 * 1024)}))
    page = amy.get("/notifications")
    assert page.status_code == 200 and zh("The notifications are not available right now.") in page.text


def test_the_case_library_streams_through_whatever_its_size_each_read_given_the_timeout(p):
    """New with the case library (issue 13): reporting's file goes through the console a chunk at a
    time, larger than any JSON answer may be (9 MB; the cap is 8), under reporting's own file name;
    each read has the timeout, not the whole body (a body trickling for longer than the timeout
    arrives whole); a body that goes quiet for longer ends the download unfinished (never a short
    file that looks whole), and a head that does not come within EXPORT_WAIT_SECONDS, a refusal
    or a fault are the console's error pages."""
    hq = p.signed_in("hq")
    name = 'attachment; filename="closeloop-case-library-20260825-20261122.csv"'
    body = b"case_id,category\r\n" + b"x" * (9 * 1024 * 1024)
    path = "/v1/exports/case-library.csv"
    p.stub.answer("GET", path, Answer(200, body, "text/csv; charset=utf-8", headers={"Content-Disposition": name}))
    got = hq.get("/library/case-library?format=csv&from=2026-08-25&to=2026-11-22")
    assert got.status_code == 200 and got.content == body and got.headers["Content-Disposition"] == name
    assert got.headers["Content-Type"] == "text/csv; charset=utf-8" and got.headers["Cache-Control"] == "no-store"

    p.stub.answer("GET", path, Answer(200, b"abcde", headers={"Content-Disposition": 'attachment; filename="a\\b"'},
                                      content_type="text/html", trickle=0.3))  # 1.2 s in all, 0.3 s a read
    got = hq.get("/library/case-library?format=csv")
    assert got.status_code == 200 and got.content == b"abcde"
    assert got.headers["Content-Type"] == "text/csv; charset=utf-8"  # the console's, whatever reporting says
    assert got.headers["Content-Disposition"] == 'attachment; filename="closeloop-case-library.csv"'

    p.stub.answer("GET", path, Answer(200, b"y" * 128 * 1024, trickle=TIMEOUT + 0.1, piece=64 * 1024))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):  # 64 KB of 128: the download fails
        hq.get("/library/case-library?format=csv")
    assert time.monotonic() - started < TIMEOUT + 1

    away = "The case library is not available right now: reporting is not answering. Try again in a moment."
    for answer, status, message in (
            (Answer(403, {"error": {"code": "forbidden", "message": "no"}}), 403,
             "Your role may not read the case library."),
            (Answer(400, {"error": {"code": "invalid", "message": "no", "fields": {"from": ["too early"]}}}), 400,
             "Reporting refused the case library. Check the period and the category, then try again."),
            (Answer(500, {"error": {"code": "internal", "message": "no"}}), 503, away),
            (Answer(200, b"late", delay=EXPORT_WAIT + 0.3), 503, away)):
        p.stub.answer("GET", path, answer)
        page = hq.get("/library/case-library?format=csv")
        assert page.status_code == status and zh(message) in page.text, (status, page.text[:500])
        assert page.headers["Content-Type"].startswith("text/html")
        assert status != 400 or "<code>from</code>: too early" in page.text
    asked = len(p.stub.seen)
    wrong = hq.get("/library/case-library?format=pdf&from=2026-02-30&to=x&category=poetry")
    assert wrong.status_code == 400 and len(p.stub.seen) == asked  # reporting not asked
    for named in ("format", "from", "to", "category"):
        assert f'id="e-{named}"' in wrong.text, named
    assert hq.get("/library").status_code == 200  # the console none the worse


def test_numbers_that_are_not_numbers_make_a_page_not_a_500(p):
    """Observed: a service answering a count of "many" (the task list's tabs, an alert, a visit's
    attempts) or an amount of "many" (a remedy) made the page a 500. Expected: shown as 0, the rest of
    the page drawn; an answer that is not JSON at all says the service is not available."""
    amy = p.signed_in("amy")
    odd = "many"
    p.stub.answer("GET", "/v1/tasks", Answer(200, {"items": [], "counts": {"waiting": odd, "soon": [1], "breached": {}}}))
    p.stub.answer("GET", f"/v1/cases/{CASE_ID}", Answer(200, {
        "id": CASE_ID, "reference": "SH001-20261122-0001", "branch_code": "SH001", "state": "open",
        "escalation_level": odd, "reopened": odd,
        "sla": {"first_response": {"state": "running", "due": WHEN, "remaining_seconds": odd, "paused_seconds": odd,
                                   "breach_level": odd}},
        "remedies": [{"id": "r1", "type": "refund", "amount": odd, "status": "awaiting_approval"}],
        "open_tasks": [{"name": "approve", "roles": ["store_manager"], "due": WHEN}]}))
    p.stub.answer("GET", "/v1/alerts", Answer(200, {"alerts": [{"kind": "recurring_problem", "count": odd}],
                                                    "breaching": [{"branch_code": "SH001", "cases": odd,
                                                                   "first_response": odd, "resolution": [2]}]}))
    p.stub.answer("GET", "/v1/visits", Answer(200, {"items": [{"id": VISIT_ID, "attempts_made": odd}]}))
    for path in ("/", f"/cases/{CASE_ID}", "/alerts", "/visits"):
        answer = amy.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
    p.stub.answer("GET", "/v1/tasks", Answer(200, "<html>Bad gateway</html>", "text/html"))
    assert zh("The task list is not available right now.") in amy.get("/").text


# -- replicas, the console's database, a crash ------------------------------------------------------

@pytest.fixture(scope="module")
def replica(probe, amqp_uri):
    """A second console on the same database, through a TCP proxy the test can cut."""
    proxy, through = proxied(probe.database_url)
    runner, base = start_console(amqp_uri, through, probe.clock, probe.stub)
    yield base, proxy
    stop(runner)
    proxy.close()


def test_the_console_s_database_away_is_a_503_page_and_a_replica_shares_the_sessions(p, replica):
    """Observed: with the console's database unreachable every page was a 500 ("something went
    wrong", an error logged with its traceback). Expected: a 503 page saying the database does not
    answer, with Retry-After; the sign-in form still drawn. Found working: a session signed in on one
    replica works on the other, and a sign-out on one ends it on both."""
    base, proxy = replica
    amy = p.signed_in("amy")
    other = Browser(base, timeout=20)
    other.http.cookies.update(amy.http.cookies)
    pool = eventlet.GreenPool()
    assert [a.status_code for a in pool.imap(lambda _: other.get("/notifications"), range(8))] == [200] * 8

    proxy.cut()
    try:
        down = other.get("/notifications")
        assert down.status_code == 503 and down.headers["Retry-After"]
        assert zh("The console cannot reach its database right now. Try again in a moment.") in down.text
        assert "default-src 'self'" in down.headers["Content-Security-Policy"]
        assert requests.get(base + "/login", timeout=10).status_code == 200  # the form needs no database
    finally:
        proxy.restore()
    assert other.get("/notifications").status_code == 200

    token = csrf_of(other.get("/notifications").text)
    assert other.post("/logout", {"csrf_token": token}).status_code == 303
    assert amy.get("/notifications").status_code == 303


def test_a_database_restart_between_two_requests_costs_no_page(p, replica):
    """Observed: after the console's database restarted, the requests that met the pooled connections
    it had dropped were 500s (5 of 8 at once). Expected: such a connection replaced and the request's
    session read again: every page served."""
    base, proxy = replica
    other = p.browser()
    other.http.cookies.update(p.signed_in("amy").http.cookies)
    pool = eventlet.GreenPool()
    other.base = base
    assert [a.status_code for a in pool.imap(lambda _: other.get("/notifications"), range(8))] == [200] * 8
    proxy.cut()  # a restart between two requests: the pooled connections are dead, nobody knows yet
    proxy.restore()
    assert [a.status_code for a in pool.imap(lambda _: other.get("/notifications"), range(8))] == [200] * 8


def test_a_console_killed_mid_request_comes_back_with_its_sessions(p, amqp_uri):
    """Found working: `closeloop serve console` killed with SIGKILL while a page waits on a service,
    then started again: the browser's session still signs it in."""
    port = free_port()
    env = {**os.environ, "AMQP_URI": amqp_uri, "CONSOLE_DATABASE_URL": p.database_url,
           "CONSOLE_BIND": f"127.0.0.1:{port}", "CLOSELOOP_DEV_KEYS": "1", "CLOSELOOP_DB_POOL_SIZE": "2",
           "CLOSELOOP_CUSTOMER_REF_KEY": "test-customer-ref-key",
           **{f"{name}_URL": p.stub.url for name in ("INTAKE", "INVESTIGATION", "AFTERCARE", "REPORTING")}}
    base = f"http://127.0.0.1:{port}"

    def serve():
        process = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "console"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up():
            try:
                return requests.get(base + "/health/live", timeout=1).status_code == 200
            except requests.RequestException:
                return process.poll() is not None
        wait_until(up, "the console to start", timeout=30)
        assert process.poll() is None
        return process

    process = serve()
    try:
        browser = Browser(base, timeout=20)
        assert browser.sign_in("amy").status_code == 303
        p.stub.answer("GET", "/v1/notifications", Answer(200, {"items": []}, delay=3))
        waiting = eventlet.spawn(browser.get, "/notifications")
        eventlet.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        process.wait()
        with pytest.raises(requests.ConnectionError):
            waiting.wait()
        process = serve()
        p.stub.answer("GET", "/v1/notifications", Answer(200, {"items": []}))
        assert browser.get("/notifications").status_code == 200
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_the_purge_removes_what_nobody_will_use_and_keeps_the_rest(p):
    """Found working (a guard on the purge, whose failure counts now skip rows a sign-in holds):
    sessions past their end or idle, and failure counts past their window, go; the rest stays."""
    from datetime import timedelta

    from services.console import handlers
    from services.console.policy import RULES
    from services.console.repository import ConsoleStore
    from shared.persistence import db

    amy = p.signed_in("amy")
    now = p.clock.advance(minutes=31)  # amy idle: her session goes
    p.sql("INSERT INTO login_failures VALUES ('login:old', 3, :then, :then, NULL), "
          "('login:new', 3, :now, :now, NULL), ('address:locked', 30, :then, :then, :later)",
          then=now - timedelta(hours=1), now=now, later=now + timedelta(minutes=5))
    engine = db.make_engine(p.database_url, 1)
    try:
        handlers.purge_sessions(ConsoleStore(engine), now=now, rules=RULES)
    finally:
        engine.dispose()
    assert p.sql("SELECT key FROM login_failures ORDER BY key") == [("address:locked",), ("login:new",)]
    assert p.sql("SELECT count(*) FROM sessions WHERE last_seen_at <= :t", t=now - RULES.sessions.idle) == [(0,)]
    assert amy.get("/notifications").status_code == 303
