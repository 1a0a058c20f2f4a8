"""An exported notebook works offline: `heatwidget export --execute` opened from file:// with every request aborted.

The notebook (explore_nb.py) is executed by nbclient with its widget state saved and converted by nbconvert with
heatwidget's offline template (heatwidget/export.py). Chromium then loads the single HTML file with all network
requests aborted except file:, data: and blob: URLs: the heatmap paints, the bqplot charts of the saved drill-down
draw, hover shows a tooltip, a click selects, and nothing logs an error. A notebook saved without widget state
exports to a page that says so and shows the static image instead.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from explore_nb import COLS, EXPORT_SELECTED, ROWS, SECOND, SELECT, SETUP, kernel_token
from heatmap_page import cell_center, cell_left_edge, overlay_alpha, page_point, plot_stats
from report_page import chart_drawn, explorers

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LOCAL_SCHEMES = ("file:", "data:", "blob:")
DRILL = 20
NOT_PRECOMPUTED = "not precomputed in this report — re-run the notebook to explore it"


def _notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The explorer notebook, executed and exported through the CLI (what a user runs)."""
    d = tmp_path_factory.mktemp("export")
    nb = _notebook(d / "explore.ipynb", [SETUP, SELECT, SECOND])
    out = d / "explore.html"
    t0 = time.perf_counter()
    # 20 drill-downs per explorer: all of the second (4x5), 20 of the first's 48 (the others say so).
    proc = subprocess.run(
        [sys.executable, "-m", "heatwidget.cli", "export", str(nb), str(out), "--execute", "--drill", str(DRILL)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"heatwidget export --execute: {time.perf_counter() - t0:.1f} s, {out.stat().st_size / 1e6:.1f} MB")
    return out


class OfflinePage:
    """A page that may load only file:, data: and blob: URLs, recording what it tried and what it logged."""

    def __init__(self, browser: Any) -> None:
        self.ctx = browser.new_context(viewport={"width": 1200, "height": 1000})
        self.page = self.ctx.new_page()
        self.blocked: list[str] = []
        self.errors: list[str] = []
        self.page.route("**/*", self._route)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"console.error: {m.text}") if m.type == "error" else None)
        self.page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url[:200]} {r.failure}"))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith(LOCAL_SCHEMES):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def open(self, path: Path) -> Any:
        self.page.goto(path.as_uri())
        return self.page


@pytest.fixture
def offline(browser: Any) -> Iterator[OfflinePage]:
    p = OfflinePage(browser)
    yield p
    p.ctx.close()


def test_export_renders_heatmap_and_bqplot_charts_offline(exported: Path, offline: OfflinePage) -> None:
    page = offline.open(exported)
    root = page.locator(".heatwidget-explorer .heatwidget").first
    root.wait_for(state="visible", timeout=60_000)
    page.wait_for_function("document.querySelector('.heatwidget')?.dataset.paints >= 1", timeout=30_000)
    assert root.get_attribute("data-shape") == f"{ROWS}x{COLS}"
    stats = plot_stats(root)
    assert stats["opaque"] == stats["samples"] and stats["colours"] >= 12, stats

    # The drill-down that ran in the kernel before saving: its text and its two bqplot figures.
    detail = page.locator(".heatwidget-detail").first
    r, c = EXPORT_SELECTED
    assert f"token={kernel_token(r, c)}" in detail.inner_text()
    page.wait_for_function("document.querySelectorAll('.heatwidget-detail .bqplot').length >= 2", timeout=30_000)
    title = detail.locator(".hw-detail-title").inner_text()
    assert f"L{r}" in title and f"Gen{c}" in title, title
    bars = detail.locator(".bqplot rect.bar")
    page.wait_for_function(
        "Array.from(document.querySelectorAll('.heatwidget-detail .bqplot rect.bar'))"
        ".filter(r => parseFloat(r.getAttribute('height')) > 1).length >= 5",
        timeout=30_000,
    )
    assert bars.count() == 8  # 4 tokens x 2 series, grouped
    line = detail.locator(".bqplot path.line").first
    assert len(line.get_attribute("d") or "") > 20
    assert "top tokens" in detail.inner_text() and "per position" in detail.inner_text()

    assert offline.blocked == [], f"the page tried the network: {offline.blocked}"
    assert offline.errors == []


