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


def color_norm(values: np.ndarray, colormap: str, vmin: float | None = None, vmax: float | None = None,
               log: bool = False) -> Norm:
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
                math.log10(norm.hi) - math.log10(norm.lo))
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

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            # Level 1: this runs before the widget displays; higher levels cost 5× the time for a few % in size.
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b""))


def decode_png_rgba(data: bytes) -> np.ndarray:
    """Inverse of encode_png (unfiltered RGBA only): for tests and round trips."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, b""
    w = h = 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
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
    n_rows, n_cols = values.shape
    notes = list(notes)
    if norm.warning and norm.warning != "no finite values":
        notes.append(norm.warning)
    fr, fc = pool_factors(n_rows, n_cols, max_side * max_side, max_side)
    shown = values
    if fr > 1 or fc > 1:
        shown = pool(values, fr, fc, "mean")
        notes.append(f"static image: mean of {fr}×{fc} cells")
    pr, pc = shown.shape
    has_nan = bool(np.isnan(values).any())

    tick, axis, ttl, note_sz = 11, 12, 14, 11
    pad = 8
    top = pad + (ttl + 8 if title else 0)
    notes_y = top
    top += len(notes) * (note_sz + 4) + 4
    widest = max(_text_w(t, tick) for t in [*(format_value(v) for v in colorbar_ticks(norm, 6)), "n/a"])
    bar_title = colorbar_title(metric, norm)
    right = 14 + 12 + 4 + 3 + widest + (axis + 8 if bar_title else 0) + pad

    def row_lab(i: int) -> str:
        return axis_label(rows[i * fr] if i * fr < len(rows) else str(i * fr), 24)

    def col_lab(i: int) -> str:
        return axis_label(cols[i * fc] if i * fc < len(cols) else str(i * fc), 20)

    row_title_w = axis + 8 if row_title else 0
    max_row_w = min(width * 0.3, max(_text_w(row_lab(i), tick) for i in range(0, pr, max(1, pr // 200))))
    left = pad + row_title_w + max_row_w + 7
    plot_w = max(40.0, width - left - right)
    px_col = plot_w / pc
    max_col_w = max(_text_w(col_lab(i), tick) for i in range(0, pc, max(1, pc // 400)))
    step_h = thin_step(px_col, max_col_w + 8)
    step_r = thin_step(px_col, tick + 3)
    rotated = step_h > step_r
    col_ticks = list(range(0, pc, step_r if rotated else step_h))
    shown_col_w = max((_text_w(col_lab(i), tick) for i in col_ticks), default=0.0)
    s45 = math.sqrt(0.5)
    col_lab_h = min(s45 * (shown_col_w + tick), 160) if rotated else tick + 2
    if rotated:
        left = max(left, pad + s45 * (min(shown_col_w, 160 / s45) + tick) - px_col / 2)
        plot_w = max(40.0, width - left - right)
    bottom = 8 + col_lab_h + (axis + 10 if col_title else 0) + pad
    square = plot_w * pr / pc
    plot_h = round(max(min(max(pr * 22, 60 if pr == 1 else 100), 240), min(square, 520)))
    row_ticks = list(range(0, pr, thin_step(plot_h / pr, tick + 3)))
    height = math.ceil(top + plot_h + bottom)
    x0, y0 = left, top

    fg, muted, border = "#212121", "#757575", "#bdbdbd"
    out: list[str] = []
    add = out.append

    def text(x: float, y: float, s: str, size: int, anchor: str, base: str, angle: float = 0, extra: str = "",
             color: str = fg) -> None:
        rot = f' transform="rotate({angle:g} {x:.2f} {y:.2f})"' if angle else ""
        add(f'<text x="{x:.2f}" y="{y:.2f}" font-size="{size}" fill="{color}" text-anchor="{anchor}" '
            f'dominant-baseline="{base}"{extra}{rot}>{_esc(s)}</text>')

    add(f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="{_esc(_FONT)}">')
    add('<defs><pattern id="hw-hatch" patternUnits="userSpaceOnUse" width="6" height="6">'
        '<rect width="6" height="6" fill="#eeeeee"/><path d="M-1,1 l2,-2 M0,6 l6,-6 M5,7 l2,-2" '
        'stroke="#9e9e9e" stroke-width="1"/></pattern></defs>')
    add(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    if title:
        text(x0 + plot_w / 2, pad, axis_label(title, 120), ttl, "middle", "hanging", extra=' font-weight="bold"')
    for k, n in enumerate(notes):
        text(x0, notes_y + k * (note_sz + 4), n, note_sz, "start", "hanging", extra=' font-style="italic"',
             color=muted)
    if has_nan:
        add(f'<rect x="{x0:.2f}" y="{y0:.2f}" width="{plot_w:.2f}" height="{plot_h:.2f}" fill="url(#hw-hatch)"/>')
    cells = base64.b64encode(encode_png(to_rgba(shown, norm, colormap))).decode("ascii")
    add(f'<image x="{x0:.2f}" y="{y0:.2f}" width="{plot_w:.2f}" height="{plot_h:.2f}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated;image-rendering:crisp-edges" '
        f'xlink:href="data:image/png;base64,{cells}"/>')
    add(f'<rect x="{x0 + 0.5:.2f}" y="{y0 + 0.5:.2f}" width="{plot_w - 1:.2f}" height="{plot_h - 1:.2f}" '
        f'fill="none" stroke="{border}"/>')
    for i in row_ticks:
        y = y0 + (i + 0.5) * plot_h / pr
        add(f'<line x1="{x0 - 4:.2f}" y1="{y:.2f}" x2="{x0:.2f}" y2="{y:.2f}" stroke="{muted}"/>')
        text(x0 - 7, y, row_lab(i), tick, "end", "central")
    if row_title:
        text(pad + axis / 2, y0 + plot_h / 2, axis_label(row_title, 60), axis, "middle", "central", -90)
    yb = y0 + plot_h
    for i in col_ticks:
        x = x0 + (i + 0.5) * plot_w / pc
        add(f'<line x1="{x:.2f}" y1="{yb:.2f}" x2="{x:.2f}" y2="{yb + 4:.2f}" stroke="{muted}"/>')
        if rotated:
            text(x, yb + 8, col_lab(i), tick, "end", "central", -45)
        else:
            text(x, yb + 7, col_lab(i), tick, "middle", "hanging")
    if col_title:
        text(x0 + plot_w / 2, yb + 8 + col_lab_h + 6, axis_label(col_title, 80), axis, "middle", "hanging")

    bx = x0 + plot_w + 14
    bar_h = max(10.0, plot_h - (22 if has_nan else 0))
    ticks = colorbar_ticks(norm, max(2, min(6, int(bar_h // 28))))
    tick_txt = [format_value(v) for v in ticks]
    lut = build_lut(colormap)
    bar = np.ascontiguousarray(lut[::-1].reshape(256, 1, 4))
    bar_png = base64.b64encode(encode_png(bar)).decode("ascii")
    add(f'<image x="{bx:.2f}" y="{y0:.2f}" width="12" height="{bar_h:.2f}" preserveAspectRatio="none" '
        f'style="image-rendering:pixelated" xlink:href="data:image/png;base64,{bar_png}"/>')
    add(f'<rect x="{bx + 0.5:.2f}" y="{y0 + 0.5:.2f}" width="11" height="{bar_h - 1:.2f}" fill="none" '
        f'stroke="{border}"/>')
    for v, s in zip(ticks, tick_txt, strict=True):
        y = y0 + (1 - float(to_unit(np.array([v]), norm)[0])) * bar_h
        add(f'<line x1="{bx + 12:.2f}" y1="{y:.2f}" x2="{bx + 16:.2f}" y2="{y:.2f}" stroke="{muted}"/>')
        text(bx + 19, y, s, tick, "start", "central")
    if has_nan:
        sy = y0 + plot_h - 12
        add(f'<rect x="{bx:.2f}" y="{sy:.2f}" width="12" height="12" fill="url(#hw-hatch)" stroke="{border}"/>')
        text(bx + 19, sy + 6, "n/a", tick, "start", "central")
    if bar_title:
        text(width - pad - axis / 2, y0 + bar_h / 2, axis_label(bar_title, 52), axis, "middle", "central", -90)
    add("</svg>")
    return "\n".join(out)


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
