// Value → colour scale: colour range (auto / user vmin, vmax), linear, log and diverging (two-slope around 0)
// normalisation, colour-bar ticks, number formatting and tick thinning. Pure functions, no DOM.
// The range rules mirror heatwidget/_figure.py:color_norm so the static image and the widget agree.
import { isDiverging } from "./colormaps";

export type NormMode = "linear" | "log" | "diverging";

export interface Norm {
  lo: number;
  hi: number;
  mode: NormMode;
  /** lo == hi (constant data or vmin == vmax): every cell takes the middle colour. */
  degenerate: boolean;
  /** A human note when the request could not be honoured (e.g. log scale without positive values). */
  warning: string;
}

export interface NormOptions {
  colormap: string;
  vmin?: number | null;
  vmax?: number | null;
  log?: boolean;
}

export interface Stats {
  min: number;
  max: number;
  minPositive: number;
  finite: number;
  nan: number;
}

export function stats(values: ArrayLike<number>): Stats {
  let min = Infinity;
  let max = -Infinity;
  let minPositive = Infinity;
  let nan = 0;
  const n = values.length;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    // v - v is NaN for NaN and ±Infinity, 0 for every finite v.
    if (v - v !== 0) {
      nan++;
      continue;
    }
    if (v < min) min = v;
    if (v > max) max = v;
    if (v > 0 && v < minPositive) minPositive = v;
  }
  return { min, max, minPositive, finite: n - nan, nan };
}

/**
 * The kernel's statistics of the values it sent (widget.py `value_stats`), as `stats` would compute them, or null
 * when they are missing, malformed or not about `n` cells (then the caller computes them: one pass over the cells).
 */
export function kernelStats(raw: unknown, n: number): Stats | null {
  if (typeof raw !== "object" || raw === null) return null;
  const r = raw as Record<string, unknown>;
  const num = (v: unknown, none: number) => (v === null ? none : typeof v === "number" && !Number.isNaN(v) ? v : NaN);
  const s: Stats = { min: num(r.min, Infinity), max: num(r.max, -Infinity), minPositive: num(r.minPositive, Infinity),
    finite: num(r.finite, NaN), nan: num(r.nan, NaN) };
  const ok = Object.values(s).every((v) => !Number.isNaN(v)) && s.finite + s.nan === n && s.finite >= 0 && s.nan >= 0;
  return ok && (s.finite === 0 || s.min <= s.max) ? s : null;
}

const given = (x: number | null | undefined): x is number => typeof x === "number" && Number.isFinite(x);

export function computeNorm(s: Stats, opts: NormOptions): Norm {
  let warning = "";
  if (s.finite === 0) return { lo: 0, hi: 1, mode: "linear", degenerate: true, warning: "no finite values" };
  let lo: number;
  let hi: number;
  let mode: NormMode = "linear";
  if (opts.log) {
    lo = given(opts.vmin) ? opts.vmin : s.minPositive;
    hi = given(opts.vmax) ? opts.vmax : s.max;
    if (lo > 0 && hi > 0 && Number.isFinite(lo)) {
      mode = "log";
    } else {
      warning = "log scale needs positive values: drawn linear";
      lo = given(opts.vmin) ? opts.vmin : s.min;
      hi = given(opts.vmax) ? opts.vmax : s.max;
    }
  } else if (isDiverging(opts.colormap)) {
    // Centred on 0: a missing bound mirrors the other one, so 0 stays the neutral middle colour.
    const m = Math.max(Math.abs(s.min), Math.abs(s.max));
    lo = given(opts.vmin) ? opts.vmin : given(opts.vmax) ? -Math.abs(opts.vmax) : -m;
    hi = given(opts.vmax) ? opts.vmax : given(opts.vmin) ? Math.abs(opts.vmin) : m;
    if (lo < 0 && hi > 0) mode = "diverging";
  } else {
    lo = given(opts.vmin) ? opts.vmin : s.min;
    hi = given(opts.vmax) ? opts.vmax : s.max;
  }
  if (hi < lo) [lo, hi] = [hi, lo];
  return { lo, hi, mode, degenerate: !(hi > lo), warning };
}

/** Position of v on the colour scale, in [0, 1]; NaN stays NaN. */
export function toUnit(v: number, n: Norm): number {
  if (v !== v) return NaN;
  if (n.degenerate) return 0.5;
  let t: number;
  if (n.mode === "log") {
    t = v > 0 ? (Math.log10(v) - Math.log10(n.lo)) / (Math.log10(n.hi) - Math.log10(n.lo)) : 0;
  } else if (n.mode === "diverging") {
    t = v < 0 ? (0.5 * (v - n.lo)) / -n.lo : 0.5 + (0.5 * v) / n.hi;
  } else {
    t = (v - n.lo) / (n.hi - n.lo);
  }
  return t < 0 ? 0 : t > 1 ? 1 : t;
}

