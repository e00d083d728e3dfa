"""Debian's headless Chromium driven by Selenium through Debian's chromedriver: a person's
actions (typing into a field, clicking, choosing a file) go through WebDriver, which sends
real input events; reading the page state and the phone's screen go through the DevTools
commands Selenium passes on (``execute_cdp_cmd``)."""

from __future__ import annotations

import base64
import os
import shutil
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import (ElementClickInterceptedException,
                                        NoSuchElementException, StaleElementReferenceException)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# No connections to the outside: this machine has no internet (and tests must not need it).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1200,900"]
# Selenium Manager would look for drivers and browsers on the internet: both are given.
os.environ.setdefault("SE_OFFLINE", "true")


class Browser:
    def __init__(self, profile: Path):
        options = Options()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        self.driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))

    def evaluate(self, expression: str):
        """The value of a JavaScript expression (statements allowed; a promise is awaited)."""
        result = self.driver.execute_cdp_cmd("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def goto(self, url: str) -> None:
        self.driver.get(url)  # returns once the page has loaded

    def wait_for(self, condition: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.evaluate(condition):
            if time.monotonic() > deadline:
                raise AssertionError(f"still false after {timeout}s: {condition}")
            time.sleep(0.2)

    def type(self, selector: str, text: str) -> None:
        """Type ``text`` into the field, key by key, as a person would (what was there is
        cleared first)."""
        field = self.driver.find_element(By.CSS_SELECTOR, selector)
        field.clear()
        field.send_keys(text)

    def click(self, selector: str, timeout: float = 30) -> None:
        """Click the element, as a person would: the console redraws parts of the page while
        data arrives, so the element found may be replaced (stale) before the click lands; a
        person would click the new one, and so does this."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.driver.find_element(By.CSS_SELECTOR, selector).click()
                return
            except (StaleElementReferenceException, NoSuchElementException,
                    ElementClickInterceptedException):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def choose(self, selector: str, option: str) -> None:
        """Pick the option a person sees as ``option`` in a <select>."""
        Select(self.driver.find_element(By.CSS_SELECTOR, selector)).select_by_visible_text(option)

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in an <input type=file>, as a person picking them would."""
        self.driver.find_element(By.CSS_SELECTOR, selector).send_keys(
            "\n".join(str(p) for p in paths))

    def phone(self) -> None:
        """A phone's screen from now on: 390 CSS pixels wide, as a touch device."""
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        if not full_page:
            path.write_bytes(self.driver.get_screenshot_as_png())
            return
        height = self.evaluate("document.documentElement.scrollHeight")
        width = self.evaluate("document.documentElement.clientWidth")
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.driver.quit()  # ends chromedriver and the browser it started
