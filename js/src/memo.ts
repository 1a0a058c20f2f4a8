// Frame caches: each stage of a paint (norm, cell pixels, layout, drawing) keeps its last result and the inputs
// it was computed from, and recomputes only when one of those inputs changed. A hover or a colour-map switch
// then redoes only the stages it touches.

/** Inputs compared one by one with Object.is: arrays and objects by identity, numbers and strings by value. */
export type Key = readonly unknown[];

export function sameKey(a: Key, b: Key): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

/** The last value computed, reused while the key stays the same. */
export class Memo<V> {
  private key: Key | null = null;
  private value: V | undefined;
  /** How many times `compute` ran (tests and the paint event report it). */
  computations = 0;

  get(key: Key, compute: () => V): V {
    if (this.key !== null && sameKey(this.key, key)) return this.value as V;
    this.value = compute();
    this.key = key;
    this.computations++;
    return this.value;
  }

  /** True when `get(key, …)` would reuse the cached value. */
  has(key: Key): boolean {
    return this.key !== null && sameKey(this.key, key);
  }

  clear(): void {
    this.key = null;
    this.value = undefined;
  }
}
