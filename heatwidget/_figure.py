"""Static figure of a heatmap without matplotlib: colour maps, colour range, NaN-aware pooling, PNG and SVG.

This is the kernel-side twin of the widget's front end (js/src/colormaps.ts, scale.ts, figure.ts). Both read the
same colour-map table (heatwidget/colormaps.json) and expand it with the same arithmetic, so the static image
that GitHub and plain renderers show has the widget's colours. The SVG is what `Heatmap._repr_mimebundle_`
carries next to the live widget.

Run ``python -m heatwidget._figure --write-golden`` after editing colormaps.json: it rewrites the golden LUT file
that the Python and the TypeScript tests both compare against.
"""

from __future__ import annotations

import base64
import json
import math
import struct
import sys
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape as _xml_escape

import numpy as np

__all__ = [
    "COLORMAPS",
    "Norm",
    "build_lut",
    "color_norm",
    "colorbar_ticks",
    "colormap_names",
    "encode_png",
    "figure_svg",
    "format_value",
    "lut_index",
    "parse_colormap",
    "pool",
    "pool_factors",
    "thin_step",
]

_HERE = Path(__file__).resolve().parent
COLORMAPS: dict[str, dict] = json.loads((_HERE / "colormaps.json").read_text(encoding="utf-8"))["colormaps"]
GOLDEN_PATH = _HERE.parent / "js" / "test" / "lut_golden.json"
LUT_SIZE = 256


# ---- colour maps --------------------------------------------------------------------------------------------
def colormap_names() -> list[str]:
    """All accepted names: each map and its reversal ("viridis_r")."""
    return [n for base in COLORMAPS for n in (base, base + "_r")]


def parse_colormap(name: str) -> tuple[str, bool]:
    """("viridis", True) for "viridis_r"; ValueError naming the choices for anything unknown."""
    lower = str(name).lower()
    reversed_ = lower.endswith("_r")
    base = lower[:-2] if reversed_ else lower
    if base not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {colormap_names()}")
    return base, reversed_


def is_diverging(name: str) -> bool:
    return COLORMAPS[parse_colormap(name)[0]]["kind"] == "diverging"


