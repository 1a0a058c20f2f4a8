// Cells → pixels at one pixel per cell through the 256-entry LUT (the caller scales the image with
// drawImage and smoothing off), plus NaN-aware pooling for matrices too large for one canvas.
import { type Norm, toUnit, unitToIndex } from "./scale";

/**
 * Write one RGBA pixel per value into `out` (a Uint32Array over ImageData.data). NaN cells become fully
 * transparent so the "n/a" hatch drawn underneath shows through them — the cost does not depend on how many
 * cells are NaN.
 */
export function paintCells(values: Float32Array, norm: Norm, lut32: Uint32Array, out: Uint32Array): void {
  const n = values.length;
  if (norm.degenerate) {
    const mid = lut32[unitToIndex(0.5)];
    for (let i = 0; i < n; i++) {
      const v = values[i];
      out[i] = v !== v ? 0 : mid;
    }
    return;
  }
  if (norm.mode === "linear") {
    // The hot path (1M cells in a few ms): same arithmetic as toUnit/unitToIndex, inlined.
    const lo = norm.lo;
    const span = norm.hi - norm.lo;
    // One comparison settles most cells; NaN fails every comparison and ends transparent. `| 0` is floor for
    // 0 <= t·256 < 256. Fewer operations matter most on a first paint, while the loop still runs unoptimised.
    const first = lut32[0];
    const last = lut32[255];
    for (let i = 0; i < n; i++) {
      const t = (values[i] - lo) / span;
      if (t >= 0) out[i] = t < 1 ? lut32[(t * 256) | 0] : last;
      else out[i] = t < 0 ? first : 0;
    }
    return;
  }
  if (norm.mode === "log") {
    if (paintLogByTable(values, norm, lut32, out)) return;
    // toUnit's log arithmetic with the per-matrix logarithms hoisted out of the loop (same operations, same bins).
    const a = Math.log10(norm.lo);
    const d = Math.log10(norm.hi) - a;
    const first = lut32[0];
    const last = lut32[255];
    for (let i = 0; i < n; i++) {
      const v = values[i];
      if (v > 0) {
        const t = (Math.log10(v) - a) / d;
        out[i] = t < 1 ? (t >= 0 ? lut32[(t * 256) | 0] : first) : last;
      } else out[i] = v !== v ? 0 : first;
    }
    return;
  }
  for (let i = 0; i < n; i++) {
    const v = values[i];
    out[i] = v !== v ? 0 : lut32[unitToIndex(toUnit(v, norm))];
  }
}

// ---- log scale without a logarithm per cell ----------------------------------------------------------------
// For positive float32 values the bit pattern, read as an unsigned integer, grows with the value, and so does the
// LUT bin. One table entry per 2^12 consecutive bit patterns (a relative step of 2^-11) holds the bin when both
// ends of that run fall in the same bin (found with the exact arithmetic of toUnit), or -1 when a bin edge lies
// inside it; only cells in such runs (about 1 in 50 for a few decades) take a Math.log10 of their own.
const LOG_SHIFT = 12;
const MAX_LOG_TABLE = 1 << 18;
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

function floatBits(x: number): number {
  F32[0] = x;
  return U32[0];
}

function bitsFloat(b: number): number {
  U32[0] = b;
  return F32[0];
}

function logBin(v: number, a: number, d: number): number {
  if (!(v > 0)) return 0;
  return unitToIndex((Math.log10(v) - a) / d);
}

/** Paint log-scale cells through the table; false (nothing written) when the table would not pay off. */
export function paintLogByTable(values: Float32Array, norm: Norm, lut32: Uint32Array, out: Uint32Array): boolean {
  const n = values.length;
  const a = Math.log10(norm.lo);
  const d = Math.log10(norm.hi) - a;
  // Runs below pLo hold only values < lo (bin 0), runs above pHi only values > hi (bin 255).
  const pLo = Math.max(0, (floatBits(norm.lo) >>> LOG_SHIFT) - 1);
  const pHi = (floatBits(norm.hi) >>> LOG_SHIFT) + 1;
  const size = pHi - pLo + 1;
  if (n < 4096 || size > Math.min(MAX_LOG_TABLE, n) || ((pHi + 1) << LOG_SHIFT) >>> 0 >= 0x7f800000) return false;
  const table = new Int16Array(size);
  for (let q = 0; q < size; q++) {
    const first = logBin(bitsFloat(((pLo + q) << LOG_SHIFT) >>> 0), a, d);
    const last = logBin(bitsFloat((((pLo + q + 1) << LOG_SHIFT) - 1) >>> 0), a, d);
    table[q] = first === last ? first : -1;
  }
  const bits = new Uint32Array(values.buffer, values.byteOffset, n);
  const lowest = lut32[0];
  const highest = lut32[255];
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    if (b >= 0x80000000) {
      out[i] = b > 0xff800000 ? 0 : lowest; // negative NaN: transparent; negative, -0: below the range
      continue;
    }
    if (b > 0x7f800000) {
      out[i] = 0; // NaN
      continue;
    }
    const q = (b >>> LOG_SHIFT) - pLo;
    if (q < 0) out[i] = lowest;
    else if (q >= size) out[i] = highest;
    else {
      const k = table[q];
      out[i] = lut32[k >= 0 ? k : logBin(values[i], a, d)];
    }
  }
  return true;
}

