import { describe, expect, it } from "vitest";
import { buildLut, lutAsUint32 } from "../src/colormaps";
import { paintCells, poolFactors, poolMatrix } from "../src/raster";
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
