"""The console in a real browser: Debian's headless Chromium through /usr/bin/chromedriver (as
test_dashboard.py; never a download). A store manager signs in and sees "my work" with a case
from a real investigation service, its countdown kept by the console's script, at 390 px wide; the
page switches to English. Screenshots (zh, en) land in the test's tmp path, printed at the end.
No script is refused by the Content-Security-Policy (the browser's console says so)."""
from __future__ import annotations

import os
import shutil

import pytest
import requests

from shared.testing.fixtures import wait_until
from tests.e2e import test_console
from tests.e2e.test_console import PASSWORD, complaint_at, publish

pytestmark = pytest.mark.e2e
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
console = test_console.console  # the console fixture, shared
DEADLINE = 15


class Phone:
    """What every console browser test does with Debian's Chromium at 390 px: wait for a
    condition (failing with the page), sign in, and take a screenshot of the whole page."""

    def __init__(self, chromium, tmp_path, prefix: str = "console"):
        self.chromium, self.tmp_path, self.prefix = chromium, tmp_path, prefix

    def until(self, condition, what: str):
        from selenium.common.exceptions import (
            NoSuchElementException, StaleElementReferenceException, TimeoutException)
        from selenium.webdriver.support.ui import WebDriverWait

        # An element read while the page navigates or htmx swaps it goes stale: look again.
        wait = WebDriverWait(self.chromium, DEADLINE, poll_frequency=0.1,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        try:
            return wait.until(lambda d: condition(d))
        except TimeoutException:
            raise AssertionError(f"waited {DEADLINE}s for {what}; page: {self.chromium.page_source[:2000]}") from None

    def sign_in(self, url: str, login: str, password: str = PASSWORD) -> None:
        """Open `url` signed out, sign in on the form it sends the browser to."""
        from selenium.webdriver.common.by import By

        self.chromium.get(url)
        self.until(lambda d: d.find_elements(By.ID, "login-form"), "the sign-in form")
        self.chromium.find_element(By.ID, "login").send_keys(login)
        self.chromium.find_element(By.ID, "password").send_keys(password)
        self.chromium.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()

    def shot(self, name: str, tall: bool = True, most: int = 4000) -> str:
        """A screenshot with no sideways scroll: the whole page (`tall`), as a phone scrolls it."""
        chromium = self.chromium
        assert chromium.execute_script("return document.documentElement.scrollWidth") <= 390, name
        if tall:
            height = chromium.execute_script("return document.documentElement.scrollHeight")
            chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": 390, "height": min(max(844, height), most), "deviceScaleFactor": 1, "mobile": True})
        path = str(self.tmp_path / f"{self.prefix}-{name}.png")
        assert chromium.save_screenshot(path)
        chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                 {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        return path


@pytest.fixture
def chromium():
    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: run `make system-packages`", pytrace=False)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path too, selenium-manager never runs
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--lang=zh-CN",
                "--window-size=390,844", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(DEADLINE)
    # A phone's viewport: headless windows have a minimum width of their own.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
    yield driver
    driver.quit()


def test_a_store_manager_signs_in_and_sees_my_work_in_chinese_and_english(
        chromium, console, start_service, amqp_uri, clock, token, tmp_path):
    from selenium.webdriver.common.by import By

    investigation = start_service("investigation", clock=clock)
    c = console(INVESTIGATION_URL=investigation.base_url)
    event = complaint_at("SH001", "SH001-20261122-0001", "east")
    publish(amqp_uri, event)
    manager = {"Authorization": f"Bearer {token('store_manager', branch='SH001')}"}
    case = f"{investigation.base_url}/v1/cases/{event['correlation_id']}"
    wait_until(lambda: requests.get(case, headers=manager, timeout=5).status_code == 200, "the case to open")
    c.add("amy", name="王店长")

    phone = Phone(chromium, tmp_path)
    until = phone.until
    phone.sign_in(c.service.base_url + "/", "amy")  # not signed in: the sign-in form first
    until(lambda d: d.find_elements(By.CSS_SELECTOR, ".task .countdown"), "my work with its task")
    assert chromium.find_element(By.TAG_NAME, "h1").text == "我的工作"
    assert "SH001-20261122-0001" in chromium.find_element(By.CSS_SELECTOR, ".task .ref").text
    # The script counts on the server's clock (the test's), not the browser's.
    until(lambda d: d.find_element(By.CSS_SELECTOR, ".task .countdown").text.startswith("剩余 1天0小时"),
          "the countdown on the console's clock")
    assert chromium.execute_script("return typeof htmx") == "object"
    assert chromium.execute_script("return document.documentElement.scrollWidth") <= 390  # no sideways scroll
    shots = {"zh": str(tmp_path / "console-my-work-zh.png")}
    assert chromium.save_screenshot(shots["zh"])

    chromium.find_element(By.CSS_SELECTOR, "button[name=language][value=en]").click()
    until(lambda d: d.find_element(By.TAG_NAME, "h1").text == "My work", "the English page")
    assert "Assign an owner" in chromium.find_element(By.CSS_SELECTOR, ".task .title").text
    shots["en"] = str(tmp_path / "console-my-work-en.png")
    assert chromium.save_screenshot(shots["en"])

    refused = [e["message"] for e in chromium.get_log("browser")
               if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert refused == []
    print("\nscreenshots:", *shots.values())
