// Precomputed drill-downs (hw.explore(..., precompute=True)): the explorer keeps one detail view per
// precomputed cell in an ipywidgets Stack whose `selected_index` is jslink-ed to the heatmap's `detail_index`.
// A click sets `detail_index` here, in the page, so a saved report switches views without a kernel.
//
// Stack children: 0 = the live detail (filled by the kernel), 1 = the "not precomputed" notice, 2 + k = the
// view of the k-th cell listed in `detail_cells` (int32 little-endian flat indices, row * cols + col).

export const LIVE_SLOT = 0;
export const NOTICE_SLOT = 1;
export const FIRST_VIEW = 2;

/** flat cell index -> stack index of its precomputed view. */
export function parseDetailCells(raw: unknown): Map<number, number> {
  const out = new Map<number, number>();
  let bytes: Uint8Array | null = null;
  if (raw instanceof ArrayBuffer) bytes = new Uint8Array(raw);
  else if (ArrayBuffer.isView(raw)) bytes = new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength);
  if (!bytes) return out;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let k = 0; k * 4 + 4 <= bytes.byteLength; k++) out.set(view.getInt32(k * 4, true), FIRST_VIEW + k);
  return out;
}

/**
 * The stack index to show for a click on (row, col) of a matrix with `cols` columns, or null to leave the view
 * to the kernel: a live kernel computes cells that were not precomputed; offline there is only the notice.
 */
export function detailIndexFor(cells: Map<number, number>, row: number, col: number, cols: number,
                               offline: boolean): number | null {
  if (row < 0 || col < 0) return null;
  const k = cells.get(row * cols + col);
  if (k !== undefined) return k;
  return offline ? NOTICE_SLOT : null;
}

interface LivenessModel {
  get(name: string): unknown;
  set(name: string, value: unknown): void;
  send(content: unknown): void;
  on(name: string, cb: (...args: unknown[]) => void): void;
  off(name: string, cb: (...args: unknown[]) => void): void;
  widget_manager: unknown;
}

// How long a kernel may take to answer the hello before the page counts as offline (a busy kernel answers
// later; its answer then turns the controls back on).
const HELLO_TIMEOUT_MS = 3000;

/**
 * Tell whether a kernel is behind this model: send a hello that the explorer's kernel side answers with
 * {type: "live"}. Without a kernel (html-manager page, or a saved state restored without one) `offline` is set
 * in the page, which disables the explorer's kernel-only buttons (dlink-ed to it) and shows the notice for cells
 * that have no precomputed view. Returns a cleanup function.
 */
export function watchLiveness(model: LivenessModel): () => void {
  let answered = false;
  const onMsg = (msg: unknown) => {
    if ((msg as { type?: string } | null)?.type !== "live") return;
    answered = true;
    if (model.get("offline")) model.set("offline", false);
  };
  model.on("msg:custom", onMsg);
  const setOffline = () => {
    if (!answered && !model.get("offline")) model.set("offline", true);
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const manager = model.widget_manager as { kernel?: unknown } | null;
  if (!manager?.kernel) setOffline(); // the html-manager of an exported page has no kernel at all
  else {
    model.send({ type: "hello" });
    timer = setTimeout(setOffline, HELLO_TIMEOUT_MS);
  }
  return () => {
    if (timer !== undefined) clearTimeout(timer);
    model.off("msg:custom", onMsg);
  };
}
