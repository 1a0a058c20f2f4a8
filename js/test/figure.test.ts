import { describe, expect, it } from "vitest";
import { type FigureInput, LIGHT_THEME, axisLabel, colorbarTitle, layoutFigure } from "../src/figure";
import { computeNorm, stats } from "../src/scale";
import { escapeXml, toSvg } from "../src/svg";

const measure = (t: string, font: string) => t.length * 0.6 * Number(/(\d+)px/.exec(font)?.[1] ?? 11);

function input(rows: number, cols: number, extra: Partial<FigureInput> = {}): FigureInput {
  const v = new Float32Array(rows * cols).map((_, i) => i);
  return {
    width: 700, height: 0, rows, cols, rowLabel: (i) => `L${i}`, colLabel: (i) => `tok${i}`,
    title: "t", rowTitle: "layer", colTitle: "token", metric: "KL", norm: computeNorm(stats(v), { colormap: "blues" }),
    hasNaN: false, notes: [], theme: LIGHT_THEME, measure, ...extra,
  };
}

const texts = (f: ReturnType<typeof layoutFigure>) =>
  f.items.flatMap((it) => (it.kind === "text" ? [it.text] : []));

describe("figure layout", () => {
  it("says on the colour bar when the scale is logarithmic", () => {
    const v = new Float32Array([0.01, 0.1, 1, 10]);
    const logNorm = computeNorm(stats(v), { colormap: "blues", log: true });
    expect(colorbarTitle("KL", logNorm)).toBe("KL · log scale");
    expect(colorbarTitle("", logNorm)).toBe("log scale");
    expect(colorbarTitle("KL", computeNorm(stats(v), { colormap: "blues" }))).toBe("KL");
    expect(texts(layoutFigure(input(2, 2, { norm: logNorm })))).toContain("KL · log scale");
    expect(texts(layoutFigure(input(2, 2)))).toContain("KL");
  });

  it("fits the plot, colour bar and labels inside the figure", () => {
    for (const [r, c] of [[1, 1], [1, 500], [500, 1], [8, 5], [1000, 1000], [100, 10000]]) {
      const f = layoutFigure(input(r, c));
      expect(f.plot.x).toBeGreaterThan(0);
      expect(f.plot.x + f.plot.w).toBeLessThan(f.colorbar.x);
      expect(f.colorbar.x + f.colorbar.w).toBeLessThan(f.width);
      expect(f.plot.y + f.plot.h).toBeLessThan(f.height);
      expect(f.rowTicks.length).toBeLessThanOrEqual(Math.ceil(f.plot.h / 14) + 1);
      expect(f.colTicks.length).toBeGreaterThanOrEqual(1);
    }
  });

  it("shows every label when there is room, and thins crowded axes", () => {
    const small = layoutFigure(input(8, 5));
    expect(small.rowTicks).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(small.colTicks).toEqual([0, 1, 2, 3, 4]);
    expect(small.colRotated).toBe(false);
    const big = layoutFigure(input(1000, 1000));
    expect(big.rowTicks.length).toBeLessThan(60);
    expect(big.rowTicks[1] - big.rowTicks[0]).toBeGreaterThan(1);
  });

  it("rotates crowded long column labels", () => {
    const f = layoutFigure(input(4, 40, { colLabel: (i) => `a long token ${i}` }));
    expect(f.colRotated).toBe(true);
    expect(f.items.some((it) => it.kind === "text" && it.angle === -45)).toBe(true);
  });

  it("keeps a 10,000-character label from eating the plot", () => {
    const f = layoutFigure(input(3, 3, { rowLabel: () => "x".repeat(10000), colLabel: () => "<script>" + "y".repeat(10000) }));
    expect(f.plot.w).toBeGreaterThan(300);
    for (const t of texts(f)) expect(t.length).toBeLessThanOrEqual(120);
    expect(texts(f).some((t) => t.startsWith("<script>") && t.endsWith("…"))).toBe(true);
  });

  it("draws the NaN hatch under the cells and an n/a swatch", () => {
    const f = layoutFigure(input(3, 3, { hasNaN: true }));
    const kinds = f.items.map((it) => it.kind);
    expect(kinds.indexOf("hatch")).toBeLessThan(kinds.indexOf("image"));
    expect(texts(f)).toContain("n/a");
  });

  it("makes control characters visible in axis labels", () => {
    expect(axisLabel("a\nb\tc\u0001", 10)).toBe("a↵b⇥c");
  });
});

describe("SVG export", () => {
  it("escapes user text and produces well-formed markup", () => {
    const f = layoutFigure(input(2, 2, { title: `<script>alert("x")</script> & 'q'`, rowLabel: () => "<b>r</b>" }));
    const svg = toSvg(f.items, f.width, f.height, { cells: "data:image/png;base64,AAAA", colorbar: "data:," },
      { background: "#eee", line: "#999" });
    expect(svg).not.toContain("<script>");
    expect(svg).not.toContain("<b>");
    expect(svg).toContain("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &apos;q&apos;");
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg.trim().endsWith("</svg>")).toBe(true);
    expect(escapeXml("a\u0000b")).toBe("ab");
  });
});
