"""The explorer inline in a real JupyterLab: run all cells, the heatmap paints, a mouse click re-runs the analysis in
the kernel for that cell, and the dark theme recolours the heatmap.

Notebook: the opening of the tour (notebooks/tour.ipynb, up to its first explorer: demo model, ablation_kl,
`hw.explore`) when the demo model's weights are present, otherwise a small generated explorer notebook
(explore_nb.py) whose drill-down prints a hash only the kernel computes. Lab is driven through
`window.jupyterapp.commands` (menu clicks were flaky here); the cell click is a real mouse click on the canvas.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click_timing import explorer_root as explorer_heatmap
from click_timing import time_click
from explore_nb import COLS, ROWS, SETUP, kernel_token
from heatmap_page import cell_center, margin_colours, page_point, plot_stats, shape

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TOUR = REPO / "notebooks" / "tour.ipynb"
WEIGHTS = REPO / "heatwidget" / "demo" / "weights"
RUN_ALL_TIMEOUT_MS = 240_000

# Start "run all" and record how it ended; page.wait_for_function polls for the result.
RUN_ALL_JS = """
() => {
  window.__hwRunAll = undefined;
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    (ok) => { window.__hwRunAll = ok === false ? 'failed' : 'ok'; },
    (err) => { window.__hwRunAll = 'error: ' + err; });
}
"""

# Execute code in the notebook's kernel (not in a cell) and return what it printed.
KERNEL_EXEC_JS = """
async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({ code, store_history: false });
  let out = '';
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === 'stream') out += msg.content.text;
    else if (t === 'error') out += `ERROR ${msg.content.ename}: ${msg.content.evalue}`;
  };
  await future.done;
  return out;
}
"""

# In the kernel: the explorer whose heatmap has (r, c) selected, and what its drill-down computed.
PROBE = """
import gc as _gc, json as _json, os as _os
import heatwidget as _hw
def _is_explorer(o):
    try:
        return isinstance(o, _hw.Explorer)
    except ReferenceError:  # a dead weakref.proxy among the kernel's objects (torch has some)
        return False
_hits = [_o for _o in _gc.get_objects() if _is_explorer(_o) and _o.heatmap.selected == ({r}, {c})]
_hits[0].wait(120)
_d = _hits[0].last_detail
print(_json.dumps({{"explorers": len(_hits), "row": _d.row, "col": _d.col, "title": _d.title,
                   "value": f"{{_d.value:.3g}}", "texts": _d.texts, "pid": _os.getpid()}}))
"""


def tour_opening() -> list[Any]:
    """The tour's cells up to and including the first one that displays an explorer (keeps the test fast)."""
    nb = nbformat.read(TOUR, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "hw.explore(" in cell.source:
            return nb.cells[: i + 1]
    raise AssertionError("the tour has no hw.explore(...) cell")


def use_tour() -> bool:
    # HEATWIDGET_LAB_NOTEBOOK=small forces the generated notebook (e.g. while the demo weights are retrained).
    small = os.environ.get("HEATWIDGET_LAB_NOTEBOOK") == "small"
    return TOUR.is_file() and (WEIGHTS / "config.json").is_file() and not small


# Known, not yet fixed: during fast replacement of explorer detail views, JupyterLab's widget front end sometimes
# removes an already-detached DOM node (seen in the 50-click test, also before the views were closed one request
# late). It breaks nothing visible (titles, charts and the model count are checked), so it is recorded apart in
# page.known_errors instead of failing every later test on the shared page; every other page error still fails.
_KNOWN_RACE = "Failed to execute 'removeChild' on 'Node'"


@pytest.fixture(scope="module")
def lab_page(lab_server: Any, browser: Any) -> Iterator[Any]:
    """Notebook open in Lab, light theme, all cells run through the command registry."""
    if use_tour():
        nb = nbformat.v4.new_notebook(cells=tour_opening())
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        name = "tour_opening.ipynb"
        nbformat.write(nb, lab_server.root / name)
    else:
        name = "explore.ipynb"
        lab_server.add_notebook(name, [SETUP])
    ctx, page = lab_server.open(browser, name, viewport=(1280, 1100))
    page.errors = []  # type: ignore[attr-defined]
    page.known_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: (page.known_errors if _KNOWN_RACE in str(e) else page.errors).append(str(e)))
    # Other tests share the server (and its settings): start from the light theme whatever they left.
    set_theme(page, "JupyterLab Light")
    t0 = time.perf_counter()
    page.evaluate(RUN_ALL_JS)
    page.wait_for_function("window.__hwRunAll !== undefined", timeout=RUN_ALL_TIMEOUT_MS)
    page.run_all_s = time.perf_counter() - t0  # type: ignore[attr-defined]
    page.notebook = name  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        try:  # free the kernel (torch, the model) for the rest of the session
            page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        finally:
            ctx.close()


