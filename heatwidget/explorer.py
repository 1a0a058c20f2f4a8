"""`hw.explore(matrix)`: the heatmap, controls and a linked detail area whose clicks re-run analysis in the kernel.

Clicks arrive as the Heatmap's synced `selected_row`/`selected_col` traits. The drill-down (and any re-run) runs on
one worker thread, off the kernel's main thread, so the kernel keeps receiving clicks: a new click cancels the
running task at its next progress step (`_progress.Cancelled`) and only the newest request may update the view,
which therefore never shows a half-finished result. Results are cached by (matrix, request). Failures become a
message in the widget, never a traceback in the output area.

The explorer owns its widgets: a replaced detail view, control or breadcrumb is closed with its whole subtree
(bqplot marks, scales and axes included), so clicks do not pile up widgets in the kernel or the browser; the result
cache keeps data (`Detail`), never widgets. On top of it, the views of the last `VIEW_CACHE_SIZE` drill-downs shown
are kept (a small LRU, closed on eviction, so the number of live widgets stays bounded), each in its own box of the
live detail with only the shown box displayed: a click on one of those cells only switches which box is displayed
(two layout messages; no widgets built or sent, the page's views and drawn charts stay as they are). A notebook
saved with widget state carries those hidden views too; `Explorer.forget_views()` drops them (export does).

Memory: a fresh computation's freed activations are given back by a cheap young-generation collection right after
its result is shown; after every `FULL_COLLECT_EVERY` fresh computations a full collection runs once the explorer
has been idle for `IDLE_COLLECT_S` (a full `gc.collect()` costs ~0.5 s in a kernel with a model loaded, more than a
drill-down, and blocks a click that arrives meanwhile); cache hits collect nothing.

Precomputed drill-downs (`precompute`, `hw.explore(m, precompute=True)`) are detail views built once and kept in an
`ipywidgets.Stack` whose `selected_index` is jslink-ed to the heatmap's `detail_index`: the page switches views by
itself, so a saved report (exported HTML, a notebook saved with widget state) shows them without a kernel. Stack
slot 0 is the live detail, slot 1 the "not precomputed" notice, 2 + k the k-th precomputed view; the heatmap's
`detail_cells` lists which cell each view belongs to (js/src/details.ts).
"""

from __future__ import annotations

import gc
import html
import math
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import numpy as np

from ._detail_view import DETAIL_CSS, NEEDS_KERNEL, close_tree, detail_view, subtree
from ._progress import Cancelled, Task, running
from .matrix import Detail, HeatMatrix

__all__ = [
    "Explorer",
    "explore",
    "Precomputed",
    "NOT_PRECOMPUTED",
    "DEFAULT_BUDGET_MB",
    "state_bytes",
    "option_choices",
    "spec_editors",
    "OPTION_CHOICES",  # noqa: F822 - served by the module's __getattr__, derived on each access
]

CACHE_SIZE = 128  # drill-downs and re-runs kept per explorer (least recently used dropped first)
VIEW_CACHE_SIZE = 8  # built detail views of the last cells shown, kept for instant re-display (module docstring)
FULL_COLLECT_EVERY = 16  # fresh computations between full garbage collections (module docstring)
IDLE_COLLECT_S = 1.0  # ... each run this long after the last fresh computation
DEFAULT_BUDGET_MB = 25.0  # precomputed detail views, in saved widget state
NOT_PRECOMPUTED = "not precomputed in this report — re-run the notebook to explore it"
LIVE_SLOT, NOTICE_SLOT, FIRST_VIEW = 0, 1, 2  # the detail Stack's children (js/src/details.ts)
_EXPLORERS: list[weakref.ref] = []  # every explorer made in this process, in creation order (for export)

# Inputs an analysis records in meta["options"] that the explorer offers as free text (re-runs on another prompt).
TEXT_INPUTS = ("prompt",)


def option_choices() -> dict[str, list[Any] | None]:
    """Option name -> its choices, from the declarations of heatwidget's analyses (`heatwidget.analysis`), plus
    the constants of analyses that do not declare their options yet; TEXT_INPUTS map to None (free text). What
    the explorer offers for a matrix without meta["option_specs"] (one saved by an older version, say)."""
    import importlib

    from . import divergence, weights  # noqa: F401 - importing the analyses declares them
    from .analysis import declared

    collect_module = importlib.import_module("heatwidget.probing.collect")  # (the package's `collect` is a function)

    out: dict[str, list[Any] | None] = {}
    named = [(o.name, list(o.choices)) for a in declared().values() for o in a.options if o.choices is not None]
    # analyses that may not declare their options yet: their constants (empty once renamed; declared then)
    undeclared = [
        ("site", list(getattr(collect_module, "SITES", ()))),
        ("stat", list(getattr(weights, "CHANGE_STATS", ()))),
    ]
    for name, choices in [*named, *undeclared]:
        seen = out.setdefault(name, [])
        assert seen is not None
        seen += [c for c in choices if c not in seen]
    return {**out, **{name: None for name in TEXT_INPUTS}}


