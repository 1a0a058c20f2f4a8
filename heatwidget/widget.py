"""`Heatmap`: the anywidget that draws a HeatMatrix as an interactive canvas heatmap.

The matrix crosses the wire as raw float32 bytes plus a shape (ipywidgets sends `bytes` traits as binary buffers,
and embeds them base64 in saved widget state), never as JSON lists. Clicks and keyboard selection come back as the
synced traits `selected_row` / `selected_col`, so they reach the kernel whenever the view was displayed and survive
in exported notebooks. This module never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets as t
from ipywidgets import CallbackDispatcher

from . import _figure
from .matrix import HeatMatrix

__all__ = ["Heatmap", "MAX_WIDGET_CELLS"]

# Above this many cells the matrix is pooled before it is sent: 4M float32 = 16 MB on the wire and in saved
# notebook state (base64: 21 MB), and a browser tab still paints it in well under a second.
MAX_WIDGET_CELLS = 4_000_000

_BUNDLE = Path(__file__).resolve().parent / "static" / "widget.js"

# Shown instead of the heatmap when the JS bundle is missing (a source checkout that was never built), so the
# package still imports and the user sees how to fix it rather than a blank output.
_MISSING_BUNDLE_ESM = """
export default { render({ el }) {
  const p = document.createElement("pre");
  p.textContent = "heatwidget: the front-end bundle heatwidget/static/widget.js is missing. Build it with:\\n" +
    "  cd js && npm ci && npm run build\\n(or reinstall: pip install -e .)";
  el.appendChild(p);
} };
"""

SelectCallback = Callable[[int, int], Any]


def _as_matrix(data: Any) -> HeatMatrix:
    """Accept a HeatMatrix, a pandas DataFrame (index/columns become labels) or anything numpy can read."""
    if isinstance(data, HeatMatrix):
        return data
    if hasattr(data, "index") and hasattr(data, "columns") and hasattr(data, "to_numpy"):
        return HeatMatrix(
            data.to_numpy(dtype=np.float32),
            list(data.index),
            list(data.columns),
            row_title=str(data.index.name or ""),
            col_title=str(data.columns.name or ""),
        )
    return HeatMatrix(data)


def value_stats(values: np.ndarray) -> dict[str, float | int | None]:
    """min and max of the finite values, the smallest positive one, and the counts of finite and other cells.

    JSON has no infinity: min, max and minPositive are None when there is no such value.
    """
    finite = values[np.isfinite(values)]
    positive = finite[finite > 0]
    return {
        "min": float(finite.min()) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
        "minPositive": float(positive.min()) if positive.size else None,
        "finite": int(finite.size),
        "nan": int(values.size - finite.size),
    }


def _block_labels(labels: Sequence[str], step: int) -> list[str]:
    if step == 1:
        return list(labels)
    out = []
    for a in range(0, len(labels), step):
        b = min(len(labels), a + step) - 1
        out.append(labels[a] if a == b else f"{labels[a]} … {labels[b]}")
    return out


def _check_bound(name: str, v: float | None) -> float | None:
    if v is None:
        return None
    f = float(v)
    if not math.isfinite(f):
        raise t.TraitError(f"{name} must be a finite number or None (auto), got {v!r}")
    return f


def _suggested_range(m: HeatMatrix, vmin: float | None, vmax: float | None) -> tuple[float | None, float | None]:
    """An analysis may suggest its figure's colour range (meta["vmin"/"vmax"]); explicit bounds win, and a
    suggestion that would fall on the wrong side of an explicit bound is dropped rather than refused."""
    lo, hi = m.meta.get("vmin"), m.meta.get("vmax")
    if vmin is None and isinstance(lo, (int, float)) and (vmax is None or float(lo) < float(vmax)):
        vmin = float(lo)
    if vmax is None and isinstance(hi, (int, float)) and (vmin is None or float(vmin) < float(hi)):
        vmax = float(hi)
    return vmin, vmax


MAX_NOTES = 4  # meta["notes"] lines shown in the view (the rest stay in meta)
MAX_NOTE_CHARS = 200


def _matrix_notes(m: HeatMatrix) -> list[str]:
    """The analysis's own notes (meta["notes"]: a str or a list of str), a few lines at most."""
    raw = m.meta.get("notes")
    notes = [raw] if isinstance(raw, str) else [str(n) for n in raw] if isinstance(raw, (list, tuple)) else []
    out = [n if len(n) <= MAX_NOTE_CHARS else n[: MAX_NOTE_CHARS - 1] + "…" for n in notes[:MAX_NOTES]]
    if len(notes) > MAX_NOTES:
        out.append(f"… and {len(notes) - MAX_NOTES} more notes in meta['notes']")
    return out


