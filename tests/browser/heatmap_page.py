"""Reading a rendered heatmap back from a page: its pixels, its colours, where its cells are.

Works on any page where the widget rendered (JupyterLab, an exported HTML file): everything comes from the view's
canvases and the `data-plot` / `data-shape` attributes the view sets on its root element after each paint.
"""

from __future__ import annotations

from typing import Any

# Distinct colours and opaque pixels inside the plot area of the base canvas (every 7th pixel).
_PLOT_STATS_JS = """
(root) => {
  const c = root.querySelector('canvas.hw-base');
  const d = c.width / c.getBoundingClientRect().width;
  const [x, y, w, h] = root.dataset.plot.split(',').map(Number);
  const img = c.getContext('2d').getImageData(Math.round(x * d), Math.round(y * d),
                                              Math.max(1, Math.round(w * d)), Math.max(1, Math.round(h * d))).data;
  const colours = new Set();
  let opaque = 0, n = 0;
  for (let i = 0; i < img.length; i += 4 * 7) {
    n++;
    if (img[i + 3] === 255) opaque++;
    colours.add((img[i] << 16) | (img[i + 1] << 8) | img[i + 2]);
  }
  return { colours: colours.size, opaque, samples: n };
}
"""

# Background (most common colour) and text (the colour furthest from it in luminance) in the row-label margin.
_MARGIN_COLOURS_JS = """
(root) => {
  const c = root.querySelector('canvas.hw-base');
  const d = c.width / c.getBoundingClientRect().width;
  const [x, y, w, h] = root.dataset.plot.split(',').map(Number);
  const x1 = Math.max(2, Math.floor((x - 6) * d)), y0 = Math.floor(y * d), y1 = Math.floor((y + h) * d);
  const img = c.getContext('2d').getImageData(0, y0, x1, Math.max(1, y1 - y0)).data;
  const lum = (r, g, b) => 0.2126 * r + 0.7152 * g + 0.0722 * b;
  const counts = new Map();
  for (let i = 0; i < img.length; i += 4) {
    const k = (img[i] << 16) | (img[i + 1] << 8) | img[i + 2];
    counts.set(k, (counts.get(k) || 0) + 1);
  }
  let bg = 0, best = -1;
  for (const [k, n] of counts) if (n > best) { best = n; bg = k; }
  const rgb = (k) => [(k >> 16) & 255, (k >> 8) & 255, k & 255];
  const lb = lum(...rgb(bg));
  let text = bg, far = -1;
  for (const k of counts.keys()) { const dl = Math.abs(lum(...rgb(k)) - lb); if (dl > far) { far = dl; text = k; } }
  return { bg: rgb(bg), text: rgb(text), bgLum: lb, textLum: lum(...rgb(text)) };
}
"""

_OVERLAY_ALPHA_JS = """
(root, [x, y]) => {
  // The largest alpha within a pixel of (x, y): strokes are anti-aliased across pixel boundaries.
  const c = root.querySelector('canvas.hw-overlay');
  const d = c.width / c.getBoundingClientRect().width;
  const px = Math.round((x - 1) * d), py = Math.round(y * d);
  const img = c.getContext('2d').getImageData(px, py, Math.max(1, Math.round(2 * d)) + 1, 1).data;
  let a = 0;
  for (let i = 3; i < img.length; i += 4) a = Math.max(a, img[i]);
  return a;
}
"""


def plot_stats(root: Any) -> dict:
    """{"colours", "opaque", "samples"} of the plot area: a painted heatmap has many colours and no holes."""
    return root.evaluate(_PLOT_STATS_JS)


def margin_colours(root: Any) -> dict:
    """{"bg", "text", "bgLum", "textLum"}: the canvas background and label colours (they follow the theme)."""
    return root.evaluate(_MARGIN_COLOURS_JS)


def plot_rect(root: Any) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in root.get_attribute("data-plot").split(","))
    return x, y, w, h


def shape(root: Any) -> tuple[int, int]:
    r, c = root.get_attribute("data-shape").split("x")
    return int(r), int(c)


def cell_center(root: Any, r: int, c: int) -> tuple[float, float]:
    """The centre of cell (r, c) in CSS pixels relative to the canvas."""
    x, y, w, h = plot_rect(root)
    rows, cols = shape(root)
    return x + (c + 0.5) * w / cols, y + (r + 0.5) * h / rows


def cell_left_edge(root: Any, r: int, c: int) -> tuple[float, float]:
    """The middle of the left edge of cell (r, c), where the selection outline is drawn."""
    x, y, w, h = plot_rect(root)
    rows, cols = shape(root)
    return x + c * w / cols, y + (r + 0.5) * h / rows


def page_point(root: Any, x: float, y: float) -> tuple[float, float]:
    """Canvas CSS coordinates -> page coordinates for `page.mouse` (scrolls the widget into view first)."""
    root.scroll_into_view_if_needed()
    box = root.locator("canvas.hw-overlay").bounding_box()
    return box["x"] + x, box["y"] + y


def overlay_alpha(root: Any, x: float, y: float) -> int:
    """Alpha of the overlay canvas (selection outline, hover) within a pixel of canvas CSS coordinates."""
    return int(root.evaluate(_OVERLAY_ALPHA_JS, [x, y]))
