"""The staff console (issue 12, its foundation) running as a nameko service in the test process on
a real PostgreSQL, driven over HTTP as a browser would (cookies, forms, htmx headers): staff
accounts from the CLI, signing in and out, guessing slowed and locked, sessions (fixation, idle
expiry on the injected clock, a disabled staff member), CSRF, HTML injection, and "my work" read
from a real investigation service with the staff member's own token."""
from __future__ import annotations

import io
import json
import re
from datetime import datetime
import sys
import time
import uuid
from dataclasses import dataclass
import pytest
import requests
from requests.adapters import HTTPAdapter
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.console import models
from shared import cli
from shared.messaging.relay import Publisher
from shared.testing.fixtures import wait_until
from shared.testing.samples import complaint_event

pytestmark = pytest.mark.e2e
PASSWORD = "correct-horse-1"
NOBODY = "http://127.0.0.1:9"  # nothing listens: a service that is down


@dataclass
class Console:
    service: object
    database_url: str
    clock: object

    def browser(self, **headers) -> "Browser":
        return Browser(self.service.base_url, headers)

    def staff(self, *argv, password: str = PASSWORD) -> int:
        """`closeloop staff ...` in this process, the password on standard input."""
        stdin = sys.stdin
        sys.stdin = io.StringIO(password + "\n")
        try:
            return cli.main(["staff", *argv])
        finally:
            sys.stdin = stdin

    def add(self, login: str, role: str = "store_manager", branch: str = "SH001", name: str | None = None) -> None:
        assert self.staff("add", login, "--name", name or f"{login} 店长", "--role", role, "--branch", branch) == 0

    def sql(self, statement, **params):
        engine = sa.create_engine(self.database_url)
        try:
            with engine.begin() as conn:
                return conn.execute(sa.text(statement), params).all() if statement.lstrip().upper().startswith(
                    "SELECT") else conn.execute(sa.text(statement), params).rowcount
        finally:
            engine.dispose()


