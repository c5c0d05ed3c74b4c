"""A real browser for the tests: Debian's chromium, headless, driven by Playwright.

Playwright's sync API keeps an event loop running in the thread that uses it, and the
test's own helpers call asyncio.run; so the browser lives in a thread of its own and
every call is handed to that thread.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


class Browser:
    def __init__(self, width: int = 1440, height: int = 900, timeout: float = 30.0) -> None:
        if not Path(CHROMIUM).exists():
            raise RuntimeError(f"{CHROMIUM} is missing: run scripts/ensure-chromium.sh (make test does)")
        self.timeout = timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="browser")
        self._call(lambda: self._open(width, height))

    def _call(self, fn: Callable[[], T]) -> T:
        return self._thread.submit(fn).result(timeout=self.timeout)

    def _open(self, width: int, height: int) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self._browser = self._playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        self._page = self._browser.new_page(viewport={"width": width, "height": height})
        self._page.set_default_timeout(self.timeout * 1000)

    def goto(self, url: str) -> None:
        self._call(lambda: self._page.goto(url))

    def evaluate(self, script: str) -> Any:
        return self._call(lambda: self._page.evaluate(script))

    def wait_for(self, script: str) -> None:
        """Until the JavaScript function returns true (the browser polls; no sleep here). A function,
        not an expression: the page's Content-Security-Policy forbids eval."""
        self._call(lambda: self._page.wait_for_function(script))

    def html(self) -> str:
        return self._call(self._page.content)

    def text(self) -> str:
        return self._call(lambda: self._page.inner_text("body"))

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._call(lambda: self._page.screenshot(path=str(path), full_page=True))

    def close(self) -> None:
        def shut() -> None:
            self._browser.close()
            self._playwright.stop()

        try:
            self._call(shut)
        finally:
            self._thread.shutdown(wait=True)