export type PoolHow = "max" | "mean";

/**
 * Block sizes (fr, fc) so that a rows × cols matrix pooled into ceil(rows/fr) × ceil(cols/fc) blocks fits
 * within maxSide pixels per side and maxCells pixels in all (browser canvas limits and memory).
 */
export function poolFactors(rows: number, cols: number, maxSide: number, maxCells: number): [number, number] {
  let fr = Math.max(1, Math.ceil(rows / maxSide));
  let fc = Math.max(1, Math.ceil(cols / maxSide));
  while (Math.ceil(rows / fr) * Math.ceil(cols / fc) > maxCells) {
    // Grow the factor of the side that still has more blocks, keeping blocks roughly square in cells.
    if (Math.ceil(rows / fr) >= Math.ceil(cols / fc)) fr++;
    else fc++;
  }
  return [fr, fc];
}

/** Pool a rows × cols matrix into fr × fc blocks, ignoring NaN (a block of only NaN stays NaN). */
export function poolMatrix(
  values: Float32Array,
  rows: number,
  cols: number,
  fr: number,
  fc: number,
  how: PoolHow,
): { values: Float32Array; rows: number; cols: number } {
  const pr = Math.ceil(rows / fr);
  const pc = Math.ceil(cols / fc);
  const acc = new Float64Array(pr * pc).fill(how === "max" ? -Infinity : 0);
  const cnt = new Uint32Array(pr * pc);
  for (let r = 0; r < rows; r++) {
    const base = Math.floor(r / fr) * pc;
    const off = r * cols;
    for (let c = 0; c < cols; c++) {
      const v = values[off + c];
      if (v !== v) continue;
      const j = base + Math.floor(c / fc);
      if (how === "max") {
        if (v > acc[j]) acc[j] = v;
      } else acc[j] += v;
      cnt[j]++;
    }
  }
  const out = new Float32Array(pr * pc);
  for (let j = 0; j < out.length; j++) {
    out[j] = cnt[j] === 0 ? NaN : how === "max" ? acc[j] : acc[j] / cnt[j];
  }
  return { values: out, rows: pr, cols: pc };
}

/**
 * The cells' pixels, one 32-bit RGBA word per cell, recoloured in place: a new colour map, range or log scale
 * rewrites the same buffer through the LUT (no allocation, no layout); nothing is redone while the values, the
 * norm and the colour map stay the same.
 */
export class CellPixels {
  pixels = new Uint32Array(0);
  /** How many times the pixels were (re)computed. */
  recolors = 0;
  private values: Float32Array | null = null;
  private norm: Norm | null = null;
  private lut: Uint32Array | null = null;

  /** Bring the pixels up to date; true when they changed. */
  update(values: Float32Array, norm: Norm, lut32: Uint32Array): boolean {
    if (values === this.values && norm === this.norm && lut32 === this.lut) return false;
    if (this.pixels.length !== values.length) this.pixels = new Uint32Array(values.length);
    paintCells(values, norm, lut32, this.pixels);
    this.values = values;
    this.norm = norm;
    this.lut = lut32;
    this.recolors++;
    return true;
  }
}

// ---- matrices with more cells than the plot has pixels -------------------------------------------------------
// Drawn at one pixel per cell and scaled down without smoothing, such a matrix shows one cell per device pixel
// anyway (the one under the pixel's centre). Colouring only those cells, at device resolution, gives the same
// picture for a fraction of the work: a 1000×1000 matrix in an 806×520 plot colours 419k pixels instead of 1M
// (on a first paint, while the loop still runs unoptimised, that is most of the paint's time), uploads less than
// half the bytes and draws without scaling. Which cell a pixel shows is decided by hitTest's arithmetic at the pixel's
// centre, so the colour under the pointer is always the cell the tooltip names.

