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

interface Fonts {
  tick: string;
  axis: string;
  title: string;
  note: string;
}

/** Where the plot goes and which rows and columns get a label. */
interface Geometry {
  width: number;
  height: number;
  plot: Rect;
  titleY: number;
  notesY: number;
  rowTicks: number[];
  colTicks: number[];
  colRotated: boolean;
  colLabelH: number;
  colText: (i: number) => string;
}

/** Column labels: horizontal when rotating would not show more of them, else at 45°. */
interface ColumnLabels {
  ticks: number[];
  rotated: boolean;
  height: number;
  /** The widest label shown (px). */
  shownW: number;
  text: (i: number) => string;
}

function fontsFor(family: string): Fonts {
  return {
    tick: `${FONT_SIZES.tick}px ${family}`,
    axis: `${FONT_SIZES.axis}px ${family}`,
    title: `bold ${FONT_SIZES.title}px ${family}`,
    note: `italic ${FONT_SIZES.note}px ${family}`,
  };
}

/** Width right of the plot: colour bar, its tick labels (measured for the widest case, 6 ticks) and title. */
function rightMargin(f: FigureInput, fonts: Fonts): number {
  const tickW = Math.max(
    f.measure("n/a", fonts.tick),
    ...colorbarTicks(f.norm, 6).map((v) => f.measure(formatValue(v), fonts.tick)),
  );
  const barTitle = colorbarTitle(f.metric, f.norm);
  return 14 + BAR_W + TICK + 3 + tickW + (barTitle ? 6 + FONT_SIZES.axis + 2 : 0) + PAD;
}

function rowLabelWidth(f: FigureInput, fonts: Fonts, width: number, idx: number[]): number {
  const widths = idx.map((i) => f.measure(axisLabel(f.rowLabel(i), ROW_LABEL_CHARS), fonts.tick));
  return Math.min(width * 0.3, Math.max(0, ...widths));
}

function columnLabels(f: FigureInput, fonts: Fonts, plotW: number): ColumnLabels {
  const texts = new Map<number, string>();
  const text = (i: number) => {
    let t = texts.get(i);
    if (t === undefined) texts.set(i, (t = axisLabel(f.colLabel(i), COL_LABEL_CHARS)));
    return t;
  };
  const maxW = Math.max(0, ...sampleIndices(f.cols, 400).map((i) => f.measure(text(i), fonts.tick)));
  const pxPerCol = plotW / f.cols;
  const stepH = thinStep(pxPerCol, maxW + 8);
  const stepR = thinStep(pxPerCol, FONT_SIZES.tick + 3);
  const rotated = stepH > stepR;
  const ticks = tickIndices(f.cols, rotated ? stepR : stepH);
  const shownW = Math.max(0, ...ticks.slice(0, 2000).map((i) => f.measure(text(i), fonts.tick)));
  const height = rotated ? Math.min(SIN45 * (shownW + FONT_SIZES.tick), 160) : FONT_SIZES.tick + 2;
  return { ticks, rotated, height, shownW, text };
}

function layoutGeometry(f: FigureInput, fonts: Fonts): Geometry {
  const width = Math.max(160, f.width);
  const titleY = PAD;
  const notesY = PAD + (f.title ? FONT_SIZES.title + 8 : 0);
  const top = notesY + f.notes.length * (FONT_SIZES.note + 4) + 4;
  const right = rightMargin(f, fonts);
  const rowTitleW = f.rowTitle ? FONT_SIZES.axis + 8 : 0;
  // The plot height depends on its width (square cells) and the row thinning on the height: estimate with
  // a sample of all rows' labels, then settle with the rows actually labelled (a 10,000-row matrix shows ~30).
  let left = PAD + rowTitleW + rowLabelWidth(f, fonts, width, sampleIndices(f.rows, 200)) + TICK + 3;
  let plotW = Math.max(40, width - left - right);
  const cols = columnLabels(f, fonts, plotW);
  if (cols.rotated) {
    // A 45° label hangs down-left from its tick: keep the first one inside the figure.
    const firstCenter = plotW / f.cols / 2;
    left = Math.max(left, PAD + SIN45 * (Math.min(cols.shownW, 160 / SIN45) + FONT_SIZES.tick) - firstCenter);
    plotW = Math.max(40, width - left - right);
  }
  const bottom = TICK + 4 + cols.height + (f.colTitle ? FONT_SIZES.axis + 10 : 0) + PAD;
  const plotH = f.height > 0 ? Math.max(20, f.height - top - bottom) : autoPlotHeight(f.rows, f.cols, plotW);
  const rowTicks = tickIndices(f.rows, thinStep(plotH / f.rows, FONT_SIZES.tick + 3));
  const settledLeft = PAD + rowTitleW + rowLabelWidth(f, fonts, width, rowTicks) + TICK + 3;
  if (!cols.rotated && Math.abs(settledLeft - left) > 0.5) {
    left = settledLeft;
    plotW = Math.max(40, width - left - right);
  } else if (cols.rotated) {
    left = Math.max(left, settledLeft);
    plotW = Math.max(40, width - left - right);
  }
  return {
    width, height: Math.ceil(top + plotH + bottom), plot: { x: left, y: top, w: plotW, h: plotH }, titleY, notesY,
    rowTicks, colTicks: cols.ticks, colRotated: cols.rotated, colLabelH: cols.height, colText: cols.text,
  };
}

