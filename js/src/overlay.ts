// The overlay canvas above the figure: hover box, selection outline with axis markers, keyboard cursor. It is
// redrawn on every pointer move, so it draws a handful of strokes and never touches the figure underneath. Until
// there is something to show it stays untouched (no 2D context, no backing store): the first paint then costs
// one canvas, not two.
import type { Theme } from "./figure";
import { type Cell, type Rect, cellRect } from "./layout";

export interface OverlayState {
  plot: Rect;
  rows: number;
  cols: number;
  hover: Cell | null;
  selected: Cell | null;
  /** The keyboard cursor, only while the widget has focus and the keyboard moved it. */
  cursor: Cell | null;
  theme: Theme;
}

/** Cells thinner than a few pixels still get a visible box. */
function box(s: OverlayState, c: Cell): Rect {
  const r = cellRect(s.plot, s.rows, s.cols, c.row, c.col);
  const min = 6;
  const w = Math.max(r.w, min);
  const h = Math.max(r.h, min);
  return { x: r.x + r.w / 2 - w / 2, y: r.y + r.h / 2 - h / 2, w, h };
}

function drawMarkers(ctx: CanvasRenderingContext2D, s: OverlayState, sel: Cell): void {
  // Markers on both axes point at the selected row and column.
  const r = cellRect(s.plot, s.rows, s.cols, sel.row, sel.col);
  ctx.fillStyle = s.theme.accent;
  const cy = r.y + r.h / 2;
  const cx = r.x + r.w / 2;
  const x0 = s.plot.x + s.plot.w;
  const y0 = s.plot.y;
  ctx.beginPath();
  ctx.moveTo(x0 + 1, cy);
  ctx.lineTo(x0 + 7, cy - 4);
  ctx.lineTo(x0 + 7, cy + 4);
  ctx.fill();
  ctx.beginPath();
  ctx.moveTo(cx, y0 - 1);
  ctx.lineTo(cx - 4, y0 - 7);
  ctx.lineTo(cx + 4, y0 - 7);
  ctx.fill();
}

export function drawOverlayState(ctx: CanvasRenderingContext2D, s: OverlayState): void {
  const { plot } = s;
  ctx.save();
  ctx.beginPath();
  ctx.rect(plot.x - 3, plot.y - 3, plot.w + 6, plot.h + 6);
  ctx.clip();
  if (s.hover) {
    const b = box(s, s.hover);
    ctx.strokeStyle = s.theme.foreground;
    ctx.lineWidth = 1;
    ctx.strokeRect(b.x + 0.5, b.y + 0.5, b.w - 1, b.h - 1);
  }
  if (s.selected) {
    // Dark outer + light inner stroke: visible on every colour of every map.
    const b = box(s, s.selected);
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#000000";
    ctx.strokeRect(b.x, b.y, b.w, b.h);
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#ffffff";
    ctx.strokeRect(b.x, b.y, b.w, b.h);
  }
  if (s.cursor) {
    const b = box(s, s.cursor);
    ctx.setLineDash([3, 2]);
    ctx.lineWidth = 2;
    ctx.strokeStyle = s.theme.accent;
    ctx.strokeRect(b.x - 1, b.y - 1, b.w + 2, b.h + 2);
    ctx.setLineDash([]);
  }
  ctx.restore();
  if (s.selected) drawMarkers(ctx, s, s.selected);
}

export class OverlayLayer {
  /** True while the canvas holds no pixels (never drawn, cleared, or reset by a resize). */
  private blank = true;
  /** How many times the overlay was drawn (tests check that an empty overlay is never touched). */
  draws = 0;

  constructor(readonly canvas: HTMLCanvasElement) {}

  /** Size the canvas for a figure of w × h CSS pixels; a resize empties it. */
  resize(w: number, h: number, dpr: number): void {
    const pw = Math.round(w * dpr);
    const ph = Math.round(h * dpr);
    if (this.canvas.width !== pw || this.canvas.height !== ph) {
      this.canvas.width = pw;
      this.canvas.height = ph;
      this.blank = true;
    }
    this.canvas.style.width = `${w}px`;
    this.canvas.style.height = `${h}px`;
  }

  draw(s: OverlayState | null, cssWidth: number): void {
    const empty = !s || (!s.hover && !s.selected && !s.cursor);
    if (empty && this.blank) return;
    const ctx = this.canvas.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.blank = true;
    if (!s || empty) return;
    const dpr = this.canvas.width / cssWidth || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    drawOverlayState(ctx, s);
    this.blank = false;
    this.draws++;
  }
}
