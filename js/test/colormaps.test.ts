import { describe, expect, it } from "vitest";
import golden from "./lut_golden.json";
import { COLORMAPS, buildLut, cssColor, isDiverging, lutAsUint32, lutHex, parseColormap } from "../src/colormaps";

describe("colour maps", () => {
  it("has the four maps the design names", () => {
    expect(Object.keys(COLORMAPS).sort()).toEqual(["blues", "rdbu", "viridis", "ylorrd"]);
    expect(isDiverging("rdbu")).toBe(true);
    expect(isDiverging("RdBu_r")).toBe(true);
    expect(isDiverging("viridis")).toBe(false);
  });

  it("expands every map (and its reversal) to exactly the Python LUT (golden table)", () => {
    const table = golden as Record<string, string[]>;
    expect(Object.keys(table).length).toBe(8);
    for (const [name, hex] of Object.entries(table)) expect(lutHex(buildLut(name))).toEqual(hex);
  });

  it("starts and ends on the anchor colours, opaque", () => {
    for (const [name, spec] of Object.entries(COLORMAPS)) {
      const hex = lutHex(buildLut(name));
      expect(hex[0]).toBe(spec.colors[0]);
      expect(hex[255]).toBe(spec.colors[spec.colors.length - 1]);
      const lut = buildLut(name);
      for (let i = 0; i < 256; i++) expect(lut[i * 4 + 3]).toBe(255);
    }
  });

  it("centres rdbu on white and puts negatives in blue, positives in red", () => {
    const lut = buildLut("rdbu");
    const mid = Array.from(lut.slice(128 * 4, 128 * 4 + 3));
    for (const ch of mid) expect(ch).toBeGreaterThan(240);
    expect(lut[2]).toBeGreaterThan(lut[0]); // low end: blue > red
    expect(lut[255 * 4]).toBeGreaterThan(lut[255 * 4 + 2]); // high end: red > blue
  });

  it("reverses with _r and falls back to blues for unknown names", () => {
    expect(lutHex(buildLut("viridis_r"))).toEqual([...lutHex(buildLut("viridis"))].reverse());
    expect(parseColormap("nope")).toEqual({ base: "blues", reversed: false, known: false });
    expect(parseColormap("YlOrRd")).toEqual({ base: "ylorrd", reversed: false, known: true });
  });

  it("packs the LUT into 32-bit words that write back the same bytes", () => {
    const lut = buildLut("viridis");
    const words = lutAsUint32(lut);
    const back = new Uint8ClampedArray(words.buffer);
    expect(Array.from(back)).toEqual(Array.from(lut));
    expect(cssColor(lut, 0)).toBe("rgb(68, 1, 84)");
    expect(cssColor(lut, 999)).toBe("rgb(253, 231, 37)");
  });
});
