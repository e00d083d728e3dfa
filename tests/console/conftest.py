"""The console's fixtures: a headless Chromium per test, signing in, screenshots kept."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from .browser import CHROMIUM, Browser


@pytest.fixture(autouse=True)
def chromium_installed():
    # A missing browser is a broken install step (scripts/test-packages lists it), not a skip.
    assert CHROMIUM is not None, ("chromium is not installed: scripts/setup --test installs it "
                                  "(scripts/test-packages)")


@pytest.fixture
def browser(tmp_path):
    opened = Browser(tmp_path / "profile")
    yield opened
    opened.close()


def keep(path: Path) -> None:
    """A screenshot for a person to look at: copied to $VMIMPORT_TEST_SCREENSHOTS if set."""
    target = os.environ.get("VMIMPORT_TEST_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)


def sign_in(browser, secret: str = "test", access_key: str = "test") -> None:
    browser.wait_for("!document.getElementById('sign-in').hidden")
    browser.type("#access-key", access_key)
    browser.type("#secret-key", secret)
    browser.click("#sign-in button[type=submit]")


def text_of(browser, element_id: str) -> str:
    return browser.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent")