def _log_notes(m: HeatMatrix, log: bool) -> list[str]:
    """Cells a log colour scale cannot place (zero or negative) are drawn at its bottom colour: say how many."""
    if not log:
        return []
    finite = m.values[np.isfinite(m.values)]
    bad = int((finite <= 0).sum())
    if not bad:
        return []
    return [
        f"log scale: {bad:,} of {finite.size:,} cells are zero or negative and cannot be shown on it "
        "(drawn in the lowest colour)"
    ]


class Heatmap(anywidget.AnyWidget):
    """An interactive heatmap of a HeatMatrix (or any 2-D array / DataFrame).

    >>> w = Heatmap(m, colormap="viridis")           # display `w` in a notebook
    >>> w.on_select(lambda r, c: print(m.drill(r, c)))
    >>> w.matrix = other_matrix                       # redraws in place

    Parameters
    ----------
    matrix: the data; NaN cells are drawn as a hatched "n/a".
    colormap: "blues", "viridis", "ylorrd" (sequential) or "rdbu" (diverging, centred on 0), each also with
        an "_r" suffix for the reversed map. None picks "rdbu" when values straddle 0, else "blues".
    vmin, vmax: colour range; None = data range (symmetric around 0 for "rdbu").
    log: logarithmic colour scale (needs positive values); None = what the analysis suggests in
        ``meta["log"]`` (e.g. ablation_kl when its values span two decades), following each new matrix until the
        user sets it.
    height: total height in CSS pixels; 0 = automatic (square cells within limits).
    max_cells: larger matrices are pooled (`pooling`: "mean" or "max") before they are sent, with a note.
    static_image: also put an SVG of the figure in the output, for GitHub and other renderers without widgets.
    """

    _esm = _BUNDLE if _BUNDLE.is_file() else _MISSING_BUNDLE_ESM

    # The matrix: little-endian float32 bytes, row-major, plus its shape (after pooling, if any).
    values = t.Bytes(b"").tag(sync=True)
    shape = t.List(t.Int(), default_value=[0, 0], minlen=2, maxlen=2).tag(sync=True)
    row_labels = t.List(t.Unicode()).tag(sync=True)
    col_labels = t.List(t.Unicode()).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    row_title = t.Unicode("").tag(sync=True)
    col_title = t.Unicode("").tag(sync=True)
    metric = t.Unicode("").tag(sync=True)
    colormap = t.Unicode("blues").tag(sync=True)
    vmin = t.Float(None, allow_none=True).tag(sync=True)
    vmax = t.Float(None, allow_none=True).tag(sync=True)
    log = t.Bool(False).tag(sync=True)
    # Selection in the coordinates of the full matrix (-1 = none): what `matrix.drill(row, col)` takes.
    selected_row = t.Int(-1).tag(sync=True)
    selected_col = t.Int(-1).tag(sync=True)
    # Long-running kernel work (a re-run after a click) reports here; the view shows text and a bar.
    status = t.Unicode("").tag(sync=True)
    progress = t.Float(None, allow_none=True).tag(sync=True)
    height = t.Int(0).tag(sync=True)
    # {} or {"rows", "cols" (full shape), "row_step", "col_step", "how"} when the matrix was pooled for display.
    downsample = t.Dict().tag(sync=True)
    # Statistics of `values` for the view's colour range (scale.ts `stats`): computed here, where numpy makes it one
    # cheap vectorised pass, so the browser's first paint skips a pass over every cell.
    value_stats = t.Dict().tag(sync=True)
    # An explorer's precomputed drill-downs (explorer.py): `detail_index` is jslink-ed to the Stack of detail views
    # (-1: a plain heatmap, not managed); `detail_cells` are the flat indices (row * cols + col, int32 bytes) of the
    # cells that have a view, in stack order; `offline` is set by the page itself when no kernel answers.
    detail_index = t.Int(-1).tag(sync=True)
    detail_cells = t.Bytes(b"").tag(sync=True)
    offline = t.Bool(False).tag(sync=True)
    # Lines the view prints above the figure: the analysis's meta["notes"] (e.g. non-finite weights named) and
    # what the colour scale cannot show (cells a log scale leaves out).
    notes = t.List(t.Unicode()).tag(sync=True)

    def __init__(
        self,
        matrix: Any,
        *,
        colormap: str | None = None,
        vmin: float | None = None,
        vmax: float | None = None,
        log: bool | None = None,
        height: int = 0,
        max_cells: int = MAX_WIDGET_CELLS,
        pooling: str = "mean",
        static_image: bool = True,
        **kwargs: Any,
    ) -> None:
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        if max_cells < 1:
            raise ValueError(f"max_cells must be positive, got {max_cells}")
        self._max_cells = int(max_cells)
        self._pooling = pooling
        self._auto_colormap = colormap is None
        self._auto_log = log is None
        self._in_set_matrix = False
        self.static_image = static_image
        self._select_handlers = CallbackDispatcher()
        self._last_selection: tuple[int, int] | None = None
        super().__init__(**kwargs)
        m = _as_matrix(matrix)
        # An analysis may suggest its figure's colour range and map (e.g. probe AUC: 0.5–1, "blues"); explicit
        # arguments win.
        vmin, vmax = _suggested_range(m, vmin, vmax)
        if colormap is None and isinstance(m.meta.get("colormap"), str):
            colormap = m.meta["colormap"]
            self._auto_colormap = False
        if vmin is not None and vmax is not None and not float(vmin) < float(vmax):
            raise ValueError(
                f"vmin ({vmin}) must be smaller than vmax ({vmax}): the colour range would be empty or reversed"
            )
        with self.hold_sync():
            self.colormap = colormap if colormap is not None else self._default_colormap(m)
            self.vmin = vmin
            self.vmax = vmax
            self.log = self._suggested_log(m) if log is None else bool(log)
            self.height = int(height)
            self._set_matrix(m)
        self.observe(self._on_selection, names=["selected_row", "selected_col"])
        self.observe(self._on_colormap, names=["colormap"])
        self.observe(self._on_log, names=["log"])

    def _on_colormap(self, change: dict) -> None:
        # A colour map chosen by the user sticks; only the automatic one follows new matrices.
        if not self._in_set_matrix:
            self._auto_colormap = False

    def _on_log(self, change: dict) -> None:
        # A scale the user picks sticks; the suggested one follows new matrices (and _set_matrix redoes the notes).
        if not self._in_set_matrix:
            self._auto_log = False
            self._update_notes()

    @staticmethod
    def _suggested_log(m: HeatMatrix) -> bool:
        return m.meta.get("log") is True and bool((m.values > 0).any())

    # ---- the matrix ------------------------------------------------------------------------------------------
    @property
    def matrix(self) -> HeatMatrix:
        """The HeatMatrix shown (full resolution, even when the view shows a pooled copy)."""
        return self._matrix

    @matrix.setter
    def matrix(self, value: Any) -> None:
        self._set_matrix(_as_matrix(value))

    @staticmethod
    def _default_colormap(m: HeatMatrix) -> str:
        finite = m.values[np.isfinite(m.values)]
        return "rdbu" if finite.size and finite.min() < 0 < finite.max() else "blues"

    def _set_matrix(self, m: HeatMatrix) -> None:
        if getattr(self, "_auto_log", False) and hasattr(self, "_matrix"):
            self._in_set_matrix = True
            try:
                self.log = self._suggested_log(m)
            finally:
                self._in_set_matrix = False
        self._check_log(m, self.log)
        old = getattr(self, "_matrix", None)
        keep_selection = old is not None and old.rows == m.rows and old.cols == m.cols
        r, c = m.shape
        fr, fc = _figure.pool_factors(r, c, self._max_cells)
        values = _figure.pool(m.values, fr, fc, self._pooling)
        self._matrix = m
        # One comm message for the whole swap: the view never sees new bytes with an old shape.
        self._in_set_matrix = True
        try:
            self._send_matrix(m, values, fr, fc, keep_selection)
        finally:
            self._in_set_matrix = False

    def _send_matrix(self, m: HeatMatrix, values: np.ndarray, fr: int, fc: int, keep_selection: bool) -> None:
        r, c = m.shape
        with self.hold_sync():
            if self._auto_colormap:
                self.colormap = self._default_colormap(m)
            self.values = np.ascontiguousarray(values, dtype="<f4").tobytes()
            self.shape = [int(values.shape[0]), int(values.shape[1])]
            self.value_stats = value_stats(values)
            self.row_labels = _block_labels(m.rows, fr)
            self.col_labels = _block_labels(m.cols, fc)
            self.title = m.title
            self.row_title = m.row_title
            self.col_title = m.col_title
            self.metric = m.metric
            self.downsample = (
                {"rows": r, "cols": c, "row_step": fr, "col_step": fc, "how": self._pooling} if fr > 1 or fc > 1 else {}
            )
            if not keep_selection:
                self.selected_row = -1
                self.selected_col = -1
            self._update_notes()

    def _update_notes(self) -> None:
        self.notes = _matrix_notes(self._matrix) + _log_notes(self._matrix, self.log)

    # ---- validation (bad values fail here, in the kernel, with a readable message) -----------------------------
    @t.validate("colormap")
    def _valid_colormap(self, proposal: dict) -> str:
        name = str(proposal["value"]).lower()
        try:
            _figure.parse_colormap(name)
        except ValueError as e:
            raise t.TraitError(str(e)) from None
        return name

    @t.validate("vmin")
    def _valid_vmin(self, proposal: dict) -> float | None:
        v = _check_bound("vmin", proposal["value"])
        if v is not None and self.vmax is not None and not v < self.vmax:
            raise t.TraitError(f"vmin ({v:g}) must be smaller than vmax ({self.vmax:g}); set vmax first to widen")
        return v

    @t.validate("vmax")
    def _valid_vmax(self, proposal: dict) -> float | None:
        v = _check_bound("vmax", proposal["value"])
        if v is not None and self.vmin is not None and not self.vmin < v:
            raise t.TraitError(f"vmax ({v:g}) must be larger than vmin ({self.vmin:g}); set vmin first to widen")
        return v

    @t.validate("log")
    def _valid_log(self, proposal: dict) -> bool:
        value = bool(proposal["value"])
        if hasattr(self, "_matrix") and not self._in_set_matrix:  # a new matrix is checked by _set_matrix
            self._check_log(self._matrix, value)
        return value

    @staticmethod
    def _check_log(m: HeatMatrix, log: bool) -> None:
        if log and not (m.values > 0).any():
            raise t.TraitError("log colour scale needs positive values; this matrix has none")

    @t.validate("selected_row", "selected_col")
    def _valid_selection(self, proposal: dict) -> int:
        name = proposal["trait"].name
        v = int(proposal["value"])
        if not hasattr(self, "_matrix"):
            return v
        n = self._matrix.shape[0 if name == "selected_row" else 1]
        if not -1 <= v < n:
            raise t.TraitError(f"{name} must be -1 (none) or in [0, {n}), got {v}")
        return v

    @t.validate("progress")
    def _valid_progress(self, proposal: dict) -> float | None:
        v = proposal["value"]
        if v is None:
            return None
        if not 0.0 <= float(v) <= 1.0:
            raise t.TraitError(f"progress must be in [0, 1] or None, got {v!r}")
        return float(v)

    @t.validate("height")
    def _valid_height(self, proposal: dict) -> int:
        v = int(proposal["value"])
        if v < 0:
            raise t.TraitError(f"height must be >= 0 (0 = automatic), got {v}")
        return v

    # ---- selection ---------------------------------------------------------------------------------------
    @property
    def selected(self) -> tuple[int, int] | None:
        """(row, col) of the selected cell, or None."""
        if self.selected_row < 0 or self.selected_col < 0:
            return None
        return self.selected_row, self.selected_col

    @selected.setter
    def selected(self, cell: tuple[int | str, int | str] | None) -> None:
        r, c = (-1, -1) if cell is None else self._matrix.index(*cell)
        with self.hold_sync(), self.hold_trait_notifications():
            self.selected_row = r
            self.selected_col = c

    def on_select(self, callback: SelectCallback, remove: bool = False) -> SelectCallback:
        """Call `callback(row, col)` whenever a cell is selected (click, Enter, or `selected = ...`).

        Called once per new selection with indices into the full matrix (not when the selection is cleared).
        Exceptions are shown in the cell output like any widget callback. Returns the callback (decorator use).
        """
        self._select_handlers.register_callback(callback, remove=remove)
        return callback

    def _on_selection(self, change: dict) -> None:
        # The view sets both traits in one message; ipywidgets applies them together and then notifies once per
        # trait, so de-duplicate to call handlers once per (row, col).
        sel = self.selected
        if sel is None:
            self._last_selection = None
            return
        if sel == self._last_selection:
            return
        self._last_selection = sel
        self._select_handlers(*sel)

    # ---- static output -----------------------------------------------------------------------------------
    def to_svg(self, width: int = 640) -> str:
        """The figure as a standalone SVG (what plain renderers show in place of the widget)."""
        m = self._matrix
        notes = list(self.notes)
        if self.downsample:
            notes.append(f"matrix is {m.shape[0]:,}×{m.shape[1]:,}")
        return _figure.figure_svg(
            m.values,
            m.rows,
            m.cols,
            title=m.title,
            row_title=m.row_title,
            col_title=m.col_title,
            metric=m.metric,
            colormap=self.colormap,
            vmin=self.vmin,
            vmax=self.vmax,
            log=self.log,
            notes=notes,
            width=width,
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is None:
            return None
        data, metadata = bundle
        data["text/plain"] = repr(self)
        if self.static_image:
            # Front ends with a widget manager render the view (its mime type ranks first); GitHub, nbviewer
            # without state, and untrusted notebooks fall back to this SVG.
            data["image/svg+xml"] = self.to_svg()
        return data, metadata

    def get_state(self, key: str | list[str] | None = None, drop_defaults: bool = False) -> dict:
        state = super().get_state(key, drop_defaults)
        if drop_defaults and key is None:
            # anywidget's `_esm` trait defaults to the bundle itself, so `ipywidgets.embed` (drop_defaults=True)
            # would leave it out and a saved-state page would have no code to render with.
            for name in ("_esm", "_anywidget_id"):
                if self.has_trait(name):
                    state[name] = getattr(self, name)
        return state

    def __repr__(self) -> str:
        m = getattr(self, "_matrix", None)
        return f"Heatmap({m!r}, colormap={self.colormap!r})" if m is not None else "Heatmap()"
