import { describe, expect, it } from "vitest";
import { parseShape, toFloat32 } from "../src/decode";

function bytesOf(values: number[], offset: number): ArrayBuffer {
  const buf = new ArrayBuffer(offset + values.length * 4 + 3);
  const dv = new DataView(buf);
  values.forEach((v, i) => dv.setFloat32(offset + i * 4, v, true));
  return buf;
}

describe("byte decoding", () => {
  const vals = [1.5, -2, Number.NaN, 3.25, 0, 1e-7];

  it("reads a whole ArrayBuffer", () => {
    const buf = bytesOf(vals, 0).slice(0, 24);
    expect(Array.from(toFloat32(buf, [2, 3]))).toEqual([1.5, -2, NaN, 3.25, 0, Math.fround(1e-7)]);
  });

  it("respects a DataView's byteOffset (aligned: zero-copy view)", () => {
    const buf = bytesOf(vals, 8);
    const dv = new DataView(buf, 8, 24);
    const out = toFloat32(dv, [3, 2]);
    expect(out.buffer).toBe(buf);
    expect(out.byteOffset).toBe(8);
    expect(Array.from(out)).toEqual([1.5, -2, NaN, 3.25, 0, Math.fround(1e-7)]);
  });

  it("copies when the offset is not 4-byte aligned", () => {
    const buf = bytesOf(vals, 5);
    const out = toFloat32(new DataView(buf, 5, 24), [1, 6]);
    expect(out.byteOffset).toBe(0);
    expect(Array.from(out)).toEqual([1.5, -2, NaN, 3.25, 0, Math.fround(1e-7)]);
  });

  it("accepts typed-array views (Uint8Array slice of a larger buffer)", () => {
    const buf = bytesOf(vals, 12);
    expect(Array.from(toFloat32(new Uint8Array(buf, 12, 24), [6, 1]))[3]).toBe(3.25);
  });

  it("refuses a byte count that does not match the shape, and non-binary data", () => {
    expect(() => toFloat32(new ArrayBuffer(20), [2, 3])).toThrow(/20 bytes but shape 2×3 needs 24/);
    expect(() => toFloat32([1, 2, 3], [1, 3])).toThrow(/expected binary/);
    expect(() => toFloat32(null, [1, 1])).toThrow(/no matrix data/);
    expect(toFloat32(null, [0, 0]).length).toBe(0);
  });

  it("parses shapes defensively", () => {
    expect(parseShape([3, 4])).toEqual([3, 4]);
    expect(parseShape(["3", 4.7])).toEqual([3, 4]);
    expect(parseShape([-1, 2])).toEqual([0, 2]);
    expect(parseShape(undefined)).toEqual([0, 0]);
    expect(parseShape([1, 2, 3])).toEqual([0, 0]);
  });
});
