"""`hw.explore(matrix)`: the heatmap, controls and a linked detail area whose clicks re-run analysis in the kernel.

Clicks arrive as the Heatmap's synced `selected_row`/`selected_col` traits. The drill-down (and any re-run) runs on
one worker thread, off the kernel's main thread, so the kernel keeps receiving clicks: a new click cancels the
running task at its next progress step (`_progress.Cancelled`) and only the newest request may update the view,
which therefore never shows a half-finished result. Results are cached by (matrix, request). Failures become a
message in the widget, never a traceback in the output area.
"""

from __future__ import annotations

import gc
import html
import math
import sys
import threading
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import ipywidgets as W

from ._detail_view import detail_widgets
from ._progress import Cancelled, Task, running
from .matrix import Detail, HeatMatrix

__all__ = ["Explorer", "explore", "OPTION_CHOICES"]

CACHE_SIZE = 128  # drill-downs and re-runs kept per explorer (least recently used dropped first)

# Options an analysis records in meta["options"] that the explorer offers as controls, with their choices
# (None = free text). Others are shown read-only in the provenance line.
OPTION_CHOICES: dict[str, list[str] | None] = {
    "intervention": ["skip", "zero_attn", "zero_mlp", "mean"],
    "mode": ["teacher_forced", "free_running"],
    "corruption": ["noise", "zero", "mean"],
    "site": ["resid", "mlp", "mlp_in", "attn"],
    "stat": ["relative", "density", "absolute"],
    "prompt": None,
}


