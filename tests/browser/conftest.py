"""Fixtures for the widget's browser tests: Debian's Chromium driven by Playwright, no network.

The page is a static harness (harness.html) served through Playwright's request routing; it renders the widget
from the exact state the Python `Heatmap` serialises (including its `_esm` bundle), with a small fake model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("HEATWIDGET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]
HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parents[1] / "heatwidget" / "static" / "widget.js"
ORIGIN = "http://heatwidget.test"


def _missing() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if not BUNDLE.is_file():
        return f"JS bundle not built: {BUNDLE} (cd js && npm ci && npm run build)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (python) is not installed"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _missing()
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 800, "height": 900}, accept_downloads=True)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    harness = (HERE / "harness.html").read_text(encoding="utf-8")

    def serve(route: Any) -> None:
        if route.request.url.rstrip("/") in (ORIGIN, f"{ORIGIN}/harness.html"):
            route.fulfill(status=200, content_type="text/html", body=harness)
        else:  # nothing else exists: the widget must not fetch anything
            errors.append(f"unexpected request {route.request.url}")
            route.fulfill(status=404, body="")

    pg.route(f"{ORIGIN}/**", serve)
    pg.route(ORIGIN, serve)
    pg.goto(f"{ORIGIN}/harness.html")
    pg.wait_for_function("window.hwReady === true")
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    ctx.close()

