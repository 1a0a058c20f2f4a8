// The matrix crosses the wire as raw little-endian float32 bytes plus a [rows, cols] shape. What arrives
// depends on the path: a DataView from the live kernel (ipywidgets), an ArrayBuffer or DataView from saved
// widget state (html-manager decodes base64), sometimes a view into a larger buffer. Respect byteOffset.

export type Shape = [number, number];

export interface BinaryLike {
  buffer: ArrayBufferLike;
  byteOffset: number;
  byteLength: number;
}

function isView(x: unknown): x is BinaryLike {
  return ArrayBuffer.isView(x as ArrayBufferView);
}

/** Normalise a shape trait ([r, c], possibly strings or a tuple-like) to two non-negative integers. */
export function parseShape(raw: unknown): Shape {
  if (!Array.isArray(raw) || raw.length !== 2) return [0, 0];
  const r = Math.floor(Number(raw[0]));
  const c = Math.floor(Number(raw[1]));
  return [Number.isFinite(r) && r > 0 ? r : 0, Number.isFinite(c) && c > 0 ? c : 0];
}

/**
 * Float32 view of `raw` holding exactly rows·cols values. Zero-copy when the offset is 4-byte aligned,
 * a copy otherwise (Float32Array cannot start at an unaligned offset). Throws with a readable message when
 * the byte count does not match the shape.
 */
export function toFloat32(raw: unknown, shape: Shape): Float32Array {
  const n = shape[0] * shape[1];
  let bytes: BinaryLike;
  if (raw instanceof ArrayBuffer || (typeof SharedArrayBuffer !== "undefined" && raw instanceof SharedArrayBuffer)) {
    bytes = { buffer: raw, byteOffset: 0, byteLength: raw.byteLength };
  } else if (isView(raw)) {
    bytes = raw;
  } else if (raw == null) {
    if (n === 0) return new Float32Array(0);
    throw new Error(`no matrix data for shape ${shape[0]}×${shape[1]}`);
  } else {
    throw new Error(`matrix data is a ${Object.prototype.toString.call(raw)}, expected binary bytes`);
  }
  if (bytes.byteLength !== n * 4) {
    throw new Error(
      `matrix data has ${bytes.byteLength} bytes but shape ${shape[0]}×${shape[1]} needs ${n * 4} (float32)`,
    );
  }
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  const copy = new Uint8Array(n * 4);
  copy.set(new Uint8Array(bytes.buffer, bytes.byteOffset, n * 4));
  return new Float32Array(copy.buffer);
}