def __getattr__(name: str) -> Any:
    if name == "OPTION_CHOICES":  # derived on each access: analyses declared later are included
        return option_choices()
    raise AttributeError(f"module 'heatwidget.explorer' has no attribute {name!r}")


def spec_editors(specs: dict[str, Any], options: dict[str, Any]) -> dict[str, W.ValueWidget]:
    """Controls for the options an analysis declared (meta["option_specs"]): a dropdown per choice option, a
    bounded number box per int/float option, a text box per str option; "layers" is edited as a list below."""
    out: dict[str, W.ValueWidget] = {}
    for name, spec in specs.items():
        value, kind = options.get(name), spec.get("kind")
        tip = str(spec.get("doc", ""))
        if kind == "choice" and isinstance(value, (str, int, float)) and value in spec.get("choices", []):
            out[name] = W.Dropdown(
                options=spec["choices"], value=value, description=name, tooltip=tip, layout=W.Layout(width="220px")
            )
        elif kind in ("int", "float") and isinstance(value, (int, float)) and not isinstance(value, bool):
            box, cast = (W.BoundedIntText, int) if kind == "int" else (W.BoundedFloatText, float)
            lo = cast(spec["min"]) if spec.get("min") is not None else cast(-(2**31))
            hi = cast(spec["max"]) if spec.get("max") is not None else cast(2**31 - 1)
            out[name] = box(value=value, min=lo, max=hi, description=name, tooltip=tip, layout=W.Layout(width="200px"))
        elif kind == "str" and isinstance(value, str):
            out[name] = W.Text(value=value, description=name, tooltip=tip, layout=W.Layout(width="360px"))
    return out


def _editors(specs: Any, options: dict[str, Any]) -> dict[str, W.ValueWidget]:
    """The option controls for a matrix: from the options its analysis declared (meta["option_specs"]), else
    from `option_choices()`; a text box per recorded text input (TEXT_INPUTS) and a list box for "layers"."""
    editors: dict[str, W.ValueWidget] = {}
    if isinstance(specs, dict):
        editors.update(spec_editors(specs, options))
        choices: dict[str, list[Any] | None] = {name: None for name in TEXT_INPUTS}
    else:
        choices = option_choices()
    for name, allowed in choices.items():
        value = options.get(name)
        if name in editors or not isinstance(value, str):
            continue
        if allowed is None:
            editors[name] = W.Text(value=value, description=name, layout=W.Layout(width="360px"))
        elif value in allowed:
            editors[name] = W.Dropdown(options=allowed, value=value, description=name, layout=W.Layout(width="220px"))
    layers = options.get("layers")
    if isinstance(layers, list) and layers and all(isinstance(i, int) for i in layers):
        editors["layers"] = W.Text(
            value=", ".join(map(str, layers)),
            description="layers",
            tooltip="layer indices in display order, e.g. 0, 15, 18, 17",
            layout=W.Layout(width="260px"),
        )
    return editors


def _release_memory(full: bool = False) -> None:
    """Give a fresh computation's freed activations back (no growth over many clicks). The default collects the
    young generations only (what the run just allocated, microseconds); `full` runs the whole collection."""
    gc.collect() if full else gc.collect(1)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Precomputed:
    """What `Explorer.precompute` did: views kept for `cells` (in stack order) out of `requested`, their size."""

    cells: list[tuple[int, int]]
    requested: int
    total_cells: int
    state_bytes: int
    budget_bytes: int
    seconds: float
    failed: list[tuple[int, int]]

    def __repr__(self) -> str:
        return (
            f"Precomputed({len(self.cells)} of {self.requested} requested cells ({self.total_cells} in the "
            f"matrix), {self.state_bytes / 1e6:.2f} MB of widget state, budget {self.budget_bytes / 1e6:.1f} MB, "
            f"{self.seconds:.1f} s)"
        )


def state_bytes(root: W.Widget) -> int:
    """Bytes the widgets under `root` add to saved widget state (JSON, binary buffers as base64)."""
    return sum(_own_state_bytes(w) for w in subtree(root))


