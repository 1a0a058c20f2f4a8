"""The one result type every analysis returns (`HeatMatrix`) and what a click on a cell gives back (`Detail`).

A HeatMatrix is a labelled float32 matrix plus provenance. It knows nothing about torch or widgets: analyses fill
it, the widget draws it, and `drill(row, col)` asks the analysis that made it for the story behind one cell.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HeatMatrix", "HeatMatrixFileError", "Detail", "Chart", "Series", "MAX_CELLS", "suggests_log_scale"]

# A matrix larger than this is refused at construction: it would not fit a browser tab anyway (the widget
# downsamples above its own, lower, limit). 50M float32 cells = 200 MB.
MAX_CELLS = 50_000_000

# `HeatMatrix.explore()` calls the explorer that `heatwidget/__init__.py` registers here (`register_explorer`), so
# this module imports no widget code.
_explorer: Callable[..., Any] | None = None


def register_explorer(explore: Callable[..., Any]) -> None:
    """Make `HeatMatrix.explore(**kwargs)` call `explore(matrix, **kwargs)`."""
    global _explorer
    _explorer = explore


Drill = Callable[["HeatMatrix", int, int], "Detail"]


def suggests_log_scale(values: Any, decades: float = 2.0) -> bool:
    """True when a log colour scale reads better: no negative values, and the largest value is at least ``decades``
    powers of ten above the typical (median) positive one, so that on a linear scale a few large cells would turn
    every other cell white. (Measured from the median, not the minimum: a figure whose cells are all of one size
    but a few near-zero ones reads best linear.)

    Analyses store the answer as ``meta["log"]``; the widget starts on a log scale when it is True.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    pos = v[v > 0]
    if pos.size < 2 or (v < 0).any():
        return False
    return bool(math.log10(pos.max() / np.median(pos)) >= decades)


@dataclass
class Series:
    """One named series of a drill-down chart (bars: x are category labels; lines/hist: x are numbers)."""

    name: str
    x: Sequence[Any]
    y: Sequence[float]


@dataclass
class Chart:
    """A small chart shown beside the heatmap: bars (e.g. top-k tokens), a line (ROC, spectrum) or a histogram."""

    title: str
    kind: str  # "bar" | "line" | "hist" | "scatter"
    series: list[Series]
    x_title: str = ""
    y_title: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("bar", "line", "hist", "scatter"):
            raise ValueError(f"Chart kind must be 'bar', 'line', 'hist' or 'scatter', got {self.kind!r}")


@dataclass
class Detail:
    """What a click on (row, col) reveals: the cell, charts, texts, child matrices and re-run entry points.

    `texts` are user data (token strings, generations): displays must escape them, never render them as HTML.
    `reruns` maps a human label ("KL at every position for layer 3") to a zero-argument callable that returns a
    new HeatMatrix: this is how a click re-runs the analysis for the selected layer or token.
    """

    row: int
    col: int
    row_label: str
    col_label: str
    value: float
    title: str = ""
    charts: list[Chart] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)  # name -> pandas.DataFrame
    children: dict[str, HeatMatrix] = field(default_factory=dict)
    reruns: dict[str, Callable[[], HeatMatrix]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def child(self) -> HeatMatrix | None:
        """The first child matrix, if any (most drill-downs have at most one)."""
        return next(iter(self.children.values()), None)

    def __repr__(self) -> str:
        parts = [f"Detail({self.row_label!r} × {self.col_label!r} = {self.value:.4g}"]
        if self.charts:
            parts.append(f"charts={[c.title for c in self.charts]}")
        if self.children:
            parts.append(f"children={list(self.children)}")
        if self.reruns:
            parts.append(f"reruns={list(self.reruns)}")
        return ", ".join(parts) + ")"


def _labels(labels: Sequence[Any] | None, n: int, what: str) -> list[str]:
    if labels is None:
        return [str(i) for i in range(n)]
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"{what} labels must be a sequence of labels, not a single string")
    out = [str(x) for x in labels]
    if len(out) != n:
        raise ValueError(f"{len(out)} {what} labels for {n} {what}s: give exactly one label per {what}")
    return out


