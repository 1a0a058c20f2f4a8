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
                   "value": f"{{_d.value:.4g}}", "texts": _d.texts, "pid": _os.getpid()}}))
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
    page.on("pageerror", lambda e: page.errors.append(str(e)))
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


def explorer_heatmap(page: Any) -> Any:
    root = page.locator(".heatwidget-explorer .heatwidget").first
    root.wait_for(state="visible", timeout=60_000)
    page.wait_for_function("document.querySelector('.heatwidget-explorer .heatwidget')?.dataset.paints >= 1",
                           timeout=30_000)
    return root


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
               return c.getContext('2d').getImageData(2, 2, 1, 1).data[0] < 100; }""", timeout=30_000)
        dark = margin_colours(root)
    finally:
        set_theme(page, "JupyterLab Light")
    # Light: dark labels on a light background; dark: the reverse.
    assert light["bgLum"] > 200 and light["textLum"] < 120, light
    assert dark["bgLum"] < 80 and dark["textLum"] > 150, dark
    stats = plot_stats(root)
    assert stats["opaque"] == stats["samples"]
    assert page.errors == []


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
    print(json.dumps({"notebook": page.notebook, "fresh_ms": [round(x["ms"]) for x in fresh],
                      "cached_ms": [round(x["ms"]) for x in cached], "charts": fresh[0]["charts"]}))
    for x in fresh + cached:
        assert x["text"].strip(), x  # the detail shows something
    # Bounds a loaded 2-core box still meets (measured there under load ~12: fresh 1.5-6 s, cached 0.2-1.1 s).
    assert max(x["ms"] for x in fresh) < 8000, fresh
    assert max(x["ms"] for x in cached) < 2000, cached
    assert page.errors == []
