"""HQ's dashboard (issue 11) in a real browser: Debian's headless Chromium, driven through
/usr/bin/chromedriver (`make system-packages` installs both and the CJK fonts; without them the
test fails, it never skips). Reporting runs in the test process on a database seeded through its
own handlers with 30 days of a three-branch chain: complaints of every category, some answered
late, follow-up scores, sales, return visits, and an allergy cluster on one product batch that
raises a safety signal. The page takes its token from the URL's #fragment, draws the charts from
the API, reloads them for another period, speaks English on request, and says so when the token
is bad or the role may not read KPIs. Screenshots (zh, en, 390 px) land in the test's tmp path,
printed at the end."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.reporting import handlers
from services.reporting.policy import ReportingRules
from services.reporting.repository import ReportingStore
from shared.persistence import db
from tests.e2e.test_reporting import purge_reporting_queues

pytestmark = pytest.mark.e2e
NOW = datetime(2026, 11, 22, 2, 0, tzinfo=timezone.utc)  # 10:00 in Shanghai
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BRANCHES = {"SH001": "east", "SH002": "east", "BJ001": "north"}
CATEGORIES = ["service_quality", "product_quality", "hygiene_environment", "booking", "price", "staff_attitude",
              "after_sales"]
BATCH = "B2026-11-03"
DEADLINE = 15  # seconds any one wait in the browser may take


# -- 30 days of a chain, as the events reporting hears ------------------------------------------

class Events:
    def __init__(self):
        self.all: list[dict] = []

    def add(self, source: str, event_type: str, branch: str, record: str, at: datetime, sequence: int = 1, /,
            **payload):
        self.all.append({"event_id": str(uuid.uuid4()), "source": source, "type": event_type, "sequence": sequence,
                         "occurred_at": at.isoformat(), "branch_code": branch, "correlation_id": record,
                         "payload": payload})

    def complaint(self, rng, branch: str, received: datetime, category: str, number: int, *, flags=(),
                  products=(), answered_after: float | None, resolved_after: float | None, score: int | None):
        case = str(uuid.uuid4())
        urgent = category == "safety"
        first_due, resolution_due = received + timedelta(hours=2 if urgent else 24), received + timedelta(hours=72)
        service = {"code": "HAIR-CUT", "technician_id": f"T-{rng.randint(1, 40):03d}"} if rng.random() < 0.5 else None
        self.add("intake", "complaint_registered", branch, case, received, complaint_id=case, kind="complaint",
                 reference=f"{branch}-{received:%Y%m%d}-{number:04d}", channel=rng.choice(["front_desk", "phone", "wechat"]),
                 category=category, priority="urgent" if urgent else "general", severity_flags=list(flags),
                 received_at=received.isoformat(), region=BRANCHES[branch], first_response_due=first_due.isoformat(),
                 resolution_due=resolution_due.isoformat(), customer_ref=f"c-{case[:8]}",
                 service=service, products=list(products))
        self.add("investigation", "case_opened", branch, case, received + timedelta(minutes=1), case_id=case,
                 kind="complaint", category=category, priority="urgent" if urgent else "general",
                 received_at=received.isoformat(), first_response_due=first_due.isoformat(),
                 resolution_due=resolution_due.isoformat())
        if answered_after is not None:
            at = received + timedelta(hours=answered_after)
            self.add("investigation", "case_acknowledged", branch, case, at, 2, case_id=case, channel="phone",
                     within_sla=at <= first_due)
        if resolved_after is not None:
            at = received + timedelta(hours=resolved_after)
            self.add("investigation", "case_resolved", branch, case, at, 3, case_id=case, resolved_at=at.isoformat(),
                     within_sla=at <= resolution_due, reopened=0)
            if score is not None:
                self.add("aftercare", "visit_completed", branch, case, at + timedelta(days=1), 2, case_id=case,
                         kind="follow_up", visit_id=str(uuid.uuid4()), score=score, answers={"satisfaction": score})

    def inquiry(self, branch: str, received: datetime, answered_after: float | None):
        case, due = str(uuid.uuid4()), received + timedelta(hours=24)
        self.add("intake", "feedback_registered", branch, case, received, complaint_id=case, kind="inquiry",
                 reference=f"{branch}-{received:%Y%m%d}-9{case[:3]}", channel="phone", category="after_sales",
                 priority="low", severity_flags=[], received_at=received.isoformat(), region=BRANCHES[branch],
                 first_response_due=due.isoformat(), resolution_due=due.isoformat(), customer_ref=None)
        if answered_after is not None:
            at = received + timedelta(hours=answered_after)
            self.add("investigation", "case_acknowledged", branch, case, at, 2, case_id=case, channel="phone",
                     within_sla=at <= due)
            self.add("investigation", "case_closed", branch, case, at, 3, case_id=case, outcome="answered")

    def sale(self, rng, branch: str, sold: datetime, *, batch: str | None = None, outcome: str | None = None,
             reaction_at: datetime | None = None):
        sale, visit = str(uuid.uuid4()), str(uuid.uuid4())
        technician = f"T-{rng.randint(1, 9):03d}"
        self.add("intake", "sale_recorded", branch, sale, sold, sale_id=sale, sold_at=sold.isoformat(),
                 items=[{"type": "service", "code": "HAIR-DYE", "product_type": "hair_colour",
                         "technician_id": technician, "batch": batch}])
        if outcome is None:
            return
        due = sold + timedelta(days=3)
        common = {"visit_id": visit, "kind": "return", "sale_id": sale}
        self.add("aftercare", "visit_scheduled", branch, sale, sold, 1, **common, due_at=due.isoformat())
        if outcome == "completed":
            self.add("aftercare", "visit_completed", branch, sale, due, 3, **common, score=rng.randint(3, 5),
                     answers={"discomfort": reaction_at is not None})
        elif outcome == "abandoned":
            self.add("aftercare", "visit_abandoned", branch, sale, due + timedelta(days=2), 3, **common, attempts=3)
        if reaction_at is not None:
            self.add("aftercare", "adverse_reaction_reported", branch, sale, reaction_at, 2, **common,
                     technician_id=technician, product={"sku": "DYE-5N", "batch": batch},
                     reported_at=reaction_at.isoformat(), severity_flags=["allergy"])


def chain_month() -> list[dict]:
    rng = random.Random(11)
    events, number = Events(), 0
    for days_ago in range(29):
        for branch in BRANCHES:
            for _ in range(rng.choice([0, 0, 1, 1, 2] if branch != "SH002" else [0, 1, 1, 2])):
                number += 1
                received = NOW - timedelta(days=days_ago, hours=rng.uniform(0.5, 9))
                category = ("hygiene_environment" if branch == "SH002" and rng.random() < 0.4
                            else rng.choice(CATEGORIES))
                late = rng.random() < 0.25
                answered = None if days_ago < 2 and rng.random() < 0.5 else rng.uniform(25, 40) if late else \
                    rng.uniform(0.5, 12)
                resolved = rng.uniform(20, 100) if days_ago >= 4 and answered is not None else None
                events.complaint(rng, branch, received, category, number, answered_after=answered,
                                 resolved_after=resolved, score=rng.choice([2, 3, 4, 4, 5, 5, None]))
            for _ in range(rng.randint(4, 7)):
                sold = NOW - timedelta(days=days_ago, hours=rng.uniform(0.5, 9))
                outcome = None if days_ago < 3 else rng.choice(["completed", "completed", "completed", "abandoned",
                                                                "open"])
                events.sale(rng, branch, sold, outcome=outcome)
    # An allergy cluster: one dye batch, reactions at two branches within a fortnight (a safety
    # signal across the chain) and the complaints they led to.
    for branch, days_ago in (("SH001", 12), ("BJ001", 8), ("SH001", 5)):
        sold = NOW - timedelta(days=days_ago, hours=3)
        events.sale(rng, branch, sold, batch=BATCH, outcome="completed", reaction_at=sold + timedelta(days=1))
        number += 1
        events.complaint(rng, branch, sold + timedelta(days=1, hours=2), "safety", number, flags=["allergy"],
                         products=[{"sku": "DYE-5N", "batch": BATCH}], answered_after=1, resolved_after=30, score=3)
    # Consultations, counted apart: two answered (one late), one waiting.
    for branch, days_ago, answered in (("SH001", 6, 2.0), ("BJ001", 3, 30.0), ("SH002", 0, None)):
        events.inquiry(branch, NOW - timedelta(days=days_ago, hours=4), answered)
    return events.all


# -- the browser ------------------------------------------------------------------------------

def _need_system_packages(what: str):
    pytest.fail(f"{what}: run `make system-packages` (Debian's chromium, chromium-driver and fonts-noto-cjk)",
                pytrace=False)


@pytest.fixture
def browser():
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            _need_system_packages(f"{path} is missing")
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True) \
        if shutil.which("fc-list") else None
    if fonts is None or not fonts.stdout.strip():
        _need_system_packages("no font for Chinese is installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: run `make install` (the test extras)", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path too, selenium-manager never runs
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP refusals, errors
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=zh-CN",
                "--window-size=1280,2000", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:
        _need_system_packages(f"Chromium did not start through {CHROMEDRIVER} ({str(exc).splitlines()[0][:200]})")
    driver.set_page_load_timeout(DEADLINE)
    yield driver
    driver.quit()


def wait(driver, condition, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, DEADLINE, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        state = driver.execute_script("return [document.body.dataset.state, "
                                      "(document.getElementById('message') || {}).textContent]")
        raise AssertionError(f"waited {DEADLINE}s for {what}; the page's state: {state}") from None


def js(driver, script: str, *args):
    return driver.execute_script(script, *args)


def ready(driver) -> bool:
    return js(driver, "return document.body.dataset.state") == "ready" and \
        int(js(driver, "return document.getElementById('chart-categories').dataset.marks || 0")) > 0


def texts(driver, selector: str) -> list[str]:
    return js(driver, "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent.trim())", selector)


def period(driver) -> str:
    return js(driver, "return document.getElementById('period').dataset.period")


def kpi_requests(driver) -> list[str]:
    return js(driver, "return performance.getEntriesByType('resource').map(e => e.name)"
                      ".filter(n => n.includes('/v1/kpis'))")


def screenshot(driver, folder, name: str, width: int, most: int = 3000) -> str:
    height, chrome = js(driver, "return [document.documentElement.scrollHeight, outerHeight - innerHeight]")
    driver.set_window_size(width, min(max(height, 800), most) + chrome)
    path = str(folder / f"dashboard-{name}.png")
    assert driver.save_screenshot(path), path
    return path


@pytest.fixture
def reporting(start_service, database_factory, amqp_uri, clock):
    clock.set(NOW)
    purge_reporting_queues(amqp_uri)  # what other tests left for reporting is not this chain's
    url = database_factory("reporting")
    store = ReportingStore(db.make_engine(url, 2))
    events = chain_month()
    for start in range(0, len(events), 500):
        handlers.ingest(store, events=events[start:start + 500], rules=ReportingRules(), now=NOW)
    store.engine.dispose()
    return start_service("reporting", clock=clock, database_url=url)


def test_the_dashboard_draws_the_chain_in_chinese_and_english_from_the_token_in_the_fragment(
        reporting, browser, token, tmp_path):
    from selenium.webdriver.common.by import By

    shots = tmp_path / "screenshots"
    shots.mkdir()
    page = reporting.url("/dashboard")
    browser.get(f"{page}#token={token('hq_analyst', branch='*')}")
    wait(browser, ready, "the charts drawn with data")

    # The token left the visible URL and stays in this tab only.
    assert "token" not in browser.current_url and browser.current_url == page
    assert js(browser, "return sessionStorage.getItem('closeloop.dashboard.token')")
    assert js(browser, "return document.documentElement.lang") == "zh-CN"
    assert period(browser) == "2026-10-24/2026-11-22"
    problems = [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems  # nothing refused by the page's CSP, no script error

    legend = texts(browser, "#chart-categories .legend li")
    assert {"环境卫生", "服务质量", "安全"} <= set(legend), legend
    hygiene = browser.find_element(By.XPATH, "//*[@id='chart-categories']//li[normalize-space()='环境卫生']")
    assert hygiene.is_displayed() and hygiene.size["width"] > 20
    for chart in ("chart-sla", "chart-score"):
        assert int(js(browser, f"return document.getElementById('{chart}').dataset.marks")) > 0, chart
    assert texts(browser, "#league tbody th") and sorted(texts(browser, "#league tbody th")) == sorted(BRANCHES)
    assert texts(browser, "#league thead th")[:3] == ["门店", "投诉", "每百次服务投诉"]
    signals = texts(browser, "#alerts li[data-kind='safety_signal']")
    assert len(signals) == 1, f"one safety signal among the alerts: {texts(browser, '#alerts li')}"
    signal = signals[0]
    assert "产品安全信号" in signal and BATCH in signal and "3 例不良反应" in signal, signal
    assert any("环境卫生" in a for a in texts(browser, "#alerts li[data-kind='recurring_problem']"))
    assert js(browser, "return [...document.querySelectorAll('#breaching li[data-branch]')].length"), \
        "the branches breaching their SLA now"
    aftercare = dict(zip(texts(browser, "#aftercare .name"), texts(browser, "#aftercare .value")))
    assert aftercare["不良反应"] == "3" and aftercare["应回访"] != "0" and aftercare["接通率"].endswith("%")
    inquiries = dict(zip(texts(browser, "#inquiries .name"), texts(browser, "#inquiries .value")))
    assert (inquiries["咨询"], inquiries["已答复"], inquiries["按时答复"], inquiries["转为投诉"]) == ("3", "2", "50%", "0")
    zh = screenshot(browser, shots, "zh", 1280)
    browser.set_window_size(1280, 2000)

    # Another period: the charts are asked for again with its dates, by week for 90 days.
    marks = int(js(browser, "return document.getElementById('chart-categories').dataset.marks"))
    browser.find_element(By.CSS_SELECTOR, "button[data-days='7']").click()
    wait(browser, lambda d: period(d) == "2026-11-16/2026-11-22" and ready(d), "the last 7 days drawn")
    assert any("group_by=day" in u and "from=2026-11-16" in u and "to=2026-11-22" in u
               for u in kpi_requests(browser)), kpi_requests(browser)
    assert int(js(browser, "return document.getElementById('chart-categories').dataset.marks")) < marks
    assert js(browser, "return document.querySelector(\"button[data-days='7']\").getAttribute('aria-pressed')") == "true"
    browser.find_element(By.CSS_SELECTOR, "button[data-days='90']").click()
    wait(browser, lambda d: period(d) == "2026-08-25/2026-11-22" and ready(d), "the last 90 days drawn")
    assert any("group_by=week" in u and "from=2026-08-25" in u for u in kpi_requests(browser))
    assert "按周" in browser.find_element(By.ID, "period").text
    js(browser, "document.getElementById('from').value = '2026-11-01'; document.getElementById('to').value = '2026-11-14'")
    browser.find_element(By.CSS_SELECTOR, "#custom button[type='submit']").click()
    wait(browser, lambda d: period(d) == "2026-11-01/2026-11-14" and ready(d), "the chosen dates drawn")
    assert len(js(browser, "return document.querySelectorAll('#chart-categories text.axis')")) > 5
    js(browser, "document.getElementById('from').value = '2026-11-15'")  # after its end: said, figures kept
    browser.find_element(By.CSS_SELECTOR, "#custom button[type='submit']").click()
    wait(browser, lambda d: "周期无效" in d.find_element(By.ID, "message").text, "the wrong period named")
    assert browser.find_element(By.ID, "content").is_displayed() and period(browser) == "2026-11-01/2026-11-14"
    browser.find_element(By.CSS_SELECTOR, "button[data-days='90']").click()
    wait(browser, lambda d: period(d) == "2026-08-25/2026-11-22" and ready(d), "the last 90 days again")
    assert not browser.find_element(By.ID, "message").is_displayed()

    # English, from the figures already loaded.
    browser.find_element(By.CSS_SELECTOR, "button[data-lang='en']").click()
    wait(browser, lambda d: "Hygiene & environment" in texts(d, "#chart-categories .legend li"), "English labels")
    assert js(browser, "return document.documentElement.lang") == "en"
    assert "Branch league table" in texts(browser, "h2") and "by week" in browser.find_element(By.ID, "period").text
    assert "Product safety signal" in texts(browser, "#alerts li[data-kind='safety_signal']")[0]
    en = screenshot(browser, shots, "en", 1280)

    # A phone's width: nothing wider than the screen but the tables' own scrolling.
    browser.find_element(By.CSS_SELECTOR, "button[data-lang='zh']").click()
    browser.set_window_size(390, 2400)
    wait(browser, lambda d: js(d, "return document.querySelector('#chart-categories svg').getAttribute('width')")
         and int(js(d, "return document.querySelector('#chart-categories svg').getAttribute('width')")) <= 390,
         "the charts drawn again for 390 px")
    assert js(browser, "return document.documentElement.scrollWidth") <= 390
    phone = screenshot(browser, shots, "zh-390px", 390, most=1600)
    browser.set_window_size(1280, 1000)

    # No token, a bad one, a role that may not read KPIs: each says so (in Chinese by default).
    js(browser, "sessionStorage.clear(); localStorage.clear()")
    for fragment, kind, words in (("", "missing", "缺少访问令牌"), ("#token=not-a-token", "expired", "令牌无效或已过期"),
                                  (f"#token={token('front_desk', branch='SH001')}", "forbidden", "无权查看指标")):
        browser.get("about:blank")
        browser.get(page + fragment)
        wait(browser, lambda d: js(d, "return document.body.dataset.state") == "error", f"the {kind} message")
        message = browser.find_element(By.ID, "message")
        assert message.is_displayed() and message.get_attribute("data-error") == kind and words in message.text
        assert ("closeloop token issue --role hq_analyst" in message.text) == (kind != "forbidden"), message.text
        assert not browser.find_element(By.ID, "content").is_displayed()
    assert js(browser, "return sessionStorage.getItem('closeloop.dashboard.token')") is not None  # 403: kept
    error = screenshot(browser, shots, "forbidden", 1280)
    print(f"\ndashboard screenshots: {zh} {en} {phone} {error}")
