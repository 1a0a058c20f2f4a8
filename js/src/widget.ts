// heatwidget front end: a canvas heatmap for anywidget. DOM and event wiring only; the arithmetic lives in
// the pure modules (decode, scale, raster, layout, figure, svg, and the frame caches memo, frame, text) that
// vitest covers; overlay.ts draws hover and selection on their own canvas.
import type { AnyModel, RenderProps } from "@anywidget/types";
import { buildLut, buildLut32, parseColormap } from "./colormaps";
import { type Shape, parseShape, toFloat32 } from "./decode";
import { detailIndexFor, parseDetailCells, watchLiveness } from "./details";
import { drawItems } from "./draw";
import { DARK_THEME, type Figure, LIGHT_THEME, type Theme, axisLabel, layoutFigure } from "./figure";
import { FrameCache, type LayoutInputs } from "./frame";
import { type Cell, cellRect, hitTest, moveCursor, pixelCentre } from "./layout";
import { Memo } from "./memo";
import { OverlayLayer, type OverlayState } from "./overlay";
import { CellPixels, type DeviceRect, SampledPixels, deviceRect, poolFactors, poolMatrix, shouldSample } from "./raster";
import { type Norm, formatValue, kernelStats, stats } from "./scale";
import { toSvg } from "./svg";
import { type TextMeasurer, documentMeasurer } from "./text";

export interface Downsample {
  rows?: number;
  cols?: number;
  row_step?: number;
  col_step?: number;
  how?: string;
}

export interface HeatmapState {
  values: unknown;
  shape: number[];
  row_labels: string[];
  col_labels: string[];
  title: string;
  row_title: string;
  col_title: string;
  metric: string;
  colormap: string;
  vmin: number | null;
  vmax: number | null;
  log: boolean;
  selected_row: number;
  selected_col: number;
  status: string;
  progress: number | null;
  height: number;
  downsample: Downsample;
  value_stats: unknown;
  detail_cells: unknown;
  detail_index: number;
  offline: boolean;
  notes: string[];
}

const TRAITS: (keyof HeatmapState)[] = [
  "values", "shape", "row_labels", "col_labels", "title", "row_title", "col_title", "metric", "colormap",
  "vmin", "vmax", "log", "selected_row", "selected_col", "status", "progress", "height", "downsample",
  "notes", "value_stats",
];
const DATA_TRAITS = new Set<string>(["values", "shape", "downsample", "value_stats"]);
const OVERLAY_TRAITS = new Set<string>(["selected_row", "selected_col"]);
const STATUS_TRAITS = new Set<string>(["status", "progress"]);

// Browser canvas limits (Chrome: 32767 px per side, ~268M px) and memory: beyond these the view pools cells.
// The kernel side already pools above 4M cells, so this only guards states built by other means.
export const MAX_IMAGE_SIDE = 16384;
export const MAX_IMAGE_CELLS = 16_000_000;
const TOOLTIP_MAX_CHARS = 2000;

const STYLE_ID = "heatwidget-style-v1";
const CSS = `
.heatwidget { position: relative; box-sizing: border-box; width: 100%; min-width: 160px; outline: none;
  font-family: var(--jp-ui-font-family, system-ui, sans-serif); color: var(--jp-ui-font-color1, rgba(0,0,0,.87)); }
.heatwidget:focus-visible { box-shadow: 0 0 0 1px var(--jp-brand-color1, #1976d2); }
.heatwidget .hw-stage { position: relative; line-height: 0; }
.heatwidget canvas { display: block; }
.heatwidget .hw-overlay { position: absolute; left: 0; top: 0; cursor: crosshair; touch-action: none; }
.heatwidget .hw-toolbar { position: absolute; right: 4px; bottom: 4px; z-index: 2; display: flex; gap: 4px;
  opacity: .35; transition: opacity .15s; }
.heatwidget:hover .hw-toolbar, .heatwidget:focus-within .hw-toolbar { opacity: 1; }
.heatwidget .hw-toolbar button { font: 11px var(--jp-ui-font-family, system-ui, sans-serif); padding: 1px 6px;
  cursor: pointer; border-radius: 3px; border: 1px solid var(--jp-border-color1, #bdbdbd);
  background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, rgba(0,0,0,.87)); }
.heatwidget .hw-tooltip { position: absolute; z-index: 3; pointer-events: none; display: none; max-width: 420px;
  padding: 4px 6px; border-radius: 3px; font-size: 12px; line-height: 1.35; white-space: pre-wrap;
  overflow-wrap: anywhere; box-shadow: 0 1px 4px rgba(0,0,0,.3);
  background: var(--jp-layout-color2, #eeeeee); color: var(--jp-ui-font-color0, #000);
  border: 1px solid var(--jp-border-color1, #bdbdbd); }
.heatwidget .hw-tooltip .hw-key { color: var(--jp-ui-font-color2, rgba(0,0,0,.54)); }
.heatwidget .hw-status { display: none; align-items: center; gap: 8px; font-size: 12px; padding: 2px 0 4px;
  color: var(--jp-ui-font-color2, rgba(0,0,0,.54)); }
.heatwidget .hw-status progress { width: 160px; height: 8px; }
.heatwidget .hw-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0);
  white-space: nowrap; }
.heatwidget .hw-error { display: none; font-size: 12px; padding: 4px; color: var(--jp-error-color1, #d32f2f); }
`;