def _own_state_bytes(w: W.Widget) -> int:
    import json

    from ipywidgets.widgets.widget import _remove_buffers

    state, _paths, buffers = _remove_buffers(w.get_state())
    b64 = sum(4 * ((memoryview(b).nbytes + 2) // 3) for b in buffers)
    return len(json.dumps(state, default=str)) + b64 + 200  # + model id, module names and versions


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
        self.last_precompute: Precomputed | None = None
        # Precomputed views per matrix: id(matrix) -> (matrix, {(row, col): (detail, view)}) in stack order.
        self._views: dict[int, tuple[HeatMatrix, dict[tuple[int, int], tuple[Detail, W.Widget]]]] = {}
        self._control_parts: list[W.Widget] = []  # controls and breadcrumb of the current view, closed on change
        self._control_links: list[Any] = []  # kernel-side traitlets links of those controls
        self._slots: dict[tuple[int, int], int] = {}  # precomputed cell -> its Stack slot
        # Views of the last drill-downs shown (LRU, module docstring): cache key -> (matrix, detail, box of its view).
        self._recent_views: OrderedDict[tuple[int, Any], tuple[HeatMatrix, Detail, W.VBox]] = OrderedDict()
        self._idle_collect: threading.Timer | None = None  # the pending full collection (_after_fresh_run)
        self._fresh_runs = 0  # fresh computations since the last full collection
        self._retired: list[tuple[int, list[W.Widget]]] = []  # (request id, widgets taken off the page), see _retire

        self.breadcrumb = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.message = W.HTML("")
        self.progress = W.FloatProgress(
            value=0.0, min=0.0, max=1.0, layout=W.Layout(width="200px", visibility="hidden")
        )
        self.cancel_button = W.Button(description="cancel", icon="stop", layout=W.Layout(width="auto", display="none"))
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.controls = W.HBox(layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.precompute_note = W.HTML("")
        self._build_detail_area()
        self.heatmap.observe(self._on_select, names=["selected_row", "selected_col"])
        self.heatmap.on_msg(self._on_front_end_msg)
        super().__init__(
            [
                W.HTML(DETAIL_CSS),
                self.breadcrumb,
                self.controls,
                self.heatmap,
                W.HBox([self.progress, self.cancel_button, self.message]),
                self.precompute_note,
                self.details,
            ]
        )
        # Stable hooks for user CSS and browser tests (the heatmap inside vs. child heatmaps in the detail area).
        self.add_class("heatwidget-explorer")
        self._show_matrix(matrix)
        _EXPLORERS.append(weakref.ref(self))

    def _build_detail_area(self) -> None:
        """The Stack of detail views (module docstring): live detail, notice, then precomputed views."""
        # The live detail (Stack slot 0): a box for one-off content (n/a, nothing), then one box per kept view of a
        # recent drill-down; only the shown box is displayed (module docstring).
        self._other_box = W.VBox(layout=W.Layout(width="100%"))
        self._view_boxes = [W.VBox(layout=W.Layout(width="100%", display="none")) for _ in range(VIEW_CACHE_SIZE)]
        self._shown_box = self._other_box
        self.detail = W.VBox([self._other_box, *self._view_boxes], layout=W.Layout(width="100%"))
        self.detail.add_class("hw-live-detail")
        self.notice = W.HTML(f"<div class='hw-detail-notice'>{html.escape(NOT_PRECOMPUTED)}</div>")
        self.details = W.Stack([self.detail, self.notice], selected_index=LIVE_SLOT, layout=W.Layout(width="100%"))
        self.details.add_class("heatwidget-detail")
        self.heatmap.detail_index = LIVE_SLOT
        # In the page: a click sets detail_index (js/src/details.ts), the link shows that view, kernel or not.
        self._detail_link = W.jslink((self.heatmap, "detail_index"), (self.details, "selected_index"))

    def _on_front_end_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        # The page asks whether a kernel is behind it (js/src/details.ts); answering keeps its buttons enabled.
        if isinstance(content, dict) and content.get("type") == "hello":
            self.heatmap.offline = False
            self.heatmap.send({"type": "live"})

    # ---- the main view and its history -------------------------------------------------------------------
    @property
    def matrix(self) -> HeatMatrix:
        return self.history[-1][1]

    def _show_matrix(self, matrix: HeatMatrix) -> None:
        self.heatmap.matrix = matrix
        self.heatmap.selected_row = -1
        self.heatmap.selected_col = -1
        self._set_live_detail(())
        self._close_controls()
        self._build_controls()
        self._build_breadcrumb()
        self._sync_views()

    def push(self, label: str, matrix: HeatMatrix) -> None:
        """Make `matrix` the main view, remembering the current one in the breadcrumb."""
        self.history.append((label, matrix))
        self._show_matrix(matrix)

    def back(self, depth: int) -> None:
        """Return to the view at breadcrumb position `depth` (0 = the original matrix)."""
        self.cancel()
        del self.history[depth + 1 :]
        kept = {id(m) for _label, m in self.history}
        for key in [k for k in self._views if k not in kept]:  # views of matrices no longer reachable
            close_tree(*(view for _d, view in self._views.pop(key)[1].values()))
        self._show_matrix(self.matrix)
        self.forget_views(keep=lambda key: key[0] in kept)

    def _kernel_button(self, button: W.Button, why: str) -> W.Button:
        """A control that needs the kernel: disabled by the page when no kernel answers (a saved report)."""
        button.tooltip = f"{why} ({NEEDS_KERNEL})"
        self._control_parts.append(W.jsdlink((self.heatmap, "offline"), (button, "disabled")))
        return button

    def _close_controls(self) -> None:
        for link in self._control_links:
            link.unlink()
        old = self._control_parts
        self._control_links, self._control_parts = [], []
        self.controls.children = ()
        self.breadcrumb.children = ()
        self._retire(old)

    def _build_breadcrumb(self) -> None:
        items: list[W.Widget] = []
        for i, (label, _m) in enumerate(self.history):
            b = W.Button(
                description=label[:40],
                layout=W.Layout(width="auto"),
                button_style="info" if i == len(self.history) - 1 else "",
            )
            b.on_click(lambda _b, i=i: self.back(i))
            items.append(self._kernel_button(b, f"back to {label}"))
            if i < len(self.history) - 1:
                items.append(W.Label("›"))
        self.breadcrumb.children = items if len(self.history) > 1 else ()
        self._control_parts += items

    def _build_controls(self) -> None:
        from ._figure import colormap_names

        hm = self.heatmap
        cmap = W.Dropdown(
            options=list(colormap_names()), value=hm.colormap, description="colours", layout=W.Layout(width="190px")
        )
        log = W.Checkbox(value=bool(hm.log), description="log scale", indent=False, layout=W.Layout(width="100px"))
        # Kernel-side links (unlinked when the controls are rebuilt, so the heatmap keeps no stale observers).
        self._control_links += [W.link((cmap, "value"), (hm, "colormap")), W.link((log, "value"), (hm, "log"))]
        items: list[W.Widget] = [cmap, log]
        m = self.matrix
        options = m.meta.get("options", {}) if isinstance(m.meta.get("options"), dict) else {}
        editors: dict[str, W.ValueWidget] = {}
        if m.can_recompute:
            editors = _editors(m.meta.get("option_specs"), options)
            if editors:
                run = W.Button(description="re-run", icon="play", button_style="primary")
                run.on_click(lambda _b: self._rerun_with(editors))
                items += [*editors.values(), self._kernel_button(run, "re-run the analysis with these options")]
        self.controls.children = items
        self._control_parts += items

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
        """Drill into (row, col) of the current matrix (what a click does); positions or labels, as `m.drill`.
        A precomputed cell shows its view."""
        m = self.matrix
        row, col = m.index(row, col)  # an out-of-range cell fails here, naming the valid range
        label = f"{m.rows[row]} × {m.cols[col]}"
        slot = self._slot_of(row, col)
        if slot is not None:
            return self._show_precomputed(row, col, slot)
        if math.isnan(float(m.values[row, col])):
            # An n/a cell (e.g. a module this architecture lacks) has nothing behind it: say so, don't compute.
            return self._submit(("drill", row, col), lambda: m.cell(row, col), self._show_na, label)
        key = (id(m), ("drill", row, col))
        return self._submit(
            ("drill", row, col), lambda: m.drill(row, col), lambda detail: self._show_detail(detail, key), label
        )

    def recompute(self, **options: Any) -> Future:
        """Re-run the current analysis with changed options; the result replaces the main view."""
        m = self.matrix
        label = ", ".join(f"{k}={v}" for k, v in options.items())
        key = tuple(sorted((k, repr(v)) for k, v in options.items()))  # repr: lists (layers) are unhashable
        return self._submit(
            ("recompute", key), lambda: m.recompute(**options), lambda res: self.push(label, res), label
        )

    def rerun(self, label: str, fn: Callable[[], HeatMatrix]) -> Future:
        """Run a drill-down's re-run entry point; its matrix becomes the main view (breadcrumb back)."""
        return self._submit(("rerun", label), fn, lambda res: self.push(label, res), label)

    def _start_rerun(self, label: str, fn: Callable[[], HeatMatrix]) -> None:
        self.rerun(label, fn)  # a detail view's button: the Future is not needed there

    def cancel(self) -> None:
        """Stop the running drill-down, re-run or precompute (at its next progress step)."""
        busy = self.progress.layout.visibility == "visible"
        self._supersede()
        self._set_busy(False)
        if busy:
            self.message.value = "cancelled"

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
                try:
                    with running(task):
                        result = work()
                except Cancelled:
                    return None
                except Exception as e:  # shown in the widget, never as a traceback in the output area
                    self._fail(rid, label, e)
                    return None
                # The entry keeps its matrix alive, so id(matrix) cannot be reused by another matrix while cached.
                self._cache[cache_key] = (matrix, result)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
                self._finish(rid, apply, result, label)
                return result
            finally:
                self._after_fresh_run()  # after the result is shown: the click does not wait for it

        fut = self._pool.submit(job)
        self.last_future = fut
        return fut

    def _after_fresh_run(self) -> None:
        """Collect what a computation freed: the young generations now (cheap); every FULL_COLLECT_EVERY runs,
        everything once the explorer has been idle for IDLE_COLLECT_S (a later fresh run postpones it)."""
        _release_memory()
        self._fresh_runs += 1
        if self._fresh_runs < FULL_COLLECT_EVERY:
            return
        timer = threading.Timer(IDLE_COLLECT_S, self._collect_if_idle)
        timer.daemon = True
        with self._lock:
            if self._idle_collect is not None:
                self._idle_collect.cancel()
            self._idle_collect = timer
        timer.start()

    def _collect_if_idle(self) -> None:
        if self.progress.layout.visibility != "visible":  # nothing running (a running one schedules its own)
            self._fresh_runs = 0
            _release_memory(full=True)

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
        self.message.value = (
            f"<span style='color:var(--jp-error-color1,#c62828)'>{html.escape(label)}: "
            f"{html.escape(type(err).__name__)}: {html.escape(str(err))}</span>"
        )
        self.heatmap.status = f"error: {err}"

    def _set_busy(self, busy: bool, text: str = "") -> None:
        self.progress.layout.visibility = "visible" if busy else "hidden"
        self.cancel_button.layout.display = "" if busy else "none"
        self.progress.value = 0.0
        self.heatmap.status = text if busy else ""
        self.heatmap.progress = 0.0 if busy else None  # no bar left behind (a saved page would show it)
        if busy:
            self.message.value = html.escape(text)

    def _view(self, detail: Detail) -> W.Widget:
        return detail_view(
            detail, open_matrix=self.push, run_rerun=self._start_rerun, offline=(self.heatmap, "offline")
        )

    @property
    def live_view(self) -> W.Widget | None:
        """The view the live detail shows (None when it shows nothing)."""
        return self._shown_box.children[0] if self._shown_box.children else None

    def _set_live_detail(self, children: Sequence[W.Widget]) -> None:
        """Show one-off content in the live detail (closing the one-off content it replaces)."""
        self._fill(self._other_box, children)
        self._show_box(self._other_box)

    def _fill(self, box: W.VBox, children: Sequence[W.Widget], *, close_now: bool = False) -> None:
        old = [w for w in box.children if w not in children]
        box.children = tuple(children)
        if close_now:
            close_tree(*old)
        else:
            self._retire(old)

    def _retire(self, widgets: list[W.Widget]) -> None:
        """Close widgets just taken off the page at the next request, not at once. The front end removes their
        views asynchronously for the children update just sent; a close arriving meanwhile makes ipywidgets remove
        the same DOM node twice (a console error, "removeChild ... not a child of this node"). One request later
        that removal is long done, and the number of live widgets stays bounded."""
        rid = self._request_id
        done = [w for r, ws in self._retired if r < rid for w in ws]
        self._retired = [(r, ws) for r, ws in self._retired if r >= rid]
        if widgets:
            self._retired.append((rid, widgets))
        close_tree(*done)

    def _show_box(self, box: W.VBox) -> None:
        """Display `box` alone in the live detail, and the live detail in the Stack."""
        if box is not self._shown_box:
            self._shown_box.layout.display = "none"
            box.layout.display = None
            self._shown_box = box
        self._show_slot(LIVE_SLOT)

    def _show_slot(self, slot: int) -> None:
        # Both ends of the jslink, so the kernel's view of the state is right without a front end too.
        self.heatmap.detail_index = slot
        self.details.selected_index = slot

    def _show_detail(self, detail: Detail, key: tuple[int, Any] | None = None) -> None:
        self.last_detail = detail
        if key is None:
            self._set_live_detail([self._view(detail)])
            return
        hit = self._recent_views.pop(key, None)
        if hit is not None and hit[1] is detail:
            box = hit[2]  # shown again as it is: no widgets built or sent
        else:
            if hit is not None:  # an older result for this cell (the cache was cleared): its box gets the new one
                box = hit[2]
            elif len(self._recent_views) < VIEW_CACHE_SIZE:
                used = {id(b) for _m, _d, b in self._recent_views.values()}
                box = next(b for b in self._view_boxes if id(b) not in used)
            else:  # the least recently shown view makes room (never the shown one: it is the most recent)
                box = self._recent_views.popitem(last=False)[1][2]
            self._fill(box, [self._view(detail)])
        self._recent_views[key] = (self.matrix, detail, box)
        self._show_box(box)

    def forget_views(self, keep: Callable[[tuple[int, Any]], bool] = lambda _key: False) -> None:
        """Close the kept views of recent drill-downs (not the one shown), e.g. before saving the page: they would
        add to its widget state. `keep(key)` spares some."""
        for key in [k for k, (_m, _d, box) in self._recent_views.items() if not keep(k) and box is not self._shown_box]:
            self._fill(self._recent_views.pop(key)[2], (), close_now=True)  # before a save: gone from the state

    def _show_na(self, detail: Detail) -> None:
        self.last_detail = detail
        self._set_live_detail(())
        self.message.value = html.escape(f"{detail.title}: n/a — no value for this cell, nothing to drill into")

    # ---- precomputed drill-downs -------------------------------------------------------------------------
    def precompute(
        self,
        cells: str | int | Sequence[tuple[int | str, int | str]] = "all",
        budget_mb: float = DEFAULT_BUDGET_MB,
        *,
        wait: bool = True,
    ) -> Precomputed | Future | None:
        """Compute the drill-downs of `cells` of the current matrix and keep a view of each in the page.

        cells: "all", a number n (the n most extreme cells: farthest from the median value first), or a list of
            (row, col) (indices or labels). Cells are computed in that order through the explorer's cache, with
            progress in the explorer and the cancel button (or a click) stopping it.
        budget_mb: views are kept, in order, while their saved widget state fits in this many MB; the explorer
            then says how many cells have details. Replaces the views kept by an earlier call for this matrix.
        wait: block until done and return a `Precomputed` summary (None when cancelled); False returns a Future
            at once (the views are built on the explorer's worker thread).
        A clicked cell with a view shows it at once, live or in a saved report (no kernel needed).
        """
        m = self.matrix
        order = _cells_in_order(m, cells)
        if (
            isinstance(budget_mb, bool)
            or not isinstance(budget_mb, (int, float))
            or not budget_mb > 0
            or not math.isfinite(budget_mb)
        ):
            raise ValueError(f"budget_mb must be a positive number of megabytes, got {budget_mb!r}")
        budget = int(budget_mb * 1e6)
        rid = self._supersede()
        at = [0]  # index of the cell being computed, for the overall progress fraction
        n = max(len(order), 1)
        task = Task(on_progress=lambda f, d: self._on_progress(rid, (at[0] + f) / n, d))
        with self._lock:
            self._task = task
        self._set_busy(True, f"precomputing {len(order)} drill-downs …")
        t0 = time.perf_counter()

        def compute() -> tuple[dict[tuple[int, int], Detail], list[tuple[int, int]]] | None:
            return self._compute_details(m, order, task, at)

        def install(result: tuple[dict[tuple[int, int], Detail], list[tuple[int, int]]] | None) -> Precomputed | None:
            if result is None:
                return None
            report = self._install_views(m, order, result[0], result[1], budget, t0)
            if self._is_current(rid):
                self._set_busy(False)
                self.message.value = ""
            return report

        if wait:
            return install(self._pool.submit(compute).result())
        fut = self._pool.submit(lambda: install(compute()))
        self.last_future = fut
        return fut

    def _compute_details(
        self, m: HeatMatrix, order: list[tuple[int, int]], task: Task, at: list[int]
    ) -> tuple[dict[tuple[int, int], Detail], list[tuple[int, int]]] | None:
        """The drill-downs of `order` through the cache (None when cancelled); a failing cell is listed, not fatal.
        `at[0]` follows the cell being computed, for the overall progress fraction."""
        details: dict[tuple[int, int], Detail] = {}
        failed: list[tuple[int, int]] = []
        fresh = False  # whether a drill-down was computed (not all cache hits): only then collect garbage
        try:
            with running(task):
                for i, (r, c) in enumerate(order):
                    at[0] = i
                    task.report(0.0, f"precomputing {m.rows[r]} × {m.cols[c]}")
                    fresh = fresh or (id(m), ("drill", r, c)) not in self._cache
                    try:
                        details[(r, c)] = self._drill_cached(m, r, c)
                    except Cancelled:
                        raise
                    except Exception:  # that cell gets the notice; the others still work
                        failed.append((r, c))
        except Cancelled:  # cancel() or a newer request already updated the view
            return None
        finally:
            if fresh:
                self._after_fresh_run()
        return details, failed

    def _drill_cached(self, m: HeatMatrix, r: int, c: int) -> Detail:
        key = (id(m), ("drill", r, c))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[1]
        detail = m.cell(r, c) if math.isnan(float(m.values[r, c])) else m.drill(r, c)
        self._cache[key] = (m, detail)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return detail

    def _install_views(
        self,
        m: HeatMatrix,
        order: list[tuple[int, int]],
        details: dict[tuple[int, int], Detail],
        failed: list[tuple[int, int]],
        budget: int,
        t0: float,
    ) -> Precomputed:
        old = self._views.pop(id(m), (m, {}))[1]
        kept: dict[tuple[int, int], tuple[Detail, W.Widget]] = {}
        used = 0
        for cell in order:
            if cell not in details:
                continue
            view = old.pop(cell)[1] if cell in old else self._view(details[cell])
            size = state_bytes(view)
            if used + size > budget:
                close_tree(view)
                break
            used += size
            kept[cell] = (details[cell], view)
        self._views[id(m)] = (m, kept)
        if m is self.matrix:
            self._sync_views()
        close_tree(*(view for _d, view in old.values()))  # after the stack no longer shows them
        self.last_precompute = Precomputed(
            list(kept), len(order), int(m.values.size), used, budget, time.perf_counter() - t0, failed
        )
        return self.last_precompute

    def _current_views(self) -> dict[tuple[int, int], tuple[Detail, W.Widget]]:
        return self._views.get(id(self.matrix), (None, {}))[1]

    def _slot_of(self, row: int, col: int) -> int | None:
        return self._slots.get((row, col))

    def _sync_views(self) -> None:
        """Show the current matrix's precomputed views in the Stack and tell the page which cell has which."""
        m = self.matrix
        cells = self._current_views()
        self._slots = {cell: FIRST_VIEW + k for k, cell in enumerate(cells)}
        if self.details.selected_index is not None and self.details.selected_index >= FIRST_VIEW + len(cells):
            self._show_slot(LIVE_SLOT)
        self.details.children = (self.detail, self.notice, *(view for _d, view in cells.values()))
        ncols = m.shape[1]
        self.heatmap.detail_cells = np.asarray([r * ncols + c for r, c in cells], dtype="<i4").tobytes()
        total = int(m.values.size)
        if not cells:
            self.precompute_note.value = ""
        elif len(cells) == total:
            self.precompute_note.value = (
                f"<div class='hw-detail-notice'>Details precomputed for all {total} cells: "
                "a click shows them without a kernel.</div>"
            )
        else:
            self.precompute_note.value = (
                f"<div class='hw-detail-notice hw-precompute-note'>Details precomputed for {len(cells)} of {total} "
                "cells (the most extreme first); in a saved report the others say "
                f"“{html.escape(NOT_PRECOMPUTED)}”.</div>"
            )

    def _show_precomputed(self, row: int, col: int, slot: int) -> Future:
        self._supersede()
        self._set_busy(False)
        self.message.value = ""
        detail = self._current_views()[(row, col)][0]
        self.last_detail = detail
        self._show_slot(slot)
        fut: Future = Future()
        fut.set_result(detail)
        self.last_future = fut
        return fut

    def wait(self, timeout: float | None = 60) -> Any:
        """Block until the last request finished (for scripts and tests)."""
        return None if self.last_future is None else self.last_future.result(timeout)

    def close(self) -> None:
        """Close the explorer and every widget it made (heatmap, controls, detail views, precomputed views)."""
        self.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            if self._idle_collect is not None:
                self._idle_collect.cancel()
        self._close_controls()
        views = [view for _m, cells in self._views.values() for _d, view in cells.values()]
        self._views.clear()
        self._recent_views.clear()
        self._detail_link.close()
        retired = [w for _r, ws in self._retired for w in ws]
        self._retired.clear()
        close_tree(*self.children, *views, *retired)
        super().close()


def _cells_in_order(m: HeatMatrix, cells: Any) -> list[tuple[int, int]]:
    """The cells `precompute` takes, as (row, col) indices: all or the n most extreme (farthest from the median
    first, n/a cells last), or the listed ones in the given order (duplicates dropped)."""
    if isinstance(cells, str):
        if cells != "all":
            raise ValueError(f"cells must be 'all', a number of cells or a list of (row, col), got {cells!r}")
        n = m.values.size
    elif isinstance(cells, (int, np.integer)) and not isinstance(cells, bool):
        if cells < 0:
            raise ValueError(f"cells must be a non-negative number of cells, got {cells}")
        n = int(cells)
    elif isinstance(cells, Sequence):
        out: list[tuple[int, int]] = []
        for i, item in enumerate(cells):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError(f"cells[{i}] must be a (row, col) pair, got {item!r}")
            try:
                cell = m.index(*item)
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise ValueError(
                    f"cells[{i}] = {tuple(item)!r} is not a cell of this {m.shape[0]}×{m.shape[1]} matrix: {e}"
                ) from None
            if cell not in out:
                out.append(cell)
        return out
    else:
        raise TypeError(f"cells must be 'all', a number of cells or a list of (row, col), got {type(cells).__name__}")
    v = m.values.astype(np.float64)
    finite = np.isfinite(v)
    centre = float(np.median(v[finite])) if finite.any() else 0.0
    score = np.where(finite, np.abs(v - centre), -1.0).ravel()
    flat = np.argsort(-score, kind="stable")[:n]
    ncols = m.shape[1]
    return [(int(f) // ncols, int(f) % ncols) for f in flat]


def open_explorers() -> list[Explorer]:
    """The explorers of this process that are still open, oldest first."""
    alive = [ref() for ref in _EXPLORERS]
    _EXPLORERS[:] = [ref for ref, ex in zip(_EXPLORERS, alive, strict=True) if ex is not None and ex.comm is not None]
    return [ex for ex in alive if ex is not None and ex.comm is not None]


def forget_all_views() -> None:
    """Drop every open explorer's hidden views of recent clicks (`Explorer.forget_views`), e.g. before saving."""
    for ex in open_explorers():
        ex.forget_views()


def precompute_all(
    cells: str | int = "all", budget_mb: float = DEFAULT_BUDGET_MB, reserved_bytes: int = 0
) -> list[dict[str, Any]]:
    """Precompute every open explorer's drill-downs within one budget for the whole page (what `heatwidget export`
    runs in the notebook's kernel after the last cell).

    The budget is what is left of `budget_mb` after the widgets already in the page and `reserved_bytes` (the
    page's scripts); explorers take their share in order, and what one leaves unused goes to the next.
    """
    from ipywidgets.widgets.widget import _instances

    explorers = open_explorers()
    forget_all_views()  # hidden views of recent clicks would take budget in the saved page
    page = sum(_own_state_bytes(w) for w in list(_instances.values()) if w.comm is not None)
    left = int(budget_mb * 1e6) - page - reserved_bytes
    out = []
    for i, ex in enumerate(explorers):
        share = max(left // (len(explorers) - i), 0)
        rep: Precomputed | None = None
        if cells != "none" and share > 0:
            got = ex.precompute(cells, budget_mb=max(share, 1) / 1e6)
            assert not isinstance(got, Future)  # wait=True: the summary itself
            rep = got
        used = rep.state_bytes if rep else 0
        left -= used
        out.append(
            {
                "explorer": i,
                "title": ex.matrix.title,
                "cells": len(rep.cells) if rep else 0,
                "total": int(ex.matrix.values.size),
                "bytes": used,
                "seconds": round(rep.seconds, 2) if rep else 0.0,
            }
        )
    return out


def explore(
    matrix: HeatMatrix,
    *,
    precompute: bool | int | str | list = False,
    budget_mb: float = DEFAULT_BUDGET_MB,
    **heatmap_kwargs: Any,
) -> Explorer:
    """Heatmap + controls + linked drill-down for `matrix`; clicks re-run analysis in the kernel.

    precompute: True (= "all"), a number of cells or a list of (row, col): compute those drill-downs now and keep
        their views in the page, so the notebook saved with its widget state (or exported) shows them without a
        kernel; see `Explorer.precompute`. budget_mb bounds their saved size.
    """
    if not isinstance(matrix, HeatMatrix):
        raise TypeError(f"explore() takes a HeatMatrix, got {type(matrix).__name__}")
    ex = Explorer(matrix, **heatmap_kwargs)
    if precompute is not False and precompute is not None:
        ex.precompute("all" if precompute is True else precompute, budget_mb=budget_mb)
    return ex