def set_theme(page: Any, theme: str) -> None:
    light = "true" if "Light" in theme else "false"
    page.evaluate(f"window.jupyterapp.commands.execute('apputils:change-theme', {{theme: {json.dumps(theme)}}})")
    page.wait_for_function(f"document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)


def kernel_exec(page: Any, code: str) -> str:
    return page.evaluate(KERNEL_EXEC_JS, code)


def test_run_all_cells_paints_the_heatmap(lab_page: Any) -> None:
    page = lab_page
    assert page.evaluate("window.__hwRunAll") == "ok"
    print(f"{page.notebook}: run all cells {page.run_all_s:.1f} s")
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']")
    assert errors.count() == 0, errors.first.inner_text()
    root = explorer_heatmap(page)
    rows, cols = shape(root)
    if not use_tour():
        assert (rows, cols) == (ROWS, COLS)
    stats = plot_stats(root)
    # Not blank: the plot area is fully painted with many colours (one per cell value, up to the sampling).
    assert stats["opaque"] == stats["samples"], stats
    assert stats["colours"] >= min(8, rows * cols // 2), stats
    assert page.errors == []


def test_click_reruns_the_analysis_in_the_kernel_for_that_cell(lab_page: Any) -> None:
    page = lab_page
    root = explorer_heatmap(page)
    rows, cols = shape(root)
    r, c = rows - 2, cols // 2 - 1 if cols > 2 else 0
    detail = page.locator(".heatwidget-explorer .heatwidget-detail").first
    page.mouse.click(*page_point(root, *cell_center(root, r, c)))

    # The kernel ran the drill-down for exactly (r, c) ...
    probe = kernel_exec(page, PROBE.format(r=r, c=c))
    assert not probe.startswith("ERROR"), probe
    got = json.loads(probe.strip().splitlines()[-1])
    assert (got["explorers"], got["row"], got["col"]) == (1, r, c), got
    # ... and the detail area shows what it computed (values printed by the kernel, not the view's own labels).
    detail.get_by_text(got["title"]).first.wait_for(state="visible", timeout=60_000)
    text = detail.inner_text()
    assert f"value = {got['value']}" in text, text[:500]
    if not use_tour():
        assert f"token={kernel_token(r, c)}" in text  # a hash only the kernel computes for (r, c)
        assert got["texts"]["kernel"].endswith(kernel_token(r, c))
    # The drill-down's charts are bqplot figures in the detail area.
    if page.locator(".heatwidget-explorer .heatwidget-detail .bqplot").count() == 0:
        page.wait_for_selector(".heatwidget-explorer .heatwidget-detail .bqplot", timeout=30_000)
    assert page.errors == []


def test_dark_theme_recolours_the_heatmap(lab_page: Any) -> None:
    page = lab_page
    root = explorer_heatmap(page)
    light = margin_colours(root)
    try:
        set_theme(page, "JupyterLab Dark")
        page.wait_for_function(
            """() => { const c = document.querySelector('.heatwidget-explorer .heatwidget canvas.hw-base');
               return c.getContext('2d').getImageData(2, 2, 1, 1).data[0] < 100; }""",
            timeout=30_000,
        )
        dark = margin_colours(root)
    finally:
        set_theme(page, "JupyterLab Light")
    # Light: dark labels on a light background; dark: the reverse.
    assert light["bgLum"] > 200 and light["textLum"] < 120, light
    assert dark["bgLum"] < 80 and dark["textLum"] > 150, dark
    stats = plot_stats(root)
    assert stats["opaque"] == stats["samples"]
    assert page.errors == []


# Widget models in the notebook's front-end widget manager (jupyterlab-manager keeps them in `_models`); found
# through the rendered widget outputs, which hold their manager.
MODEL_COUNT_JS = """
async () => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  for (const cell of nb.widgets) {
    for (const out of (cell.outputArea ? cell.outputArea.widgets : [])) {
      for (const w of (out.widgets || [])) {
        let m = w._manager || w.manager;
        if (m && m.promise) m = await m.promise;
        if (m && m._models) return Object.keys(m._models).length;
      }
    }
  }
  return -1;
}
"""

LABELS = """
import json as _json
from heatwidget.explorer import open_explorers as _open_explorers
_ex = _open_explorers()[0]
print(_json.dumps({"rows": _ex.matrix.rows, "cols": _ex.matrix.cols}))
"""


def stable_model_count(page: Any) -> int:
    """The front end's widget-model count once the kernel's close messages have arrived (two equal readings)."""
    last = page.evaluate(MODEL_COUNT_JS)
    for _ in range(20):
        page.wait_for_timeout(400)
        now = page.evaluate(MODEL_COUNT_JS)
        if now == last:
            return now
        last = now
    return last


def test_fifty_clicks_leave_the_front_ends_widget_models_flat(lab_page: Any) -> None:
    """Each live click replaces the detail view; the kernel closes the old one, and the front end forgets it."""
    page = lab_page
    root = explorer_heatmap(page)
    rows, cols = shape(root)
    printed = kernel_exec(page, LABELS)
    assert not printed.startswith("ERROR"), printed
    labels = json.loads(printed.strip().splitlines()[-1])
    detail = page.locator(".heatwidget-explorer .heatwidget-detail").first
    cells = [(r, c) for r in range(rows) for c in range(cols)][:10]
    counts = []
    for i in range(50):
        r, c = cells[i % len(cells)]
        page.mouse.click(*page_point(root, *cell_center(root, r, c)))
        page.wait_for_function(
            # The displayed title (the explorer keeps recent cells' views hidden beside it).
            "([el, row, col]) => { const t = Array.from(el.querySelectorAll('.hw-detail-title'))"
            ".find((x) => x.getClientRects().length > 0);"
            " return t && t.textContent.includes(row) && t.textContent.includes(col); }",
            arg=[detail.element_handle(), labels["rows"][r], labels["cols"][c]],
            timeout=60_000,
        )
        if i % 10 == 9:
            counts.append(stable_model_count(page))
    assert counts[0] > 0, counts
    assert max(counts) == min(counts), f"front-end widget models after every 10 clicks: {counts}"
    # Live, the kernel answered the page's hello: kernel-only buttons stay enabled.
    rerun = detail.locator(".hw-detail button").first
    if rerun.count():
        assert rerun.is_enabled()
    assert page.errors == []


# ---- saved from JupyterLab with widget state, exported with plain nbconvert ---------------------------------------

SAVE_STATE = {"saveState": True}
PRECOMPUTED = SETUP.replace("ex = hw.explore(m)", "ex = hw.explore(m, precompute=True)")


def serve_cdn_locally(route: Any) -> None:
    """Plain nbconvert pages load require.js, the html-manager and widget front ends from CDNs; serve the same files
    from this machine (nothing here reaches the internet) and an empty script for the rest (MathJax, mermaid)."""
    import re

    from heatwidget.export import find_vendor_files, find_widget_module

    url = route.request.url
    if url.startswith("file:"):
        # The page's loader first asks require.js for `<module>.js` beside the page, then the CDN (the same file);
        # the html-manager's icon fonts are asked for beside the page too.
        path = Path(url.removeprefix("file://"))
        font = find_vendor_files()["embed-amd.js"].parent / path.name
        local = None if path.exists() else font if font.is_file() else find_widget_module(path.name.removesuffix(".js"))
        return route.fulfill(path=str(local)) if local else route.continue_()
    if url.startswith(("data:", "blob:")):
        return route.continue_()
    vendor = find_vendor_files()
    if "require" in url and url.endswith(".js") and "cdnjs" in url:
        return route.fulfill(path=str(vendor["require.js"]), content_type="application/javascript")
    if "@jupyter-widgets/html-manager" in url:
        name = url.rsplit("/", 1)[-1]
        path = vendor["embed-amd.js"] if name.endswith(".js") else vendor["embed-amd.js"].parent / name
        return route.fulfill(path=str(path))
    m = re.search(r"cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^@/]+)@[^/]+/dist/index\.js", url)
    if m and find_widget_module(m.group(1)):
        return route.fulfill(path=str(find_widget_module(m.group(1))), content_type="application/javascript")
    return route.fulfill(status=200, content_type="application/javascript", body="")


def test_saved_with_widget_state_and_plain_nbconvert_keeps_the_details(
    lab_server: Any, browser: Any, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from report_page import explorers
    from test_export import click_cells_and_check

    settings = lab_server.root / ".config" / "lab" / "user-settings" / "@jupyter-widgets" / "jupyterlab-manager"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps(SAVE_STATE))
    lab_server.add_notebook("saved.ipynb", [PRECOMPUTED])
    ctx, page = lab_server.open(browser, "saved.ipynb")
    try:
        page.evaluate(RUN_ALL_JS)
        page.wait_for_function("window.__hwRunAll !== undefined", timeout=RUN_ALL_TIMEOUT_MS)
        explorer_heatmap(page)
        page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
        page.wait_for_function("!window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=30_000)
        page.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
    finally:
        ctx.close()
        (settings / "plugin.jupyterlab-settings").unlink()
    saved = nbformat.read(lab_server.root / "saved.ipynb", as_version=4)
    assert saved.metadata.get("widgets"), "JupyterLab saved no widget state"
    out = tmp_path / "saved.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jupyter",
            "nbconvert",
            "--to",
            "html",
            "--output",
            str(out),
            str(lab_server.root / "saved.ipynb"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    infos = explorers(out)
    assert len(infos) == 1 and len(infos[0].precomputed) == ROWS * COLS

    ctx = browser.new_context(viewport={"width": 1200, "height": 1000})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("console", lambda m: errors.append(f"console.error: {m.text}") if m.type == "error" else None)
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url[:200]}"))
    page.route("**/*", serve_cdn_locally)
    try:
        page.goto(out.as_uri())
        page.locator(".heatwidget-explorer .heatwidget").first.wait_for(state="visible", timeout=60_000)
        assert len(click_cells_and_check(page, out)) == 3
        assert errors == []
    finally:
        ctx.close()


def test_click_to_detail_pixels_cached_and_fresh(lab_page: Any) -> None:
    """Issue 18: a click to the detail's pixels on screen, fresh (the kernel computes the drill) and cached (the
    explorer's cache). Generous bounds for a loaded CI box; benchmarks/bench_click_lab.py measures the targets
    (<= 1 s fresh, <= 100 ms cached) on a quiet machine."""
    page = lab_page
    root = explorer_heatmap(page)
    rows, cols = shape(root)
    # Cells the earlier tests did not click (the click test used (rows - 2, cols // 2 - 1)).
    a, b = (0, 0), (rows - 1, cols - 1)
    fresh = [time_click(page, root, *a), time_click(page, root, *b)]
    cached = [time_click(page, root, *a), time_click(page, root, *b)]
    print(
        json.dumps(
            {
                "notebook": page.notebook,
                "fresh_ms": [round(x["ms"]) for x in fresh],
                "cached_ms": [round(x["ms"]) for x in cached],
                "charts": fresh[0]["charts"],
            }
        )
    )
    for x in fresh + cached:
        assert x["text"].strip(), x  # the detail shows something
    # Bounds a loaded 2-core box still meets (measured there under load ~12: fresh 1.5-6 s, cached 0.2-1.1 s).
    assert max(x["ms"] for x in fresh) < 8000, fresh
    assert max(x["ms"] for x in cached) < 2000, cached
    assert page.errors == []