def test_export_hover_tooltip_and_click_selection_without_kernel(exported: Path, offline: OfflinePage) -> None:
    page = offline.open(exported)
    root = page.locator(".heatwidget-explorer .heatwidget").first
    page.wait_for_function("document.querySelector('.heatwidget')?.dataset.paints >= 1", timeout=60_000)

    page.mouse.move(*page_point(root, *cell_center(root, 4, 3)))
    tip = root.locator(".hw-tooltip")
    tip.wait_for(state="visible", timeout=10_000)
    text = tip.text_content()
    assert "L4" in text and "Gen3" in text and f"{(4 * COLS + 3) / 7:.3g}"[:3] in text, text

    # The saved selection is outlined; a click moves the outline (no kernel: the selection lives in the page).
    old = cell_left_edge(root, *EXPORT_SELECTED)
    new = cell_left_edge(root, 4, 3)
    assert overlay_alpha(root, *old) > 200
    page.mouse.click(*page_point(root, *cell_center(root, 4, 3)))
    page.mouse.move(5, 5)  # away from the plot: no hover highlight
    tip.wait_for(state="hidden", timeout=10_000)
    assert overlay_alpha(root, *new) > 200
    assert overlay_alpha(root, *old) < 50
    assert offline.blocked == []
    assert offline.errors == []


def test_export_of_a_notebook_without_widget_state_says_so(
    tmp_path: Path, offline: OfflinePage, capsys: pytest.CaptureFixture[str]
) -> None:
    from heatwidget.export import export_notebook
    from heatwidget.widget import Heatmap

    # What JupyterLab saves when "Save Widget State Automatically" is off: the outputs (view reference, SVG
    # fallback, text) but no widget state in the notebook metadata.
    w = Heatmap(np.arange(12, dtype=np.float32).reshape(3, 4))
    data, _ = w._repr_mimebundle_()
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "hw.Heatmap(m)",
                execution_count=1,
                outputs=[nbformat.v4.new_output("execute_result", data=data, execution_count=1)],
            )
        ]
    )
    path = tmp_path / "unsaved.ipynb"
    nbformat.write(nb, path)
    out = export_notebook(path, tmp_path / "unsaved.html")
    assert "no saved widget state" in capsys.readouterr().err

    page = offline.open(out)
    banner = page.locator(".heatwidget-export-note")
    banner.wait_for(state="visible")
    assert "saved without its widget state" in banner.inner_text()
    assert "static image" in page.locator(".heatwidget-unsaved-widget").inner_text()
    img = page.locator("img[src^='data:image/svg+xml']")
    img.wait_for(state="visible")
    assert img.evaluate("i => i.complete && i.naturalWidth > 100")
    assert page.locator(".heatwidget").count() == 0  # no live widget pretending to work
    assert offline.blocked == [] and offline.errors == []