def _hex(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@cache
def _lut_cached(name: str) -> bytes:
    base, reversed_ = parse_colormap(name)
    anchors = [_hex(c) for c in COLORMAPS[base]["colors"]]
    n = len(anchors)
    lut = np.zeros((LUT_SIZE, 4), dtype=np.uint8)
    for i in range(LUT_SIZE):
        # Mirrors colormaps.ts:buildLut operation by operation (float64 both sides → identical bytes).
        x = (i * (n - 1)) / (LUT_SIZE - 1)
        j = min(math.floor(x), n - 2)
        f = x - j
        k = LUT_SIZE - 1 - i if reversed_ else i
        for ch in range(3):
            a, b = anchors[j][ch], anchors[j + 1][ch]
            lut[k, ch] = math.floor(a + (b - a) * f + 0.5)
        lut[k, 3] = 255
    return lut.tobytes()


def build_lut(name: str) -> np.ndarray:
    """RGBA lookup table [256, 4] uint8; entry i is the colour at t = i / 255."""
    return np.frombuffer(_lut_cached(str(name).lower()), dtype=np.uint8).reshape(LUT_SIZE, 4).copy()


def golden_table() -> dict[str, list[str]]:
    return {name: [f"#{r:02x}{g:02x}{b:02x}" for r, g, b, _ in build_lut(name)] for name in colormap_names()}


# ---- colour range ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Norm:
    """Colour range and mapping: "linear", "log" or "diverging" (two slopes meeting at 0)."""

    lo: float
    hi: float
    mode: str
    degenerate: bool
    warning: str = ""


def color_norm(
    values: np.ndarray, colormap: str, vmin: float | None = None, vmax: float | None = None, log: bool = False
) -> Norm:
    """The colour range the widget will use (same rules as scale.ts:computeNorm)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Norm(0.0, 1.0, "linear", True, "no finite values")
    mn, mx = float(finite.min()), float(finite.max())
    pos = finite[finite > 0]
    min_pos = float(pos.min()) if pos.size else math.inf
    mode, warning = "linear", ""
    if log:
        lo = vmin if vmin is not None else min_pos
        hi = vmax if vmax is not None else mx
        if lo > 0 and hi > 0 and math.isfinite(lo):
            mode = "log"
        else:
            warning = "log scale needs positive values: drawn linear"
            lo = vmin if vmin is not None else mn
            hi = vmax if vmax is not None else mx
    elif is_diverging(colormap):
        m = max(abs(mn), abs(mx))
        lo = vmin if vmin is not None else (-abs(vmax) if vmax is not None else -m)
        hi = vmax if vmax is not None else (abs(vmin) if vmin is not None else m)
        if lo < 0 < hi:
            mode = "diverging"
    else:
        lo = vmin if vmin is not None else mn
        hi = vmax if vmax is not None else mx
    if hi < lo:
        lo, hi = hi, lo
    return Norm(float(lo), float(hi), mode, not hi > lo, warning)


def to_unit(values: np.ndarray, norm: Norm) -> np.ndarray:
    """Position on the colour scale in [0, 1] (float64); NaN stays NaN."""
    v = np.asarray(values, dtype=np.float64)
    if norm.degenerate:
        t = np.full(v.shape, 0.5)
    elif norm.mode == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.log10(np.where(v > 0, v, norm.lo)) - math.log10(norm.lo)) / (
                math.log10(norm.hi) - math.log10(norm.lo)
            )
        t = np.where(v > 0, t, 0.0)
    elif norm.mode == "diverging":
        t = np.where(v < 0, 0.5 * (v - norm.lo) / -norm.lo, 0.5 + 0.5 * v / norm.hi)
    else:
        t = (v - norm.lo) / (norm.hi - norm.lo)
    t = np.clip(t, 0.0, 1.0)
    return np.where(np.isnan(v), np.nan, t)


def lut_index(values: np.ndarray, norm: Norm) -> np.ndarray:
    """LUT entry per value (256 equal bins; t = 1 in the last); -1 for NaN."""
    t = to_unit(values, norm)
    idx = np.minimum(np.floor(np.nan_to_num(t, nan=0.0) * 256), 255).astype(np.int16)
    return np.where(np.isnan(t), -1, idx)


def to_rgba(values: np.ndarray, norm: Norm, colormap: str) -> np.ndarray:
    """[R, C, 4] uint8 image, one pixel per cell; NaN cells fully transparent (the hatch shows through)."""
    idx = lut_index(values, norm)
    rgba = build_lut(colormap)[np.maximum(idx, 0)]
    rgba[idx < 0] = 0
    return rgba


# ---- ticks and numbers ----------------------------------------------------------------------------------------
def _clean(x: float) -> float:
    return float(f"{x:.12g}")


def nice_ticks(lo: float, hi: float, max_ticks: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if not hi > lo:
        return [_clean(lo)]
    for k in range(max(1, max_ticks), max_ticks + 9):  # scale.ts twin: finer steps if < 2 ticks
        ticks = _nice_ticks_once(lo, hi, k)
        if len(ticks) >= 2:
            return ticks
    return [_clean(lo), _clean(hi)]


def _nice_ticks_once(lo: float, hi: float, max_ticks: int) -> list[float]:
    raw = (hi - lo) / max(1, max_ticks)
    mag = 10 ** math.floor(math.log10(raw))
    e = raw / mag
    step = (10 if e >= math.sqrt(50) else 5 if e >= math.sqrt(10) else 2 if e >= math.sqrt(2) else 1) * mag
    k = math.ceil(lo / step - 1e-9)
    out = []
    while k * step <= hi + step * 1e-9:
        out.append(_clean(k * step))
        k += 1
    return out


def colorbar_ticks(norm: Norm, max_ticks: int = 5) -> list[float]:
    if norm.degenerate:
        return [_clean(norm.lo)]
    if norm.mode == "log":
        a = math.ceil(math.log10(norm.lo) - 1e-9)
        b = math.floor(math.log10(norm.hi) + 1e-9)
        if b - a >= 1:
            every = math.ceil((b - a + 1) / max_ticks)
            return [_clean(10.0**e) for e in range(a, b + 1, every)]
    return nice_ticks(norm.lo, norm.hi, max_ticks)


def _round_sig(v: float, digits: int) -> Decimal:
    # JavaScript's toPrecision/toExponential round the exact binary value half away from zero; Python's
    # format() rounds half to even. Decimal(v) is exact, so ROUND_HALF_UP reproduces JavaScript.
    d = Decimal(v)
    return d.quantize(Decimal(1).scaleb(d.adjusted() - digits + 1), rounding=ROUND_HALF_UP)


def format_value(v: float, digits: int = 4) -> str:
    """Compact number text, same as scale.ts:formatValue (4 significant digits, exponent when tiny/huge)."""
    if v != v:
        return "n/a"
    if v == 0:
        return "0"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    a = abs(v)
    if a >= 1e5 or a < 1e-3:
        q = _round_sig(v, max(1, digits - 1))
        exp = q.adjusted()
        m = str(q.scaleb(-exp).normalize())
        s = f"{m}e{exp}"
    else:
        x = float(_round_sig(v, digits))
        s = str(int(x)) if x.is_integer() else repr(x)
    return s.replace("-", "−", 1) if s.startswith("-") else s


def thin_step(px_per_item: float, min_px: float) -> int:
    """Smallest of 1, 2, 5, 10, 20, 50, … that puts labels at least min_px apart (scale.ts:thinStep)."""
    if not px_per_item > 0:
        return sys.maxsize
    if px_per_item >= min_px:
        return 1
    need = min_px / px_per_item
    mag = 1
    while True:
        for m in (1, 2, 5):
            if m * mag >= need:
                return m * mag
        mag *= 10


# ---- pooling ----------------------------------------------------------------------------------------------------
def pool_factors(rows: int, cols: int, max_cells: int, max_side: int | None = None) -> tuple[int, int]:
    """Block sizes so the pooled matrix has at most max_cells cells (and max_side per side); raster.ts twin."""
    fr = max(1, math.ceil(rows / max_side)) if max_side else 1
    fc = max(1, math.ceil(cols / max_side)) if max_side else 1
    while math.ceil(rows / fr) * math.ceil(cols / fc) > max_cells:
        if math.ceil(rows / fr) >= math.ceil(cols / fc):
            fr += 1
        else:
            fc += 1
    return fr, fc


def pool(values: np.ndarray, fr: int, fc: int, how: str = "mean") -> np.ndarray:
    """NaN-aware block pooling ("mean" or "max"); a block of only NaN stays NaN. Edge blocks may be partial."""
    if how not in ("mean", "max"):
        raise ValueError(f"pooling must be 'mean' or 'max', got {how!r}")
    if fr == 1 and fc == 1:
        return values
    r, c = values.shape
    pr, pc = math.ceil(r / fr), math.ceil(c / fc)
    padded = np.full((pr * fr, pc * fc), np.nan, dtype=np.float32)
    padded[:r, :c] = values
    blocks = padded.reshape(pr, fr, pc, fc)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks are expected: they stay NaN
        out = np.nanmax(blocks, axis=(1, 3)) if how == "max" else np.nanmean(blocks, axis=(1, 3), dtype=np.float64)
    return np.asarray(out, dtype=np.float32)


# ---- PNG ------------------------------------------------------------------------------------------------------
def encode_png(rgba: np.ndarray) -> bytes:
    """Minimal PNG writer (8-bit RGBA, no filtering) with zlib; enough for a 1 px/cell image."""
    rgba = np.ascontiguousarray(rgba, dtype=np.uint8)
    if rgba.ndim != 3 or rgba.shape[2] != 4:
        raise ValueError(f"expected an [H, W, 4] uint8 image, got shape {rgba.shape}")
    h, w = rgba.shape[:2]
    raw = np.zeros((h, 1 + 4 * w), dtype=np.uint8)  # each scanline starts with filter type 0
    raw[:, 1:] = rgba.reshape(h, 4 * w)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
        # Level 1: this runs before the widget displays; higher levels cost 5× the time for a few % in size.
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1))
        + chunk(b"IEND", b"")
    )


def decode_png_rgba(data: bytes) -> np.ndarray:
    """Inverse of encode_png (unfiltered RGBA only): for tests and round trips."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, b""
    w = h = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if tag == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + 4 * w)
    if raw[:, 0].any():
        raise ValueError("filtered scanlines are not supported")
    return raw[:, 1:].reshape(h, w, 4)


