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

3. interactions on a 1000 × 1000 matrix in the static page (targets below): hover redraw and selection redraw
   (time spent in the pointermove / click handler, which redraws the overlay synchronously), and switching the colour
   map or the log scale (the paint's own work, from the `heatwidget:paint` event; the time until the next frame is on
   screen is printed too, it adds the wait for the browser's frame).

The summary table prints medians next to the targets: first paint <= 30 ms, hover and selection redraw <= 4 ms,
colour map / log switch on 1M cells <= 16 ms.

Usage: python benchmarks/bench_render.py [--repeats 15] [--interactions 40] [--lab-repeats 3] [--timeout 120]
       [--skip-lab] [--bundle widget.js] [--json out.json]
--bundle times another build of the front end (e.g. main's, for a before/after on the same machine).
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
from chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - how the browser tests launch it
from labserver import WIDGET_IMPORT, LabServer  # noqa: E402 - shared with the browser tests

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
def wire_state(data: Any, bundle: str | None, **traits: Any) -> dict[str, Any]:
    """The state `Heatmap` serialises (bytes as base64 for page.evaluate), optionally with another bundle."""
    state = {
        k: base64.b64encode(v).decode() if isinstance(v, bytes) else v
        for k, v in _import_widget()(data, **traits).get_state().items()
    }
    if bundle is not None:
        state["_esm"] = bundle
    return state


def open_harness(browser: Any) -> tuple[Any, Any]:
    """A fresh page (own renderer, cold caches) with the test harness, its widget host 900 px wide."""
    html = HARNESS.read_text(encoding="utf-8")
    ctx = browser.new_context(viewport={"width": 1000, "height": 900})
    page = ctx.new_page()
    page.route("http://bench.test/**", lambda r: r.fulfill(status=200, content_type="text/html", body=html))
    page.goto("http://bench.test/harness.html")
    page.wait_for_function("window.hwReady === true")
    page.evaluate("() => { document.getElementById('host').style.width = '900px'; }")
    return ctx, page


def bench_renderer(browser: Any, repeats: int, bundle: str | None = None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    # One untimed page first: a fresh browser's first page pays one-off costs of the browser itself (its font
    # and GPU-process set-up), which would otherwise land on the first size's first repeats only.
    ctx, page = open_harness(browser)
    page.evaluate("([s]) => window.hw.mount(s)", [wire_state(_data((10, 10)), bundle, colormap="viridis")])
    ctx.close()
    for shape in SIZES:
        state = wire_state(_data(shape), bundle, colormap="viridis")
        times, paints = [], []
        for _ in range(repeats):
            ctx, page = open_harness(browser)
            info = page.evaluate("([s]) => window.hw.mount(s)", [state])
            times.append(info["ms"])
            paints.append(info["paintMs"])
            ctx.close()
        key = f"{shape[0]}x{shape[1]}"
        out[key] = {
            "first_paint_ms_median": statistics.median(times),
            "first_paint_ms_min": min(times),
            "draw_ms_median": statistics.median(paints),
            "n": repeats,
        }
        print(
            f"  renderer  {key:>10}: first paint {statistics.median(times):7.1f} ms median "
            f"(min {min(times):.1f}, n={repeats}); of which drawing {statistics.median(paints):.1f} ms",
            flush=True,
        )
    return out


# ---- 3. interactions on 1M cells -----------------------------------------------------------------------------------
# Hover: pointermove to a new cell each time; selection: a click on a new cell (the kernel message is sent by the
# fake model, which only records it). Both handlers redraw the overlay synchronously, so timing dispatchEvent times
# the redraw. Colour map / log: a kernel-side trait update, then the paint it schedules (its `workMs`) and the
# time until the frame after it. `layouts` counts layout computations: a colour-map switch should add none.
INTERACT_JS = """
async ([index, n]) => {
  const root = document.querySelectorAll('.heatwidget')[index];
  const overlay = root.querySelector('canvas.hw-overlay');
  const box = overlay.getBoundingClientRect();
  const [x, y, w, h] = root.dataset.plot.split(',').map(Number);
  const at = (i) => ({ clientX: box.left + x + (((i * 37) % 97) + 0.5) / 97 * w,
                       clientY: box.top + y + (((i * 53) % 89) + 0.5) / 89 * h, bubbles: true });
  const timeEvents = (make) => {
    const out = [];
    for (let i = 0; i < n; i++) {
      const ev = make(i);
      const t = performance.now();
      overlay.dispatchEvent(ev);
      out.push(performance.now() - t);
    }
    return out;
  };
  const hover = timeEvents((i) => new PointerEvent('pointermove', at(i)));
  const select = timeEvents((i) => new MouseEvent('click', at(i + 1)));
  const frame = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const switches = async (updates) => {
    const work = [], screen = [];
    for (let i = 0; i < n; i++) {
      const painted = new Promise((r, fail) => {
        root.addEventListener('heatwidget:paint', (e) => r(e.detail), { once: true });
        const what = JSON.stringify(updates[i % updates.length]);
        setTimeout(() => fail(new Error(`no paint within 10 s of ${what}`)), 10000);
      });
      const t = performance.now();
      window.hw.update(index, updates[i % updates.length]);
      const d = await painted;
      await frame();
      work.push(d.workMs ?? null);
      screen.push(performance.now() - t);
    }
    return { work, screen };
  };
  const layouts0 = Number(root.dataset.layouts);
  const cmap = await switches(['blues', 'ylorrd', 'viridis_r', 'viridis'].map((c) => ({ colormap: c })));
  const cmapLayouts = Number(root.dataset.layouts) - layouts0;
  const log = await switches([{ log: true }, { log: false }]);
  return { hover, select, cmap, cmapLayouts, log };
}
"""


def bench_interactions(browser: Any, n: int, bundle: str | None = None) -> dict[str, Any]:
    data = _data((1000, 1000)) + 1e-3  # positive, so the log scale applies
    ctx, page = open_harness(browser)
    try:
        page.evaluate("([s]) => window.hw.mount(s)", [wire_state(data, bundle, colormap="viridis")])
        r = page.evaluate(INTERACT_JS, [0, n])
    finally:
        ctx.close()
    out: dict[str, Any] = {
        "hover_ms": r["hover"],
        "select_ms": r["select"],
        "colormap_work_ms": r["cmap"]["work"],
        "colormap_screen_ms": r["cmap"]["screen"],
        "log_work_ms": r["log"]["work"],
        "log_screen_ms": r["log"]["screen"],
        "colormap_switch_layouts": r["cmapLayouts"],
    }
    for k, v in list(out.items()):
        if isinstance(v, list) and any(x is None for x in v):
            del out[k]  # a bundle from before the paint event reported workMs
        elif isinstance(v, list):
            print(f"  1000x1000 {k:>20}: {statistics.median(v):7.2f} ms median (min {min(v):.2f}, n={len(v)})")
    print(f"  layouts computed during {n} colour-map switches: {r['cmapLayouts']}", flush=True)
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
                        print(
                            f"  jupyterlab {label:>10} {key:>10}: first paint {statistics.median(runs):9.1f} ms "
                            f"median (min {min(runs):.1f}, n={len(runs)})",
                            flush=True,
                        )
        finally:
            lab.close()
    return out


TARGETS_MS = {
    "first paint": 30.0,
    "hover redraw": 4.0,
    "selection redraw": 4.0,
    "colour-map switch": 16.0,
    "log-scale switch": 16.0,
}


def print_summary(results: dict[str, Any]) -> None:
    """One table: each measurement's median, min and n next to its target."""
    rows: list[tuple[str, str, list[float] | dict[str, float], float]] = []
    for key in results["sizes"]:
        rows.append(("first paint", key, results["renderer"][key], TARGETS_MS["first paint"]))
    inter = results.get("interactions") or {}
    for label, k in (
        ("hover redraw", "hover_ms"),
        ("selection redraw", "select_ms"),
        ("colour-map switch", "colormap_work_ms"),
        ("log-scale switch", "log_work_ms"),
    ):
        if k in inter:
            rows.append((label, "1000x1000", inter[k], TARGETS_MS[label]))
    print(f"\nsummary ({results['bundle']}; Chromium {results['chromium']}; {os.cpu_count()} CPUs)")
    print(f"{'measurement':<20} {'matrix':>10} {'median ms':>10} {'min ms':>8} {'n':>4} {'target ms':>10}  met")
    for label, key, v, target in rows:
        if isinstance(v, dict):
            med, lo, n = v["first_paint_ms_median"], v["first_paint_ms_min"], v["n"]
        else:
            med, lo, n = statistics.median(v), min(v), len(v)
        print(
            f"{label:<20} {key:>10} {med:10.2f} {lo:8.2f} {n:4d} {'<= ' + format(target, 'g'):>10}  "
            f"{'yes' if med <= target else 'NO'}"
        )
    if "colormap_work_ms" in inter:
        print(
            f"colour-map / log switch until the next frame is on screen (median): "
            f"{statistics.median(inter['colormap_screen_ms']):.1f} / {statistics.median(inter['log_screen_ms']):.1f}"
            f" ms; layouts recomputed by {len(inter['colormap_work_ms'])} colour-map switches: "
            f"{inter['colormap_switch_layouts']}"
        )
    lab = results.get("jupyterlab", {})
    if lab:

        def fmt(v: float | None, w: int) -> str:
            # DNF: did not finish within --timeout (or skipped after a smaller case did not).
            return f"{v:{w}.0f}" if isinstance(v, float) else f"{'DNF':>{w}}"

        print("\nJupyterLab: run cell -> cells on screen (ms)")
        print(f"{'matrix':>12} {'heatwidget':>11} {'bqplot':>10}")
        for key in results["sizes"]:
            print(f"{key:>12} {fmt(lab['heatwidget'].get(key), 11)} {fmt(lab['bqplot'].get(key), 10)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="renderer repeats per size (median reported)")
    ap.add_argument(
        "--interactions",
        type=int,
        default=40,
        help="hover moves, clicks and colour-map/log switches timed on 1M cells (0: skip)",
    )
    ap.add_argument("--bundle", type=Path, help="time this widget.js instead of heatwidget/static/widget.js")
    ap.add_argument("--lab-repeats", type=int, default=3, help="JupyterLab repeats per case (median reported)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds to wait for one JupyterLab case")
    ap.add_argument("--skip-lab", action="store_true", help="only the static-page renderer timings")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    args = ap.parse_args(argv)
    bundle_path = args.bundle or ROOT / "heatwidget" / "static" / "widget.js"
    if not bundle_path.is_file():
        print(f"missing {bundle_path}: run `cd js && npm ci && npm run build` first", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    results: dict[str, Any] = {"sizes": [f"{r}x{c}" for r, c in SIZES]}
    t = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        results["chromium"] = browser.version
        print(f"Chromium {browser.version}; {os.cpu_count()} CPUs", flush=True)
        print("renderer (static page, built bundle, fake model):", flush=True)
        bundle = args.bundle.read_text(encoding="utf-8") if args.bundle else None
        results["bundle"] = str(args.bundle or bundle_path)
        results["renderer"] = bench_renderer(browser, args.repeats, bundle)
        if args.interactions > 0:
            print("interactions (static page, 1000x1000):", flush=True)
            results["interactions"] = bench_interactions(browser, args.interactions, bundle)
        if not args.skip_lab:
            print("jupyterlab (run cell -> cells on screen):", flush=True)
            results["jupyterlab"] = bench_lab(browser, args.timeout, args.lab_repeats)
        browser.close()
    results["wall_s"] = round(time.time() - t, 1)

    print_summary(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
