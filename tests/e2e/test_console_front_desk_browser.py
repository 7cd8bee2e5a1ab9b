"""The front desk in a real browser (Debian's headless Chromium, 390 px wide): a front desk signs in,
fills the new complaint form and sends it with Ctrl+Enter (static/front_desk.js), and reads the
reference, priority, deadline and acknowledgement; then in English; then a sale and a look-up.
Screenshots of the form and the confirmation in zh and en land in the test's tmp path (printed);
no horizontal scrolling, nothing refused by the Content-Security-Policy."""
from __future__ import annotations

import pytest

from tests.e2e import test_console, test_console_browser
from tests.e2e.test_console import PASSWORD

pytestmark = pytest.mark.e2e
console = test_console.console
chromium = test_console_browser.chromium
Phone = test_console_browser.Phone


def test_a_front_desk_files_a_complaint_with_ctrl_enter_and_reads_the_confirmation_in_zh_and_en(
        chromium, console, intake, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    c = console(INTAKE_URL=intake.service.base_url)
    c.add("fran", role="front_desk", name="前台小芳")
    base = c.service.base_url
    shots = []

    phone = Phone(chromium, tmp_path, prefix="front-desk")
    until = phone.until

    def shot(name, tall=False):
        shots.append(phone.shot(name, tall=tall))

    def narrow():
        assert chromium.execute_script("return document.documentElement.scrollWidth") <= 390

    def fill(description, phone="13812346138", name="王女士"):
        chromium.find_element(By.ID, "f-customer.name").send_keys(name)
        chromium.find_element(By.ID, "f-customer.phone").send_keys(phone)
        chromium.find_element(By.CSS_SELECTOR, "input[name='flag.allergy']").click()
        chromium.find_element(By.ID, "f-service.code").send_keys("HAIR-DYE")
        chromium.find_element(By.ID, "f-products.0.batch").send_keys("B2026-11-03")
        chromium.find_element(By.ID, "f-products.0.sku").send_keys("DYE-5N")
        box = chromium.find_element(By.ID, "f-description")
        box.send_keys(description)
        return box

    chromium.get(base + "/login")
    chromium.find_element(By.ID, "login").send_keys("fran")
    chromium.find_element(By.ID, "password").send_keys(PASSWORD)
    chromium.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    until(lambda d: d.find_elements(By.CSS_SELECTOR, "nav.areas"), "my work")

    chromium.get(base + "/complaints/new")
    until(lambda d: d.find_elements(By.ID, "complaint-form"), "the complaint form")
    assert chromium.find_element(By.TAG_NAME, "h1").text == "新投诉"
    narrow()
    box = fill("昨天染发后头皮过敏红肿")
    shot("complaint-form-zh", tall=True)
    box.send_keys(Keys.CONTROL, Keys.ENTER)  # front_desk.js sends the form
    until(lambda d: d.find_elements(By.ID, "desk-reference"), "the confirmation")
    assert chromium.find_element(By.ID, "desk-reference").text == "SH001-20261122-0001"
    assert chromium.find_element(By.ID, "desk-priority").text == "紧急"
    assert chromium.find_element(By.ID, "desk-first-response").text.startswith("2026年11月22日 11:00")
    until(lambda d: d.find_element(By.CSS_SELECTOR, "#desk-first-response .countdown").text.startswith("剩余"),
          "the countdown to the first response")
    assert "SH001-20261122-0001" in chromium.find_element(By.ID, "desk-ack").text
    narrow()
    shot("complaint-done-zh", tall=True)

    chromium.find_element(By.CSS_SELECTOR, "button[name=language][value=en]").click()
    until(lambda d: d.find_element(By.TAG_NAME, "h1").text == "Filed" or "/complaints/new" in d.current_url,
          "the English page")
    chromium.get(base + "/complaints/new")
    until(lambda d: d.find_element(By.TAG_NAME, "h1").text == "New complaint", "the English form")
    box = fill("The towel was dirty and my scalp got a rash", phone="13900001111", name="Mary Li")
    shot("complaint-form-en", tall=True)
    box.send_keys(Keys.CONTROL, Keys.ENTER)
    until(lambda d: d.find_elements(By.ID, "desk-reference"), "the English confirmation")
    assert chromium.find_element(By.ID, "desk-reference").text == "SH001-20261122-0002"
    assert chromium.find_element(By.ID, "desk-priority").text == "Urgent"
    assert chromium.find_element(By.ID, "desk-first-response").text.startswith("2026-11-22 11:00")
    narrow()
    shot("complaint-done-en", tall=True)

    # A field intake refuses, in the browser: the error beside it, the rest kept.
    chromium.get(base + "/complaints/new")
    chromium.find_element(By.ID, "f-customer.phone").send_keys("12345")
    chromium.find_element(By.ID, "f-description").send_keys("x")
    chromium.find_element(By.CSS_SELECTOR, "button[data-primary]").click()
    until(lambda d: d.find_elements(By.ID, "e-customer.phone"), "the phone's error")
    assert chromium.find_element(By.ID, "f-customer.phone").get_attribute("value") == "12345"
    shot("complaint-errors-en", tall=True)

    chromium.get(base + "/sales/new")
    until(lambda d: d.find_elements(By.ID, "sale-form"), "the sale form")
    narrow()
    chromium.find_element(By.ID, "f-items.0.code").send_keys("SK-01")
    chromium.find_element(By.CSS_SELECTOR, "select[name='items.0.product_type'] option[value=skincare]").click()
    chromium.find_element(By.ID, "f-customer.phone").send_keys("13700001234")
    chromium.find_element(By.CSS_SELECTOR, "input[name='customer.contact_consent']").click()
    shot("sale-form-en", tall=True)
    chromium.find_element(By.ID, "f-items.0.code").send_keys(Keys.CONTROL, Keys.ENTER)
    until(lambda d: d.find_elements(By.ID, "desk-sale-id"), "the sale's confirmation")
    narrow()
    shot("sale-done-en", tall=True)

    chromium.get(base + "/lookup?q=SH001-20261122-0001")
    until(lambda d: d.find_elements(By.ID, "desk-status"), "the look-up")
    assert chromium.find_element(By.ID, "desk-status").text == "Registered"
    narrow()
    shot("lookup-en", tall=True)

    refused = [e["message"] for e in chromium.get_log("browser")
               if (e["level"] == "SEVERE" and "status of 400" not in e["message"])  # the refused form's page
               or "Content Security Policy" in e["message"]]
    assert refused == []
    print("\nscreenshots:", *shots)
