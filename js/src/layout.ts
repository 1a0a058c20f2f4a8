// Geometry: plot size, hit testing and cell rectangles. Arithmetic only, so hover and click cost the same
// for 10 cells and 10 million.

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface Cell {
  row: number;
  col: number;
}

/** The cell under (px, py) in a plot of rows × cols cells filling `plot`, or null outside. */
export function hitTest(plot: Rect, rows: number, cols: number, px: number, py: number): Cell | null {
  if (rows <= 0 || cols <= 0) return null;
  const fx = (px - plot.x) / plot.w;
  const fy = (py - plot.y) / plot.h;
  if (!(fx >= 0 && fx < 1 && fy >= 0 && fy < 1)) return null;
  return { row: Math.min(rows - 1, Math.floor(fy * rows)), col: Math.min(cols - 1, Math.floor(fx * cols)) };
}

/** The centre of the device pixel that contains CSS coordinate x (dpr device pixels per CSS pixel). */
export function pixelCentre(x: number, dpr: number): number {
  return (Math.floor(x * dpr) + 0.5) / dpr;
}

/** The rectangle of cell (row, col); edges are computed per index so neighbours share them exactly. */
export function cellRect(plot: Rect, rows: number, cols: number, row: number, col: number): Rect {
  const x0 = plot.x + (col * plot.w) / cols;
  const x1 = plot.x + ((col + 1) * plot.w) / cols;
  const y0 = plot.y + (row * plot.h) / rows;
  const y1 = plot.y + ((row + 1) * plot.h) / rows;
  return { x: x0, y: y0, w: x1 - x0, h: y1 - y0 };
}

/** Centre coordinate of item i of n along an axis of length `len` starting at `start`. */
export function itemCenter(start: number, len: number, n: number, i: number): number {
  return start + ((i + 0.5) * len) / n;
}

/**
 * Plot height in CSS pixels for a plot `width` wide: square cells when that fits between a floor that keeps
 * short matrices (1 × N) legible and leaves the colour bar room and a ceiling that keeps tall ones (1000 layers) on screen.
 */
export function autoPlotHeight(rows: number, cols: number, width: number, maxH = 520): number {
  const square = (width * rows) / Math.max(1, cols);
  const floor = Math.min(Math.max(rows * 22, rows === 1 ? 60 : 100), 240);
  return Math.round(Math.max(floor, Math.min(square, maxH)));
}

/** Keep at most maxChars characters (code points), ending with an ellipsis when cut. */
export function truncateLabel(s: string, maxChars: number): string {
  const chars = Array.from(s.length > maxChars * 4 ? s.slice(0, maxChars * 4) : s);
  if (chars.length <= maxChars && s.length <= maxChars * 4) return chars.join("");
  return chars.slice(0, Math.max(1, maxChars - 1)).join("") + "…";
}

/** Move a keyboard cursor by (dr, dc), clamped to the matrix. */
export function moveCursor(cur: Cell, dr: number, dc: number, rows: number, cols: number): Cell {
  return {
    row: Math.max(0, Math.min(rows - 1, cur.row + dr)),
    col: Math.max(0, Math.min(cols - 1, cur.col + dc)),
  };
}
