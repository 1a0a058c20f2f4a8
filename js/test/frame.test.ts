// The frame caches: what a paint recomputes and what it reuses (memo.ts, frame.ts, raster.ts CellPixels,
// text.ts TextMeasurer).
import { describe, expect, it } from "vitest";
import { buildLut32 } from "../src/colormaps";
import { type FigureInput, LIGHT_THEME, DARK_THEME, layoutFigure } from "../src/figure";
import { FrameCache, type LayoutInputs } from "../src/frame";
import { Memo, sameKey } from "../src/memo";
import { CellPixels, paintLogByTable } from "../src/raster";
import { type Norm, computeNorm, lutIndex, stats } from "../src/scale";
import { TextMeasurer } from "../src/text";

describe("Memo", () => {
  it("recomputes only when an input changes, comparing arrays by identity and NaN as equal", () => {
    const m = new Memo<number>();
    const labels = ["a", "b"];
    let runs = 0;
    const get = (key: unknown[]) => m.get(key, () => ++runs);
    expect(get([1, labels, NaN])).toBe(1);
    expect(get([1, labels, NaN])).toBe(1);
    expect(get([1, ["a", "b"], NaN])).toBe(2); // an equal but new list is a change
    expect(get([2, ["a", "b"], NaN])).toBe(3);
    expect(m.computations).toBe(3);
    expect(m.has([2, ["a", "b"], NaN])).toBe(false);
    m.clear();
    expect(get([1, labels, NaN])).toBe(4);
    expect(sameKey([1, "x"], [1, "x", undefined])).toBe(false);
  });
});

const measure = (t: string, font: string) => t.length * 0.6 * Number(/(\d+)px/.exec(font)?.[1] ?? 11);

describe("FrameCache", () => {
  const values = Float32Array.from({ length: 60 }, (_, i) => i + 1);
  const st = stats(values);
  const data = { rows: 6, cols: 10 };
  const rowLabels = Array.from({ length: 6 }, (_, i) => `L${i}`);
  const colLabels = Array.from({ length: 10 }, (_, i) => `tok${i}`);
  const base: LayoutInputs = { width: 700, height: 0, data, rowLabels, colLabels, title: "t", rowTitle: "layer",
    colTitle: "token", metric: "KL", notes: [], theme: LIGHT_THEME };
  const layout = (inputs: LayoutInputs, norm: Norm) => () => {
    const f: FigureInput = { width: inputs.width, height: 0, rows: 6, cols: 10, rowLabel: (i) => rowLabels[i],
      colLabel: (i) => colLabels[i], title: "t", rowTitle: "layer", colTitle: "token", metric: "KL", norm,
      hasNaN: false, notes: [...inputs.notes], theme: inputs.theme, measure };
    return layoutFigure(f);
  };
  const paint = (cache: FrameCache, inputs: LayoutInputs, opts: { colormap: string; log?: boolean }) => {
    const norm = cache.norm(st, opts);
    return cache.figure(inputs, norm, layout(inputs, norm));
  };

  it("lays out once per size, labels, titles or theme, not per colour-map switch", () => {
    const cache = new FrameCache();
    const f0 = paint(cache, base, { colormap: "viridis" });
    for (const colormap of ["magma", "blues", "ylorrd", "viridis_r"]) {
      expect(paint(cache, base, { colormap })).toBe(f0);
    }
    expect(cache.layouts).toBe(1);
    const changes: Partial<LayoutInputs>[] = [{ width: 500 }, { rowLabels: [...rowLabels] }, { title: "new" },
      { theme: DARK_THEME }, { notes: ["downsampled"] }, { data: { ...data } }];
    for (const change of changes) {
      const before = cache.layouts;
      const inputs = { ...base, ...change };
      const f = paint(cache, inputs, { colormap: "viridis" });
      expect(cache.layouts, JSON.stringify(Object.keys(change))).toBe(before + 1);
      expect(paint(cache, inputs, { colormap: "blues" })).toBe(f);
      expect(cache.layouts).toBe(before + 1);
    }
  });

  it("keeps the norm across maps of one kind; a diverging map or the log scale changes it (and the layout)", () => {
    const cache = new FrameCache();
    const n0 = cache.norm(st, { colormap: "viridis" });
    expect(cache.norm(st, { colormap: "blues" })).toBe(n0);
    const div = cache.norm(st, { colormap: "rdbu" });
    expect(div).not.toBe(n0);
    expect(div).toEqual(computeNorm(st, { colormap: "rdbu" }));
    const log = cache.norm(st, { colormap: "viridis", log: true });
    expect(log.mode).toBe("log");
    paint(cache, base, { colormap: "viridis" });
    paint(cache, base, { colormap: "viridis", log: true });
    paint(cache, base, { colormap: "viridis", log: false });
    expect(cache.layouts).toBe(3);
  });
});

