import { describe, expect, it } from "vitest";
import {
  colorbarTicks, computeNorm, formatValue, fromUnit, kernelStats, logTicks, lutIndex, niceTicks, stats, thinStep,
  tickIndices, toUnit,
} from "../src/scale";

const S = (xs: number[]) => stats(Float32Array.from(xs));

describe("colour range", () => {
  it("uses the finite min/max for sequential maps, ignoring NaN", () => {
    const n = computeNorm(S([NaN, 2, 5, 3]), { colormap: "blues" });
    expect([n.lo, n.hi, n.mode, n.degenerate]).toEqual([2, 5, "linear", false]);
    expect(S([NaN, 1, 2]).nan).toBe(1);
  });

  it("is symmetric around 0 for the diverging map, and keeps 0 in the middle with user bounds", () => {
    const n = computeNorm(S([-1, 4]), { colormap: "rdbu" });
    expect([n.lo, n.hi, n.mode]).toEqual([-4, 4, "diverging"]);
    expect(toUnit(0, n)).toBe(0.5);
    const m = computeNorm(S([-1, 4]), { colormap: "rdbu", vmin: -1, vmax: 8 });
    expect(toUnit(0, m)).toBe(0.5);
    expect(toUnit(-1, m)).toBe(0);
    expect(toUnit(8, m)).toBe(1);
    expect(toUnit(4, m)).toBe(0.75);
    expect(computeNorm(S([-1, 4]), { colormap: "rdbu", vmax: 2 })).toMatchObject({ lo: -2, hi: 2 });
  });

  it("handles degenerate ranges: constant data, vmin == vmax", () => {
    const n = computeNorm(S([3, 3, 3]), { colormap: "viridis" });
    expect(n.degenerate).toBe(true);
    expect(toUnit(3, n)).toBe(0.5);
    expect(lutIndex(3, n)).toBe(128);
    expect(colorbarTicks(n)).toEqual([3]);
    expect(computeNorm(S([0, 0]), { colormap: "rdbu" }).degenerate).toBe(true);
    expect(computeNorm(S([1, 2]), { colormap: "blues", vmin: 1, vmax: 1 }).degenerate).toBe(true);
    expect(computeNorm(S([NaN]), { colormap: "blues" })).toMatchObject({ degenerate: true, warning: "no finite values" });
  });

  it("treats ±inf like missing values and swaps reversed bounds", () => {
    expect(S([Infinity, 1, -Infinity, 2])).toMatchObject({ min: 1, max: 2, nan: 2 });
    expect(computeNorm(S([0, 1]), { colormap: "blues", vmin: 5, vmax: 1 })).toMatchObject({ lo: 1, hi: 5 });
  });

  it("maps a log scale through decades and falls back to linear without positive values", () => {
    const n = computeNorm(S([0, 0.01, 1, 100]), { colormap: "viridis", log: true });
    expect([n.lo, n.hi, n.mode]).toEqual([Math.fround(0.01), 100, "log"]);
    expect(toUnit(1, n)).toBeCloseTo(0.5, 6);
    expect(toUnit(0, n)).toBe(0);
    expect(logTicks(0.01, 100)).toEqual([0.01, 0.1, 1, 10, 100]);
    const bad = computeNorm(S([-2, -1]), { colormap: "viridis", log: true });
    expect(bad.mode).toBe("linear");
    expect(bad.warning).toMatch(/log scale needs positive/);
  });

  it("bins t into 256 LUT entries with t = 1 in the last, and inverts", () => {
    const n = computeNorm(S([0, 1]), { colormap: "blues" });
    expect(lutIndex(0, n)).toBe(0);
    expect(lutIndex(1, n)).toBe(255);
    expect(lutIndex(0.5, n)).toBe(128);
    expect(lutIndex(-3, n)).toBe(0);
    expect(lutIndex(7, n)).toBe(255);
    expect(fromUnit(0.25, n)).toBe(0.25);
    expect(Number.isNaN(toUnit(NaN, n))).toBe(true);
  });
});

describe("ticks and numbers", () => {
  it("chooses nice steps", () => {
    expect(niceTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(niceTicks(0.13, 0.97, 4)).toEqual([0.2, 0.4, 0.6, 0.8]);
    expect(niceTicks(-3, 3)).toEqual([-3, -2, -1, 0, 1, 2, 3]);
    expect(niceTicks(-3, 3, 2)).toEqual([-2, 0, 2]);
    expect(niceTicks(1000, 1000)).toEqual([1000]);
    expect(niceTicks(0, 0.3, 3)).toEqual([0, 0.1, 0.2, 0.3]);
    expect(niceTicks(0.02199, 0.9992, 2)).toEqual([0.2, 0.4, 0.6, 0.8]);
  });

  it("formats compactly", () => {
    expect(formatValue(0)).toBe("0");
    expect(formatValue(0.123456)).toBe("0.1235");
    expect(formatValue(-2)).toBe("−2");
    expect(formatValue(12345)).toBe("12350");
    expect(formatValue(123456)).toBe("1.23e5");
    expect(formatValue(0.0001234)).toBe("1.23e-4");
    expect(formatValue(NaN)).toBe("n/a");
  });

  it("thins labels with 1-2-5 steps so they never overlap", () => {
    expect(thinStep(20, 14)).toBe(1);
    expect(thinStep(7, 14)).toBe(2);
    expect(thinStep(1, 14)).toBe(20);
    expect(thinStep(0.05, 14)).toBe(500);
    expect(thinStep(0, 14)).toBe(Number.MAX_SAFE_INTEGER);
    expect(tickIndices(10, 5)).toEqual([0, 5]);
    expect(tickIndices(3, 0)).toEqual([0, 1, 2]);
    // Over a whole axis: shown labels are at least minPx apart.
    for (const n of [1, 7, 32, 1000, 10000]) {
      const px = 500 / n;
      const step = thinStep(px, 14);
      const idx = tickIndices(n, step);
      expect(idx.length).toBeLessThanOrEqual(Math.floor(500 / 14) + 1);
      if (idx.length > 1) expect((idx[1] - idx[0]) * px).toBeGreaterThanOrEqual(14);
    }
  });
});

describe("kernelStats", () => {
  const cases: number[][] = [[0, 1, 2], [-3, NaN, 2, Infinity], [NaN, NaN], [-1, -2], [5, 5]];
  // What widget.py's value_stats sends for these values (JSON: null for a missing min, max or minPositive).
  const fromKernel = (v: number[]) => {
    const finite = v.filter((x) => Number.isFinite(x));
    const pos = finite.filter((x) => x > 0);
    return { min: finite.length ? Math.min(...finite) : null, max: finite.length ? Math.max(...finite) : null,
      minPositive: pos.length ? Math.min(...pos) : null, finite: finite.length, nan: v.length - finite.length };
  };

  it("equals the statistics computed in the browser", () => {
    for (const v of cases) expect(kernelStats(fromKernel(v), v.length)).toEqual(stats(new Float32Array(v)));
  });

  it("is null when missing, malformed or about another number of cells", () => {
    const good = fromKernel([0, 1, 2]);
    expect(kernelStats(undefined, 3)).toBeNull();
    expect(kernelStats({}, 3)).toBeNull();
    expect(kernelStats(good, 4)).toBeNull();
    expect(kernelStats({ ...good, max: "2" }, 3)).toBeNull();
    expect(kernelStats({ ...good, min: 5 }, 3)).toBeNull();
  });
});
