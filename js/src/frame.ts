// What a paint may reuse from the previous one: the colour range (norm) and the figure layout. Both are keyed on
// exactly what they depend on, so a colour-map switch within the same kind of map (sequential → sequential) keeps
// the norm object and therefore the layout, while a new width, new labels or a log switch lay out again.
import { isDiverging } from "./colormaps";
import type { Figure, Theme } from "./figure";
import { Memo } from "./memo";
import { type Norm, type NormOptions, type Stats, computeNorm } from "./scale";

/** Everything besides the norm that the layout reads (labels by identity: a new list from the kernel is new). */
export interface LayoutInputs {
  width: number;
  height: unknown;
  /** The drawn matrix (rows, cols, pooling, NaN): a new object for new data. */
  data: object;
  rowLabels: unknown;
  colLabels: unknown;
  title: unknown;
  rowTitle: unknown;
  colTitle: unknown;
  metric: unknown;
  notes: readonly string[];
  theme: Theme;
}

export class FrameCache {
  private readonly norms = new Memo<Norm>();
  private readonly figures = new Memo<Figure>();

  /** Layout computations so far (the widget reports it; tests check what triggers one). */
  get layouts(): number {
    return this.figures.computations;
  }

  /** The colour range; the colour map matters only through its kind (diverging maps centre on 0). */
  norm(stats: Stats, opts: NormOptions): Norm {
    const key = [stats, isDiverging(opts.colormap), opts.vmin ?? null, opts.vmax ?? null, Boolean(opts.log)];
    return this.norms.get(key, () => computeNorm(stats, opts));
  }

  figure(inputs: LayoutInputs, norm: Norm, layout: () => Figure): Figure {
    const i = inputs;
    const key = [i.width, i.height, i.data, i.rowLabels, i.colLabels, i.title, i.rowTitle, i.colTitle, i.metric,
      i.notes.join("\n"), i.theme, norm];
    return this.figures.get(key, layout);
  }
}
