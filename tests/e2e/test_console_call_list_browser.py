"""The call list in a real browser (Debian's headless Chromium through /usr/bin/chromedriver, at
390 px): an agent signs in, sees the allergy check first, presses `n` for the next visit, records an
allergy answer with Ctrl+Enter and sees the urgent case investigation opened; then the same pages
in English. Screenshots (zh, en) land in the test's tmp path, printed at the end."""
from __future__ import annotations

import pytest

from tests.e2e import test_console_browser, test_console_call_list

pytestmark = pytest.mark.e2e
chain = test_console_call_list.chain
console = test_console_call_list.console
working = test_console_call_list.working
chromium = test_console_browser.chromium
Phone = test_console_browser.Phone


def test_an_agent_works_a_visit_in_the_browser_with_the_keyboard(chromium, working, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    chain, c, _agent, ids = working
    base = c.service.base_url

    phone = Phone(chromium, tmp_path)
    until, shots = phone.until, {}

    def shot(name):
        shots[name] = phone.shot(name)

    phone.sign_in(base + "/visits", "ann")
    until(lambda d: d.find_elements(By.ID, "sign-out"), "signed in")
    chromium.get(base + "/visits")
    until(lambda d: d.find_elements(By.CSS_SELECTOR, ".calls-row"), "the call list")
    rows = chromium.find_elements(By.CSS_SELECTOR, ".calls-row")
    assert rows[0].get_attribute("data-visit") == ids["allergy"] and "过敏回访" in rows[0].text
    shot("call-list-zh")

    chromium.find_element(By.TAG_NAME, "body").send_keys("n")  # the next visit
    until(lambda d: d.current_url.endswith(f"/visits/{ids['allergy']}"), "the next visit opened by `n`")
    chromium.find_element(By.CSS_SELECTOR, "button[hx-get$='/contact']").click()
    until(lambda d: "13700002222" in d.find_element(By.ID, "contact").text, "the contact on request")
    chromium.find_element(By.CSS_SELECTOR, "input[name=discomfort][value=yes]").click()
    chromium.find_element(By.CSS_SELECTOR, "input[name=met_expectations][value=no]").click()
    chromium.find_element(By.CSS_SELECTOR, "input[name=satisfaction][value='2']").click()
    description = chromium.find_element(By.ID, "discomfort_description")
    description.send_keys("头皮红肿发痒")
    shot("visit-zh")
    description.send_keys(Keys.CONTROL, Keys.ENTER)  # save
    until(lambda d: d.find_elements(By.CSS_SELECTOR, "#urgent-case a[href^='/cases/']"), "the urgent case")
    assert "SH001-AR-" in chromium.find_element(By.ID, "urgent-case").text
    shot("visit-urgent-zh")

    chromium.find_element(By.CSS_SELECTOR, "button[name=language][value=en]").click()
    until(lambda d: d.find_elements(By.CSS_SELECTOR, "#urgent-case a") and "Urgent case opened" in
          d.find_element(By.ID, "urgent-case").text, "the English visit")
    shot("visit-urgent-en")
    chromium.get(base + f"/visits/{ids['skincare']}")
    until(lambda d: d.find_elements(By.ID, "visit-attempt"), "the skincare visit")
    chromium.find_element(By.CSS_SELECTOR, "input[name=outcome][value=call_back]").click()
    assert chromium.find_element(By.ID, "call_back_at").is_displayed()
    assert not chromium.find_element(By.ID, "suggestions").is_displayed()
    shot("visit-en")
    chromium.get(base + "/visits")
    until(lambda d: d.find_elements(By.CSS_SELECTOR, ".calls-row"), "the English call list")
    assert "2026-11-23 15:00" in chromium.find_element(By.CSS_SELECTOR, ".calls-row").text
    shot("call-list-en")

    refused = [e["message"] for e in chromium.get_log("browser")
               if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert refused == []
    print("\nscreenshots:", *shots.values())
