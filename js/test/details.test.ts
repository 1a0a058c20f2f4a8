import { describe, expect, it } from "vitest";
import { FIRST_VIEW, NOTICE_SLOT, detailIndexFor, parseDetailCells, watchLiveness } from "../src/details";

function cells(...flat: number[]): Uint8Array {
  const b = new Uint8Array(flat.length * 4);
  const v = new DataView(b.buffer);
  flat.forEach((f, k) => v.setInt32(k * 4, f, true));
  return b;
}

describe("precomputed detail views", () => {
  it("maps flat cell indices to stack slots in order", () => {
    const m = parseDetailCells(cells(7, 0, 12));
    expect(m.get(7)).toBe(FIRST_VIEW);
    expect(m.get(0)).toBe(FIRST_VIEW + 1);
    expect(m.get(12)).toBe(FIRST_VIEW + 2);
    expect(m.size).toBe(3);
  });

  it("reads a DataView at an offset and ignores what is not binary", () => {
    const b = new Uint8Array(12);
    new DataView(b.buffer).setInt32(4, 5, true);
    new DataView(b.buffer).setInt32(8, 9, true);
    expect([...parseDetailCells(new DataView(b.buffer, 4, 8)).keys()]).toEqual([5, 9]);
    expect(parseDetailCells(null).size).toBe(0);
    expect(parseDetailCells([1, 2]).size).toBe(0);
  });

  it("shows a precomputed view, the notice offline, and leaves other cells to a live kernel", () => {
    const m = parseDetailCells(cells(1 * 4 + 2));
    expect(detailIndexFor(m, 1, 2, 4, false)).toBe(FIRST_VIEW);
    expect(detailIndexFor(m, 1, 2, 4, true)).toBe(FIRST_VIEW);
    expect(detailIndexFor(m, 0, 0, 4, true)).toBe(NOTICE_SLOT);
    expect(detailIndexFor(m, 0, 0, 4, false)).toBeNull();
    expect(detailIndexFor(m, -1, -1, 4, true)).toBeNull();
  });
});

function fakeModel(kernel: unknown) {
  const state: Record<string, unknown> = { offline: false };
  const handlers: ((m: unknown) => void)[] = [];
  const sent: unknown[] = [];
  return {
    state, sent, handlers,
    get: (k: string) => state[k],
    set: (k: string, v: unknown) => { state[k] = v; },
    send: (c: unknown) => { sent.push(c); },
    on: (_n: string, cb: (m: unknown) => void) => { handlers.push(cb); },
    off: (_n: string, cb: (m: unknown) => void) => { handlers.splice(handlers.indexOf(cb), 1); },
    widget_manager: { kernel },
  };
}

describe("liveness", () => {
  it("is offline at once without a kernel", () => {
    const m = fakeModel(undefined);
    const stop = watchLiveness(m);
    expect(m.state.offline).toBe(true);
    expect(m.sent).toEqual([]);
    stop();
    expect(m.handlers.length).toBe(0);
  });

  it("says hello to a kernel and stays live when it answers", () => {
    const m = fakeModel({});
    const stop = watchLiveness(m);
    expect(m.sent).toEqual([{ type: "hello" }]);
    m.handlers[0]({ type: "live" });
    expect(m.state.offline).toBe(false);
    stop();
  });

  it("an answer after the page counted itself offline turns it live again", () => {
    const m = fakeModel(undefined);
    watchLiveness(m);
    expect(m.state.offline).toBe(true);
    m.handlers[0]({ type: "live" });
    expect(m.state.offline).toBe(false);
  });
});
