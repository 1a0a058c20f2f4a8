// Colour maps: one JSON table (heatwidget/colormaps.json) shared with the Python static image, expanded here
// into the same 256-entry lookup table (LUT). Any change to the expansion must be mirrored in
// heatwidget/_figure.py; test/colormaps.test.ts and tests/test_widget.py both check a golden table.
import table from "../../heatwidget/colormaps.json";

export type ColormapKind = "sequential" | "diverging";
export interface ColormapSpec {
  kind: ColormapKind;
  colors: string[];
}

export const COLORMAPS: Record<string, ColormapSpec> = (table as { colormaps: Record<string, ColormapSpec> })
  .colormaps;

export const LUT_SIZE = 256;

/** Split "viridis_r" into its base map and the reversal flag; unknown names fall back to "blues". */
export function parseColormap(name: string): { base: string; reversed: boolean; known: boolean } {
  const lower = String(name ?? "").toLowerCase();
  const reversed = lower.endsWith("_r");
  const base = reversed ? lower.slice(0, -2) : lower;
  if (base in COLORMAPS) return { base, reversed, known: true };
  return { base: "blues", reversed: false, known: false };
}

export function isDiverging(name: string): boolean {
  return COLORMAPS[parseColormap(name).base].kind === "diverging";
}

export function hexToRgb(hex: string): [number, number, number] {
  const h = hex.replace("#", "");
  return [parseInt(h.slice(0, 2), 16), parseInt(h.slice(2, 4), 16), parseInt(h.slice(4, 6), 16)];
}

const lutCache = new Map<string, Uint8ClampedArray>();

/** RGBA lookup table, 256 entries × 4 bytes. Entry i is the colour at t = i / 255. */
export function buildLut(name: string): Uint8ClampedArray {
  const key = String(name ?? "").toLowerCase();
  const hit = lutCache.get(key);
  if (hit) return hit;
  const { base, reversed } = parseColormap(key);
  const anchors = COLORMAPS[base].colors.map(hexToRgb);
  const n = anchors.length;
  const lut = new Uint8ClampedArray(LUT_SIZE * 4);
  for (let i = 0; i < LUT_SIZE; i++) {
    // Same arithmetic, in the same order, as _figure.build_lut: float64 on both sides gives identical bytes.
    const x = (i * (n - 1)) / (LUT_SIZE - 1);
    const j = Math.min(Math.floor(x), n - 2);
    const f = x - j;
    const k = reversed ? LUT_SIZE - 1 - i : i;
    for (let ch = 0; ch < 3; ch++) {
      const a = anchors[j][ch];
      const b = anchors[j + 1][ch];
      lut[k * 4 + ch] = Math.floor(a + (b - a) * f + 0.5);
    }
    lut[k * 4 + 3] = 255;
  }
  lutCache.set(key, lut);
  return lut;
}

/** The LUT packed as one 32-bit word per entry, in the byte order of ImageData on this machine. */
export function lutAsUint32(lut: Uint8ClampedArray): Uint32Array {
  // A Uint32Array over the same bytes reads them in platform order, which is exactly the order a
  // Uint32Array over ImageData.data will write them back: no endianness assumption needed.
  return new Uint32Array(lut.slice().buffer);
}

const lut32Cache = new Map<string, Uint32Array>();

/** lutAsUint32(buildLut(name)), computed once per name: the same array every call, so caches can key on it. */
export function buildLut32(name: string): Uint32Array {
  const key = String(name ?? "").toLowerCase();
  let hit = lut32Cache.get(key);
  if (!hit) lut32Cache.set(key, (hit = lutAsUint32(buildLut(key))));
  return hit;
}

export function cssColor(lut: Uint8ClampedArray, index: number): string {
  const i = Math.max(0, Math.min(LUT_SIZE - 1, index | 0)) * 4;
  return `rgb(${lut[i]}, ${lut[i + 1]}, ${lut[i + 2]})`;
}

export function lutHex(lut: Uint8ClampedArray): string[] {
  const out: string[] = [];
  for (let i = 0; i < LUT_SIZE; i++) {
    let s = "#";
    for (let ch = 0; ch < 3; ch++) s += lut[i * 4 + ch].toString(16).padStart(2, "0");
    out.push(s);
  }
  return out;
}