/** LUT entry for a position t in [0, 1]: 256 equal bins, t = 1 in the last. */
export function unitToIndex(t: number): number {
  const i = Math.floor(t * 256);
  return i > 255 ? 255 : i < 0 ? 0 : i;
}

export function lutIndex(v: number, n: Norm): number {
  return unitToIndex(toUnit(v, n));
}

/** Inverse of toUnit (for colour-bar hover and SVG gradients). */
export function fromUnit(t: number, n: Norm): number {
  if (n.degenerate) return n.lo;
  if (n.mode === "log") return 10 ** (Math.log10(n.lo) + t * (Math.log10(n.hi) - Math.log10(n.lo)));
  if (n.mode === "diverging") return t < 0.5 ? n.lo + (t / 0.5) * -n.lo : ((t - 0.5) / 0.5) * n.hi;
  return n.lo + t * (n.hi - n.lo);
}

function clean(x: number): number {
  // 0.1 * 3 = 0.30000000000000004: round to 12 significant digits so labels and comparisons behave.
  return Number(x.toPrecision(12));
}

/** "Nice" steps (1, 2, 5 × 10^k) between lo and hi, at most about maxTicks of them. */
export function niceTicks(lo: number, hi: number, maxTicks = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [];
  if (!(hi > lo)) return [clean(lo)];
  // A short bar asks for few ticks; if the nice step then leaves fewer than two, allow finer steps.
  for (let k = Math.max(1, maxTicks); k <= maxTicks + 8; k++) {
    const t = niceTicksOnce(lo, hi, k);
    if (t.length >= 2) return t;
  }
  return [clean(lo), clean(hi)];
}

function niceTicksOnce(lo: number, hi: number, maxTicks: number): number[] {
  const raw = (hi - lo) / Math.max(1, maxTicks);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const e = raw / mag;
  // Round the raw step to 1, 2, 5 or 10 at geometric midpoints: about maxTicks ticks, never just one.
  const step = (e >= Math.sqrt(50) ? 10 : e >= Math.sqrt(10) ? 5 : e >= Math.SQRT2 ? 2 : 1) * mag;
  const out: number[] = [];
  const first = Math.ceil(lo / step - 1e-9);
  for (let k = first; k * step <= hi + step * 1e-9; k++) out.push(clean(k * step));
  return out;
}

/** Ticks for a log scale: powers of ten (thinned), or nice linear ticks when the range spans < 1 decade. */
export function logTicks(lo: number, hi: number, maxTicks = 6): number[] {
  if (!(lo > 0) || !(hi > lo)) return niceTicks(lo, hi, maxTicks);
  const a = Math.ceil(Math.log10(lo) - 1e-9);
  const b = Math.floor(Math.log10(hi) + 1e-9);
  if (b - a < 1) return niceTicks(lo, hi, maxTicks);
  const every = Math.ceil((b - a + 1) / maxTicks);
  const out: number[] = [];
  for (let e = a; e <= b; e += every) out.push(clean(10 ** e));
  return out;
}

export function colorbarTicks(n: Norm, maxTicks = 5): number[] {
  if (n.degenerate) return [clean(n.lo)];
  if (n.mode === "log") return logTicks(n.lo, n.hi, maxTicks);
  return niceTicks(n.lo, n.hi, maxTicks);
}

/** Compact number text: 4 significant digits, exponent form for very large / small magnitudes. */
export function formatValue(v: number, digits = 4): string {
  if (v !== v) return "n/a";
  if (v === 0) return "0";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  const a = Math.abs(v);
  let s: string;
  if (a >= 1e5 || a < 1e-3) {
    const [m, e] = v.toExponential(Math.max(0, digits - 2)).split("e");
    s = `${m.includes(".") ? m.replace(/0+$/, "").replace(/\.$/, "") : m}e${Number(e)}`;
  } else {
    s = String(Number(v.toPrecision(digits)));
  }
  return s.replace(/^-/, "−");
}

/**
 * Label thinning: the smallest step from 1, 2, 5, 10, 20, 50, … such that labels `step` items apart are at
 * least `minPx` pixels apart when each item takes `pxPerItem` pixels.
 */
export function thinStep(pxPerItem: number, minPx: number): number {
  if (!(pxPerItem > 0)) return Number.MAX_SAFE_INTEGER;
  if (pxPerItem >= minPx) return 1;
  const need = minPx / pxPerItem;
  for (let mag = 1; ; mag *= 10) {
    for (const m of [1, 2, 5]) if (m * mag >= need) return m * mag;
    if (mag > 1e15) return Number.MAX_SAFE_INTEGER;
  }
}

/** Indices 0, step, 2·step, … below n. */
export function tickIndices(n: number, step: number): number[] {
  const out: number[] = [];
  if (step < 1) step = 1;
  for (let i = 0; i < n; i += step) out.push(i);
  return out;
}