/** A plot's device-pixel rectangle: whole device pixels, origin (x0, y0), size w × h. */
export interface DeviceRect {
  x0: number;
  y0: number;
  w: number;
  h: number;
}

/** The plot rectangle (CSS px) rounded to whole device pixels. */
export function deviceRect(plot: { x: number; y: number; w: number; h: number }, dpr: number): DeviceRect {
  const x0 = Math.round(plot.x * dpr);
  const y0 = Math.round(plot.y * dpr);
  return { x0, y0, w: Math.round((plot.x + plot.w) * dpr) - x0, h: Math.round((plot.y + plot.h) * dpr) - y0 };
}

/** True when the matrix has more cells than the plot has device pixels: then it is drawn by `paintSampled`. */
export function shouldSample(rows: number, cols: number, rect: DeviceRect): boolean {
  return rect.w > 0 && rect.h > 0 && rows * cols > rect.w * rect.h;
}

/**
 * The cell index shown by each of `pixels` device pixels from device coordinate `origin` along an axis of
 * `count` cells spanning [plotStart, plotStart + plotSize) CSS px: hitTest's floor(f · count) at the pixel's
 * centre, clamped to the matrix (edge pixels may centre a hair outside the plot).
 */
export function pixelCells(
  count: number, pixels: number, origin: number, plotStart: number, plotSize: number, dpr: number,
): Int32Array {
  const out = new Int32Array(pixels);
  for (let i = 0; i < pixels; i++) {
    const f = ((origin + i + 0.5) / dpr - plotStart) / plotSize;
    out[i] = Math.min(count - 1, Math.max(0, Math.floor(f * count)));
  }
  return out;
}

/**
 * out[y · W + x] = the colour of cell (rowOf[y], colOf[x]) of a row-major matrix with `cols` columns, exactly as
 * paintCells colours it (W = colOf.length).
 */
export function paintSampled(
  values: Float32Array, cols: number, rowOf: Int32Array, colOf: Int32Array, norm: Norm, lut32: Uint32Array,
  out: Uint32Array,
): void {
  const w = colOf.length;
  const h = rowOf.length;
  if (norm.mode === "linear" && !norm.degenerate) {
    // The common case in one pass: paintLinear's arithmetic on the gathered value.
    const lo = norm.lo;
    const span = norm.hi - norm.lo;
    const first = lut32[0];
    const last = lut32[255];
    for (let y = 0, k = 0; y < h; y++) {
      const base = rowOf[y] * cols;
      for (let x = 0; x < w; x++, k++) {
        const t = (values[base + colOf[x]] - lo) / span;
        if (t >= 0) out[k] = t < 1 ? lut32[(t * 256) | 0] : last;
        else out[k] = t < 0 ? first : 0;
      }
    }
    return;
  }
  const gathered = new Float32Array(w * h);
  for (let y = 0, k = 0; y < h; y++) {
    const base = rowOf[y] * cols;
    for (let x = 0; x < w; x++, k++) gathered[k] = values[base + colOf[x]];
  }
  paintCells(gathered, norm, lut32, out);
}

/**
 * The sampled pixels of the current plot, recomputed only when the values, colours or the plot's device
 * rectangle change (a hover or a selection changes none of them).
 */
export class SampledPixels {
  pixels = new Uint32Array(0);
  /** The device rectangle the pixels cover (w × h of them). */
  rect: DeviceRect = { x0: 0, y0: 0, w: 0, h: 0 };
  /** How many times the pixels were (re)computed. */
  recolors = 0;
  private key: unknown[] = [];

  update(
    values: Float32Array, rows: number, cols: number, plot: { x: number; y: number; w: number; h: number },
    dpr: number, norm: Norm, lut32: Uint32Array,
  ): boolean {
    const key = [values, rows, cols, plot.x, plot.y, plot.w, plot.h, dpr, norm, lut32];
    if (key.length === this.key.length && key.every((k, i) => k === this.key[i])) return false;
    const r = (this.rect = deviceRect(plot, dpr));
    const rowOf = pixelCells(rows, r.h, r.y0, plot.y, plot.h, dpr);
    const colOf = pixelCells(cols, r.w, r.x0, plot.x, plot.w, dpr);
    if (this.pixels.length !== r.w * r.h) this.pixels = new Uint32Array(r.w * r.h);
    paintSampled(values, cols, rowOf, colOf, norm, lut32, this.pixels);
    this.key = key;
    this.recolors++;
    return true;
  }
}
