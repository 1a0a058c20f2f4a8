import { describe, expect, it } from "vitest";
import { autoPlotHeight, cellRect, hitTest, moveCursor, truncateLabel } from "../src/layout";

describe("hit testing", () => {
  const plot = { x: 50, y: 20, w: 300, h: 100 };

  it("maps pixels to cells and rejects points outside", () => {
    expect(hitTest(plot, 10, 30, 50, 20)).toEqual({ row: 0, col: 0 });
    expect(hitTest(plot, 10, 30, 349.99, 119.99)).toEqual({ row: 9, col: 29 });
    expect(hitTest(plot, 10, 30, 350, 60)).toBeNull();
    expect(hitTest(plot, 10, 30, 49.9, 60)).toBeNull();
    expect(hitTest(plot, 10, 30, 100, 19)).toBeNull();
    expect(hitTest(plot, 0, 30, 100, 50)).toBeNull();
  });

  it("agrees with cell rectangles for every cell centre, and neighbours share edges", () => {
    const [R, C] = [7, 13];
    for (let r = 0; r < R; r++)
      for (let c = 0; c < C; c++) {
        const rc = cellRect(plot, R, C, r, c);
        expect(hitTest(plot, R, C, rc.x + rc.w / 2, rc.y + rc.h / 2)).toEqual({ row: r, col: c });
        if (c + 1 < C) expect(cellRect(plot, R, C, r, c + 1).x).toBe(rc.x + rc.w);
      }
  });

  it("works for 1×N, N×1 and a million cells in O(1)", () => {
    expect(hitTest(plot, 1, 10000, 349.99, 119)).toEqual({ row: 0, col: 9999 });
    expect(hitTest(plot, 10000, 1, 60, 21)).toEqual({ row: 100, col: 0 });
    const t = performance.now();
    for (let i = 0; i < 100000; i++) hitTest(plot, 1000, 1000, 50 + (i % 300), 20 + (i % 100));
    expect(performance.now() - t).toBeLessThan(1000); // ~5 ms; loose so a loaded CI box cannot flake it
  });
});

describe("layout helpers", () => {
  it("sizes plots: square cells within a floor and a ceiling", () => {
    expect(autoPlotHeight(3, 8, 800)).toBe(300);
    expect(autoPlotHeight(1, 10000, 800)).toBe(60);
    expect(autoPlotHeight(3, 32, 800)).toBe(100);
    expect(autoPlotHeight(1000, 1000, 800)).toBe(520);
    expect(autoPlotHeight(100, 10000, 800)).toBe(240);
  });

  it("truncates long labels with an ellipsis, by code point", () => {
    expect(truncateLabel("short", 10)).toBe("short");
    expect(truncateLabel("x".repeat(10000), 24)).toBe(`${"x".repeat(23)}…`);
    expect(truncateLabel("😀".repeat(30), 5)).toBe("😀😀😀😀…");
    expect(truncateLabel("<script>alert(1)</script>", 10)).toBe("<script>a…");
  });

  it("moves the keyboard cursor within bounds", () => {
    expect(moveCursor({ row: 0, col: 0 }, -1, 0, 5, 5)).toEqual({ row: 0, col: 0 });
    expect(moveCursor({ row: 4, col: 2 }, 10, 10, 5, 5)).toEqual({ row: 4, col: 4 });
    expect(moveCursor({ row: 2, col: 2 }, 1, -1, 5, 5)).toEqual({ row: 3, col: 1 });
  });
});