class _FromAddress(HTTPAdapter):
    """Connections from a local address of our choosing (e.g. 127.0.0.2: a gateway)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


class Browser:
    """A requests session with cookies, as a browser holds them; never follows redirects.
    `source`: the local address its connections come from."""

    def __init__(self, base: str, headers: dict | None = None, source: str | None = None, timeout: float = 10):
        self.base, self.http, self.timeout = base, requests.Session(), timeout
        self.http.headers.update(headers or {})
        if source:
            self.http.mount("http://", _FromAddress(source))

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.http.get(self.base + path, allow_redirects=False, **kwargs)

    def post(self, path: str, data=None, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return self.http.post(self.base + path, data=data, allow_redirects=False, **kwargs)

    @property
    def session_id(self) -> str | None:
        return self.http.cookies.get("closeloop_session")

    def csrf(self, path: str = "/login") -> str:
        page = self.get(path)
        assert page.status_code == 200, page.text[:500]
        return csrf_of(page.text)

    def sign_in(self, login: str, password: str = PASSWORD, **headers) -> requests.Response:
        return self.post("/login", {"login": login, "password": password, "csrf_token": self.csrf()}, headers=headers)


def csrf_of(text: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', text).group(1)


@pytest.fixture
def console(start_service, database_factory, clock, monkeypatch):
    """The console on a fresh database, on the test's clock; investigation and reporting
    unreachable unless a test starts them (console_with(...))."""
    def start(**overrides) -> Console:
        url = database_factory("console")
        monkeypatch.setenv("CONSOLE_DATABASE_URL", url)  # what `closeloop staff` works on
        overrides.setdefault("INVESTIGATION_URL", NOBODY)
        overrides.setdefault("REPORTING_URL", NOBODY)  # (not a reporting `make dev` may run on this machine)
        service = start_service("console", clock=clock, database_url=url, **overrides)
        return Console(service, url, clock)
    return start


def test_the_console_s_migration_builds_what_its_models_describe(database_factory):
    engine = sa.create_engine(database_factory("console"))
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), models.metadata)
    engine.dispose()
    assert [d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")] == []


def test_staff_commands_add_disable_and_reset_a_password_and_refuse_naming_every_field(console, capsys):
    c = console()
    assert c.staff("add", "amy", "--name", "王店长", "--role", "store_manager", "--branch", "SH001") == 0
    assert c.staff("add", "rita", "--name", "Rita", "--role", "regional_manager", "--region", "east") == 0
    assert c.staff("add", "hq", "--name", "HQ", "--role", "hq_admin", "--branch", "*") == 0
    rows = c.sql("SELECT login, role, scope_kind, scope_value, active, password_hash FROM staff ORDER BY login")
    assert [tuple(r[:5]) for r in rows] == [("amy", "store_manager", "branch", "SH001", True),
                                           ("hq", "hq_admin", "all", None, True),
                                           ("rita", "regional_manager", "region", "east", True)]
    assert all(r[5].startswith("$argon2id$") and PASSWORD not in r[5] for r in rows)
    capsys.readouterr()

    assert c.staff("add", "Bad Login", "--name", " ", "--role", "boss", "--branch", "XX9", password="short") == 2
    err = capsys.readouterr().err
    for field in ("login", "name", "role", "branch", "password"):
        assert f"  - {field}: " in err, err
    assert c.staff("add", "amy", "--name", "again", "--role", "front_desk", "--region", "nowhere") == 2
    assert "region: unknown region" in capsys.readouterr().err
    assert c.staff("add", "amy", "--name", "again", "--role", "front_desk", "--branch", "SH001") == 2
    assert "login: already taken" in capsys.readouterr().err
    assert c.staff("disable", "nobody") == 2 and "no staff member" in capsys.readouterr().err
    assert c.staff("reset-password", "amy", password="tiny") == 2

    browser = c.browser()
    assert browser.sign_in("amy").status_code == 303
    assert c.staff("reset-password", "amy", password="a-new-password-2") == 0
    assert "1 session(s) ended" in capsys.readouterr().out
    assert browser.get("/").status_code == 303  # signed out by the reset
    assert c.browser().sign_in("amy").status_code == 401
    assert c.browser().sign_in("amy", "a-new-password-2").status_code == 303
    assert c.staff("disable", "amy") == 0
    assert c.sql("SELECT active FROM staff WHERE login = 'amy'") == [(False,)]
    assert c.browser().sign_in("amy", "a-new-password-2").status_code == 401


def test_signing_in_gives_a_new_session_and_signing_out_ends_it(console):
    c = console()
    c.add("amy")
    browser = c.browser()
    form = browser.get("/login")
    assert form.status_code == 200 and 'name="login"' in form.text and 'name="password"' in form.text
    assert "登录" in form.text and 'lang="zh-CN"' in form.text
    cookie = form.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    before = browser.session_id

    signed = browser.post("/login", {"login": "AMY", "password": PASSWORD,
                                     "csrf_token": re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)})
    assert signed.status_code == 303 and signed.headers["Location"] == "/"
    after = browser.session_id
    assert after and after != before  # no session fixation: the pre-login id is not the signed-in one
    assert c.sql("SELECT count(*) FROM sessions") == [(1,)]  # the form's session ended
    page = browser.get("/")
    assert page.status_code == 200 and "amy 店长" in page.text and "我的工作" in page.text
    assert "Content-Security-Policy" in page.headers and "'unsafe" not in page.headers["Content-Security-Policy"]

    # An attacker who planted the old id has nothing.
    planted = c.browser()
    planted.http.cookies.set("closeloop_session", before)
    assert planted.get("/").status_code == 303

    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    out = browser.post("/logout", {"csrf_token": token})
    assert out.status_code == 303 and out.headers["Location"] == "/login"
    stolen = c.browser()
    stolen.http.cookies.set("closeloop_session", after)
    assert stolen.get("/").status_code == 303 and c.sql("SELECT count(*) FROM sessions") == [(0,)]

    behind_tls = c.browser(**{"X-Forwarded-Proto": "https"}).get("/login")
    assert "Secure" in behind_tls.headers["Set-Cookie"]


def test_wrong_passwords_are_slowed_then_the_login_is_locked_and_unknown_logins_look_the_same(console):
    c = console()
    c.add("amy")
    browser = c.browser()
    for _ in range(3):  # free
        wrong = browser.sign_in("amy", "wrong-password")
        assert wrong.status_code == 401 and "账号或密码错误" in wrong.text
    held = browser.sign_in("amy", PASSWORD)  # too soon after the third: not even the right password
    assert held.status_code == 429 and held.headers["Retry-After"] == "2"
    for failures in range(3, 10):
        c.clock.advance(seconds=2 ** (failures - 2))
        assert browser.sign_in("amy", "wrong-password").status_code == 401
    c.clock.advance(minutes=5)
    locked = browser.sign_in("amy", PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) == 10 * 60
    c.clock.advance(minutes=10)
    assert browser.sign_in("amy", PASSWORD).status_code == 303

    ghost = c.browser().sign_in("no.such.person", "wrong-password")
    assert ghost.status_code == 401 and "账号或密码错误" in ghost.text

    # One address guessing many logins: locked at 30 failures; another address is not.
    c.clock.advance(hours=1)
    guesser = c.browser(**{"X-Forwarded-For": "203.0.113.9"})
    for n in range(30):
        assert guesser.sign_in(f"guess{n // 3}", "wrong-password").status_code == 401
    assert guesser.sign_in("amy", PASSWORD).status_code == 429
    assert c.browser(**{"X-Forwarded-For": "198.51.100.7"}).sign_in("amy", PASSWORD).status_code == 303

    bad = c.browser()
    missing = bad.post("/login", {"login": "", "csrf_token": bad.csrf()})
    assert missing.status_code == 400 and missing.text.count('aria-invalid="true"') == 2


def test_an_idle_session_expires_on_the_console_s_clock(console):
    c = console()
    c.add("amy")
    browser = c.browser()
    assert browser.sign_in("amy").status_code == 303
    for _ in range(3):  # in use: kept alive past the idle limit in all
        c.clock.advance(minutes=25)
        assert browser.get("/").status_code == 200
    c.clock.advance(minutes=31)
    ended = browser.get("/")
    assert ended.status_code == 303 and ended.headers["Location"] == "/login?ended=expired"
    assert "您的登录已过期" in browser.get("/login?ended=expired").text
    assert c.sql("SELECT count(*) FROM sessions WHERE staff_id IS NOT NULL") == [(0,)]


def test_a_disabled_staff_member_is_signed_out_on_the_next_request(console):
    c = console()
    c.add("amy")
    c.add("bob")
    amy, bob = c.browser(), c.browser()
    assert amy.sign_in("amy").status_code == 303 and bob.sign_in("bob").status_code == 303
    assert c.staff("disable", "amy") == 0  # the command ends her sessions at once
    assert amy.get("/").status_code == 303
    # Disabled where the sessions stay (another tool, a restored backup): the next request ends them.
    c.sql("UPDATE staff SET active = false WHERE login = 'bob'")
    poll = bob.get("/", headers={"HX-Request": "true"})  # an htmx poll: the page is sent to the sign-in form
    assert poll.status_code == 200 and poll.headers["HX-Redirect"] == "/login?ended=disabled"
    assert c.sql("SELECT count(*) FROM sessions WHERE staff_id IS NOT NULL") == [(0,)]


def test_a_state_changing_request_without_the_session_s_csrf_token_is_refused(console):
    c = console()
    c.add("amy")
    browser = c.browser()
    assert browser.sign_in("amy").status_code == 303
    token = browser.csrf("/")
    for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}), ({}, {"X-CSRF-Token": "forged"})):
        refused = browser.post("/logout", data, headers=headers)
        assert refused.status_code == 403 and "表单已过期" in refused.text
    assert browser.get("/").status_code == 200  # still signed in
    assert browser.post("/language", {"language": "en"}).status_code == 403
    # Without a session the sign-in form posts nothing either (its token lives in the form's session).
    fresh = c.browser()
    assert fresh.post("/login", {"login": "amy", "password": PASSWORD, "csrf_token": token}).status_code == 403
    assert browser.post("/logout", {}, headers={"X-CSRF-Token": token}).status_code == 303  # htmx's header


def test_html_in_names_and_typed_logins_is_shown_as_text(console):
    c = console()
    c.add("amy", name='<script>alert("x")</script>王')
    browser = c.browser()
    assert browser.sign_in("amy").status_code == 303
    page = browser.get("/").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;王" in page
    typed = browser.post("/login", {"login": '"><img src=x onerror=alert(1)>', "password": "x" * 12,
                                    "csrf_token": browser.csrf("/")})
    assert "<img src=x" not in typed.text and "&lt;img src=x" in typed.text


def test_assets_go_gzipped_to_browsers_that_take_it_and_a_revalidation_costs_a_304(console):
    c = console()
    base = c.service.base_url + "/static/console.css"
    plain = requests.get(base, headers={"Accept-Encoding": "identity"}, timeout=10)
    packed = requests.get(base, headers={"Accept-Encoding": "gzip, deflate"}, timeout=10)
    assert "Content-Encoding" not in plain.headers and packed.headers["Content-Encoding"] == "gzip"
    assert packed.content == plain.content  # requests unpacks it: the same stylesheet
    assert int(packed.headers["Content-Length"]) * 3 < int(plain.headers["Content-Length"])
    assert plain.headers["Vary"] == "Accept-Encoding" and plain.headers["ETag"] == packed.headers["ETag"]
    again = requests.get(base, headers={"If-None-Match": plain.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    refused = requests.get(base, headers={"Accept-Encoding": "gzip;q=0"}, timeout=10)
    assert "Content-Encoding" not in refused.headers
    page = requests.get(c.service.base_url + "/login", headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert "Content-Encoding" not in page.headers  # pages carry the CSRF token: never compressed


def test_unknown_pages_and_bad_forms_answer_a_page_without_a_trace(console):
    c = console()
    browser = c.browser()
    missing = browser.get("/no/such/page")
    assert missing.status_code == 404 and "没有这个页面" in missing.text and "Traceback" not in missing.text
    assert browser.get("/static/../service.py").status_code == 404
    assert browser.get("/static/vendor/htmx-2.0.11.min.js").headers["Content-Type"].startswith("text/javascript")
    twice = browser.http.post(browser.base + "/login", data=[("login", "a"), ("login", "b")], allow_redirects=False)
    assert twice.status_code in (400, 403) and "Traceback" not in twice.text
    token = browser.csrf()
    repeated = browser.http.post(browser.base + "/login", data=[("csrf_token", token), ("login", "a"), ("login", "b")],
                                 allow_redirects=False)
    assert repeated.status_code == 400 and "<code>login</code>" in repeated.text
    assert browser.get("/health").json()["status"] == "ok"


# -- my work, from a real investigation service ----------------------------------------------------

def publish(amqp_uri: str, envelope: dict) -> None:
    publisher = Publisher(amqp_uri)
    try:
        publisher.publish_batch([("intake.events", envelope["type"], json.dumps(envelope),
                                  envelope["event_id"])])
    finally:
        publisher.close()


def complaint_at(branch: str, reference: str, region: str) -> dict:
    event = complaint_event()
    event["branch_code"] = branch
    event["payload"].update(reference=reference, region=region)
    return event


def test_my_work_lists_the_store_manager_s_tasks_from_investigation_and_not_another_branch_s(
        console, start_service, amqp_uri, clock, token):
    investigation = start_service("investigation", clock=clock)
    c = console(INVESTIGATION_URL=investigation.base_url)
    mine = complaint_at("SH001", "SH001-20261122-<b>0001</b>", "east")
    theirs = complaint_at("SH002", "SH002-20261122-0002", "east")
    for event in (mine, theirs):
        publish(amqp_uri, event)
    manager = {"Authorization": f"Bearer {token('store_manager', branch='*')}"}
    for event in (mine, theirs):
        case = f"{investigation.base_url}/v1/cases/{event['correlation_id']}"
        wait_until(lambda: requests.get(case, headers=manager, timeout=5).status_code == 200, "the case to open")

    c.add("amy", branch="SH001")
    browser = c.browser()
    assert browser.sign_in("amy").status_code == 303
    page = browser.get("/")
    assert page.status_code == 200, page.text[:300]
    assert "SH001-20261122-&lt;b&gt;0001&lt;/b&gt;" in page.text and "<b>0001" not in page.text
    assert "SH002-20261122-0002" not in page.text
    assert "指派负责人" in page.text and "2026年11月23日 10:00" in page.text  # the first response due, Shanghai
    assert "剩余 1天0小时0分" in page.text and 'data-due="2026-11-23T02:00:00+00:00"' in page.text

    poll = browser.get("/", headers={"HX-Request": "true"})  # htmx's refresh: the list alone
    assert poll.status_code == 200 and "<html" not in poll.text and "SH001-20261122" in poll.text

    assert browser.post("/language", {"language": "en", "csrf_token": browser.csrf("/")}).status_code == 303
    english = browser.get("/").text
    assert "Assign an owner" in english and "2026-11-23 10:00" in english and 'lang="en"' in english

    c.clock.advance(hours=25)  # overdue (and the session long idle: signed in again)
    assert browser.get("/").status_code == 303 and browser.sign_in("amy").status_code == 303
    assert "已超时 1小时0分" in browser.get("/").text  # a new session: the default language again

    # The store manager of SH002 sees theirs only; the region's manager sees both.
    c.add("bo", branch="SH002")
    other = c.browser()
    other.sign_in("bo")
    assert "SH002-20261122-0002" in other.get("/").text and "SH001-20261122" not in other.get("/").text
    assert c.staff("add", "rita", "--name", "Rita", "--role", "regional_manager", "--region", "east") == 0


def test_my_work_has_breaching_soon_and_breached_tabs_and_filters_kept_in_the_url(
        console, start_service, amqp_uri, clock, token):
    investigation = start_service("investigation", clock=clock)
    c = console(INVESTIGATION_URL=investigation.base_url)
    early = complaint_at("SH001", "SH001-20261121-0009", "east")
    early["payload"].update(received_at="2026-11-21T02:00:00Z", first_response_due="2026-11-22T20:00:00Z")
    urgent = complaint_at("SH002", "SH002-20261122-0003", "east")
    urgent["payload"].update(priority="urgent", severity_flags=["allergy"], first_response_due="2026-11-23T01:00:00Z")
    later = complaint_at("SH001", "SH001-20261122-0004", "east")
    hq = {"Authorization": f"Bearer {token('hq_admin')}"}
    for event in (early, urgent, later):
        publish(amqp_uri, event)
    clocks = {}
    for event in (early, urgent, later):
        url = f"{investigation.base_url}/v1/cases/{event['correlation_id']}"
        wait_until(lambda: requests.get(url, headers=hq, timeout=5).status_code == 200, "the case to open")
        sla = requests.get(url, headers=hq, timeout=5).json()["sla"]["first_response"]
        clocks[event["payload"]["reference"]] = {k: datetime.fromisoformat(sla[k]) for k in ("warning_at", "due")}
    order = ["SH001-20261121-0009", "SH002-20261122-0003", "SH001-20261122-0004"]  # by deadline

    def due_state(reference, now):
        clock = clocks[reference]
        return "breached" if clock["due"] <= now else "soon" if clock["warning_at"] <= now else "ok"

    now = clocks[order[0]]["warning_at"]
    c.clock.set(now)  # the early one is breaching soon; the last is not
    soon = [r for r in order if due_state(r, now) == "soon"]
    assert order[0] in soon and order[2] not in soon
    c.add("amy", branch="*")  # a store manager over every branch (a chain's duty manager)
    browser = c.browser()
    browser.sign_in("amy")

    def listed(path):
        page = browser.get(path)
        assert page.status_code == 200, page.text[:300]
        return page.text, re.findall(r'<span class="ref">([^<]+)</span>', page.text)

    page, refs = listed("/")
    assert refs == order and f"即将超时：{len(soon)}" in page and 'href="/?deadline=soon"' in page
    assert 'aria-current="page">全部待办：3' in page
    page, refs = listed("/?deadline=soon")
    assert refs == soon and f'aria-current="page">即将超时：{len(soon)}' in page
    # the filters narrow the tabs' counts too, and the tabs keep them in their links
    page, refs = listed("/?branch=SH002&priority=urgent")
    assert refs == ["SH002-20261122-0003"] and "全部待办：1" in page
    assert 'href="/?branch=SH002&amp;priority=urgent&amp;deadline=soon"' in page
    assert '<option value="SH002" selected>' in page
    c.clock.set(clocks[order[0]]["due"])  # hours on: signed in again (the session idled out)
    assert browser.sign_in("amy").status_code == 303
    page, refs = listed("/?deadline=breached&branch=SH001")
    assert refs == [order[0]] and "已超时：1" in page
    poll = browser.get("/?deadline=breached&branch=SH001", headers={"HX-Request": "true"})
    assert "<html" not in poll.text and re.findall(r'<span class="ref">([^<]+)</span>', poll.text) == refs
    # an old bookmark's branch out of reach (or nonsense) is left out, not an error
    page, refs = listed("/?branch=NOPE&deadline=late&priority=<b>")
    assert refs == order and "&lt;b&gt;" not in page and "<b>" not in page


def test_my_work_says_so_when_investigation_is_down(console):
    c = console()
    c.add("amy")
    browser = c.browser()
    browser.sign_in("amy")
    page = browser.get("/")
    assert page.status_code == 200 and "任务列表暂时无法读取" in page.text


def test_the_tokens_the_console_signs_carry_the_staff_member_and_live_minutes(console):
    from services.console.clients import StaffTokens
    from services.console.repository import StaffMember
    from shared.runtime import provider

    member = StaffMember(id=str(uuid.uuid4()), login="amy", display_name="Amy", role="store_manager",
                         scope_kind="branch", scope_value="SH001", active=True, password_hash="")
    tokens = StaffTokens()
    first = tokens.for_session("s1", member)
    assert tokens.for_session("s1", member) == first and tokens.for_session("s2", member) != first
    identity = provider.verifier(None).identity(first)
    assert (identity.subject, identity.role, identity.branches) == ("amy", "store_manager", frozenset({"SH001"}))
    assert 4 * 60 < identity.expires_at - time.time() <= 5 * 60 + 1  # RULES.tokens.ttl: 5 minutes
