"""`hw.probe_auc`: held-out ROC AUC of an L2 logistic-regression probe per (layer, token), all cells fitted at once.

The recipe of Orgad et al. 2024 (seed figures 002/003): one train/test split of the examples (sklearn's
train_test_split(test_size, random_state=seed), reproduced bit for bit without importing sklearn), one
LogisticRegression(C) per cell on the raw features, ROC AUC of its scores on the test examples. Here every cell is
fitted together by one batched Newton solve on the device (`_logreg.py`); the optimum is the one sklearn's solver
approaches (tests and benchmarks/bench_probe.py hold it to sklearn's AUC within 0.01).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import numpy as np
import torch

from .._progress import progress
from .._validate import finite_number, positive_int
from ..matrix import HeatMatrix
from ._logreg import SOLVERS, fit_logreg, resolve_solver, roc_auc
from .collect import Activations
from .positions import position_label

__all__ = ["probe_auc", "split_indices", "MIN_PER_CLASS"]

MIN_PER_CLASS = 10  # fewer examples of a class than this and a held-out AUC is noise


def split_indices(n: int, test_size: float | int = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) exactly as sklearn's train_test_split(np.arange(n), test_size=, random_state=seed)."""
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size must be in (0, 1) as a fraction, got {test_size}")
        n_test = math.ceil(test_size * n)
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    else:
        raise TypeError(f"test_size must be a float fraction or an int count, got {test_size!r}")
    n_train = n - n_test
    if n_test < 1 or n_train < 1:
        raise ValueError(f"test_size={test_size} leaves {n_train} training and {n_test} test examples of {n}")
    perm = np.random.RandomState(seed).permutation(n)  # sklearn's ShuffleSplit, first split
    return perm[n_test:n_test + n_train], perm[:n_test]


def _as_labels(y: Any, n: int) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D [N], got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"features have N={n} examples but labels have {y.shape[0]}: they must match row for row")
    if y.dtype == bool:
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.number):
        bad = ~np.isin(y, (0, 1))
    else:  # strings, objects: any item that is not the number 0 or 1
        bad = np.array([not (isinstance(v, (int, float, np.number)) and v in (0, 1)) for v in y.tolist()])
    if bad.any():
        first = int(np.argmax(bad))
        value = y[first].item() if isinstance(y[first], np.generic) else y[first]
        raise ValueError(f"labels must be 0/1 or bool (1 = correct); label {first} is {value!r}")
    return y.astype(np.int64)


def _check_classes(y: np.ndarray, train: np.ndarray, test: np.ndarray, min_per_class: int) -> None:
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    if n1 == 0 or n0 == 0:
        which = "correct (1)" if n0 == 0 else "wrong (0)"
        raise ValueError(f"all {len(y)} labels are {which}: a probe needs both correct and wrong examples")
    if min(n1, n0) < min_per_class:
        raise ValueError(f"only {n1} correct and {n0} wrong examples: a probe needs at least {min_per_class} of "
                         "each class (collect more questions, or pass min_per_class= to override)")
    for name, idx in (("training", train), ("test", test)):
        k1 = int(y[idx].sum())
        if k1 == 0 or k1 == len(idx):
            raise ValueError(f"the {name} split holds only one class ({k1} of {len(idx)} correct); "
                             "use another seed or a larger test_size")


def _check_solver_options(max_iter: Any, tol: Any, min_per_class: Any) -> None:
    if max_iter is not None:
        positive_int(max_iter, "max_iter")
    finite_number(tol, "tol", minimum=0.0)
    positive_int(min_per_class, "min_per_class")