function ensureStyle(doc: Document): void {
  if (doc.getElementById(STYLE_ID)) return;
  const style = doc.createElement("style");
  style.id = STYLE_ID;
  style.textContent = CSS;
  doc.head.appendChild(style);
}

function cssVar(style: CSSStyleDeclaration, name: string, fallback: string): string {
  const v = style.getPropertyValue(name).trim();
  return v || fallback;
}

/** Colours from JupyterLab's `--jp-*` variables, with light/dark fallbacks outside Lab. */
export function readTheme(el: HTMLElement): Theme {
  const style = getComputedStyle(el);
  const body = el.ownerDocument.body;
  const lightAttr = body?.getAttribute("data-jp-theme-light");
  const dark =
    lightAttr === "false" ||
    (lightAttr == null &&
      (body?.classList.contains("vscode-dark") ||
        (!style.getPropertyValue("--jp-layout-color0").trim() &&
          typeof matchMedia === "function" &&
          matchMedia("(prefers-color-scheme: dark)").matches)));
  const base = dark ? DARK_THEME : LIGHT_THEME;
  return {
    background: cssVar(style, "--jp-layout-color0", base.background),
    foreground: cssVar(style, "--jp-ui-font-color1", base.foreground),
    muted: cssVar(style, "--jp-ui-font-color2", base.muted),
    border: cssVar(style, "--jp-border-color1", base.border),
    hatchBackground: cssVar(style, "--jp-layout-color2", base.hatchBackground),
    hatchLine: cssVar(style, "--jp-border-color1", base.hatchLine),
    accent: cssVar(style, "--jp-brand-color1", base.accent),
    fontFamily: cssVar(style, "--jp-ui-font-family", base.fontFamily),
  };
}

function slug(s: string): string {
  const t = s.replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 60);
  return t || "heatmap";
}

function shortText(s: string): string {
  return s.length > TOOLTIP_MAX_CHARS ? `${s.slice(0, TOOLTIP_MAX_CHARS)}… (${s.length.toLocaleString()} chars)` : s;
}

interface Prepared {
  /** Matrix as sent by the kernel (possibly already pooled there). */
  shape: Shape;
  /** What is drawn: the sent matrix, or its pooling when it exceeds canvas limits. */
  values: Float32Array;
  rows: number;
  cols: number;
  fr: number;
  fc: number;
  hasNaN: boolean;
  stats: ReturnType<typeof stats>;
}

interface Dom {
  root: HTMLDivElement;
  stage: HTMLDivElement;
  base: HTMLCanvasElement;
  overlay: HTMLCanvasElement;
  tooltip: HTMLDivElement;
  live: HTMLDivElement;
  statusBar: HTMLDivElement;
  statusText: HTMLSpanElement;
  progressBar: HTMLProgressElement;
  errorBox: HTMLDivElement;
  savePng: HTMLButtonElement;
  saveSvg: HTMLButtonElement;
}

/** The view's elements inside `el`: toolbar, status line, error box, the two canvases, tooltip, live region. */
function buildDom(doc: Document, el: HTMLElement): Dom {
  const mk = <K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, parent: HTMLElement) => {
    const e = doc.createElement(tag);
    if (cls) e.className = cls;
    parent.appendChild(e);
    return e;
  };
  const root = mk("div", "heatwidget", el);
  root.tabIndex = 0;
  // "application": screen readers pass arrow keys through to us; the live region below reads the cell.
  root.setAttribute("role", "application");
  root.setAttribute("aria-roledescription", "heatmap");
  root.setAttribute("aria-label", "heatmap: arrow keys move, Enter selects, Escape clears");
  // Lumino (JupyterLab) must not treat arrows/Enter typed here as notebook shortcuts.
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  const toolbar = mk("div", "hw-toolbar", root);
  const button = (cls: string, text: string, title: string) => {
    const b = mk("button", cls, toolbar);
    b.type = "button";
    b.textContent = text;
    b.title = title;
    return b;
  };
  const savePng = button("hw-save-png", "PNG", "Save PNG");
  const saveSvg = button("hw-save-svg", "SVG", "Save SVG");
  const statusBar = mk("div", "hw-status", root);
  const statusText = mk("span", "hw-status-text", statusBar);
  const progressBar = mk("progress", "", statusBar);
  progressBar.max = 1;
  const errorBox = mk("div", "hw-error", root);
  const stage = mk("div", "hw-stage", root);
  const base = mk("canvas", "hw-base", stage);
  const overlay = mk("canvas", "hw-overlay", stage);
  const tooltip = mk("div", "hw-tooltip", root);
  const live = mk("div", "hw-sr", root);
  live.setAttribute("aria-live", "polite");
  return { root, stage, base, overlay, tooltip, live, statusBar, statusText, progressBar, errorBox, savePng, saveSvg };
}