type TextOut = (x: number, y: number, s: string, font: string, align: Align, baseline: Baseline, angle?: number,
                color?: string) => void;

function axisItems(f: FigureInput, g: Geometry, fonts: Fonts, items: Item[], text: TextOut): void {
  const { plot } = g;
  const muted = f.theme.muted;
  for (const i of g.rowTicks) {
    const y = itemCenter(plot.y, plot.h, f.rows, i);
    items.push({ kind: "line", x1: plot.x - TICK, y1: y, x2: plot.x, y2: y, color: muted, width: 1 });
    text(plot.x - TICK - 3, y, axisLabel(f.rowLabel(i), ROW_LABEL_CHARS), fonts.tick, "right", "middle");
  }
  if (f.rowTitle)
    text(PAD + FONT_SIZES.axis / 2, plot.y + plot.h / 2, axisLabel(f.rowTitle, 60), fonts.axis, "center", "middle", -90);
  const yb = plot.y + plot.h;
  for (const i of g.colTicks) {
    const x = itemCenter(plot.x, plot.w, f.cols, i);
    items.push({ kind: "line", x1: x, y1: yb, x2: x, y2: yb + TICK, color: muted, width: 1 });
    if (g.colRotated) text(x, yb + TICK + 4, g.colText(i), fonts.tick, "right", "middle", -45);
    else text(x, yb + TICK + 3, g.colText(i), fonts.tick, "center", "top");
  }
  if (f.colTitle)
    text(plot.x + plot.w / 2, yb + TICK + 4 + g.colLabelH + 6, axisLabel(f.colTitle, 80), fonts.axis, "center", "top");
}

/** Colour bar (+ "n/a" swatch when some cells are NaN); returns its rectangle. */
function colorbarItems(f: FigureInput, g: Geometry, fonts: Fonts, items: Item[], text: TextOut): Rect {
  const { plot } = g;
  const bx = plot.x + plot.w + 14;
  const barH = Math.max(10, plot.h - (f.hasNaN ? 22 : 0));
  const ticks = colorbarTicks(f.norm, Math.max(2, Math.min(6, Math.floor(barH / 28))));
  const colorbar: Rect = { x: bx, y: plot.y, w: BAR_W, h: barH };
  items.push({ kind: "image", src: "colorbar", ...colorbar });
  items.push({ kind: "stroke", ...colorbar, color: f.theme.border, width: 1 });
  for (const v of ticks) {
    const y = colorbar.y + (1 - toUnit(v, f.norm)) * colorbar.h;
    items.push({ kind: "line", x1: bx + BAR_W, y1: y, x2: bx + BAR_W + TICK, y2: y, color: f.theme.muted, width: 1 });
    text(bx + BAR_W + TICK + 3, y, formatValue(v), fonts.tick, "left", "middle");
  }
  if (f.hasNaN) {
    const sy = plot.y + plot.h - 12;
    items.push({ kind: "hatch", x: bx, y: sy, w: BAR_W, h: 12 });
    items.push({ kind: "stroke", x: bx, y: sy, w: BAR_W, h: 12, color: f.theme.border, width: 1 });
    text(bx + BAR_W + TICK + 3, sy + 6, "n/a", fonts.tick, "left", "middle");
  }
  const barTitle = colorbarTitle(f.metric, f.norm);
  if (barTitle)
    text(g.width - PAD - FONT_SIZES.axis / 2, plot.y + barH / 2, axisLabel(barTitle, 52), fonts.axis, "center", "middle", -90);
  return colorbar;
}

export function layoutFigure(f: FigureInput): Figure {
  const fonts = fontsFor(f.theme.fontFamily);
  const g = layoutGeometry(f, fonts);
  const { plot } = g;
  const items: Item[] = [{ kind: "fill", x: 0, y: 0, w: g.width, h: g.height, color: f.theme.background }];
  const text: TextOut = (x, y, s, font, align, baseline, angle = 0, color = f.theme.foreground) =>
    items.push({ kind: "text", x, y, text: s, font, color, align, baseline, angle });
  if (f.title) text(plot.x + plot.w / 2, g.titleY, axisLabel(f.title, 120), fonts.title, "center", "top");
  f.notes.forEach((n, k) =>
    text(plot.x, g.notesY + k * (FONT_SIZES.note + 4), n, fonts.note, "left", "top", 0, f.theme.muted));
  // Cells: hatch underneath (shows through transparent NaN pixels), then the 1 px/cell image.
  if (f.hasNaN) items.push({ kind: "hatch", ...plot });
  items.push({ kind: "image", src: "cells", ...plot });
  items.push({ kind: "stroke", ...plot, color: f.theme.border, width: 1 });
  axisItems(f, g, fonts, items, text);
  const colorbar = colorbarItems(f, g, fonts, items, text);
  return { items, width: g.width, height: g.height, plot, colorbar, rowTicks: g.rowTicks, colTicks: g.colTicks,
    colRotated: g.colRotated };
}