def _default_device(acts: Any) -> torch.device:
    lm = getattr(acts, "lm", None)
    if lm is not None:
        dev = torch.device(lm.device)
        if dev.type in ("cuda", "mps"):
            return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cells_per_chunk(n: int, n_train: int, d: int, device: torch.device, budget: int | None) -> int:
    m = min(d, n_train)
    per_cell = 4 * (2 * n * d + (d * n_train + n_train * n_train if d > n_train else 0) + 2 * n_train * m)
    per_cell += 8 * 4 * (m + 1) ** 2  # Hessian, scaled copy, factor (float64)
    if budget is None:
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            budget = int(free * 0.5)
        else:
            # A few cells at a time: their features stay in the CPU cache through all solver iterations
            # (measured 1.7x faster than one large batch that streams from RAM every iteration).
            return max(1, min((8 << 20) // (4 * n * d), (1 << 30) // per_cell))
    return max(1, budget // per_cell)


def probe_auc(acts: Activations | np.ndarray | torch.Tensor, y: Any = None, *, test_size: float | int = 0.2,
              seed: int = 0, C: float = 1.0, device: str | torch.device | None = None, solver: str = "auto",
              max_iter: int | None = None, tol: float = 1e-9, min_per_class: int = MIN_PER_CLASS,
              rows: Sequence[Any] | None = None, cols: Sequence[Any] | None = None, title: str | None = None,
              memory_budget: int | None = None) -> HeatMatrix:
    """Probe AUC per (layer, position): rows = layers, cols = positions, values = held-out ROC AUC.

    acts: what hw.collect returns, or plain features X [N, L, P, d] (numpy, memmap or torch) with labels y [N]
    (1 = correct). The split is sklearn's train_test_split(test_size=, random_state=seed); meta["train_idx"] /
    meta["test_idx"] hold it. C: inverse L2 strength, as sklearn's. solver: "auto" (L-BFGS on CPU, Newton on a
    GPU), "lbfgs" or "newton"; both reach sklearn's optimum (see heatwidget.probing._logreg). The features are
    read cell chunk by cell chunk, so a disk-backed array never has to fit in memory. Bad input (one class,
    < min_per_class examples of a class, NaN/inf features, mismatched N) raises a ValueError that says what to fix.
    """
    t0 = time.perf_counter()
    a = acts if isinstance(acts, Activations) else None
    if a is not None:
        if y is not None:
            raise ValueError("pass either Activations (labels included) or features X with labels y, not both")
        X, labels = a.values, a.labels
        row_labels = rows if rows is not None else [str(layer) for layer in a.layers]
        col_labels = cols if cols is not None else a.position_labels
    else:
        if y is None:
            raise ValueError("labels y are missing: probe_auc(X, y) with X [N, L, P, d] and y [N]")
        X = acts.detach().cpu().numpy() if isinstance(acts, torch.Tensor) else acts
        if not hasattr(X, "shape") or not hasattr(X, "dtype"):
            X = np.asarray(X)
        labels = y
        if X.ndim != 4:
            raise ValueError(f"features must be [N, layers, positions, d], got shape {tuple(X.shape)}")
        row_labels = rows if rows is not None else [str(i) for i in range(X.shape[1])]
        col_labels = cols if cols is not None else [str(i) for i in range(X.shape[2])]
    n, L, P, d = (int(s) for s in X.shape)
    if not np.issubdtype(np.dtype(X.dtype), np.floating):
        raise ValueError(f"features must be floating point, got {X.dtype}")
    if min(L, P, d) == 0:
        raise ValueError(f"features of shape {tuple(X.shape)} [N, layers, positions, d] have an empty axis")
    yv = _as_labels(labels, n)
    if not C > 0 or not math.isfinite(C):
        raise ValueError(f"C must be a positive number, got {C}")
    _check_solver_options(max_iter, tol, min_per_class)
    train, test = split_indices(n, test_size, seed)
    _check_classes(yv, train, test, min_per_class)

    dev = torch.device(device) if device is not None else _default_device(a)
    method = resolve_solver(solver, dev)
    K = L * P
    per = min(K, _cells_per_chunk(n, len(train), d, dev, memory_budget))
    flat = X.reshape(n, K, d)  # a view (memmaps too): cell k = (k // P, k % P)
    ytr = torch.as_tensor(yv[train], dtype=torch.float32, device=dev)
    auc = np.empty(K)
    test_scores = np.empty((K, len(test)), dtype=np.float32)
    coef = np.empty((K, d), dtype=np.float32)
    intercept = np.empty(K, dtype=np.float32)
    n_iter = np.empty(K, dtype=np.int64)
    converged = np.empty(K, dtype=bool)
    def fit_chunk(k0: int) -> None:
        k1 = min(K, k0 + per)
        block = np.asarray(flat[:, k0:k1], dtype=np.float32)  # [N, k, d], read from disk if memmapped
        bad = ~np.isfinite(block)
        if bad.any():
            i, k, _ = np.argwhere(bad)[0]
            cell = k0 + int(k)
            raise ValueError(f"features contain NaN/inf (first at example {int(i)}, layer {row_labels[cell // P]}, "
                             f"position {col_labels[cell % P]}): drop those rows, or re-collect in float32")
        Xb = torch.from_numpy(block).to(dev).transpose(0, 1)  # [k, N, d]
        fit = fit_logreg(Xb[:, train], ytr, C, max_iter=max_iter, tol=tol, solver=method)
        s = fit.decision_function(Xb[:, test]).float().cpu().numpy()
        test_scores[k0:k1] = s
        auc[k0:k1] = roc_auc(s, yv[test])
        coef[k0:k1] = fit.coef.float().cpu().numpy()
        intercept[k0:k1] = fit.intercept.float().cpu().numpy()
        n_iter[k0:k1] = fit.n_iter.cpu().numpy()
        converged[k0:k1] = fit.converged.cpu().numpy()

    starts = list(range(0, K, per))
    workers = min(torch.get_num_threads(), len(starts)) if dev.type == "cpu" else 1
    if workers <= 1:
        for k0 in progress(starts, desc="probe_auc: fitting"):
            fit_chunk(k0)
    else:
        # CPU: chunks in parallel, each op single-threaded. Intra-op threads on a few-MB chunk mostly wait at
        # barriers (7x slower than one thread on a busy 2-core machine); whole chunks per thread never do.
        old_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="heatwidget-probe") as pool:
                futures = [pool.submit(fit_chunk, k0) for k0 in starts]
                try:
                    for fut in progress(as_completed(futures), total=len(futures), desc="probe_auc: fitting"):
                        fut.result()
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        finally:
            torch.set_num_threads(old_threads)
    seconds = time.perf_counter() - t0

    meta: dict[str, Any] = dict(
        analysis="probe_auc", n=n, n_train=len(train), n_test=len(test), n_correct=int(yv.sum()),
        test_size=test_size, seed=seed, C=C, train_idx=train, test_idx=test, vmin=0.5, vmax=1.0, colormap="blues",
        solver=dict(method=SOLVERS[method], name=method, max_iter=max_iter, tol=tol,
                    n_iter_max=int(n_iter.max()), all_converged=bool(converged.all()), device=str(dev),
                    cells_per_chunk=per, seconds=round(seconds, 3)),
        test_scores=test_scores.reshape(L, P, -1), coef=coef.reshape(L, P, d), intercept=intercept.reshape(L, P),
        n_iter=n_iter.reshape(L, P), converged=converged.reshape(L, P), notes=_flat_score_notes(test_scores, C),
    )
    site = a.site if a is not None else None
    if a is not None:
        meta.update(model=a.meta.get("model", ""), model_path=a.meta.get("model_path", ""), site=site,
                    layers=list(a.layers), positions=[position_label(p) for p in a.positions], options={"site": site},
                    n_dropped_answers=a.meta.get("n_dropped_answers", 0))
        if a.answers is not None:
            base = {}
            for name, sc in a.answers.logprob_scores().items():
                ok = np.isfinite(sc[test])
                base[name] = float(roc_auc(sc[test][ok], yv[test][ok])[0]) if ok.all() else float("nan")
            meta["baselines"] = base
    if title is None:
        where = f" · {site}" if site else ""
        who = f" · {meta.get('model')}" if meta.get("model") else ""
        title = f"Probe AUC per layer and token{where}{who}"
    from .drill import probe_drill

    m = HeatMatrix(auc.reshape(L, P), row_labels, col_labels, title=title, row_title="Layer", col_title="Token",
                   metric="AUC", meta=meta, drill=probe_drill(a, yv))
    if a is not None and a.lm is not None and a.answers is not None:
        m.with_recompute(_recompute(a, dict(test_size=test_size, seed=seed, C=C, device=device, solver=solver,
                                            max_iter=max_iter, tol=tol, min_per_class=min_per_class)))
    return m


def _flat_score_notes(test_scores: np.ndarray, C: float) -> list[str]:
    """A cell whose probe gives every test example the same score has AUC 0.5 by construction: with features of
    tiny magnitude the L2 penalty (as sklearn's C defines it, on the raw features) pulls every weight to 0."""
    flat = int((np.ptp(test_scores, axis=1) == 0).sum())
    if not flat:
        return []
    return [f"{flat} of {len(test_scores)} cells score every test example alike (AUC 0.5): the L2 penalty "
            f"(C={C:g}) outweighs features this small; pass a larger C or rescale the features"]


def _recompute(a: Activations, kw: dict[str, Any]):
    def run(site: str | None = None, **changes: Any) -> HeatMatrix:
        from .collect import collect

        acts = a if site in (None, a.site) else collect(a.lm, a.answers, positions=a.positions, layers=a.layers,
                                                        site=site)
        return probe_auc(acts, **{**kw, **changes})

    return run