class HeatmapView {
  readonly root: HTMLDivElement;
  private readonly stage: HTMLDivElement;
  private readonly base: HTMLCanvasElement;
  private readonly overlay: HTMLCanvasElement;
  private readonly tooltip: HTMLDivElement;
  private readonly live: HTMLDivElement;
  private readonly statusBar: HTMLDivElement;
  private readonly statusText: HTMLSpanElement;
  private readonly progressBar: HTMLProgressElement;
  private readonly errorBox: HTMLDivElement;
  private readonly cellsCanvas: HTMLCanvasElement;
  // The plot at device resolution, for matrices with more cells than the plot has pixels (raster.ts).
  private readonly sampledCanvas: HTMLCanvasElement;
  private readonly barCanvas: HTMLCanvasElement;

  private readonly overlayLayer: OverlayLayer;
  private readonly measurer: TextMeasurer;

  private prepared: Prepared | null = null;
  private norm: Norm | null = null;
  private fig: Figure | null = null;
  private theme: Theme;
  private width = 0;

  // Frame caches (see memo.ts): a paint recomputes only the stages whose inputs changed.
  private readonly frameCache = new FrameCache();
  private readonly cells = new CellPixels();
  private readonly sampled = new SampledPixels();
  private readonly barMemo = new Memo<void>();
  private readonly drawMemo = new Memo<void>();
  private dirtyData = true;
  private frame = 0;

  private hover: Cell | null = null;
  private cursor: Cell | null = null;
  private keyboard = false;
  private readonly t0: number;
  private paints = 0;
  private cleanups: (() => void)[] = [];

  constructor(private readonly model: AnyModel<HeatmapState>, el: HTMLElement) {
    this.t0 = performance.now();
    const doc = el.ownerDocument;
    ensureStyle(doc);
    const dom = buildDom(doc, el);
    ({ root: this.root, stage: this.stage, base: this.base, overlay: this.overlay, tooltip: this.tooltip } = dom);
    ({ live: this.live, statusBar: this.statusBar, statusText: this.statusText } = dom);
    ({ progressBar: this.progressBar, errorBox: this.errorBox } = dom);
    this.listen(dom.savePng, "click", () => this.savePng());
    this.listen(dom.saveSvg, "click", () => this.saveSvg());
    this.overlayLayer = new OverlayLayer(this.overlay);
    this.cellsCanvas = doc.createElement("canvas");
    this.sampledCanvas = doc.createElement("canvas");
    this.barCanvas = doc.createElement("canvas");
    this.measurer = documentMeasurer(doc);
    this.updateStatus();
    // One forced style + layout for both reads: the width first, then the computed --jp-* colours.
    this.width = this.root.clientWidth;
    this.theme = readTheme(this.root);
    this.watchModel();
    this.watchPointerAndKeys();
    this.watchSizeAndTheme(doc);
    // Paint now when the element already has a width (saved-state HTML, re-render); otherwise the first
    // ResizeObserver callback will.
    if (this.width > 0) this.paint();
    else this.schedule();
  }

  private watchModel(): void {
    for (const name of TRAITS) {
      const cb = () => this.onTrait(name);
      this.model.on(`change:${name}`, cb);
      this.cleanups.push(() => this.model.off(`change:${name}`, cb));
    }
  }

  private watchPointerAndKeys(): void {
    this.listen(this.overlay, "pointermove", (e) => this.onPointer(e as PointerEvent));
    this.listen(this.overlay, "pointerleave", () => {
      this.hover = null;
      if (!this.keyboard) this.hideTooltip();
      this.drawOverlay();
    });
    this.listen(this.overlay, "click", (e) => this.onClick(e as MouseEvent));
    this.listen(this.root, "keydown", (e) => this.onKey(e as KeyboardEvent));
    this.listen(this.root, "blur", () => {
      this.keyboard = false;
      if (!this.hover) this.hideTooltip();
      this.drawOverlay();
    });
  }