def click_cells_and_check(page: Any, report: Path, clicks: int = 3) -> list[str]:
    """Click `clicks` precomputed cells of every explorer in the page (first, middle and last of its views) and
    one cell without a view if it has any; check each shows what it should. Returns the titles seen."""
    seen = []
    for i, info in enumerate(explorers(report)):
        ex = page.locator(".heatwidget-explorer").nth(i)
        root = ex.locator(".heatwidget").first
        root.scroll_into_view_if_needed()
        page.wait_for_function("(el) => el.dataset.paints >= 1", arg=root.element_handle(), timeout=30_000)
        detail = ex.locator(".heatwidget-detail").first
        picks = info.precomputed[:: max(1, len(info.precomputed) // clicks)][:clicks]
        assert len(picks) == min(clicks, len(info.precomputed)) and picks, info
        for r, c in picks:
            page.mouse.click(*page_point(root, *cell_center(root, r, c)))
            title = detail.locator(".hw-detail-title")
            page.wait_for_function(
                "([el, row, col]) => { const t = el.querySelector('.hw-detail-title');"
                " return t && t.textContent.includes(row) && t.textContent.includes(col); }",
                arg=[detail.element_handle(), info.rows[r], info.cols[c]],
                timeout=15_000,
            )
            seen.append(title.inner_text())
            page.wait_for_function(
                "(el) => el.querySelector('.bqplot svg')", arg=detail.element_handle(), timeout=15_000
            )
            page.wait_for_timeout(300)  # bqplot draws its marks after the figure is attached
            assert chart_drawn(detail), f"explorer {i}, cell {r, c}: chart not drawn"
        if info.missing:
            r, c = info.missing[-1]
            page.mouse.click(*page_point(root, *cell_center(root, r, c)))
            detail.get_by_text(NOT_PRECOMPUTED).wait_for(state="visible", timeout=15_000)
            assert detail.locator(".hw-detail-title").count() == 0
            note = ex.locator(".hw-precompute-note").inner_text()
            assert f"{len(info.precomputed)} of {len(info.rows) * len(info.cols)} cells" in note, note
    return seen


def test_export_shows_precomputed_drill_downs_offline(exported: Path, offline: OfflinePage) -> None:
    infos = explorers(exported)
    assert [len(x.precomputed) for x in infos] == [DRILL, 20] and len(infos[0].missing) == ROWS * COLS - DRILL
    page = offline.open(exported)
    page.locator(".heatwidget-explorer .heatwidget").first.wait_for(state="visible", timeout=60_000)
    titles = click_cells_and_check(page, exported)
    assert len(titles) == 6
    # Kernel-only buttons (the drill-down's re-run) are disabled in the page, with a tooltip saying why.
    rerun = page.locator(".heatwidget-detail .hw-detail button").first
    rerun.wait_for(state="visible")
    assert rerun.is_disabled() and "saved report" in (rerun.get_attribute("title") or "")
    assert offline.blocked == [], f"the page tried the network: {offline.blocked}"
    assert offline.errors == []


# ---- the tour, from a wheel built from a clean clone ------------------------------------------------------------


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_tour(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`heatwidget demo --html` run from a wheel built from a clean clone of this commit, installed in a fresh
    venv whose PATH has no node (the venv sees the system's site-packages, so torch is not reinstalled)."""
    import shutil

    d = tmp_path_factory.mktemp("wheel")
    sha = _run(["git", "rev-parse", "HEAD"], cwd=REPO).stdout.strip()
    src = d / "src"
    _run(["git", "clone", "--quiet", "--no-checkout", str(REPO), str(src)])
    _run(["git", "checkout", "--quiet", sha], cwd=src)
    # The front end is built by npm (`cd js && npm ci && npm run build`); the clone takes this checkout's build, so
    # building the wheel needs no node either (hatch-jupyter-builder skips npm when the bundle exists).
    shutil.copytree(REPO / "heatwidget" / "static", src / "heatwidget" / "static", dirs_exist_ok=True)
    no_node = {"PATH": str(Path(sys.executable).parent), "HOME": str(Path.home()), "LANG": "C.UTF-8"}
    assert shutil.which("node", path=no_node["PATH"]) is None
    t0 = time.perf_counter()
    _run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(d / "dist"), str(src)],
        env=no_node,
        timeout=600,
    )
    wheel = next((d / "dist").glob("heatwidget-*.whl"))
    venv = d / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel)], timeout=300)
    # A --system-site-packages venv imports the system's packages but does not search their data files
    # (share/jupyter: nbconvert's templates, the widget front ends, the kernel spec), which installing the
    # `demo` extra into the venv would put in venv/share/jupyter: point Jupyter at them.
    env = dict(no_node, PATH=str(venv / "bin"), JUPYTER_PATH=str(Path(sys.base_prefix) / "share" / "jupyter"))
    assert shutil.which("node", path=env["PATH"]) is None
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import heatwidget; print(heatwidget.__file__)"], env=env, cwd=d
    ).stdout.strip()
    t1 = time.perf_counter()
    out = d / "tour.html"
    proc = _run([str(venv / "bin" / "heatwidget"), "demo", "--html", str(out)], env=env, cwd=d, timeout=900)
    t2 = time.perf_counter()
    print(
        f"wheel build + venv: {t1 - t0:.0f} s; heatwidget demo --html: {t2 - t1:.0f} s, "
        f"{out.stat().st_size / 1e6:.1f} MB\n{proc.stderr}"
    )
    return {"wheel": wheel, "venv": venv, "heatwidget": Path(where), "html": out, "log": proc.stdout + proc.stderr}


def test_wheel_from_a_clean_clone_runs_the_demo_without_node(wheel_tour: dict[str, Any]) -> None:
    import zipfile

    names = zipfile.ZipFile(wheel_tour["wheel"]).namelist()
    for part in (
        "heatwidget/notebooks/tour.ipynb",
        "heatwidget/static/widget.js",
        "heatwidget/static/vendor/embed-amd.js",
        "heatwidget/static/vendor/require.js",
        "heatwidget/demo/weights/model.safetensors",
    ):
        assert part in names, part
    # The wheel's package ran, not this checkout.
    assert wheel_tour["venv"] in wheel_tour["heatwidget"].parents, wheel_tour["heatwidget"]
    html = wheel_tour["html"].read_text(encoding="utf-8")
    assert str(wheel_tour["venv"]) in html  # the tour's titles name the demo weights' folder: the wheel's
    assert len(explorers(wheel_tour["html"])) == 4
    assert wheel_tour["html"].stat().st_size <= 25e6


def test_exported_tour_drill_downs_work_offline(wheel_tour: dict[str, Any], offline: OfflinePage) -> None:
    infos = explorers(wheel_tour["html"])
    assert all(len(x.precomputed) == len(x.rows) * len(x.cols) for x in infos), [
        (len(x.precomputed), len(x.rows) * len(x.cols)) for x in infos
    ]  # every cell, within 25 MB
    page = offline.open(wheel_tour["html"])
    page.locator(".heatwidget-explorer .heatwidget").first.wait_for(state="visible", timeout=60_000)
    titles = click_cells_and_check(page, wheel_tour["html"])
    assert len(titles) == 3 * len(infos)
    assert offline.blocked == [], f"the page tried the network: {offline.blocked}"
    assert offline.errors == []
