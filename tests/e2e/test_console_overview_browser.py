"""The overview pages in a real browser (Debian's headless Chromium through /usr/bin/chromedriver, at
390 px): the east's regional manager signs in, reads the alerts and the cases breaching their SLA,
follows the dashboard link (reporting's page takes the token from the fragment and draws), reads
the escalations in the notification list; then the same pages in English. Screenshots (zh, en)
land in the test's tmp path, printed at the end."""
from __future__ import annotations

import pytest

from shared.testing.fixtures import purge_queues_of, wait_until
from tests.e2e import test_console_browser, test_console_overview
from tests.e2e.test_investigation_notifications import notices, opened_cases

pytestmark = pytest.mark.e2e
console = test_console_overview.console
reporting = test_console_overview.reporting
chromium = test_console_browser.chromium
Phone = test_console_browser.Phone


def test_a_regional_manager_reads_alerts_the_dashboard_and_notifications_on_a_phone(
        chromium, reporting, console, start_service, amqp_uri, clock, token, tmp_path):
    from selenium.webdriver.common.by import By

    service, late = reporting
    purge_queues_of(amqp_uri, "investigation")  # not this test's: complaints other tests left there
    investigation = start_service("investigation", clock=clock)
    opened_cases(investigation, amqp_uri, token, "SH001", "SH002")
    clock.advance(hours=25)  # past the first response: escalated to the east's regional manager
    east = token("regional_manager", region="east")
    wait_until(lambda: len(notices(investigation, east).json()["items"]) == 2, "the escalations")
    c = console(REPORTING_URL=service.base_url, INVESTIGATION_URL=investigation.base_url)
    assert c.staff("add", "rita", "--name", "Rita 区域经理", "--role", "regional_manager", "--region", "east") == 0
    base = c.service.base_url

    phone = Phone(chromium, tmp_path)
    until, shots = phone.until, {}

    def shot(name):
        shots[name] = phone.shot(name)

    phone.sign_in(base + "/alerts", "rita")
    until(lambda d: d.find_elements(By.ID, "sign-out"), "signed in")
    chromium.get(base + "/alerts")
    until(lambda d: d.find_elements(By.CSS_SELECTOR, ".overview-alert"), "the alerts")
    kinds = [e.get_attribute("data-kind") for e in chromium.find_elements(By.CSS_SELECTOR, ".overview-alert")]
    assert "safety_signal" in kinds and "recurring_problem" in kinds
    assert {e.get_attribute("data-branch") for e in chromium.find_elements(By.CSS_SELECTOR, ".overview-branch")} \
        == {"SH001", "SH002"}
    shot("alerts-zh")

    link = chromium.find_element(By.ID, "dashboard-link").get_attribute("href")
    chromium.get(link)  # the dashboard, with the token the console signed
    until(lambda d: d.execute_script("return document.body.dataset.state") in ("ready", "failed", "error"),
          "the dashboard loaded")
    assert chromium.execute_script("return document.body.dataset.state") == "ready"
    assert "token" not in chromium.current_url

    chromium.get(base + "/notifications")
    until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".overview-notice")) == 2, "the notifications")
    assert all("已升级给您" in e.text for e in chromium.find_elements(By.CSS_SELECTOR, ".overview-notice"))
    shot("notifications-zh")

    chromium.find_element(By.CSS_SELECTOR, "button[name=language][value=en]").click()
    until(lambda d: "Escalated to you" in d.find_element(By.ID, "notifications").text, "the English notifications")
    shot("notifications-en")
    chromium.get(base + "/alerts")
    until(lambda d: "Product safety signal" in d.find_element(By.ID, "alerts").text, "the English alerts")
    shot("alerts-en")

    refused = [e["message"] for e in chromium.get_log("browser")
               if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert refused == [], refused
    print("\nscreenshots:", *shots.values())
