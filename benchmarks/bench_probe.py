"""Benchmark `hw.probe_auc` (all L×P probes fitted as one batched solve) against a loop of sklearn fits.

    python benchmarks/bench_probe.py                          # demo-model features (resid), or synthetic if absent
    python benchmarks/bench_probe.py --site mlp_in --json
    python benchmarks/bench_probe.py --synthetic 1000 32 15 512 --device cuda
    python benchmarks/bench_probe.py --solver newton --converged --threads 2
    python benchmarks/bench_probe.py --guard                  # regression guard: resid and mlp_in, exit 1 on a miss

Same features, same split (probe_auc's meta["train_idx"/"test_idx"], which are sklearn's train_test_split):
  batched: hw.probe_auc(X, y, solver=)                                 (one run, reading features included;
           solver "auto" = whitened L-BFGS on CPU, damped Newton on a GPU)
  sklearn: for every (layer, position): LogisticRegression(C=1).fit(X_train, y_train), roc_auc_score on X_test
Reports the time ratio and max |ΔAUC| over cells. sklearn runs with its defaults (lbfgs, max_iter=100, tol=1e-4);
cells where it stops at max_iter are counted, and `--converged` adds sklearn run to convergence, two ways:
newton-cholesky at tol=1e-8 (the optimum both approach) and lbfgs with max_iter=10000 (what its ConvergenceWarning
suggests); the faster of the two is the fair yardstick for time at equal answers. Threads: both sides get the same
count (--threads; default: torch's current setting).

--guard (implies --converged; sites resid and mlp_in of the demo model unless --site names others) holds the batched
probes to >= 2x sklearn's faster converged configuration at max |ΔAUC| <= 0.002 against its optimum (--min-speedup,
--max-dauc); it prints every site's ratio and exits 1 with a one-line reason when a site misses either target.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


GUARD_SITES = ("resid", "mlp_in")
GUARD_MIN_SPEEDUP = 2.0  # batched probes vs sklearn's faster converged configuration, same threads
GUARD_MAX_DAUC = 0.002  # max |ΔAUC| over cells vs sklearn's converged optimum


def demo_features(sites: list[str], n_questions: int | None) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """(features, labels, info) for each site; the questions are answered once for all of them."""
    import heatwidget as hw

    lm = hw.demo_model()
    qs = hw.demo_questions()
    if n_questions:
        qs = qs[:n_questions]
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ans = hw.answer(lm, qs, required_positions=hw.PAPER_POSITIONS, batch_size=64)
    t_answer = time.perf_counter() - t
    for site in sites:
        t = time.perf_counter()
        acts = hw.collect(lm, ans, site=site, batch_size=64)
        t_collect = time.perf_counter() - t
        info = dict(
            source="demo model",
            site=site,
            n_questions=len(qs),
            n_kept=len(ans),
            n_correct=int(ans.labels.sum()),
            answer_seconds=round(t_answer, 2),
            collect_seconds=round(t_collect, 2),
        )
        yield np.asarray(acts.values), acts.labels, info


def synthetic_features(n: int, L: int, P: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Activation-like features: per-cell offsets, log-normal feature scales with a few outlier dimensions, and
    a label signal whose strength varies across cells (so the AUCs spread over 0.5..1)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    X = np.empty((n, L, P, d), dtype=np.float32)
    for i in range(L):
        scale = np.exp(rng.normal(size=(P, d)))
        scale[:, :2] *= 20
        signal = rng.normal(size=(P, d)) * rng.uniform(0, 0.5, size=(P, 1)) * scale
        X[:, i] = rng.normal(size=(n, P, d)) * scale + rng.normal(size=(P, d)) + (2 * y - 1)[:, None, None] * signal
    return X, y, dict(source="synthetic", n=n, layers=L, positions=P, d=d)


def sklearn_loop(
    X: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, dtype: type, **kw: Any
) -> tuple[np.ndarray, float, int]:
    """One LogisticRegression(C=1, **kw) per cell: (AUCs, seconds, fits that stopped at max_iter)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    _, L, P, _ = X.shape
    aucs = np.empty((L, P))
    at_max = 0
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter: counted instead
        for i in range(L):
            for j in range(P):
                clf = LogisticRegression(C=1.0, **kw).fit(X[tr, i, j].astype(dtype, copy=False), y[tr])
                aucs[i, j] = roc_auc_score(y[te], clf.decision_function(X[te, i, j].astype(dtype, copy=False)))
                at_max += int(clf.n_iter_[0] >= clf.max_iter)
    return aucs, time.perf_counter() - t, at_max