# ---- SVG ------------------------------------------------------------------------------------------------------
_FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif"
_CHAR_W = 0.6  # average glyph width / font size: the kernel cannot measure text, so estimate generously


def _esc(s: str) -> str:
    # Labels are user data: escape markup and drop characters XML 1.0 forbids.
    s = "".join(ch for ch in s if ch in "\t\n\r" or ord(ch) >= 0x20)
    return _xml_escape(s, {'"': "&quot;", "'": "&apos;"})


def colorbar_title(metric: str, norm: Norm) -> str:
    """The colour bar's title: the metric, and "log scale" when the scale is logarithmic (as the JS view says)."""
    if norm.mode != "log":
        return metric
    return f"{metric} · log scale" if metric else "log scale"


def axis_label(s: str, max_chars: int) -> str:
    """One line, control characters made visible, at most max_chars characters (ellipsis when cut)."""
    s = s.replace("\r\n", "↵").replace("\n", "↵").replace("\t", "⇥")
    s = "".join(ch for ch in s if ord(ch) >= 0x20 and ord(ch) != 0x7F)
    return s if len(s) <= max_chars else s[: max(1, max_chars - 1)] + "…"


def _text_w(s: str, size: float) -> float:
    return len(s) * size * _CHAR_W


# The layout rules are figure.ts's layoutFigure, step for step (tests/test_figure_layout.py and
# js/test/figure_parity.test.ts check that both give the same labels, titles and positions); only the text
# measurement differs: the kernel estimates widths (_text_w), the browser measures them.
_TICK, _AXIS, _TITLE, _NOTE = 11, 12, 14, 11  # font sizes (figure.ts FONT_SIZES)
_PAD, _TICK_LEN, _BAR_W = 8, 4, 12
_S45 = math.sqrt(0.5)