describe("CellPixels", () => {
  const values = Float32Array.from([-2, 0, 0.25, NaN, 0.5, 0.999, 1, 3, Infinity, -Infinity]);
  const norm = computeNorm(stats(values), { colormap: "viridis", vmin: 0, vmax: 1 });

  it("recolours the same buffer through each LUT and skips unchanged inputs", () => {
    const cells = new CellPixels();
    for (const name of ["viridis", "magma", "viridis"]) {
      const lut32 = buildLut32(name);
      const before = cells.recolors;
      expect(cells.update(values, norm, lut32)).toBe(true);
      expect(cells.update(values, norm, lut32)).toBe(false);
      expect(cells.recolors).toBe(before + 1);
      values.forEach((v, i) => expect(cells.pixels[i]).toBe(Number.isNaN(v) ? 0 : lut32[lutIndex(v, norm)]));
    }
    const buffer = cells.pixels;
    cells.update(values, computeNorm(stats(values), { colormap: "viridis", log: true }), buildLut32("viridis"));
    expect(cells.pixels).toBe(buffer); // same size: no new allocation
    cells.update(values.subarray(0, 4), norm, buildLut32("viridis"));
    expect(cells.pixels.length).toBe(4);
  });

  it("maps bin edges like lutIndex (the Python side's arithmetic)", () => {
    const edges = Float32Array.from({ length: 513 }, (_, i) => i / 512);
    const cells = new CellPixels();
    const lut32 = buildLut32("blues");
    const n = computeNorm(stats(edges), { colormap: "blues" });
    cells.update(edges, n, lut32);
    edges.forEach((v, i) => expect(cells.pixels[i]).toBe(lut32[lutIndex(v, n)]));
  });
});

describe("log-scale cells through the bit-pattern table", () => {
  it("gives every cell the bin of toUnit's arithmetic, at bin edges and for NaN, zero, negatives, infinities", () => {
    const vals: number[] = [NaN, -NaN, 0, -0, -1, -1e-30, Infinity, -Infinity, 1e-45, 3.4e38];
    const lo = 0.002;
    const hi = 700;
    const a = Math.log10(lo);
    const d = Math.log10(hi) - a;
    // Values on and one float32 step either side of every bin edge.
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let k = 0; k <= 256; k++) {
      f[0] = 10 ** (a + (d * k) / 256);
      const b = u[0];
      for (const db of [-2, -1, 0, 1, 2]) {
        u[0] = b + db;
        vals.push(f[0]);
      }
    }
    let seed = 1;
    const rand = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    while (vals.length < 200_000) vals.push(10 ** (-4 + 8 * rand()) * (rand() < 0.05 ? -1 : 1));
    const values = Float32Array.from(vals);
    // The table for a few decades; a range too wide for one (here the automatic 1e-45..3.4e38) takes the per-cell
    // logarithm.
    const cases = [[{ vmin: lo, vmax: hi }, true], [{ vmin: 1e-3, vmax: 1e4 }, true], [{}, false]] as const;
    for (const [opts, byTable] of cases) {
      const norm = computeNorm(stats(values), { colormap: "viridis", log: true, ...opts });
      expect(norm.mode).toBe("log");
      const lut32 = buildLut32("viridis");
      expect(paintLogByTable(values, norm, lut32, new Uint32Array(values.length))).toBe(byTable);
      const cells = new CellPixels();
      cells.update(values, norm, lut32);
      values.forEach((v, i) => {
        const want = Number.isNaN(v) ? 0 : lut32[lutIndex(v, norm)];
        if (cells.pixels[i] !== want) throw new Error(`cell ${i} (${v}): ${cells.pixels[i]} != ${want}`);
      });
    }
  });
});

describe("TextMeasurer", () => {
  it("measures each ASCII character once per font and other text once per string", () => {
    const seen: string[] = [];
    const m = new TextMeasurer((text, font) => {
      seen.push(`${font}|${text}`);
      return text.length * (font.startsWith("11") ? 6 : 7) + (/[^\x20-\x7e]/.test(text) ? 100 : 0);
    });
    const labels = Array.from({ length: 300 }, (_, i) => `L${i}`);
    expect(labels.map((s) => m.measure(s, "11px x"))).toEqual(labels.map((s) => s.length * 6));
    expect(m.rawCalls).toBe(11); // "L" and the ten digits
    expect(m.measure("L12", "12px x")).toBe(21);
    expect(m.rawCalls).toBe(14);
    expect(m.measure("día ↵", "11px x")).toBe(130);
    expect(m.measure("día ↵", "11px x")).toBe(130);
    expect(m.rawCalls).toBe(15);
    m.clear();
    m.measure("L", "11px x");
    expect(m.rawCalls).toBe(16);
    expect(new Set(seen).size).toBe(15); // only clear() re-measures
  });
});
