"""The case page in a real browser (Debian's headless Chromium, as test_console_browser.py), at
390 px: the store manager opens the case from "my work", assigns it with Ctrl+Enter (htmx swaps
the case in place), then answers; the page switches to English. Screenshots (zh, en) land in the
test's tmp path, printed at the end. Nothing is refused by the Content-Security-Policy."""
from __future__ import annotations

import pytest

from tests.e2e import test_console, test_console_browser
from tests.e2e.test_console import complaint_at, publish
from tests.e2e.test_console_cases import opened

pytestmark = pytest.mark.e2e
console = test_console.console
chromium = test_console_browser.chromium  # the browser fixture, shared


def test_a_store_manager_works_a_case_page_on_a_phone_in_chinese_and_english(
        chromium, console, start_service, amqp_uri, clock, token, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    investigation = start_service("investigation", clock=clock)
    c = console(INVESTIGATION_URL=investigation.base_url)
    event = complaint_at("SH001", "SH001-20261122-0001", "east")
    event["payload"]["description"] = "毛巾很脏，没有消毒 <img src=x onerror=alert(1)>"
    publish(amqp_uri, event)
    opened(investigation, token, event)
    c.add("amy", name="王店长")
    c.add("ivan", role="investigator", name="李调查")

    phone = test_console_browser.Phone(chromium, tmp_path)
    until = phone.until
    phone.sign_in(c.service.base_url + "/", "amy")
    until(lambda d: d.find_elements(By.CSS_SELECTOR, ".task a.case-link"), "my work with its task")
    chromium.find_element(By.CSS_SELECTOR, ".task a.case-link").click()
    until(lambda d: d.find_elements(By.ID, "form-assign"), "the case page")
    assert "毛巾很脏" in chromium.find_element(By.CSS_SELECTOR, ".case-description").text
    assert chromium.find_elements(By.CSS_SELECTOR, ".case-description img") == []  # inert
    until(lambda d: d.find_element(By.CSS_SELECTOR, "#task-assign .countdown").text.startswith("剩余 1天0小时"),
          "the task's countdown on the console's clock")

    owner = chromium.find_element(By.ID, "assign-owner")
    owner.send_keys("ivan")
    owner.send_keys(Keys.CONTROL, Keys.ENTER)  # cases.js: Ctrl+Enter completes the task
    until(lambda d: d.find_elements(By.ID, "form-respond"), "the case swapped in, the response next")
    assert "已保存" in chromium.find_element(By.CSS_SELECTOR, "#case .notice").text
    assert chromium.find_element(By.CSS_SELECTOR, ".case-state").text == "已指派"

    chromium.find_element(By.ID, "respond-message").send_keys("已致电顾客致歉，明天上门处理")
    Select(chromium.find_element(By.ID, "respond-channel")).select_by_value("phone")
    assert chromium.execute_script("return document.documentElement.scrollWidth") <= 390  # no sideways scroll
    shots = {"zh": str(tmp_path / "console-case-zh.png")}
    chromium.set_window_size(390, 3000)
    chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                             {"width": 390, "height": 3000, "deviceScaleFactor": 1, "mobile": True})
    assert chromium.save_screenshot(shots["zh"])
    chromium.find_element(By.CSS_SELECTOR, "#form-respond button[type=submit]").click()
    until(lambda d: d.find_element(By.CSS_SELECTOR, ".case-state").text == "已首次响应", "the response saved")

    chromium.find_element(By.CSS_SELECTOR, "button[name=language][value=en]").click()
    until(lambda d: d.find_elements(By.ID, "case-tasks-title") and
          d.find_element(By.ID, "case-tasks-title").text == "Open tasks", "the English case page")
    assert "Record findings" in chromium.find_element(By.ID, "task-record_findings").text
    shots["en"] = str(tmp_path / "console-case-en.png")
    assert chromium.save_screenshot(shots["en"])

    refused = [e["message"] for e in chromium.get_log("browser")
               if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert refused == []
    print("\nscreenshots:", *shots.values())
