// The widget's canvas figure and the kernel's SVG figure (heatwidget/_figure.py) lay out alike: for each matrix in
// figure_layout_cases.json (written by tests/figure_layout_cases.py from the Python figure), figure.ts must give the
// same texts — tick labels, axis and colour-bar titles, colour-bar tick labels, notes — at the same places, and the
// same colour range. Text is measured as the kernel estimates it (0.6 × font size per character) on both sides.
import { describe, expect, it } from "vitest";
import { LIGHT_THEME, layoutFigure } from "../src/figure";
import { type Stats, computeNorm } from "../src/scale";
import fixture from "./figure_layout_cases.json";

interface Text {
  text: string;
  x: number;
  y: number;
  size: number;
  align: string;
  baseline: string;
  angle: number;
}

interface Case {
  name: string;
  width: number;
  colormap: string;
  log: boolean;
  rows: number;
  cols: number;
  rowLabels: string[];
  colLabels: string[];
  title: string;
  rowTitle: string;
  colTitle: string;
  metric: string;
  notes: string[];
  stats: Omit<Stats, "minPositive"> & { minPositive: number | null };
  hasNaN: boolean;
  expected: { width: number; height: number; norm: { lo: number; hi: number; mode: string }; texts: Text[] };
}

const fontSize = (font: string) => Number(/(\d+)px/.exec(font)?.[1]);
const kernelEstimate = (text: string, font: string) => Array.from(text).length * fontSize(font) * 0.6;

function layout(c: Case) {
  const stats: Stats = { ...c.stats, minPositive: c.stats.minPositive ?? Infinity };
  const norm = computeNorm(stats, { colormap: c.colormap, log: c.log });
  const fig = layoutFigure({
    width: c.width, height: 0, rows: c.rows, cols: c.cols, rowLabel: (i) => c.rowLabels[i],
    colLabel: (i) => c.colLabels[i], title: c.title, rowTitle: c.rowTitle, colTitle: c.colTitle, metric: c.metric,
    norm, hasNaN: c.hasNaN, notes: c.notes, theme: LIGHT_THEME, measure: kernelEstimate,
  });
  const texts: Text[] = fig.items.flatMap((it) =>
    it.kind === "text"
      ? [{ text: it.text, x: it.x, y: it.y, size: fontSize(it.font), align: it.align, baseline: it.baseline,
           angle: it.angle }]
      : []);
  return { fig, norm, texts };
}

describe("canvas figure and SVG figure lay out alike", () => {
  const cases = (fixture as { cases: Case[] }).cases;

  it("covers the cases it names", () => {
    expect(cases.map((c) => c.name)).toEqual(expect.arrayContaining(
      ["small", "large, thinned", "log scale", "NaN cells", "long labels", "negative, diverging"]));
  });

  for (const c of cases) {
    it(c.name, () => {
      const { fig, norm, texts } = layout(c);
      expect({ lo: norm.lo, hi: norm.hi, mode: norm.mode }).toEqual(c.expected.norm);
      // Same texts in the same order (title, notes, row labels, row title, column labels, column title,
      // colour-bar ticks, n/a, colour-bar title), same size, anchor, baseline and rotation.
      const what = (t: Text) => ({ text: t.text, size: t.size, align: t.align, baseline: t.baseline, angle: t.angle });
      expect(texts.map(what)).toEqual(c.expected.texts.map(what));
      // Same places: the SVG writes coordinates with 2 decimals.
      texts.forEach((t, k) => {
        expect(Math.abs(t.x - c.expected.texts[k].x), `x of ${JSON.stringify(t.text)}`).toBeLessThan(0.006);
        expect(Math.abs(t.y - c.expected.texts[k].y), `y of ${JSON.stringify(t.text)}`).toBeLessThan(0.006);
      });
      expect([fig.width, fig.height]).toEqual([c.expected.width, c.expected.height]);
    });
  }
});
