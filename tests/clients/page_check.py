#!/usr/bin/env python3
"""Drives tagger's try-it page (GET /) in headless Chromium: uploads the cat photo and waits for
a cat tag, draws a "1" on the pad and waits for a digit, checks that the page's
Content-Security-Policy blocked nothing, and saves a screenshot (its path is printed).

    python page_check.py http://HOST:PORT SCREENSHOT.png      (exit 0: every check passed)
"""

import pathlib
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = pathlib.Path(__file__).resolve().parents[2]
CAT = ROOT / "examples" / "images" / "cat.jpg"
CAT_LABELS = ("tabby", "tiger cat", "Egyptian cat")


def check(condition, what):
    if not condition:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1100,1400"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Debian's driver, never a download.
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def main():
    url, screenshot = sys.argv[1], pathlib.Path(sys.argv[2]).resolve()
    driver = browser()
    try:
        driver.get(url + "/")
        check("tagger" in driver.title, f"page title: {driver.title!r}")
        wait = WebDriverWait(driver, 30)
        # The model list comes from /v1/models.
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) >= 3)

        driver.find_element(By.ID, "photo-input").send_keys(str(CAT))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tags li"))
        tags = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#tags li")]
        print("tags:", tags)
        check(any(c in t for t in tags for c in CAT_LABELS), "a cat tag on the page")
        fill = driver.find_element(By.CSS_SELECTOR, "#tags li .fill").size["width"]
        track = driver.find_element(By.CSS_SELECTOR, "#tags li .track").size["width"]
        check(0.2 * track < fill < track, f"the top tag's bar is drawn ({fill} of {track} px)")
        timing = driver.find_element(By.ID, "photo-timing").text
        check("inference" in timing and "ms" in timing, f"timings shown: {timing}")

        pad = driver.find_element(By.ID, "pad")
        ActionChains(driver).move_to_element_with_offset(pad, 0, -90).click_and_hold() \
            .move_by_offset(0, 60).move_by_offset(0, 60).move_by_offset(0, 60).release().perform()
        wait.until(lambda d: d.find_element(By.ID, "digit-value").text.strip() != "")
        digit = driver.find_element(By.ID, "digit-value").text
        bars = driver.find_elements(By.CSS_SELECTOR, "#digit-bars li")
        print("digit:", digit, "status:", driver.find_element(By.ID, "digit-status").text)
        check(digit.isdigit() and len(bars) == 10, f"a digit ({digit}) and ten probability bars")

        # Anything the policy refused shows up in the console as an error.
        time.sleep(0.3)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        check(not errors, f"no console errors (CSP violations included): {errors}")
        driver.save_screenshot(str(screenshot))
        print(f"screenshot: {screenshot}")

        # A phone's width: one column, nothing wider than the screen.
        driver.set_window_size(390, 1600)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        check(overflow <= 0, f"no horizontal scrolling at 390 px (overflow {overflow} px)")
        phone = screenshot.with_name(screenshot.stem + "-phone.png")
        driver.save_screenshot(str(phone))
        print(f"screenshot (phone width): {phone}")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
