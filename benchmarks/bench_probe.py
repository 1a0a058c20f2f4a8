"""Benchmark `hw.probe_auc` (all L×P probes fitted as one batched solve) against a loop of sklearn fits.

    python benchmarks/bench_probe.py                          # demo-model features (resid), or synthetic if absent
    python benchmarks/bench_probe.py --site mlp_in --json
    python benchmarks/bench_probe.py --synthetic 1000 32 15 512 --device cuda
    python benchmarks/bench_probe.py --solver newton --converged --threads 2

Same features, same split (probe_auc's meta["train_idx"/"test_idx"], which are sklearn's train_test_split):
  batched: hw.probe_auc(X, y, solver=)                                 (one run, reading features included;
           solver "auto" = Böhning-whitened L-BFGS on CPU, damped Newton on a GPU)
  sklearn: for every (layer, position): LogisticRegression(C=1).fit(X_train, y_train), roc_auc_score on X_test
Reports the time ratio and max |ΔAUC| over cells. sklearn runs with its defaults (lbfgs, max_iter=100, tol=1e-4);
cells where it stops at max_iter are counted, and `--converged` adds sklearn run to convergence, two ways:
newton-cholesky at tol=1e-8 (the optimum both approach) and lbfgs with max_iter=10000 (what its ConvergenceWarning
suggests); the faster of the two is the fair yardstick for time at equal answers. Threads: both sides get the same
count (--threads; default: torch's current setting).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_features(site: str, n_questions: int | None) -> tuple[np.ndarray, np.ndarray, dict]:
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
    t = time.perf_counter()
    acts = hw.collect(lm, ans, site=site, batch_size=64)
    t_collect = time.perf_counter() - t
    info = dict(source="demo model", site=site, n_questions=len(qs), n_kept=len(ans), n_correct=int(ans.labels.sum()),
                answer_seconds=round(t_answer, 2), collect_seconds=round(t_collect, 2))
    return np.asarray(acts.values), acts.labels, info


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--site", default="resid", choices=["resid", "mlp", "mlp_in", "attn"])
    ap.add_argument("--questions", type=int, default=None, help="use the first N demo questions (default: all)")
    ap.add_argument("--synthetic", type=int, nargs=4, metavar=("N", "L", "P", "D"), default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--solver", default="auto", choices=["auto", "lbfgs", "newton"])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--converged", action="store_true",
                    help="also time sklearn run to convergence (newton-cholesky; lbfgs with max_iter=10000)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    from heatwidget.demo import WEIGHTS_DIR

    if args.synthetic is None and (WEIGHTS_DIR / "model.safetensors").exists():
        X, y, info = demo_features(args.site, args.questions)
    else:
        X, y, info = synthetic_features(*(args.synthetic or (1200, 8, 15, 192)), seed=args.seed)
    n, L, P, d = X.shape

    import heatwidget as hw

    with threadpool_limits(limits=threads):
        t = time.perf_counter()
        m = hw.probe_auc(X, y, seed=args.seed, device=args.device, solver=args.solver)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t_batched = time.perf_counter() - t

        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score

        tr, te = m.meta["train_idx"], m.meta["test_idx"]

        def sklearn_loop(dtype: type, **kw: object) -> tuple[np.ndarray, float, int]:
            """One LogisticRegression(C=1, **kw) per cell: (AUCs, seconds, fits that stopped at max_iter)."""
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

        ref, t_sklearn, at_max = sklearn_loop(X.dtype.type)  # sklearn's defaults, on the features as they are

        conv = None
        exact: dict[str, float] = {}
        if args.converged:
            # The same objective solved to convergence, two ways (the faster one is the fair yardstick): sklearn's
            # exact solver, and its default lbfgs given the iterations its ConvergenceWarning asks for.
            for name, kw in (("newton-cholesky", dict(solver="newton-cholesky", tol=1e-8, max_iter=1000)),
                             ("lbfgs, max_iter=10000", dict(max_iter=10_000))):
                aucs, exact[name], _ = sklearn_loop(np.float64, **kw)
                if conv is None:
                    conv = aucs  # newton-cholesky's: the optimum itself

    diff = np.abs(m.values - ref)
    out = dict(**info, shape=[n, L, P, d], cells=L * P, n_train=len(tr), n_test=len(te), device=args.device,
               threads=threads, batched_seconds=round(t_batched, 3), sklearn_seconds=round(t_sklearn, 3),
               speedup=round(t_sklearn / t_batched, 2), max_abs_dauc=float(diff.max()),
               mean_abs_dauc=float(diff.mean()),
               sklearn_cells_at_max_iter=at_max, iterations_max=m.meta["solver"]["n_iter_max"],
               solver=m.meta["solver"]["method"], auc_range=[float(m.values.min()), float(m.values.max())])
    if conv is not None:
        fastest = min(exact, key=exact.get)
        out["max_abs_dauc_vs_converged_sklearn"] = float(np.abs(m.values - conv).max())
        out["max_abs_dauc_sklearn_default_vs_converged"] = float(np.abs(ref - conv).max())
        out["sklearn_converged_seconds"] = {k: round(v, 3) for k, v in exact.items()}
        out["sklearn_converged_fastest"] = fastest
        out["speedup_vs_converged"] = round(exact[fastest] / t_batched, 2)
    if args.json:
        print(json.dumps(out))
        return
    print(f"features: {info['source']} {n}×{L}×{P}×{d} ({L * P} cells, {len(tr)} train / {len(te)} test), "
          f"device {args.device}, {threads} thread(s)")
    print(f"batched probe_auc : {t_batched:8.2f} s   ({out['solver']}, ≤{out['iterations_max']} iterations)")
    print(f"sklearn loop      : {t_sklearn:8.2f} s   ({at_max} of {L * P} fits stopped at max_iter=100)")
    print(f"speed-up          : {out['speedup']:8.2f}×")
    print(f"max |ΔAUC|        : {out['max_abs_dauc']:.4f}   (mean {out['mean_abs_dauc']:.5f})")
    if conv is not None:
        for name, sec in exact.items():
            print(f"sklearn to convergence ({name}): {sec:8.2f} s -> speed-up {sec / t_batched:.2f}×")
        print(f"max |ΔAUC| vs converged sklearn: {out['max_abs_dauc_vs_converged_sklearn']:.4f}; "
              f"sklearn default vs converged: {out['max_abs_dauc_sklearn_default_vs_converged']:.4f}")


if __name__ == "__main__":
    main()
