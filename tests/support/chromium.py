"""Debian's chromium driven by Playwright (never a browser that Playwright downloads), for tests
that drive it themselves; tests/support/browser.py has the flags and a thread-safe wrapper."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, sync_playwright

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS as FLAGS


@contextmanager
def chromium() -> Iterator[Browser]:
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (make test does)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()
