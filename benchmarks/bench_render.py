"""Time to first paint of the heatmap widget vs bqplot's GridHeatMap, in headless Chromium, in one run.

Two measurements:

1. renderer: the built widget bundle rendered in a static page from the exact state `Heatmap` serialises (float32
   bytes + shape), with a minimal stand-in for the anywidget model. Time = from `render()` to the frame after the
   first paint. This isolates the front end (decode, colour mapping, layout, canvas) from Jupyter.
2. jupyterlab: a real JupyterLab server + kernel. Time = from "run cell" to the frame after the widget's cells are
   on screen (ours: first canvas paint; bqplot: every `rect.heatmapcell` in the DOM). This includes kernel-side
   construction, serialisation, the websocket and the widget manager, identically for both. Each case runs in a
   fresh page after an untimed warm-up widget of the same kind, so library loading is excluded.

bqplot draws one SVG <rect> per cell; cases that do not finish within --timeout seconds are reported as such
(and cases with at least as many cells are then skipped: bqplot's cost grows with the number of cells).

Usage: python benchmarks/bench_render.py [--repeats 5] [--lab-repeats 3] [--timeout 120] [--skip-lab]
       [--json out.json]
Needs: the built bundle (cd js && npm run build), /usr/bin/chromium, playwright (python), jupyterlab, bqplot.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from labserver import WIDGET_IMPORT, LabServer  # noqa: E402 - shared with the browser tests

CHROMIUM = os.environ.get("HEATWIDGET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SIZES = [(100, 100), (100, 10_000), (1000, 1000)]
HARNESS = ROOT / "tests" / "browser" / "harness.html"


def _import_widget() -> Any:
    # heatwidget/__init__ pulls in the analyses (torch); the widget needs none of that.
    if "heatwidget" not in sys.modules:
        pkg = types.ModuleType("heatwidget")
        pkg.__path__ = [str(ROOT / "heatwidget")]  # type: ignore[attr-defined]
        sys.modules["heatwidget"] = pkg
    from heatwidget.widget import Heatmap

    return Heatmap


def _data(shape: tuple[int, int]) -> Any:
    import numpy as np

    return np.random.default_rng(0).random(shape, dtype=np.float32)


# ---- 1. renderer in a static page -----------------------------------------------------------------------------
def bench_renderer(browser: Any, repeats: int) -> dict[str, dict[str, float]]:
    heatmap = _import_widget()
    html = HARNESS.read_text(encoding="utf-8")
    out: dict[str, dict[str, float]] = {}
    for shape in SIZES:
        state = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
                 for k, v in heatmap(_data(shape), colormap="viridis").get_state().items()}
        times, paints = [], []
        for _ in range(repeats):
            ctx = browser.new_context(viewport={"width": 1000, "height": 900})
            page = ctx.new_page()
            page.route("http://bench.test/**", lambda r: r.fulfill(status=200, content_type="text/html", body=html))
            page.goto("http://bench.test/harness.html")
            page.wait_for_function("window.hwReady === true")
            page.evaluate("() => { document.getElementById('host').style.width = '900px'; }")
            info = page.evaluate("([s]) => window.hw.mount(s)", [state])
            times.append(info["ms"])
            paints.append(info["paintMs"])
            ctx.close()
        key = f"{shape[0]}x{shape[1]}"
        out[key] = {"first_paint_ms_median": statistics.median(times), "first_paint_ms_min": min(times),
                    "draw_ms_median": statistics.median(paints)}
        print(f"  renderer  {key:>10}: first paint {statistics.median(times):7.1f} ms median "
              f"(min {min(times):.1f}, n={repeats}); of which drawing {statistics.median(paints):.1f} ms",
              flush=True)
    return out


# ---- 2. real JupyterLab -------------------------------------------------------------------------------------------
SETUP = WIDGET_IMPORT + textwrap.dedent(f"""
    import numpy as np
    import bqplot as bq
    rng = np.random.default_rng(0)
    data = {{s: rng.random(s, dtype=np.float32) for s in {SIZES!r} + [(2, 2)]}}

    def grid(v):
        r, c = v.shape
        sr, sc, col = bq.LinearScale(), bq.LinearScale(), bq.ColorScale(scheme="viridis")
        mark = bq.GridHeatMap(color=v, row=np.arange(r), column=np.arange(c),
                              scales={{"row": sr, "column": sc, "color": col}})
        axes = [bq.Axis(scale=sc, label="col"), bq.Axis(scale=sr, orientation="vertical", label="row"),
                bq.ColorAxis(scale=col, orientation="vertical", side="right")]
        return bq.Figure(marks=[mark], axes=axes, padding_y=0.0)
    print("READY")
