import { describe, expect, it } from "vitest";
import { buildLut, lutAsUint32 } from "../src/colormaps";
import { hitTest } from "../src/layout";
import {
  SampledPixels,
  deviceRect,
  paintCells,
  paintSampled,
  pixelCells,
  poolFactors,
  poolMatrix,
  shouldSample,
} from "../src/raster";
import { computeNorm, lutIndex, stats } from "../src/scale";

describe("painting cells", () => {
  const lut32 = lutAsUint32(buildLut("viridis"));

  it("writes LUT colours per cell and transparent NaN, for every norm mode", () => {
    const values = Float32Array.from([-3, -1, 0, NaN, 0.5, 2, 4, 100]);
    for (const opts of [
      { colormap: "viridis" },
      { colormap: "rdbu" },
      { colormap: "viridis", log: true },
      { colormap: "viridis", vmin: 1, vmax: 1 },
    ]) {
      const norm = computeNorm(stats(values), opts);
      const out = new Uint32Array(values.length);
      paintCells(values, norm, lut32, out);
      values.forEach((v, i) => expect(out[i]).toBe(Number.isNaN(v) ? 0 : lut32[lutIndex(v, norm)]));
    }
  });

  it("paints a million cells fast", () => {
    const n = 1_000_000;
    const values = new Float32Array(n);
    for (let i = 0; i < n; i++) values[i] = Math.sin(i);
    const norm = computeNorm(stats(values), { colormap: "viridis" });
    const out = new Uint32Array(n);
    const t = performance.now();
    paintCells(values, norm, lut32, out);
    // Typically ~5 ms. A regression guard only (a shared, loaded CI box must not flake it): the benchmark
    // (benchmarks/bench_render.py) reports real numbers.
    expect(performance.now() - t).toBeLessThan(1000);
  });
});

describe("pooling", () => {
  it("keeps within canvas limits", () => {
    expect(poolFactors(100, 100, 16384, 16e6)).toEqual([1, 1]);
    expect(poolFactors(1, 40000, 16384, 16e6)).toEqual([1, 3]);
    const [fr, fc] = poolFactors(5000, 5000, 16384, 16e6 / 4);
    expect(Math.ceil(5000 / fr) * Math.ceil(5000 / fc)).toBeLessThanOrEqual(4e6);
  });

  it("pools NaN-aware by max and mean, including partial edge blocks", () => {
    const v = Float32Array.from([1, 2, 3, NaN, 5, NaN, NaN, NaN, 9]);
    const max = poolMatrix(v, 3, 3, 2, 2, "max");
    expect([max.rows, max.cols]).toEqual([2, 2]);
    expect(Array.from(max.values)).toEqual([5, 3, NaN, 9].map(Math.fround));
    const mean = poolMatrix(v, 3, 3, 2, 2, "mean");
    expect(Array.from(mean.values)).toEqual([8 / 3, 3, NaN, 9].map(Math.fround));
  });
});

describe("sampling matrices with more cells than the plot has pixels", () => {
  const lut32 = lutAsUint32(buildLut("viridis"));

  it("shows at each device pixel the cell hitTest names at that pixel's centre", () => {
    for (const [count, plotStart, plotSize, dpr] of [
      [1000, 40.3, 612.7, 1],
      [1000, 40.3, 612.7, 2],
      [10_000, 12.5, 700, 1.25],
      [333, 0, 101.1, 3],
    ]) {
      const r = deviceRect({ x: plotStart, y: 0, w: plotSize, h: 10 }, dpr);
      const cells = pixelCells(count, r.w, r.x0, plotStart, plotSize, dpr);
      for (let i = 0; i < r.w; i++) {
        const centre = (r.x0 + i + 0.5) / dpr;
        const hit = hitTest({ x: plotStart, y: 0, w: plotSize, h: 10 }, 1, count, centre, 5);
        // Pixels whose centre falls a hair outside the plot (rounding of its edges) show the edge cell.
        expect(cells[i]).toBe(hit ? hit.col : centre < plotStart ? 0 : count - 1);
      }
      // Monotone, and from the first cells to the last.
      for (let i = 1; i < r.w; i++) expect(cells[i]).toBeGreaterThanOrEqual(cells[i - 1]);
      expect(cells[0]).toBeLessThan(count / r.w + 1);
      expect(cells[r.w - 1]).toBeGreaterThan(count - count / r.w - 2);
    }
  });

  it("colours each sampled pixel exactly as paintCells colours its cell, for every norm mode", () => {
    const rows = 37;
    const cols = 53;
    const values = new Float32Array(rows * cols);
    for (let i = 0; i < values.length; i++) values[i] = i % 31 === 0 ? NaN : Math.exp(Math.sin(i) * 4);
    const rowOf = Int32Array.from({ length: 20 }, (_, y) => Math.floor((y * rows) / 20));
    const colOf = Int32Array.from({ length: 29 }, (_, x) => (x * 7) % cols);
    for (const opts of [
      { colormap: "viridis" },
      { colormap: "rdbu" },
      { colormap: "viridis", log: true },
      { colormap: "viridis", vmin: 2, vmax: 2 },
      { colormap: "viridis", vmin: 0.5, vmax: 3 },
    ]) {
      const norm = computeNorm(stats(values), opts);
      const full = new Uint32Array(values.length);
      paintCells(values, norm, lut32, full);
      const out = new Uint32Array(rowOf.length * colOf.length).fill(0xdeadbeef);
      paintSampled(values, cols, rowOf, colOf, norm, lut32, out);
      for (let y = 0; y < rowOf.length; y++)
        for (let x = 0; x < colOf.length; x++)
          expect(out[y * colOf.length + x]).toBe(full[rowOf[y] * cols + colOf[x]]);
    }
  });

  it("is used only where cells outnumber device pixels, and recomputes only when the picture changes", () => {
    const plot = { x: 10.4, y: 5.2, w: 300.3, h: 200.6 };
    const rect = deviceRect(plot, 1);
    expect(rect).toEqual({ x0: 10, y0: 5, w: 301, h: 201 });
    expect(shouldSample(100, 100, rect)).toBe(false);
    expect(shouldSample(1000, 1000, rect)).toBe(true);
    expect(shouldSample(20, 100_000, rect)).toBe(true);
    const values = Float32Array.from({ length: 1000 * 1000 }, (_, i) => i % 1000);
    const norm = computeNorm(stats(values), { colormap: "viridis" });
    const s = new SampledPixels();
    expect(s.update(values, 1000, 1000, plot, 1, norm, lut32)).toBe(true);
    expect(s.pixels.length).toBe(301 * 201);
    expect(s.update(values, 1000, 1000, { ...plot }, 1, norm, lut32)).toBe(false);
    expect(s.update(values, 1000, 1000, plot, 2, norm, lut32)).toBe(true);
    const r2 = deviceRect(plot, 2);
    expect(r2).toEqual({ x0: 21, y0: 10, w: 600, h: 402 });
    expect(s.pixels.length).toBe(600 * 402);
    expect(s.recolors).toBe(2);
  });
});
