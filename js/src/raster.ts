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
