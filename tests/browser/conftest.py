"""Fixtures for the browser tests: Debian's Chromium driven by Playwright, no network.

* `page`: a static harness (harness.html) served through Playwright's request routing; it renders the widget
  from the exact state the Python `Heatmap` serialises (including its `_esm` bundle), with a small fake model;
  `hidpi_page`: the same at 2 device pixels per CSS pixel.
* `browser`: one Chromium for the whole session; `lab_server`: one JupyterLab server for the whole session
  (tests add their notebooks to it), because each costs seconds of the 2-core CI budget.
* Missing Chromium: the tests are skipped with a loud reason locally, and fail when `CI` or
  `HEATWIDGET_REQUIRE_BROWSER=1` is set (CI installs chromium and must run them).
* A failing browser test leaves screenshots of every open page (and the Lab server's log) in test-artifacts/.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS

HERE = Path(__file__).resolve().parent
BUNDLE = HERE.parents[1] / "heatwidget" / "static" / "widget.js"
ORIGIN = "http://heatwidget.test"
ARTIFACTS = HERE.parents[1] / "test-artifacts"
# CI must run the browser tests: there a missing browser is an error, not a skip.
REQUIRE_BROWSER = os.environ.get("HEATWIDGET_REQUIRE_BROWSER", "") not in ("", "0") or bool(os.environ.get("CI"))
# The session's browser and Lab server, for the failure hook (screenshots, server log).
_SESSION: dict[str, Any] = {}


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


_MISSING = _missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
            if _MISSING and not REQUIRE_BROWSER:
                item.add_marker(pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {_MISSING}"))


@pytest.fixture(scope="session", autouse=True)
def _browser_required() -> None:
    # Session-scoped so it runs before the session's browser / Lab fixtures, with this message instead of theirs.
    if _MISSING:  # only reached when required (otherwise the test was skipped)
        pytest.fail(f"browser tests are required here (CI / HEATWIDGET_REQUIRE_BROWSER) but {_MISSING}", pytrace=False)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _MISSING and not REQUIRE_BROWSER and terminalreporter.stats.get("skipped"):
        terminalreporter.write_sep("!", f"BROWSER TESTS SKIPPED: {_MISSING}", red=True, bold=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call") and HERE in Path(str(item.fspath)).parents:
        _save_artifacts(item.nodeid)


def _save_artifacts(nodeid: str) -> None:
    """Screenshots of every page still open in the session's browser, and the Lab server's log."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]
    ARTIFACTS.mkdir(exist_ok=True)
    browser = _SESSION.get("browser")
    pages = [pg for ctx in browser.contexts for pg in ctx.pages] if browser is not None else []
    for i, pg in enumerate(pages):
        try:
            pg.screenshot(path=str(ARTIFACTS / f"{name}-{i}.png"), full_page=True, timeout=10_000)
        except Exception as e:  # a crashed page must not hide the test's own failure
            print(f"screenshot of {pg.url} failed: {e}")
    lab = _SESSION.get("lab")
    if lab is not None and lab.log_path.is_file():
        shutil.copyfile(lab.log_path, ARTIFACTS / f"{name}-lab.log")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        _SESSION["browser"] = b
        try:
            yield b
        finally:
            _SESSION.pop("browser", None)
            b.close()


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One JupyterLab server (127.0.0.1, random token) for the whole session; add notebooks with `add_notebook`."""
    from labserver import LabServer

    server = LabServer(tmp_path_factory.mktemp("lab"), {})
    _SESSION["lab"] = server
    try:
        yield server
    finally:
        _SESSION.pop("lab", None)
        server.close()


def _harness_page(browser: Any, **context: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 800, "height": 900}, accept_downloads=True, **context)
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


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    yield from _harness_page(browser)


@pytest.fixture
def hidpi_page(browser: Any) -> Iterator[Any]:
    """The harness on a display of 2 device pixels per CSS pixel (a laptop's retina screen)."""
    yield from _harness_page(browser, device_scale_factor=2)