def run_benchmark(X: np.ndarray, y: np.ndarray, info: dict, args: argparse.Namespace, threads: int) -> dict:
    """Time the batched probes and sklearn's loop(s) on one set of features; the report as a dict."""
    import torch

    import heatwidget as hw

    n, L, P, d = X.shape
    t = time.perf_counter()
    m = hw.probe_auc(X, y, seed=args.seed, device=args.device, solver=args.solver)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t_batched = time.perf_counter() - t
    tr, te = m.meta["train_idx"], m.meta["test_idx"]
    ref, t_sklearn, at_max = sklearn_loop(X, y, tr, te, X.dtype.type)  # sklearn's defaults, features as they are

    diff = np.abs(m.values - ref)
    out = dict(
        **info,
        shape=[n, L, P, d],
        cells=L * P,
        n_train=len(tr),
        n_test=len(te),
        device=args.device,
        threads=threads,
        batched_seconds=round(t_batched, 3),
        sklearn_seconds=round(t_sklearn, 3),
        speedup=round(t_sklearn / t_batched, 2),
        max_abs_dauc=float(diff.max()),
        mean_abs_dauc=float(diff.mean()),
        sklearn_cells_at_max_iter=at_max,
        iterations_max=m.meta["solver"]["n_iter_max"],
        solver=m.meta["solver"]["method"],
        auc_range=[float(m.values.min()), float(m.values.max())],
    )
    if args.converged:
        # The same objective solved to convergence, two ways (the faster one is the fair yardstick): sklearn's
        # exact solver, and its default lbfgs given the iterations its ConvergenceWarning asks for.
        exact: dict[str, float] = {}
        conv = None
        for name, kw in (
            ("newton-cholesky", dict(solver="newton-cholesky", tol=1e-8, max_iter=1000)),
            ("lbfgs, max_iter=10000", dict(max_iter=10_000)),
        ):
            aucs, exact[name], _ = sklearn_loop(X, y, tr, te, np.float64, **kw)
            if conv is None:
                conv = aucs  # newton-cholesky's: the optimum itself
        fastest = min(exact, key=exact.get)
        out["max_abs_dauc_vs_converged_sklearn"] = float(np.abs(m.values - conv).max())
        out["max_abs_dauc_sklearn_default_vs_converged"] = float(np.abs(ref - conv).max())
        out["sklearn_converged_seconds"] = {k: round(v, 3) for k, v in exact.items()}
        out["sklearn_converged_fastest"] = fastest
        out["speedup_vs_converged"] = round(exact[fastest] / t_batched, 2)
    return out


def print_report(out: dict) -> None:
    n, L, P, d = out["shape"]
    print(
        f"features: {out['source']}{' ' + out['site'] if 'site' in out else ''} {n}×{L}×{P}×{d} "
        f"({out['cells']} cells, {out['n_train']} train / {out['n_test']} test), "
        f"device {out['device']}, {out['threads']} thread(s)"
    )
    print(
        f"batched probe_auc : {out['batched_seconds']:8.2f} s   ({out['solver']}, ≤{out['iterations_max']} iterations)"
    )
    print(
        f"sklearn loop      : {out['sklearn_seconds']:8.2f} s   ({out['sklearn_cells_at_max_iter']} of "
        f"{out['cells']} fits stopped at max_iter=100)"
    )
    print(f"speed-up          : {out['speedup']:8.2f}×")
    print(f"max |ΔAUC|        : {out['max_abs_dauc']:.4f}   (mean {out['mean_abs_dauc']:.5f})")
    if "speedup_vs_converged" in out:
        for name, sec in out["sklearn_converged_seconds"].items():
            print(f"sklearn to convergence ({name}): {sec:8.2f} s -> speed-up {sec / out['batched_seconds']:.2f}×")
        print(
            f"max |ΔAUC| vs converged sklearn: {out['max_abs_dauc_vs_converged_sklearn']:.4f}; "
            f"sklearn default vs converged: {out['max_abs_dauc_sklearn_default_vs_converged']:.4f}"
        )


