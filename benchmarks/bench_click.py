"""Click → updated detail latency in the explorer on the demo model, kernel side (issue 7 targets: cached < 300 ms,
fresh drill-down < 2 s on CPU). A "click" sets the Heatmap's selected_row/selected_col traits exactly as the front
end does; the time runs until the detail area's widgets are rebuilt. "cached": results from the explorer's cache,
clicked in a cycle longer than its kept views (VIEW_CACHE_SIZE), so each view is built again; "kept": one of the
last cells shown, whose view the explorer kept (nothing built); "precomputed": a view in the page's Stack.

    python benchmarks/bench_click.py [--clicks 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import heatwidget as hw


def click(ex: hw.Explorer, r: int, c: int) -> float:
    t0 = time.perf_counter()
    with ex.heatmap.hold_trait_notifications():
        ex.heatmap.selected_row, ex.heatmap.selected_col = r, c
    ex.wait(120)
    assert ex.last_detail is not None and (ex.last_detail.row, ex.last_detail.col) == (r, c)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--clicks", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(2)
    lm = hw.demo_model()
    q = next(x for x in hw.demo_questions(attribute="capital") if x["mult"] >= 16)
    results = {}
    facts = [x for x in hw.demo_questions(attribute="capital") if x["mult"] >= 8][:32]
    matrices = {
        "ablation_kl": hw.ablation_kl(lm, q["question"], max_new_tokens=5),
        "knockout_js": hw.knockout_js(lm, [x["prompt"] for x in facts], [x["subject"] for x in facts]),
    }
    for name, m in matrices.items():
        ex = hw.explore(m)
        cells = [(r, c) for r in range(m.shape[0]) for c in range(m.shape[1])][: args.clicks]
        fresh = [click(ex, r, c) for r, c in cells]
        cached = [click(ex, r, c) for r, c in cells]
        recent = [click(ex, r, c) for r, c in cells[-4:-1] + cells[-4:-1]]  # kept views: never the shown cell
        ex.precompute(cells)  # views kept in the page: a click only switches the shown view
        kept = [click(ex, r, c) for r, c in cells]
        results[name] = (fresh, cached, recent, kept)
        ex.close()
    print(
        f"{'analysis':<14} {'fresh median':>13} {'fresh max':>10} {'cached median':>14} {'cached max':>11} "
        f"{'kept median':>12} {'precomputed median':>19}  (ms)"
    )
    ok = True
    for name, (fresh, cached, recent, kept) in results.items():
        fm, fx = statistics.median(fresh) * 1e3, max(fresh) * 1e3
        cm, cx = statistics.median(cached) * 1e3, max(cached) * 1e3
        ok &= fx < 2000 and cx < 300
        print(
            f"{name:<14} {fm:13.0f} {fx:10.0f} {cm:14.1f} {cx:11.1f} {statistics.median(recent) * 1e3:12.1f} "
            f"{statistics.median(kept) * 1e3:19.1f}"
        )
    print(f"targets (fresh < 2000 ms, cached < 300 ms): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