""")

# Run cell 1 with `code`; window.__hwResult gets the ms from "run" until the cells are on screen (+2 frames).
# The caller waits for it with a Playwright timeout, which fires even while bqplot keeps the page's main thread
# busy (an in-page timer could not).
TIME_JS = """
([code, kind, cells]) => {
  window.__hwResult = undefined;
  const app = window.jupyterapp;
  const nb = app.shell.currentWidget.content;
  const cell = nb.widgets[1];
  cell.model.sharedModel.setSource(code);
  nb.activeCellIndex = 1;
  const node = cell.node;
  const t0 = performance.now();
  app.commands.execute('notebook:run-cell');
  const done = () => kind === 'ours'
    ? node.querySelector('.heatwidget[data-paints]') !== null
    : node.getElementsByClassName('heatmapcell').length >= cells;
  const check = () => {
    if (done()) {
      requestAnimationFrame(() => requestAnimationFrame(() => { window.__hwResult = performance.now() - t0; }));
    } else {
      setTimeout(check, kind === 'ours' ? 2 : 50);
    }
  };
  check();
}
"""


def run_timed(page: Any, args: list[Any], timeout_s: float) -> float | None:
    page.evaluate(TIME_JS, args)
    try:
        page.wait_for_function("window.__hwResult !== undefined", timeout=timeout_s * 1000, polling=100)
    except Exception as e:  # TimeoutError, or the page crashed (out of memory)
        if "Timeout" not in type(e).__name__:
            print(f"    {args[1]}: {type(e).__name__}: {str(e)[:120]}", flush=True)
        return None
    return page.evaluate("window.__hwResult")


def time_case(lab: Any, browser: Any, kind: str, shape: tuple[int, int], timeout_s: float) -> float | None:
    ctx, page = lab.open(browser, "bench.ipynb")
    try:
        expr = "Heatmap(data[{}], colormap='viridis')" if kind == "ours" else "grid(data[{}])"
        # Untimed warm-up: loads the widget's JS (anywidget ESM / bqplot chunks) in this page.
        if run_timed(page, [expr.format((2, 2)), kind, 4], 60) is None:
            raise RuntimeError(f"{kind} warm-up widget did not render")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        page.wait_for_timeout(300)
        return run_timed(page, [expr.format(shape), kind, shape[0] * shape[1]], timeout_s)
    finally:
        ctx.close()


def bench_lab(browser: Any, timeout_s: float, repeats: int) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {"heatwidget": {}, "bqplot": {}}
    with tempfile.TemporaryDirectory(prefix="hw-bench-") as d:
        lab = LabServer(Path(d), {"bench.ipynb": [SETUP, ""]})
        try:
            ctx, page = lab.open(browser, "bench.ipynb")
            if "READY" not in lab.run_cell(page, 0):
                raise RuntimeError(f"benchmark setup cell failed; see {lab.log_path}")
            ctx.close()
            for kind, label in (("ours", "heatwidget"), ("bqplot", "bqplot")):
                dnf_cells = None  # cell count of the smallest case that did not finish
                for shape in SIZES:
                    key = f"{shape[0]}x{shape[1]}"
                    if dnf_cells is not None and shape[0] * shape[1] >= dnf_cells:
                        out[label][key] = None
                        print(f"  jupyterlab {label:>10} {key:>10}: skipped (a case with as many cells did not finish)")
                        continue
                    runs: list[float] = []
                    for _ in range(repeats):
                        ms = time_case(lab, browser, kind, shape, timeout_s)
                        if ms is None:
                            break
                        runs.append(ms)
                    if not runs:
                        dnf_cells = shape[0] * shape[1]
                        out[label][key] = None
                        print(f"  jupyterlab {label:>10} {key:>10}: did not finish in {timeout_s:.0f} s", flush=True)
                    else:
                        out[label][key] = statistics.median(runs)
                        print(f"  jupyterlab {label:>10} {key:>10}: first paint {statistics.median(runs):9.1f} ms "
                              f"median (min {min(runs):.1f}, n={len(runs)})", flush=True)
        finally:
            lab.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="renderer repeats per size (median reported)")
    ap.add_argument("--lab-repeats", type=int, default=3, help="JupyterLab repeats per case (median reported)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for one JupyterLab case")
    ap.add_argument("--skip-lab", action="store_true", help="only the static-page renderer timings")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    bundle = ROOT / "heatwidget" / "static" / "widget.js"
    if not bundle.is_file():
        print(f"missing {bundle}: run `cd js && npm ci && npm run build` first", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {"sizes": [f"{r}x{c}" for r, c in SIZES]}
    t = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        results["chromium"] = browser.version
        print(f"Chromium {browser.version}; {os.cpu_count()} CPUs", flush=True)
        print("renderer (static page, built bundle, fake model):", flush=True)
        results["renderer"] = bench_renderer(browser, args.repeats)
        if not args.skip_lab:
            print("jupyterlab (run cell -> cells on screen):", flush=True)
            results["jupyterlab"] = bench_lab(browser, args.timeout, args.lab_repeats)
        browser.close()
    results["wall_s"] = round(time.time() - t, 1)

    lab = results.get("jupyterlab", {})

    def fmt(v: float | None, w: int) -> str:
        # DNF: did not finish within --timeout (or skipped after a smaller case did not).
        return f"{v:{w}.0f}" if isinstance(v, float) else f"{'DNF' if lab else '-':>{w}}"

    print("\nsummary: time to first paint (ms)")
    print(f"{'matrix':>12} {'renderer':>10} {'lab: ours':>10} {'lab: bqplot':>12}")
    for key in results["sizes"]:
        ren = results["renderer"][key]["first_paint_ms_median"]
        ours = lab.get("heatwidget", {}).get(key)
        bq = lab.get("bqplot", {}).get(key)
        print(f"{key:>12} {ren:10.1f} {fmt(ours, 10)} {fmt(bq, 12)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
