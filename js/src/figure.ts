// Figure layout as a display list: titles, tick labels, colour bar, cells image, NaN hatch. The same list is
// drawn on a canvas (draw.ts) and written as SVG (svg.ts), so the saved SVG is the figure on screen.
// Pure: text measurement is injected, so layout is unit-testable without a DOM.
import { autoPlotHeight, itemCenter, type Rect, truncateLabel } from "./layout";
import { colorbarTicks, formatValue, type Norm, thinStep, tickIndices, toUnit } from "./scale";

export interface Theme {
  background: string;
  foreground: string;
  muted: string;
  border: string;
  hatchBackground: string;
  hatchLine: string;
  accent: string;
  fontFamily: string;
}

export const LIGHT_THEME: Theme = {
  background: "#ffffff",
  foreground: "rgba(0, 0, 0, 0.87)",
  muted: "rgba(0, 0, 0, 0.54)",
  border: "#bdbdbd",
  hatchBackground: "#eeeeee",
  hatchLine: "#9e9e9e",
  accent: "#1976d2",
  fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif",
};

export const DARK_THEME: Theme = {
  background: "#111111",
  foreground: "rgba(255, 255, 255, 1)",
  muted: "rgba(255, 255, 255, 0.6)",
  border: "#616161",
  hatchBackground: "#2a2a2a",
  hatchLine: "#757575",
  accent: "#42a5f5",
  fontFamily: LIGHT_THEME.fontFamily,
};

export type Align = "left" | "right" | "center";
export type Baseline = "top" | "middle" | "bottom" | "alphabetic";

export type Item =
  | { kind: "fill"; x: number; y: number; w: number; h: number; color: string }
  | { kind: "stroke"; x: number; y: number; w: number; h: number; color: string; width: number }
  | { kind: "line"; x1: number; y1: number; x2: number; y2: number; color: string; width: number }
  | { kind: "hatch"; x: number; y: number; w: number; h: number }
  | { kind: "image"; src: "cells" | "colorbar"; x: number; y: number; w: number; h: number }
  | {
      kind: "text";
      x: number;
      y: number;
      text: string;
      font: string;
      color: string;
      align: Align;
      baseline: Baseline;
      angle: number; // degrees, clockwise as on a canvas
    };

export type Measure = (text: string, font: string) => number;

export interface FigureInput {
  width: number;
  /** Total height in CSS px; 0 = automatic (square cells within limits). */
  height: number;
  rows: number;
  cols: number;
  rowLabel: (i: number) => string;
  colLabel: (i: number) => string;
  title: string;
  rowTitle: string;
  colTitle: string;
  metric: string;
  norm: Norm;
  hasNaN: boolean;
  notes: string[];
  theme: Theme;
  measure: Measure;
}

export interface Figure {
  items: Item[];
  width: number;
  height: number;
  plot: Rect;
  colorbar: Rect;
  rowTicks: number[];
  colTicks: number[];
  colRotated: boolean;
}

export const FONT_SIZES = { tick: 11, axis: 12, title: 14, note: 11 };
const PAD = 8;
const TICK = 4;
const BAR_W = 12;
const ROW_LABEL_CHARS = 24;
const COL_LABEL_CHARS = 20;
const SIN45 = Math.SQRT1_2;
const CONTROL = /[\u0000-\u001f\u007f]/;

/** What a label looks like on an axis: one line, control characters made visible, length capped. */
/** The colour bar's title: the metric, and "log scale" when the scale is logarithmic (ticks alone can mislead). */
export function colorbarTitle(metric: string, norm: Norm): string {
  if (norm.mode !== "log") return metric;
  return metric ? `${metric} · log scale` : "log scale";
}

export function axisLabel(s: string, maxChars: number): string {
  // Fast path for the common short, plain label (hundreds of them are sampled per layout).
  if (s.length <= maxChars && !CONTROL.test(s)) return s;
  const oneLine = s.replace(/\r?\n/g, "↵").replace(/\t/g, "⇥").replace(/[\u0000-\u001f\u007f]/g, "");
  return truncateLabel(oneLine, maxChars);
}

function sampleIndices(n: number, max: number): number[] {
  if (n <= max) return tickIndices(n, 1);
  const out: number[] = [];
  for (let k = 0; k < max; k++) out.push(Math.floor((k * n) / max));
  return out;
}