  private watchSizeAndTheme(doc: Document): void {
    const ro = new ResizeObserver(() => this.onResize());
    ro.observe(this.root);
    this.cleanups.push(() => ro.disconnect());
    // Theme switches in Lab flip attributes on <body>; re-read the --jp-* colours then.
    const mo = new MutationObserver(() => this.onTheme());
    if (doc.body) mo.observe(doc.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name", "class", "style"] });
    mo.observe(doc.documentElement, { attributes: true, attributeFilter: ["class", "style", "data-theme"] });
    this.cleanups.push(() => mo.disconnect());
    if (typeof matchMedia === "function") {
      const mq = matchMedia("(prefers-color-scheme: dark)");
      const cb = () => this.onTheme();
      mq.addEventListener?.("change", cb);
      this.cleanups.push(() => mq.removeEventListener?.("change", cb));
    }
  }

  private listen(target: EventTarget, type: string, fn: (e: Event) => void): void {
    target.addEventListener(type, fn);
    this.cleanups.push(() => target.removeEventListener(type, fn));
  }

  destroy(): void {
    cancelAnimationFrame(this.frame);
    for (const c of this.cleanups.splice(0)) c();
    this.root.remove();
  }

  // ---- state ---------------------------------------------------------------------------------------------
  private onTrait(name: string): void {
    if (DATA_TRAITS.has(name)) {
      this.dirtyData = true;
      this.hover = null;
    } else if (OVERLAY_TRAITS.has(name)) {
      this.drawOverlay();
      return;
    } else if (STATUS_TRAITS.has(name)) {
      this.updateStatus();
      return;
    }
    // Everything else (colour map, range, labels, titles …) goes through the frame caches: only what depends
    // on the changed trait is recomputed.
    this.schedule();
  }

  private onResize(): void {
    const w = this.root.clientWidth;
    if (w > 0 && Math.abs(w - this.width) >= 1) {
      this.width = w;
      this.schedule();
    }
  }

  private onTheme(): void {
    const t = readTheme(this.root);
    if (JSON.stringify(t) !== JSON.stringify(this.theme)) {
      this.theme = t;
      this.measurer.clear();
      this.schedule();
    }
  }

  private schedule(): void {
    // Several traits change together (a new matrix is values + shape + labels): coalesce into one paint.
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  private labels(which: "row_labels" | "col_labels"): string[] {
    const v = this.model.get(which);
    return Array.isArray(v) ? v : [];
  }

  private prepare(): void {
    this.prepared = null;
    this.errorBox.style.display = "none";
    const shape = parseShape(this.model.get("shape"));
    if (shape[0] * shape[1] === 0) {
      this.showError("empty matrix: nothing to show");
      return;
    }
    let values: Float32Array;
    try {
      values = toFloat32(this.model.get("values"), shape);
    } catch (err) {
      this.showError(String((err as Error).message ?? err));
      return;
    }
    let rows = shape[0];
    let cols = shape[1];
    const [fr, fc] = poolFactors(rows, cols, MAX_IMAGE_SIDE, MAX_IMAGE_CELLS);
    if (fr > 1 || fc > 1) {
      const how = this.model.get("downsample")?.how === "mean" ? "mean" : "max";
      const p = poolMatrix(values, rows, cols, fr, fc, how);
      values = p.values;
      rows = p.rows;
      cols = p.cols;
    }
    // The kernel's statistics when they describe exactly these cells (not after pooling here).
    const fromKernel = fr === 1 && fc === 1 ? kernelStats(this.model.get("value_stats"), values.length) : null;
    const s = fromKernel ?? stats(values);
    this.prepared = { shape, values, rows, cols, fr, fc, hasNaN: s.nan > 0, stats: s };
  }

  private showError(msg: string): void {
    this.errorBox.textContent = `heatwidget: ${msg}`;
    this.errorBox.style.display = "block";
  }

  private numberOrNull(name: "vmin" | "vmax"): number | null {
    const v = this.model.get(name);
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  }

  private colormap(): string {
    return String(this.model.get("colormap") || "blues");
  }

  /** The colour range for the current traits: the same object while they and the data stay the same. */
  private currentNorm(p: Prepared): Norm {
    const colormap = this.colormap();
    const vmin = this.numberOrNull("vmin");
    const vmax = this.numberOrNull("vmax");
    const log = Boolean(this.model.get("log"));
    return this.frameCache.norm(p.stats, { colormap, vmin, vmax, log });
  }

  /** Recolour the cells through the LUT into the 1 px/cell canvas; true when its pixels changed. */
  private updateCells(p: Prepared, norm: Norm): boolean {
    if (!this.cells.update(p.values, norm, buildLut32(this.colormap()))) return false;
    putPixels(this.cellsCanvas, this.cells.pixels, p.cols, p.rows);
    return true;
  }

  /** The plot's device pixels for a matrix with more cells than pixels; false when that is not the case. */
  private updateSampled(p: Prepared, norm: Norm, fig: Figure, dpr: number): boolean {
    const rect = deviceRect(fig.plot, dpr);
    if (!shouldSample(p.rows, p.cols, rect)) return false;
    if (this.sampled.update(p.values, p.rows, p.cols, fig.plot, dpr, norm, buildLut32(this.colormap())))
      putPixels(this.sampledCanvas, this.sampled.pixels, this.sampled.rect.w, this.sampled.rect.h);
    return true;
  }

  /** Colour bar: 1 × 256, high values at the top; redrawn only when the colour map changes. */
  private updateBar(): void {
    const name = this.colormap().toLowerCase();
    this.barMemo.get([name], () => {
      const lut = buildLut(name);
      const bc = this.barCanvas;
      bc.width = 1;
      bc.height = 256;
      const bctx = bc.getContext("2d");
      if (!bctx) return;
      const img = bctx.createImageData(1, 256);
      for (let k = 0; k < 256; k++) img.data.set(lut.subarray((255 - k) * 4, (256 - k) * 4), k * 4);
      bctx.putImageData(img, 0, 0);
    });
  }

  private notes(): string[] {
    const p = this.prepared;
    // The kernel's notes first (the analysis's meta["notes"], cells a log scale cannot show).
    const kernelNotes = this.model.get("notes");
    const notes: string[] = Array.isArray(kernelNotes) ? kernelNotes.map(String) : [];
    const ds = this.model.get("downsample") ?? {};
    if (ds.rows && ds.cols && ((ds.row_step ?? 1) > 1 || (ds.col_step ?? 1) > 1)) {
      notes.push(
        `downsampled for display: ${ds.how ?? "mean"} of ${ds.row_step ?? 1}×${ds.col_step ?? 1} cells ` +
          `(matrix is ${ds.rows.toLocaleString()}×${ds.cols.toLocaleString()})`,
      );
    }
    if (p && (p.fr > 1 || p.fc > 1)) {
      notes.push(`pooled in the browser: ${this.model.get("downsample")?.how === "mean" ? "mean" : "max"} of ` +
        `${p.fr}×${p.fc} cells (matrix is ${p.shape[0].toLocaleString()}×${p.shape[1].toLocaleString()})`);
    }
    if (this.norm?.warning && p && p.stats.finite > 0) notes.push(this.norm.warning);
    if (!parseColormap(String(this.model.get("colormap") || "blues")).known)
      notes.push(`unknown colormap ${JSON.stringify(String(this.model.get("colormap"))).slice(0, 40)}: using blues`);
    return notes;
  }

  private rowLabel = (i: number): string => {
    const p = this.prepared;
    const labels = this.labels("row_labels");
    const k = p ? i * p.fr : i;
    return labels[k] ?? String(k);
  };

  private colLabel = (i: number): string => {
    const p = this.prepared;
    const labels = this.labels("col_labels");
    const k = p ? i * p.fc : i;
    return labels[k] ?? String(k);
  };

  private layoutInputs(p: Prepared, width: number, notes: string[]): LayoutInputs {
    const m = this.model;
    return { width, height: m.get("height"), data: p, rowLabels: m.get("row_labels"), colLabels: m.get("col_labels"),
      title: m.get("title"), rowTitle: m.get("row_title"), colTitle: m.get("col_title"), metric: m.get("metric"),
      notes, theme: this.theme };
  }

  private buildFigure(p: Prepared, norm: Norm, width: number, notes: string[]): Figure {
    const theme = this.theme;
    const fig = layoutFigure({
      width,
      height: Math.max(0, Number(this.model.get("height")) || 0),
      rows: p.rows,
      cols: p.cols,
      rowLabel: this.rowLabel,
      colLabel: this.colLabel,
      title: String(this.model.get("title") ?? ""),
      rowTitle: String(this.model.get("row_title") ?? ""),
      colTitle: String(this.model.get("col_title") ?? ""),
      metric: String(this.model.get("metric") ?? ""),
      norm,
      hasNaN: p.hasNaN,
      notes,
      theme,
      measure: this.measurer.measure,
    });
    // "n/a" written in NaN cells that are big enough to hold it (only small matrices have such cells).
    const cw = fig.plot.w / p.cols;
    const ch = fig.plot.h / p.rows;
    if (p.hasNaN && cw >= 26 && ch >= 13 && p.rows * p.cols <= 10000) {
      for (let r = 0; r < p.rows; r++)
        for (let c = 0; c < p.cols; c++) {
          if (p.values[r * p.cols + c] === p.values[r * p.cols + c]) continue;
          const rc = cellRect(fig.plot, p.rows, p.cols, r, c);
          fig.items.push({
            kind: "text", x: rc.x + rc.w / 2, y: rc.y + rc.h / 2, text: "n/a", font: `10px ${theme.fontFamily}`,
            color: theme.foreground, align: "center", baseline: "middle", angle: 0,
          });
        }
    }
    return fig;
  }

  /** The figure onto the base canvas (resized only when its size changes); the overlay follows the size. */
  private drawBase(fig: Figure, dpr: number, sampled: boolean): void {
    const w = Math.round(fig.width * dpr);
    const h = Math.round(fig.height * dpr);
    if (this.base.width !== w || this.base.height !== h) {
      this.base.width = w;
      this.base.height = h;
    }
    this.base.style.width = `${fig.width}px`;
    this.base.style.height = `${fig.height}px`;
    this.overlayLayer.resize(fig.width, fig.height, dpr);
    const ctx = this.base.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const cells = sampled
      ? { cells: this.sampledCanvas, cellsRect: deviceRectInCss(this.sampled.rect, dpr) }
      : { cells: this.cellsCanvas };
    drawItems(ctx, fig.items, { ...cells, colorbar: this.barCanvas }, this.theme);
  }

  /**
   * Bring the canvas up to date with the model. Each stage is cached (memo.ts): a colour-map switch recolours
   * the cells and redraws, but keeps the layout; a title change relayouts but keeps the cells' pixels; a
   * trait that changes nothing visible draws nothing.
   */
  paint(): void {
    const start = performance.now();
    if (this.dirtyData) {
      this.prepare();
      this.dirtyData = false;
    }
    const p = this.prepared;
    if (!p) {
      this.fig = null;
      this.drawMemo.clear();
      this.base.width = this.overlay.width = 0;
      this.base.style.height = this.overlay.style.height = "0px";
      return;
    }
    const norm = (this.norm = this.currentNorm(p));
    this.updateBar();
    const width = this.width || this.root.clientWidth || 640;
    const notes = this.notes();
    const inputs = this.layoutInputs(p, width, notes);
    const fig = this.frameCache.figure(inputs, norm, () => this.buildFigure(p, norm, width, notes));
    const dpr = devicePixels();
    // More cells than device pixels: colour only the cell each pixel shows; else one pixel per cell, scaled.
    const sampled = this.updateSampled(p, norm, fig, dpr);
    if (!sampled) this.updateCells(p, norm);
    const drawKey = [fig, sampled, this.cells.recolors, this.sampled.recolors, this.barMemo.computations, dpr, this.theme];
    if (this.drawMemo.has(drawKey)) return;
    this.fig = fig;
    this.drawBase(fig, dpr, sampled);
    this.drawMemo.get(drawKey, () => undefined);
    this.drawOverlay();
    this.paints++;
    const end = performance.now();
    this.root.dataset.paints = String(this.paints);
    this.root.dataset.layouts = String(this.frameCache.layouts);
    this.root.dataset.recolors = String(this.cells.recolors + this.sampled.recolors);
    this.root.dataset.sampled = String(sampled);
    this.root.dataset.plot = [fig.plot.x, fig.plot.y, fig.plot.w, fig.plot.h].map((v) => v.toFixed(2)).join(",");
    this.root.dataset.shape = `${p.rows}x${p.cols}`;
    this.root.dataset.notes = notes.join(" | ");
    const detail = { ms: end - this.t0, workMs: end - start, paints: this.paints };
    this.root.dispatchEvent(new CustomEvent("heatwidget:paint", { bubbles: true, detail }));
  }

  // ---- selection: display cell <-> matrix indices --------------------------------------------------------
  private steps(): [number, number] {
    const p = this.prepared;
    const ds = this.model.get("downsample") ?? {};
    return [(ds.row_step ?? 1) * (p?.fr ?? 1), (ds.col_step ?? 1) * (p?.fc ?? 1)];
  }

  private fullShape(): Shape {
    const ds = this.model.get("downsample") ?? {};
    const p = this.prepared;
    return [ds.rows ?? p?.shape[0] ?? 0, ds.cols ?? p?.shape[1] ?? 0];
  }

  private selectedCell(): Cell | null {
    const p = this.prepared;
    const r = Number(this.model.get("selected_row"));
    const c = Number(this.model.get("selected_col"));
    if (!p || !(r >= 0) || !(c >= 0)) return null;
    const [sr, sc] = this.steps();
    const cell = { row: Math.floor(r / sr), col: Math.floor(c / sc) };
    return cell.row < p.rows && cell.col < p.cols ? cell : null;
  }

  private select(cell: Cell | null): void {
    if (!cell) {
      this.model.set("selected_row", -1);
      this.model.set("selected_col", -1);
    } else {
      const [sr, sc] = this.steps();
      const [R, C] = this.fullShape();
      const r = Math.min(R - 1, cell.row * sr);
      const c = Math.min(C - 1, cell.col * sc);
      this.model.set("selected_row", r);
      this.model.set("selected_col", c);
      // An explorer's precomputed drill-down (or, offline, the notice) is shown by the page itself.
      if (Number(this.model.get("detail_index")) >= 0) {
        const index = detailIndexFor(parseDetailCells(this.model.get("detail_cells")), r, c, C,
                                     Boolean(this.model.get("offline")));
        if (index !== null) this.model.set("detail_index", index);
      }
    }
    // One message with both traits: the kernel sees (row, col) change together.
    this.model.save_changes();
    this.drawOverlay();
  }

  // ---- interaction ---------------------------------------------------------------------------------------
  private eventCell(e: MouseEvent): Cell | null {
    if (!this.fig || !this.prepared) return null;
    const box = this.overlay.getBoundingClientRect();
    const sx = box.width ? this.fig.width / box.width : 1;
    const sy = box.height ? this.fig.height / box.height : 1;
    // The cell the pointer's device pixel shows: hitTest at that pixel's centre, where the pixel's colour is
    // sampled (by drawImage, or by paintSampled when cells are smaller than pixels). At the pointer's own
    // coordinates (a pixel's corner, for a mouse) a cell narrower than a pixel would be its left neighbour.
    const dpr = devicePixels();
    const x = pixelCentre((e.clientX - box.left) * sx, dpr);
    const y = pixelCentre((e.clientY - box.top) * sy, dpr);
    return hitTest(this.fig.plot, this.prepared.rows, this.prepared.cols, x, y);
  }

  private onPointer(e: PointerEvent): void {
    const cell = this.eventCell(e);
    const same = cell && this.hover && cell.row === this.hover.row && cell.col === this.hover.col;
    this.hover = cell;
    this.keyboard = false;
    if (!cell) {
      this.hideTooltip();
    } else {
      if (!same) this.fillTooltip(cell);
      const box = this.overlay.getBoundingClientRect();
      this.placeTooltip(e.clientX - box.left, e.clientY - box.top);
    }
    if (!same) this.drawOverlay();
  }

  private onClick(e: MouseEvent): void {
    const cell = this.eventCell(e);
    if (!cell) return;
    this.cursor = cell;
    this.root.focus({ preventScroll: true });
    this.select(cell);
  }

  private onKey(e: KeyboardEvent): void {
    const p = this.prepared;
    if (!p || !this.fig) return;
    const big = e.shiftKey ? 10 : 1;
    const cur = this.cursor ?? this.selectedCell() ?? { row: 0, col: 0 };
    let next: Cell | null = null;
    switch (e.key) {
      case "ArrowUp": next = moveCursor(cur, -big, 0, p.rows, p.cols); break;
      case "ArrowDown": next = moveCursor(cur, big, 0, p.rows, p.cols); break;
      case "ArrowLeft": next = moveCursor(cur, 0, -big, p.rows, p.cols); break;
      case "ArrowRight": next = moveCursor(cur, 0, big, p.rows, p.cols); break;
      case "Home": next = moveCursor(cur, 0, -p.cols, p.rows, p.cols); break;
      case "End": next = moveCursor(cur, 0, p.cols, p.rows, p.cols); break;
      case "Enter":
      case " ":
        this.cursor = cur;
        this.select(cur);
        break;
      case "Escape":
        this.select(null);
        break;
      default:
        return;
    }
    e.preventDefault();
    e.stopPropagation();
    if (next) {
      this.cursor = next;
      this.keyboard = true;
      this.fillTooltip(next);
      this.live.textContent = this.tooltip.textContent;
      const rc = cellRect(this.fig.plot, p.rows, p.cols, next.row, next.col);
      this.placeTooltip(rc.x + rc.w, rc.y + rc.h);
      this.drawOverlay();
    }
  }

  // ---- tooltip (textContent only: labels are user data) -----------------------------------------------------
  private hideTooltip(): void {
    this.tooltip.style.display = "none";
  }

  private fillTooltip(cell: Cell): void {
    const p = this.prepared;
    if (!p) return;
    const doc = this.root.ownerDocument;
    const rows = this.labels("row_labels");
    const cols = this.labels("col_labels");
    const span = (labels: string[], i: number, f: number, n: number) => {
      const a = i * f;
      const b = Math.min(n, a + f) - 1;
      const la = labels[a] ?? String(a);
      return b > a ? `${shortText(la)} … ${shortText(labels[b] ?? String(b))}` : shortText(la);
    };
    const v = p.values[cell.row * p.cols + cell.col];
    const lines: [string, string][] = [
      [this.model.get("row_title") || "row", span(rows, cell.row, p.fr, p.shape[0])],
      [this.model.get("col_title") || "col", span(cols, cell.col, p.fc, p.shape[1])],
      [this.model.get("metric") || "value", formatValue(v, 6)],
    ];
    const [sr, sc] = this.steps();
    if (sr > 1 || sc > 1) lines.push(["block", `${sr}×${sc} cells, ${this.model.get("downsample")?.how ?? "max"}`]);
    this.tooltip.replaceChildren(
      ...lines.map(([k, val]) => {
        const line = doc.createElement("div");
        const key = doc.createElement("span");
        key.className = "hw-key";
        key.textContent = `${axisLabel(String(k), 40)}: `;
        line.appendChild(key);
        line.appendChild(doc.createTextNode(val));
        return line;
      }),
    );
    this.tooltip.style.display = "block";
  }

  private placeTooltip(x: number, y: number): void {
    // Keep the tooltip inside the widget: flip to the left/top of the pointer near the edges.
    const stageTop = this.stage.offsetTop;
    const w = this.tooltip.offsetWidth;
    const h = this.tooltip.offsetHeight;
    const maxW = this.root.clientWidth;
    let left = x + 14;
    if (left + w > maxW) left = Math.max(0, x - 14 - w);
    let top = stageTop + y + 14;
    const maxH = stageTop + (this.fig?.height ?? 0);
    if (top + h > maxH && y - 14 - h >= -stageTop) top = stageTop + y - 14 - h;
    this.tooltip.style.left = `${left}px`;
    this.tooltip.style.top = `${top}px`;
  }

  // ---- overlay: hover, keyboard cursor, selection (O(1) per event) ------------------------------------------
  private drawOverlay(): void {
    const fig = this.fig;
    const p = this.prepared;
    const focused = this.root.ownerDocument.activeElement === this.root;
    const state: OverlayState | null = fig && p ? {
      plot: fig.plot,
      rows: p.rows,
      cols: p.cols,
      hover: this.hover,
      selected: this.selectedCell(),
      cursor: this.keyboard && focused ? this.cursor : null,
      theme: this.theme,
    } : null;
    this.overlayLayer.draw(state, fig?.width ?? 1);
  }

  // ---- status / progress (long-running kernel work) -------------------------------------------------------
  private updateStatus(): void {
    const status = String(this.model.get("status") ?? "");
    const progress = this.model.get("progress");
    const hasProgress = typeof progress === "number" && Number.isFinite(progress);
    this.statusBar.style.display = status || hasProgress ? "flex" : "none";
    this.statusText.textContent = status;
    this.progressBar.style.display = hasProgress ? "" : "none";
    if (hasProgress) this.progressBar.value = Math.max(0, Math.min(1, progress as number));
  }

  // ---- export ------------------------------------------------------------------------------------------------
  /** Exports carry every cell (one pixel each), also when the view shows only the sampled ones. */
  private fullResolutionCells(): void {
    if (this.prepared && this.norm) this.updateCells(this.prepared, this.norm);
  }

  private fileName(ext: string): string {
    return `${slug(String(this.model.get("title") ?? ""))}.${ext}`;
  }

  private download(blob: Blob, name: string): void {
    const url = URL.createObjectURL(blob);
    const a = this.root.ownerDocument.createElement("a");
    a.href = url;
    a.download = name;
    a.style.display = "none";
    this.root.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30_000);
  }

  /** The figure as PNG at 2× resolution (no hover/selection decorations). */
  pngBlob(): Promise<Blob | null> {
    const fig = this.fig;
    if (!fig) return Promise.resolve(null);
    this.fullResolutionCells();
    const scale = 2;
    const c = this.root.ownerDocument.createElement("canvas");
    c.width = Math.round(fig.width * scale);
    c.height = Math.round(fig.height * scale);
    const ctx = c.getContext("2d");
    if (!ctx) return Promise.resolve(null);
    ctx.setTransform(scale, 0, 0, scale, 0, 0);
    drawItems(ctx, fig.items, { cells: this.cellsCanvas, colorbar: this.barCanvas }, this.theme);
    return new Promise((resolve) => c.toBlob((b) => resolve(b), "image/png"));
  }

  svgText(): string | null {
    const fig = this.fig;
    if (!fig) return null;
    this.fullResolutionCells();
    return toSvg(
      fig.items,
      fig.width,
      fig.height,
      { cells: this.cellsCanvas.toDataURL("image/png"), colorbar: this.barCanvas.toDataURL("image/png") },
      { background: this.theme.hatchBackground, line: this.theme.hatchLine },
    );
  }

  private async savePng(): Promise<void> {
    const blob = await this.pngBlob();
    if (blob) this.download(blob, this.fileName("png"));
  }

  private saveSvg(): void {
    const svg = this.svgText();
    if (svg) this.download(new Blob([svg], { type: "image/svg+xml" }), this.fileName("svg"));
  }
}

/** Device pixels per CSS pixel (at least 1): what the canvases are drawn at and what the pointer is read at. */
function devicePixels(): number {
  return Math.max(1, globalThis.devicePixelRatio || 1);
}

/** Pixels (one 32-bit RGBA word each) into a canvas of w × h, resized only when its size changes. */
function putPixels(canvas: HTMLCanvasElement, px: Uint32Array<ArrayBuffer>, w: number, h: number): void {
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const ctx = canvas.getContext("2d");
  // ImageData over the pixel buffer itself: no copy before putImageData.
  const bytes = new Uint8ClampedArray(px.buffer, px.byteOffset, px.byteLength);
  if (ctx) ctx.putImageData(new ImageData(bytes, w, h), 0, 0);
}

function deviceRectInCss(r: DeviceRect, dpr: number) {
  return { x: r.x0 / dpr, y: r.y0 / dpr, w: r.w / dpr, h: r.h / dpr };
}

function render({ model, el }: RenderProps<HeatmapState>): () => void {
  const view = new HeatmapView(model, el);
  // Only an explorer's heatmap (detail_index >= 0) needs to know whether a kernel answers its clicks.
  const unwatch = Number(model.get("detail_index")) >= 0 ? watchLiveness(model) : () => {};
  return () => {
    unwatch();
    view.destroy();
  };
}

export default { render };
