"""Open a report page in headless Chromium: did every chart draw, was the console clean, did the
page try to reach the network? Optionally save a screenshot.

Used by the report's tests and by `kazstance report --screenshot`. Playwright drives the
system's Chromium (Debian's `chromium` package, which `make setup` installs) rather than a
browser of its own: Playwright's browser download needs the internet, which this product's
machines do not have.

Every request that is not for the page's own file is refused and recorded: a self-contained page
makes none, and one that did would break for a newsroom reading it offline.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

# What Chromium needs to start as root in a container and to stay off the network on its own
# (updates, sync, field trials), so that the only requests are the page's.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic"]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """No browser to render with, or the page did not load."""


@dataclass
class PageCheck:
    expected: int                      # charts the page declares (`section.chart`)
    drawn: int                         # charts plotly drew an SVG for
    console_errors: list[str] = field(default_factory=list)   # console errors and uncaught exceptions
    blocked_requests: list[str] = field(default_factory=list)  # anything the page tried to fetch
    undrawn: list[str] = field(default_factory=list)           # names of charts without an SVG


def chromium_path() -> str:
    """The system Chromium: $KAZSTANCE_CHROMIUM, else the first of CANDIDATES on the PATH."""
    found = os.environ.get("KAZSTANCE_CHROMIUM") or next(filter(None, map(shutil.which, CANDIDATES)), None)
    if not found:
        raise BrowserError("no Chromium found: install Debian's `chromium` package (`make setup` does) "
                           "or point KAZSTANCE_CHROMIUM at a Chrome/Chromium binary")
    return found


def open_report(page: Path, screenshot: Path | None = None, width: int = 1200, timeout_ms: int = 60_000) -> PageCheck:
    """Load `page` (a local file), wait for plotly to draw, and report what happened."""
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise BrowserError("playwright is not installed: pip install playwright") from err

    url = Path(page).resolve().as_uri()
    errors: list[str] = []
    blocked: list[str] = []

    def route(r):
        if r.request.url == url:
            return r.continue_()
        blocked.append(r.request.url)
        return r.abort()

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            try:
                tab = browser.new_page(viewport={"width": width, "height": 900})
                tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                tab.on("pageerror", lambda e: errors.append(f"uncaught: {e}"))
                tab.route("**/*", route)
                tab.goto(url, wait_until="load", timeout=timeout_ms)
                # plotly draws asynchronously after load: wait until every chart has its SVG (or time out,
                # and then report which did not).
                try:
                    tab.wait_for_function(
                        "() => [...document.querySelectorAll('section.chart')]"
                        ".every(s => s.querySelector('svg.main-svg'))", timeout=timeout_ms)
                except PlaywrightError:
                    pass
                sections = tab.eval_on_selector_all(
                    "section.chart", "ss => ss.map(s => [s.dataset.chart, !!s.querySelector('svg.main-svg')])")
                if screenshot is not None:
                    Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                    tab.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    except PlaywrightError as err:
        raise BrowserError(f"Chromium could not render {page}: {err}") from err
    return PageCheck(expected=len(sections), drawn=sum(ok for _, ok in sections), console_errors=errors,
                     blocked_requests=blocked, undrawn=[name for name, ok in sections if not ok])