export function layoutFigure(f: FigureInput): Figure {
  const fam = f.theme.fontFamily;
  const tickFont = `${FONT_SIZES.tick}px ${fam}`;
  const axisFont = `${FONT_SIZES.axis}px ${fam}`;
  const titleFont = `bold ${FONT_SIZES.title}px ${fam}`;
  const noteFont = `italic ${FONT_SIZES.note}px ${fam}`;
  const fg = f.theme.foreground;
  const muted = f.theme.muted;
  const width = Math.max(160, f.width);

  // ---- vertical budget above the plot
  let top = PAD;
  const titleY = top;
  if (f.title) top += FONT_SIZES.title + 8;
  const notesY = top;
  top += f.notes.length * (FONT_SIZES.note + 4);
  top += 4;

  // ---- colour bar on the right: bar, ticks, tick labels, metric title
  // Tick labels are measured for the widest case (6 ticks); the count is settled once the bar height is known.
  const tickW = Math.max(
    f.measure("n/a", tickFont),
    ...colorbarTicks(f.norm, 6).map((v) => f.measure(formatValue(v), tickFont)),
  );
  const barTitle = colorbarTitle(f.metric, f.norm);
  const right = 14 + BAR_W + TICK + 3 + tickW + (barTitle ? 6 + FONT_SIZES.axis + 2 : 0) + PAD;

  // ---- row labels on the left (only the ones thinning keeps are measured)
  const rowLabelW = (idx: number[]) =>
    Math.min(width * 0.3, Math.max(0, ...idx.map((i) => f.measure(axisLabel(f.rowLabel(i), ROW_LABEL_CHARS), tickFont))));
  const rowTitleW = f.rowTitle ? FONT_SIZES.axis + 8 : 0;

  // The plot height depends on its width (square cells) and the row thinning on the height: estimate with
  // all-rows width, then settle.
  let left = PAD + rowTitleW + rowLabelW(sampleIndices(f.rows, 200)) + TICK + 3;
  let plotW = Math.max(40, width - left - right);

  // ---- column labels: horizontal when rotating would not show more of them, else at 45°
  const colSample = sampleIndices(f.cols, 400);
  const colTexts = new Map<number, string>();
  const colText = (i: number) => {
    let t = colTexts.get(i);
    if (t === undefined) colTexts.set(i, (t = axisLabel(f.colLabel(i), COL_LABEL_CHARS)));
    return t;
  };
  const maxColW = Math.max(0, ...colSample.map((i) => f.measure(colText(i), tickFont)));
  const pxPerCol = plotW / f.cols;
  const stepH = thinStep(pxPerCol, maxColW + 8);
  const stepR = thinStep(pxPerCol, FONT_SIZES.tick + 3);
  const colRotated = stepH > stepR;
  const colStep = colRotated ? stepR : stepH;
  const colTicks = tickIndices(f.cols, colStep);
  const shownColW = Math.max(0, ...colTicks.slice(0, 2000).map((i) => f.measure(colText(i), tickFont)));
  const colLabelH = colRotated ? Math.min(SIN45 * (shownColW + FONT_SIZES.tick), 160) : FONT_SIZES.tick + 2;
  if (colRotated) {
    // A 45° label hangs down-left from its tick: keep the first one inside the figure.
    const firstCenter = pxPerCol / 2;
    left = Math.max(left, PAD + SIN45 * (Math.min(shownColW, 160 / SIN45) + FONT_SIZES.tick) - firstCenter);
    plotW = Math.max(40, width - left - right);
  }
  const bottom = TICK + 4 + colLabelH + (f.colTitle ? FONT_SIZES.axis + 10 : 0) + PAD;

  let plotH: number;
  if (f.height > 0) plotH = Math.max(20, f.height - top - bottom);
  else plotH = autoPlotHeight(f.rows, f.cols, plotW);
  const rowStep = thinStep(plotH / f.rows, FONT_SIZES.tick + 3);
  const rowTicks = tickIndices(f.rows, rowStep);
  // Re-measure with the rows actually labelled: a 10,000-row matrix shows ~30 labels.
  const settledLeft = PAD + rowTitleW + rowLabelW(rowTicks) + TICK + 3;
  if (!colRotated && Math.abs(settledLeft - left) > 0.5) {
    left = settledLeft;
    plotW = Math.max(40, width - left - right);
  } else if (colRotated) {
    left = Math.max(left, settledLeft);
    plotW = Math.max(40, width - left - right);
  }
  const plot: Rect = { x: left, y: top, w: plotW, h: plotH };
  const height = Math.ceil(top + plotH + bottom);

  const items: Item[] = [];
  items.push({ kind: "fill", x: 0, y: 0, w: width, h: height, color: f.theme.background });
  const text = (
    x: number,
    y: number,
    s: string,
    font: string,
    color: string,
    align: Align,
    baseline: Baseline,
    angle = 0,
  ) => items.push({ kind: "text", x, y, text: s, font, color, align, baseline, angle });

  if (f.title) text(plot.x + plot.w / 2, titleY, axisLabel(f.title, 120), titleFont, fg, "center", "top");
  f.notes.forEach((n, k) => text(plot.x, notesY + k * (FONT_SIZES.note + 4), n, noteFont, muted, "left", "top"));

  // ---- cells: hatch underneath (shows through transparent NaN pixels), then the 1 px/cell image
  if (f.hasNaN) items.push({ kind: "hatch", ...plot });
  items.push({ kind: "image", src: "cells", ...plot });
  items.push({ kind: "stroke", ...plot, color: f.theme.border, width: 1 });

  // ---- row ticks and labels
  for (const i of rowTicks) {
    const y = itemCenter(plot.y, plot.h, f.rows, i);
    items.push({ kind: "line", x1: plot.x - TICK, y1: y, x2: plot.x, y2: y, color: muted, width: 1 });
    text(plot.x - TICK - 3, y, axisLabel(f.rowLabel(i), ROW_LABEL_CHARS), tickFont, fg, "right", "middle");
  }
  if (f.rowTitle)
    text(PAD + FONT_SIZES.axis / 2, plot.y + plot.h / 2, axisLabel(f.rowTitle, 60), axisFont, fg, "center", "middle", -90);

  // ---- column ticks and labels
  const yb = plot.y + plot.h;
  for (const i of colTicks) {
    const x = itemCenter(plot.x, plot.w, f.cols, i);
    items.push({ kind: "line", x1: x, y1: yb, x2: x, y2: yb + TICK, color: muted, width: 1 });
    if (colRotated) text(x, yb + TICK + 4, colText(i), tickFont, fg, "right", "middle", -45);
    else text(x, yb + TICK + 3, colText(i), tickFont, fg, "center", "top");
  }
  if (f.colTitle)
    text(plot.x + plot.w / 2, yb + TICK + 4 + colLabelH + 6, axisLabel(f.colTitle, 80), axisFont, fg, "center", "top");

  // ---- colour bar (+ "n/a" swatch when some cells are NaN)
  const bx = plot.x + plot.w + 14;
  const swatch = f.hasNaN ? 22 : 0;
  const barH = Math.max(10, plot.h - swatch);
  const ticks = colorbarTicks(f.norm, Math.max(2, Math.min(6, Math.floor(barH / 28))));
  const tickTexts = ticks.map((v) => formatValue(v));
  const colorbar: Rect = { x: bx, y: plot.y, w: BAR_W, h: barH };
  items.push({ kind: "image", src: "colorbar", ...colorbar });
  items.push({ kind: "stroke", ...colorbar, color: f.theme.border, width: 1 });
  ticks.forEach((v, k) => {
    const y = colorbar.y + (1 - toUnit(v, f.norm)) * colorbar.h;
    items.push({ kind: "line", x1: bx + BAR_W, y1: y, x2: bx + BAR_W + TICK, y2: y, color: muted, width: 1 });
    text(bx + BAR_W + TICK + 3, y, tickTexts[k], tickFont, fg, "left", "middle");
  });
  if (f.hasNaN) {
    const sy = plot.y + plot.h - 12;
    items.push({ kind: "hatch", x: bx, y: sy, w: BAR_W, h: 12 });
    items.push({ kind: "stroke", x: bx, y: sy, w: BAR_W, h: 12, color: f.theme.border, width: 1 });
    text(bx + BAR_W + TICK + 3, sy + 6, "n/a", tickFont, fg, "left", "middle");
  }
  if (barTitle)
    text(width - PAD - FONT_SIZES.axis / 2, plot.y + barH / 2, axisLabel(barTitle, 52), axisFont, fg, "center", "middle", -90);

  return { items, width, height, plot, colorbar, rowTicks, colTicks, colRotated };
}