def _release_memory() -> None:
    """Give freed activations back after each run (no growth over many clicks)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class Explorer(W.VBox):
    """Heatmap + controls + detail; see module docstring. Build with `hw.explore(matrix)`."""

    def __init__(self, matrix: HeatMatrix, **heatmap_kwargs: Any) -> None:
        from .widget import Heatmap

        self.heatmap = Heatmap(matrix, **heatmap_kwargs)
        self.history: list[tuple[str, HeatMatrix]] = [(matrix.title or "matrix", matrix)]
        # LRU, bounded so memory stays flat: (id(matrix), request) -> (matrix, result)
        self._cache: OrderedDict[tuple[int, Any], tuple[HeatMatrix, Any]] = OrderedDict()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heatwidget-explorer")
        self._lock = threading.Lock()
        self._task: Task | None = None
        self._request_id = 0
        self.last_detail: Detail | None = None
        self.last_future: Future | None = None

        self.breadcrumb = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.message = W.HTML("")
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0,
                                        layout=W.Layout(width="200px", visibility="hidden"))
        self.cancel_button = W.Button(description="cancel", icon="stop", layout=W.Layout(width="auto", display="none"))
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.controls = W.HBox(layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.detail = W.VBox(layout=W.Layout(width="100%"))
        self.heatmap.observe(self._on_select, names=["selected_row", "selected_col"])
        super().__init__([self.breadcrumb, self.controls, self.heatmap,
                          W.HBox([self.progress, self.cancel_button, self.message]), self.detail])
        # Stable hooks for user CSS and browser tests (the heatmap inside vs. child heatmaps in the detail area).
        self.add_class("heatwidget-explorer")
        self.detail.add_class("heatwidget-detail")
        self._show_matrix(matrix)

    # ---- the main view and its history -------------------------------------------------------------------
    @property
    def matrix(self) -> HeatMatrix:
        return self.history[-1][1]

    def _show_matrix(self, matrix: HeatMatrix) -> None:
        self.heatmap.matrix = matrix
        self.heatmap.selected_row = -1
        self.heatmap.selected_col = -1
        self.detail.children = ()
        self._build_controls()
        self._build_breadcrumb()

    def push(self, label: str, matrix: HeatMatrix) -> None:
        """Make `matrix` the main view, remembering the current one in the breadcrumb."""
        self.history.append((label, matrix))
        self._show_matrix(matrix)

    def back(self, depth: int) -> None:
        """Return to the view at breadcrumb position `depth` (0 = the original matrix)."""
        self.cancel()
        del self.history[depth + 1:]
        self._show_matrix(self.matrix)

    def _build_breadcrumb(self) -> None:
        items: list[W.Widget] = []
        for i, (label, _m) in enumerate(self.history):
            b = W.Button(description=label[:40], tooltip=label, layout=W.Layout(width="auto"),
                         button_style="info" if i == len(self.history) - 1 else "")
            b.on_click(lambda _b, i=i: self.back(i))
            items.append(b)
            if i < len(self.history) - 1:
                items.append(W.Label("›"))
        self.breadcrumb.children = items if len(self.history) > 1 else ()

    def _build_controls(self) -> None:
        from ._figure import colormap_names

        hm = self.heatmap
        cmap = W.Dropdown(options=list(colormap_names()), value=hm.colormap, description="colours",
                          layout=W.Layout(width="190px"))
        W.link((cmap, "value"), (hm, "colormap"))
        log = W.Checkbox(value=bool(hm.log), description="log scale", indent=False, layout=W.Layout(width="100px"))
        W.link((log, "value"), (hm, "log"))
        items: list[W.Widget] = [cmap, log]
        m = self.matrix
        options = m.meta.get("options", {}) if isinstance(m.meta.get("options"), dict) else {}
        editors: dict[str, W.ValueWidget] = {}
        if m.can_recompute:
            for name, choices in OPTION_CHOICES.items():
                if name not in options or not isinstance(options[name], str):
                    continue
                value = options[name]
                if choices is None:
                    editors[name] = W.Text(value=value, description=name, layout=W.Layout(width="360px"))
                elif value in choices:
                    editors[name] = W.Dropdown(options=choices, value=value, description=name,
                                               layout=W.Layout(width="220px"))
            layers = options.get("layers")
            if isinstance(layers, list) and all(isinstance(i, int) for i in layers):
                editors["layers"] = W.Text(value=", ".join(map(str, layers)), description="layers",
                                           tooltip="layer indices in display order, e.g. 0, 15, 18, 17",
                                           layout=W.Layout(width="260px"))
            if editors:
                run = W.Button(description="re-run", icon="play", button_style="primary")
                run.on_click(lambda _b: self._rerun_with(editors))
                items += [*editors.values(), run]
        self.controls.children = items

    def _rerun_with(self, editors: dict[str, W.ValueWidget]) -> None:
        options = {k: e.value for k, e in editors.items()}
        if "layers" in options:
            try:
                options["layers"] = [int(x) for x in str(options["layers"]).replace(",", " ").split()]
            except ValueError:
                self.message.value = html.escape(f"layers must be integers separated by commas: {options['layers']!r}")
                return
        self.recompute(**options)

    # ---- requests ----------------------------------------------------------------------------------------
    def _on_select(self, _change: Any) -> None:
        r, c = self.heatmap.selected_row, self.heatmap.selected_col
        if r < 0 or c < 0:
            return
        self.select(r, c)

    def select(self, row: int, col: int) -> Future:
        """Drill into (row, col) of the current matrix (what a click does); positions or labels, as `m.drill`."""
        m = self.matrix
        row, col = m.index(row, col)  # an out-of-range cell fails here, naming the valid range
        label = f"{m.rows[row]} × {m.cols[col]}"
        if math.isnan(float(m.values[row, col])):
            # An n/a cell (e.g. a module this architecture lacks) has nothing behind it: say so, don't compute.
            return self._submit(("drill", row, col), lambda: m.cell(row, col), self._show_na, label)
        return self._submit(("drill", row, col), lambda: m.drill(row, col), self._show_detail, label)

    def recompute(self, **options: Any) -> Future:
        """Re-run the current analysis with changed options; the result replaces the main view."""
        m = self.matrix
        label = ", ".join(f"{k}={v}" for k, v in options.items())
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))  # repr: lists (layers) are unhashable
        return self._submit(("recompute", key), lambda: m.recompute(**options),
                            lambda res: self.push(label, res), label)

    def rerun(self, label: str, fn: Callable[[], HeatMatrix]) -> Future:
        """Run a drill-down's re-run entry point; its matrix becomes the main view (breadcrumb back)."""
        return self._submit(("rerun", label), fn, lambda res: self.push(label, res), label)

    def cancel(self) -> None:
        self._supersede()
        self._set_busy(False)

    def _supersede(self) -> int:
        """Cancel the running task (at its next progress step) and return the id of the newest request."""
        with self._lock:
            if self._task is not None:
                self._task.cancel()
            self._request_id += 1
            return self._request_id

    def _submit(self, key: tuple, work: Callable[[], Any], apply: Callable[[Any], None], label: str) -> Future:
        matrix = self.matrix
        cache_key = (id(matrix), key)
        rid = self._supersede()  # a new click supersedes the running one
        task = Task(on_progress=lambda f, d: self._on_progress(rid, f, d))
        with self._lock:
            self._task = task
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            result = self._cache[cache_key][1]
            fut: Future = Future()
            fut.set_result(result)
            self._finish(rid, apply, result, label)
            self.last_future = fut
            return fut
        self._set_busy(True, f"computing {label} …")

        def job() -> Any:
            try:
                with running(task):
                    result = work()
            except Cancelled:
                return None
            except Exception as e:  # shown in the widget, never as a traceback in the output area
                self._fail(rid, label, e)
                return None
            finally:
                _release_memory()
            # The entry keeps its matrix alive, so id(matrix) cannot be reused by another matrix while cached.
            self._cache[cache_key] = (matrix, result)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
            self._finish(rid, apply, result, label)
            return result

        fut = self._pool.submit(job)
        self.last_future = fut
        return fut

    def _is_current(self, rid: int) -> bool:
        with self._lock:
            return rid == self._request_id

    def _on_progress(self, rid: int, fraction: float, desc: str) -> None:
        if self._is_current(rid):
            self.progress.value = fraction
            self.heatmap.progress = fraction

    def _finish(self, rid: int, apply: Callable[[Any], None], result: Any, label: str) -> None:
        if not self._is_current(rid):
            return  # superseded: never show a stale result
        self._set_busy(False)
        self.message.value = ""
        try:
            apply(result)
        except Exception as e:
            self._fail(rid, label, e)

    def _fail(self, rid: int, label: str, err: Exception) -> None:
        if not self._is_current(rid):
            return
        self._set_busy(False)
        self.last_error = "".join(traceback.format_exception(err))
        self.message.value = (f"<span style='color:var(--jp-error-color1,#c62828)'>{html.escape(label)}: "
                              f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</span>")
        self.heatmap.status = f"error: {err}"

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.progress.layout.visibility = "visible" if busy else "hidden"
        self.cancel_button.layout.display = "" if busy else "none"
        self.progress.value = 0.0
        self.heatmap.status = text if busy else ""
        if busy:
            self.message.value = html.escape(text)

    def _show_detail(self, detail: Detail) -> None:
        self.last_detail = detail
        self.detail.children = tuple(detail_widgets(detail, open_matrix=self.push, run_rerun=self.rerun))

    def _show_na(self, detail: Detail) -> None:
        self.last_detail = detail
        self.detail.children = ()
        self.message.value = html.escape(f"{detail.title}: n/a — no value for this cell, nothing to drill into")

    def wait(self, timeout: float | None = 60) -> Any:
        """Block until the last request finished (for scripts and tests)."""
        return None if self.last_future is None else self.last_future.result(timeout)

    def close(self) -> None:
        self.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        super().close()


def explore(matrix: HeatMatrix, **heatmap_kwargs: Any) -> Explorer:
    """Heatmap + controls + linked drill-down for `matrix`; clicks re-run analysis in the kernel."""
    if not isinstance(matrix, HeatMatrix):
        raise TypeError(f"explore() takes a HeatMatrix, got {type(matrix).__name__}")
    return Explorer(matrix, **heatmap_kwargs)