def guard_failure(out: dict, min_speedup: float = GUARD_MIN_SPEEDUP, max_dauc: float = GUARD_MAX_DAUC) -> str | None:
    """Why this run misses the regression guard (one line), or None when both targets hold. A NaN misses."""
    ratio, dauc = out["speedup_vs_converged"], out["max_abs_dauc_vs_converged_sklearn"]
    misses = []
    if not ratio >= min_speedup:
        misses.append(
            f"{ratio:.2f}× sklearn's faster converged configuration ({out['sklearn_converged_fastest']}), "
            f"target ≥ {min_speedup:g}×"
        )
    if not dauc <= max_dauc:
        misses.append(f"max |ΔAUC| {dauc:.4f} vs converged sklearn, target ≤ {max_dauc:g}")
    return f"{out.get('site', out['source'])}: " + "; ".join(misses) if misses else None


def guard_verdict(
    reports: list[dict], min_speedup: float = GUARD_MIN_SPEEDUP, max_dauc: float = GUARD_MAX_DAUC
) -> tuple[str, str | None]:
    """(the ratios of every run on one line, the one-line reason the guard fails or None when it holds)."""
    ratios = "; ".join(
        f"{r.get('site', r['source'])} {r['speedup_vs_converged']:.2f}× "
        f"(max |ΔAUC| {r['max_abs_dauc_vs_converged_sklearn']:.4f})"
        for r in reports
    )
    misses = [m for m in (guard_failure(r, min_speedup, max_dauc) for r in reports) if m]
    summary = f"guard (≥ {min_speedup:g}× converged sklearn, max |ΔAUC| ≤ {max_dauc:g}): {ratios}"
    return summary, ("guard failed: " + " | ".join(misses)) if misses else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--site",
        nargs="+",
        default=None,
        choices=["resid", "mlp", "mlp_in", "attn"],
        help="demo-model site(s) (default: resid; with --guard: resid mlp_in)",
    )
    ap.add_argument("--questions", type=int, default=None, help="use the first N demo questions (default: all)")
    ap.add_argument("--synthetic", type=int, nargs=4, metavar=("N", "L", "P", "D"), default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--solver", default="auto", choices=["auto", "lbfgs", "newton"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--converged",
        action="store_true",
        help="also time sklearn run to convergence (newton-cholesky; lbfgs with max_iter=10000)",
    )
    ap.add_argument(
        "--guard",
        action="store_true",
        help="regression guard (implies --converged): exit 1 when a site misses --min-speedup/--max-dauc",
    )
    ap.add_argument("--min-speedup", type=float, default=GUARD_MIN_SPEEDUP)
    ap.add_argument("--max-dauc", type=float, default=GUARD_MAX_DAUC)
    ap.add_argument("--json", action="store_true", help="one JSON line per site on stdout (the guard's on stderr)")
    args = ap.parse_args(argv)
    args.converged = args.converged or args.guard
    args.site = args.site or (list(GUARD_SITES) if args.guard else ["resid"])
    return args


def feature_sets(args: argparse.Namespace) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """The demo model's features at each site, or synthetic ones (asked for, or without the demo weights)."""
    from heatwidget.demo import WEIGHTS_DIR

    if args.synthetic is None and (WEIGHTS_DIR / "model.safetensors").exists():
        yield from demo_features(args.site, args.questions)
        return
    if args.guard and args.synthetic is None:
        sys.exit(
            f"bench_probe: --guard measures the demo model's features, and its weights are missing from {WEIGHTS_DIR}"
        )
    yield synthetic_features(*(args.synthetic or (1200, 8, 15, 192)), seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from threadpoolctl import threadpool_limits

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    reports = []
    with threadpool_limits(limits=threads):
        for X, y, info in feature_sets(args):
            out = run_benchmark(X, y, info, args, threads)
            if args.guard:
                out["guard_failure"] = guard_failure(out, args.min_speedup, args.max_dauc)
            if args.json:
                print(json.dumps(out), flush=True)
            else:
                print_report(out)
            reports.append(out)
    if not args.guard:
        return 0
    summary, failure = guard_verdict(reports, args.min_speedup, args.max_dauc)
    to = sys.stderr if args.json else sys.stdout
    print(summary, file=to)
    if failure:
        print(failure, file=sys.stderr)
        return 1
    print("guard holds", file=to)
    return 0


if __name__ == "__main__":
    sys.exit(main())