class HeatMatrix:
    """A labelled float32 matrix: rows × cols, with titles, a metric name and provenance.

    NaN cells are allowed and mean "n/a" (e.g. a module the architecture lacks); ±inf is refused because no colour
    scale can show it honestly.
    """

    def __init__(
        self,
        values: Any,
        rows: Sequence[Any] | None = None,
        cols: Sequence[Any] | None = None,
        *,
        title: str = "",
        row_title: str = "",
        col_title: str = "",
        metric: str = "",
        meta: Mapping[str, Any] | None = None,
        drill: Drill | None = None,
    ) -> None:
        if hasattr(values, "detach"):  # a torch tensor; no torch import needed here
            values = values.detach().float().cpu().numpy()
        arr = np.array(values, dtype=np.float32, copy=True)
        if arr.ndim != 2:
            raise ValueError(f"HeatMatrix values must be 2-D [rows, cols], got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"HeatMatrix values are empty (shape {arr.shape}): nothing to show")
        if arr.size > MAX_CELLS:
            raise ValueError(
                f"HeatMatrix of {arr.shape[0]}×{arr.shape[1]} = {arr.size:,} cells is larger than "
                f"{MAX_CELLS:,}: select fewer rows/cols or aggregate first"
            )
        if np.isinf(arr).any():
            r, c = np.argwhere(np.isinf(arr))[0]
            raise ValueError(f"HeatMatrix values contain ±inf (first at row {r}, col {c}); use NaN for n/a")
        if np.isnan(arr).all():
            raise ValueError("HeatMatrix values are all NaN: nothing to show")
        self.values: np.ndarray = arr
        self.rows: list[str] = _labels(rows, arr.shape[0], "row")
        self.cols: list[str] = _labels(cols, arr.shape[1], "col")
        self.title = str(title)
        self.row_title = str(row_title)
        self.col_title = str(col_title)
        self.metric = str(metric)
        if meta is not None and not isinstance(meta, Mapping):
            raise TypeError(f"meta must be a dict (provenance: model, options, seeds), got {type(meta).__name__}")
        self.meta: dict[str, Any] = dict(meta or {})
        self._drill = drill
        self._recompute: Callable[..., HeatMatrix] | None = None

    # ---- basic views -------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape  # type: ignore[return-value]

    @property
    def T(self) -> HeatMatrix:  # noqa: N802 - numpy's name
        """The transpose (rows ↔ cols, titles swapped). Drill-downs follow, with (row, col) swapped back."""
        drill = None
        if self._drill is not None:
            inner = self._drill
            source = self

            def drill(_m: HeatMatrix, r: int, c: int) -> Detail:
                return inner(source, c, r)

        return HeatMatrix(
            self.values.T,
            self.cols,
            self.rows,
            title=self.title,
            row_title=self.col_title,
            col_title=self.row_title,
            metric=self.metric,
            meta=self.meta,
            drill=drill,
        )

    def to_pandas(self):
        """A DataFrame indexed by row labels, one column per col label (titles become axis names)."""
        import pandas as pd

        df = pd.DataFrame(
            self.values,
            index=pd.Index(self.rows, name=self.row_title or None),
            columns=pd.Index(self.cols, name=self.col_title or None),
        )
        df.attrs.update(title=self.title, metric=self.metric)
        return df

    def __repr__(self) -> str:
        finite = self.values[np.isfinite(self.values)]
        rng = f"{finite.min():.4g}…{finite.max():.4g}" if finite.size else "empty"
        return (
            f"HeatMatrix({self.title!r}, {self.shape[0]}×{self.shape[1]} "
            f"[{self.row_title or 'rows'} × {self.col_title or 'cols'}], {self.metric or 'value'} {rng})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HeatMatrix):
            return NotImplemented
        return (
            self.values.shape == other.values.shape
            and np.array_equal(self.values, other.values, equal_nan=True)
            and (self.rows, self.cols, self.title, self.row_title, self.col_title, self.metric)
            == (other.rows, other.cols, other.title, other.row_title, other.col_title, other.metric)
        )

    __hash__ = None  # type: ignore[assignment]

    # ---- drill-down --------------------------------------------------------------------------------------
    def index(self, row: int | str, col: int | str) -> tuple[int, int]:
        """Resolve a (row, col) given as integer positions or labels to integer positions."""
        return self._resolve(row, self.rows, "row"), self._resolve(col, self.cols, "col")

    @staticmethod
    def _resolve(key: int | str, labels: list[str], what: str) -> int:
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            i = int(key)
            if not -len(labels) <= i < len(labels):
                raise IndexError(
                    f"{what} {i} is out of range: this matrix has {len(labels)} {what}s "
                    f"(positions 0 … {len(labels) - 1}, or -{len(labels)} … -1 from the end)"
                )
            return i % len(labels)
        if isinstance(key, str):
            if key in labels:
                return labels.index(key)
            raise KeyError(f"no {what} labelled {key!r}; {what}s are {labels[:10]}{'…' if len(labels) > 10 else ''}")
        raise TypeError(f"{what} must be an int position or a str label, got {type(key).__name__}")

    def drill(self, row: int | str, col: int | str) -> Detail:
        """The Detail behind one cell. Analyses attach their own drill-down; without one you get the cell itself."""
        r, c = self.index(row, col)
        if self._drill is not None:
            return self._drill(self, r, c)
        return self.cell(r, c)

    def cell(self, r: int, c: int, **extra: Any) -> Detail:
        """A bare Detail for cell (r, c); drill-down functions start from it and add charts, texts, children."""
        v = float(self.values[r, c])
        title = f"{self.row_title or 'row'} {self.rows[r]} · {self.col_title or 'col'} {self.cols[c]}"
        return Detail(row=r, col=c, row_label=self.rows[r], col_label=self.cols[c], value=v, title=title, **extra)

    def with_drill(self, drill: Drill | None) -> HeatMatrix:
        """Attach a drill-down function (e.g. after `HeatMatrix.load`, when the model is at hand again)."""
        self._drill = drill
        return self

    def with_recompute(self, recompute: Callable[..., HeatMatrix] | None) -> HeatMatrix:
        """Attach `recompute(**options) -> HeatMatrix`: the same analysis with some options changed.

        The explorer offers `meta["options"]` as controls and calls this when the user re-runs with new values.
        """
        self._recompute = recompute
        return self

    def recompute(self, **options: Any) -> HeatMatrix:
        """Re-run the analysis that made this matrix with `options` changed (e.g. intervention="zero_mlp")."""
        if self._recompute is None:
            raise RuntimeError("this matrix has no recompute function (it was loaded from disk or built by hand)")
        return self._recompute(**options)

    @property
    def can_recompute(self) -> bool:
        return self._recompute is not None

    def explore(self, **heatmap_kwargs: Any) -> Any:
        """The interactive explorer for this matrix (same as `hw.explore(m)`)."""
        if _explorer is None:
            raise RuntimeError("no explorer is registered: `import heatwidget` registers hw.explore")
        return _explorer(self, **heatmap_kwargs)

    @property
    def has_drill(self) -> bool:
        return self._drill is not None

    # ---- persistence -------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save to a single .npz file (values bit-exact, labels, titles, JSON-able meta; arrays in meta kept).

        Nothing is pickled: numpy arrays of Python objects (dtype=object) and meta that refers back to itself are
        refused with an error naming the key; other non-JSON objects are stored as their repr.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
        arrays: dict[str, np.ndarray] = {}
        meta_json = _encode_meta(self.meta, arrays, "meta", set())
        header = dict(
            rows=self.rows,
            cols=self.cols,
            title=self.title,
            row_title=self.row_title,
            col_title=self.col_title,
            metric=self.metric,
            meta=meta_json,
            format=1,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        named: dict[str, np.ndarray] = {"values": self.values, "header": np.array(json.dumps(header))}
        named.update((f"meta__{k}", v) for k, v in arrays.items())
        np.savez(path, **named)  # type: ignore[arg-type]  # numpy's stub types **kwds like allow_pickle (bool)
        return path

    @classmethod
    def load(cls, path: str | Path) -> HeatMatrix:
        """Load a matrix written by `save` (drill-down functions are not saved: re-attach with `with_drill`).

        Never unpickles. A file that is not a HeatMatrix .npz (another format, a truncated or hand-made archive)
        raises HeatMatrixFileError (a ValueError) saying what is wrong in one sentence.
        """
        path = Path(path)
        entries = _read_npz(path)
        header = _read_header(entries["header"], path)
        arrays = {k[len("meta__") :]: v for k, v in entries.items() if k.startswith("meta__")}
        meta = _decode_meta(header["meta"], arrays, path)
        try:
            return cls(
                entries["values"],
                header["rows"],
                header["cols"],
                title=header["title"],
                row_title=header["row_title"],
                col_title=header["col_title"],
                metric=header["metric"],
                meta=meta,
            )
        except (ValueError, TypeError) as e:
            raise HeatMatrixFileError(f"{str(path)!r} holds an invalid matrix: {_first_line(e)}") from None


class HeatMatrixFileError(ValueError):
    """`HeatMatrix.load` was given a file that is not a valid HeatMatrix archive (one sentence says why)."""


_HEADER_KEYS = ("rows", "cols", "title", "row_title", "col_title", "metric", "meta")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:200] if lines else type(e).__name__


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every entry of a HeatMatrix .npz, read without unpickling; any other file is a HeatMatrixFileError."""
    if not path.is_file():
        raise FileNotFoundError(
            f"no HeatMatrix file at {str(path)!r}" + (" (it is a directory)" if path.is_dir() else "")
        )
    with open(path, "rb") as f:
        magic = f.read(6)
    if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY")):
        # np.load would try it as a pickle and say so; this is simply some other kind of file.
        raise HeatMatrixFileError(
            f"{str(path)!r} is not a HeatMatrix file: HeatMatrix.save writes a numpy "
            ".npz (zip) archive, and this file is not one"
        )
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise HeatMatrixFileError(
            f"{str(path)!r} is not a HeatMatrix file (HeatMatrix.save writes a numpy "
            f".npz archive; reading it failed: {_first_line(e)})"
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise HeatMatrixFileError(
            f"{str(path)!r} holds a single numpy array, not the .npz archive HeatMatrix.save writes"
        )
    with z:
        for key in ("header", "values"):
            if key not in z.files:
                raise HeatMatrixFileError(
                    f"{str(path)!r} is an .npz archive without the {key!r} entry "
                    "HeatMatrix.save writes: it was not saved by HeatMatrix.save"
                )
        entries = {}
        for key in z.files:
            try:
                entries[key] = z[key]
            except ValueError as e:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
                if "allow_pickle" not in str(e):
                    raise HeatMatrixFileError(
                        f"{str(path)!r}: entry {key!r} is unreadable ({_first_line(e)})"
                    ) from None
                raise HeatMatrixFileError(
                    f"{str(path)!r}: entry {key!r} holds Python objects, which only "
                    "unpickling could read, and HeatMatrix.load never unpickles"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise HeatMatrixFileError(
                    f"{str(path)!r}: entry {key!r} is unreadable (a truncated or damaged archive: {_first_line(e)})"
                ) from None
    return entries


def _read_header(raw: np.ndarray, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(str(raw[()]) if raw.ndim == 0 else "")
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict):
        raise HeatMatrixFileError(
            f"{str(path)!r} has a 'header' entry that is not the JSON object HeatMatrix.save writes"
        )
    missing = [k for k in _HEADER_KEYS if k not in header]
    if missing:
        raise HeatMatrixFileError(
            f"{str(path)!r} has a header without {', '.join(map(repr, missing))}: it was not saved by HeatMatrix.save"
        )
    return header


def _encode_meta(obj: Any, arrays: dict[str, np.ndarray], where: str, seen: set[int]) -> Any:
    """JSON-encode meta; numpy arrays go to side arrays (exact), other non-JSON objects become their repr.

    `where` names the current key (meta['options']['layers']) for errors; `seen` holds the containers on the
    current path, so a cycle is reported instead of recursing forever."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError(
                f"{where} is a numpy array of Python objects (dtype {obj.dtype}): HeatMatrix.save "
                "stores arrays without pickling; convert it to a numeric or str array, or a list"
            )
        key = str(len(arrays))
        arrays[key] = obj
        return {"__array__": key}
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):
        return _encode_meta(obj.detach().cpu().numpy(), arrays, where, seen)
    if isinstance(obj, (Mapping, list, tuple)):
        if id(obj) in seen:
            raise ValueError(
                f"{where} refers back to a container that holds it (self-referential meta): "
                "HeatMatrix.save can only store trees of values"
            )
        seen.add(id(obj))
        try:
            if isinstance(obj, Mapping):
                return {str(k): _encode_meta(v, arrays, f"{where}[{k!r}]", seen) for k, v in obj.items()}
            items = [_encode_meta(v, arrays, f"{where}[{i}]", seen) for i, v in enumerate(obj)]
            return {"__tuple__": items} if isinstance(obj, tuple) else items
        finally:
            seen.discard(id(obj))
    if isinstance(obj, np.generic):
        return _encode_meta(obj.item(), arrays, where, seen)
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"__float__": repr(obj)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return {"__repr__": repr(obj)}


def _decode_meta(obj: Any, arrays: dict[str, np.ndarray], path: Path) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            if obj["__array__"] not in arrays:
                raise HeatMatrixFileError(
                    f"{str(path)!r} is missing the meta array {obj['__array__']!r} its "
                    "header refers to (a truncated or edited file)"
                )
            return arrays[obj["__array__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(_decode_meta(v, arrays, path) for v in obj["__tuple__"])
        if set(obj) == {"__float__"}:
            return float(obj["__float__"])
        if set(obj) == {"__repr__"}:
            return obj["__repr__"]
        return {k: _decode_meta(v, arrays, path) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_meta(v, arrays, path) for v in obj]
    return obj