def _sample_indices(n: int, most: int) -> list[int]:
    """All of range(n), or `most` indices spread over it (figure.ts sampleIndices)."""
    return list(range(n)) if n <= most else [k * n // most for k in range(most)]


@dataclass
class SvgLayout:
    """Where everything goes in the static figure (CSS px) and which rows and columns are labelled."""

    width: float
    height: int
    x0: float
    y0: float
    plot_w: float
    plot_h: float
    rows: int  # cells drawn (after pooling)
    cols: int
    row_labels: list[str]  # one per drawn row: the label of its first matrix row
    col_labels: list[str]
    row_ticks: list[int]
    col_ticks: list[int]
    rotated: bool
    col_lab_h: float
    notes_y: float
    notes: list[str]
    bar_h: float
    bar_ticks: list[float]
    bar_title: str
    has_nan: bool


def _col_label_layout(labels: list[str], plot_w: float) -> tuple[list[int], bool, float, float]:
    """Column ticks, whether the labels are rotated 45°, the label band's height and the widest shown label."""
    n = len(labels)
    px_col = plot_w / n
    max_col_w = max(_text_w(labels[i], _TICK) for i in _sample_indices(n, 400))
    step_h = thin_step(px_col, max_col_w + 8)
    step_r = thin_step(px_col, _TICK + 3)
    rotated = step_h > step_r
    ticks = list(range(0, n, step_r if rotated else step_h))
    shown_w = max((_text_w(labels[i], _TICK) for i in ticks[:2000]), default=0.0)
    height = min(_S45 * (shown_w + _TICK), 160) if rotated else _TICK + 2
    return ticks, rotated, height, shown_w


def _colorbar_margin(norm: Norm, metric: str) -> tuple[float, str]:
    """The right margin the colour bar, its tick labels and its title take, and that title."""
    widest = max(_text_w(t, _TICK) for t in ["n/a", *(format_value(v) for v in colorbar_ticks(norm, 6))])
    bar_title = colorbar_title(metric, norm)
    return 14 + _BAR_W + _TICK_LEN + 3 + widest + (_AXIS + 8 if bar_title else 0) + _PAD, bar_title


def svg_layout(
    row_labels: list[str],
    col_labels: list[str],
    *,
    title: str,
    row_title: str,
    col_title: str,
    metric: str,
    norm: Norm,
    has_nan: bool,
    notes: list[str],
    width: float,
) -> SvgLayout:
    """Lay out a figure of len(row_labels) × len(col_labels) cells (labels already one per drawn cell)."""
    pr, pc = len(row_labels), len(col_labels)
    width = max(160.0, width)
    notes_y = _PAD + (_TITLE + 8 if title else 0)
    top = notes_y + len(notes) * (_NOTE + 4) + 4
    right, bar_title = _colorbar_margin(norm, metric)

    def left_for(rows_shown: list[int]) -> float:
        label_w = min(width * 0.3, max((_text_w(row_labels[i], _TICK) for i in rows_shown), default=0.0))
        return _PAD + (_AXIS + 8 if row_title else 0) + label_w + _TICK_LEN + 3

    left = left_for(_sample_indices(pr, 200))
    plot_w = max(40.0, width - left - right)
    col_ticks, rotated, col_lab_h, shown_col_w = _col_label_layout(col_labels, plot_w)
    if rotated:  # a 45° label hangs down-left from its tick: keep the first one inside the figure
        left = max(left, _PAD + _S45 * (min(shown_col_w, 160 / _S45) + _TICK) - plot_w / pc / 2)
        plot_w = max(40.0, width - left - right)
    plot_h = round(max(min(max(pr * 22, 60 if pr == 1 else 100), 240), min(plot_w * pr / pc, 520)))
    row_ticks = list(range(0, pr, thin_step(plot_h / pr, _TICK + 3)))
    settled = left_for(row_ticks)  # re-measured with the rows actually labelled
    if rotated or abs(settled - left) > 0.5:
        left = max(left, settled) if rotated else settled
        plot_w = max(40.0, width - left - right)
    bar_h = max(10.0, plot_h - (22 if has_nan else 0))
    return SvgLayout(
        width=width,
        height=math.ceil(top + plot_h + _TICK_LEN + 4 + col_lab_h + (_AXIS + 10 if col_title else 0) + _PAD),
        x0=left,
        y0=top,
        plot_w=plot_w,
        plot_h=plot_h,
        rows=pr,
        cols=pc,
        row_labels=row_labels,
        col_labels=col_labels,
        row_ticks=row_ticks,
        col_ticks=col_ticks,
        rotated=rotated,
        col_lab_h=col_lab_h,
        notes_y=notes_y,
        notes=notes,
        bar_h=bar_h,
        bar_ticks=colorbar_ticks(norm, max(2, min(6, int(bar_h // 28)))),
        bar_title=bar_title,
        has_nan=has_nan,
    )


class _SvgWriter:
    """Collects SVG elements; text is escaped (labels are user data)."""

    FG, MUTED, BORDER = "#212121", "#757575", "#bdbdbd"

    def __init__(self) -> None:
        self.out: list[str] = []
        self.add = self.out.append

    def text(
        self,
        x: float,
        y: float,
        s: str,
        size: int,
        anchor: str,
        base: str,
        angle: float = 0,
        extra: str = "",
        color: str = FG,
    ) -> None:
        rot = f' transform="rotate({angle:g} {x:.2f} {y:.2f})"' if angle else ""
        self.add(
            f'<text x="{x:.2f}" y="{y:.2f}" font-size="{size}" fill="{color}" text-anchor="{anchor}" '
            f'dominant-baseline="{base}"{extra}{rot}>{_esc(s)}</text>'
        )

    def line(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self.add(f'<line x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" y2="{y2:.2f}" stroke="{self.MUTED}"/>')

    def png(self, x: float, y: float, w: float, h: float, rgba: np.ndarray, style: str) -> None:
        data = base64.b64encode(encode_png(rgba)).decode("ascii")
        self.add(
            f'<image x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" preserveAspectRatio="none" '
            f'style="{style}" xlink:href="data:image/png;base64,{data}"/>'
        )


def _svg_head(w: _SvgWriter, L: SvgLayout, title: str) -> None:
    w.add(
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{L.width:g}" '
        f'height="{L.height}" viewBox="0 0 {L.width:g} {L.height}" font-family="{_esc(_FONT)}">'
    )
    w.add(
        '<defs><pattern id="hw-hatch" patternUnits="userSpaceOnUse" width="6" height="6">'
        '<rect width="6" height="6" fill="#eeeeee"/><path d="M-1,1 l2,-2 M0,6 l6,-6 M5,7 l2,-2" '
        'stroke="#9e9e9e" stroke-width="1"/></pattern></defs>'
    )
    w.add(f'<rect width="{L.width:g}" height="{L.height}" fill="#ffffff"/>')
    if title:
        w.text(
            L.x0 + L.plot_w / 2, _PAD, axis_label(title, 120), _TITLE, "middle", "hanging", extra=' font-weight="bold"'
        )
    for k, n in enumerate(L.notes):
        w.text(
            L.x0, L.notes_y + k * (_NOTE + 4), n, _NOTE, "start", "hanging", extra=' font-style="italic"', color=w.MUTED
        )


def _svg_cells_and_axes(w: _SvgWriter, L: SvgLayout, rgba: np.ndarray, row_title: str, col_title: str) -> None:
    x0, y0, pw, ph = L.x0, L.y0, L.plot_w, L.plot_h
    if L.has_nan:
        w.add(f'<rect x="{x0:.2f}" y="{y0:.2f}" width="{pw:.2f}" height="{ph:.2f}" fill="url(#hw-hatch)"/>')
    w.png(x0, y0, pw, ph, rgba, "image-rendering:pixelated;image-rendering:crisp-edges")
    w.add(
        f'<rect x="{x0 + 0.5:.2f}" y="{y0 + 0.5:.2f}" width="{pw - 1:.2f}" height="{ph - 1:.2f}" '
        f'fill="none" stroke="{w.BORDER}"/>'
    )
    for i in L.row_ticks:
        y = y0 + (i + 0.5) * ph / L.rows
        w.line(x0 - _TICK_LEN, y, x0, y)
        w.text(x0 - _TICK_LEN - 3, y, L.row_labels[i], _TICK, "end", "central")
    if row_title:
        w.text(_PAD + _AXIS / 2, y0 + ph / 2, axis_label(row_title, 60), _AXIS, "middle", "central", -90)
    yb = y0 + ph
    for i in L.col_ticks:
        x = x0 + (i + 0.5) * pw / L.cols
        w.line(x, yb, x, yb + _TICK_LEN)
        if L.rotated:
            w.text(x, yb + _TICK_LEN + 4, L.col_labels[i], _TICK, "end", "central", -45)
        else:
            w.text(x, yb + _TICK_LEN + 3, L.col_labels[i], _TICK, "middle", "hanging")
    if col_title:
        w.text(x0 + pw / 2, yb + _TICK_LEN + 4 + L.col_lab_h + 6, axis_label(col_title, 80), _AXIS, "middle", "hanging")


def _svg_colorbar(w: _SvgWriter, L: SvgLayout, norm: Norm, colormap: str) -> None:
    bx, y0, bar_h = L.x0 + L.plot_w + 14, L.y0, L.bar_h
    w.png(
        bx,
        y0,
        _BAR_W,
        bar_h,
        np.ascontiguousarray(build_lut(colormap)[::-1].reshape(256, 1, 4)),
        "image-rendering:pixelated",
    )
    w.add(
        f'<rect x="{bx + 0.5:.2f}" y="{y0 + 0.5:.2f}" width="{_BAR_W - 1}" height="{bar_h - 1:.2f}" fill="none" '
        f'stroke="{w.BORDER}"/>'
    )
    for v in L.bar_ticks:
        y = y0 + (1 - float(to_unit(np.array([v]), norm)[0])) * bar_h
        w.line(bx + _BAR_W, y, bx + _BAR_W + _TICK_LEN, y)
        w.text(bx + _BAR_W + _TICK_LEN + 3, y, format_value(v), _TICK, "start", "central")
    if L.has_nan:
        sy = y0 + L.plot_h - 12
        w.add(f'<rect x="{bx:.2f}" y="{sy:.2f}" width="12" height="12" fill="url(#hw-hatch)" stroke="{w.BORDER}"/>')
        w.text(bx + _BAR_W + _TICK_LEN + 3, sy + 6, "n/a", _TICK, "start", "central")
    if L.bar_title:
        w.text(L.width - _PAD - _AXIS / 2, y0 + bar_h / 2, axis_label(L.bar_title, 52), _AXIS, "middle", "central", -90)


def shown_matrix(
    values: np.ndarray, norm: Norm, notes: Sequence[str], max_side: int
) -> tuple[np.ndarray, int, int, list[str]]:
    """What the static figure draws: the matrix, mean-pooled above max_side per side, and its notes."""
    out = list(notes)
    if norm.warning and norm.warning != "no finite values":
        out.append(norm.warning)
    fr, fc = pool_factors(values.shape[0], values.shape[1], max_side * max_side, max_side)
    if fr == 1 and fc == 1:
        return values, fr, fc, out
    out.append(f"static image: mean of {fr}×{fc} cells")
    return pool(values, fr, fc, "mean"), fr, fc, out


def block_labels(labels: Sequence[str], n: int, step: int, max_chars: int) -> list[str]:
    """Axis text of drawn cell i: the label of matrix index i·step (its index when there is no label)."""
    return [axis_label(labels[i * step] if i * step < len(labels) else str(i * step), max_chars) for i in range(n)]


def figure_svg(
    values: np.ndarray,
    rows: Sequence[str],
    cols: Sequence[str],
    *,
    title: str = "",
    row_title: str = "",
    col_title: str = "",
    metric: str = "",
    colormap: str = "blues",
    vmin: float | None = None,
    vmax: float | None = None,
    log: bool = False,
    notes: Sequence[str] = (),
    width: int = 640,
    max_side: int = 256,
) -> str:
    """The heatmap as a standalone SVG: title, thinned tick labels, colour bar with ticks, n/a hatch.

    Cells are one embedded PNG (1 px per cell, scaled with pixelated rendering); matrices larger than max_side
    per side are mean-pooled first, which the figure says in a note: the plot is ~500 px wide, so finer cells
    would not show, and the SVG sits in the notebook file (and is built before the widget displays).
    """
    values = np.asarray(values, dtype=np.float32)
    norm = color_norm(values, colormap, vmin, vmax, log)
    shown, fr, fc, all_notes = shown_matrix(values, norm, notes, max_side)
    L = svg_layout(
        block_labels(rows, shown.shape[0], fr, 24),
        block_labels(cols, shown.shape[1], fc, 20),
        title=title,
        row_title=row_title,
        col_title=col_title,
        metric=metric,
        norm=norm,
        has_nan=bool(np.isnan(values).any()),
        notes=all_notes,
        width=width,
    )
    w = _SvgWriter()
    _svg_head(w, L, title)
    _svg_cells_and_axes(w, L, to_rgba(shown, norm, colormap), row_title, col_title)
    _svg_colorbar(w, L, norm, colormap)
    w.add("</svg>")
    return "\n".join(w.out)


def _main(argv: list[str]) -> int:
    if argv[1:] == ["--write-golden"]:
        GOLDEN_PATH.parent.mkdir(parents=True, exist_ok=True)
        # One map per line: small diffs when a colour map changes.
        body = ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in golden_table().items())
        GOLDEN_PATH.write_text("{\n" + body + "\n}\n", encoding="utf-8")
        print(f"wrote {GOLDEN_PATH}")
        return 0
    print("usage: python -m heatwidget._figure --write-golden", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv))
