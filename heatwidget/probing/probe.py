"""`hw.probe_auc`: held-out ROC AUC of an L2 logistic-regression probe per (layer, token), cells fitted in batches.

The recipe of Orgad et al. 2024 (the truthfulness heatmaps of "LLMs Know More Than They Show"): one train/test
split of the examples (sklearn's train_test_split(test_size, random_state=seed), reproduced bit for bit without
importing sklearn), one LogisticRegression(C) per cell on the raw features, ROC AUC of its scores on the test
examples. Here the cells are fitted together, a chunk at a time, by a batched solver (`_logreg.py`): L-BFGS in
whitened coordinates (Böhning's bound, then the Hessian near the optimum) on CPU, damped Newton on a GPU. Both stop
at the optimum sklearn's solver approaches (tolerance 1e-9 on the Newton decrement); tests/test_probe.py holds the
AUC to sklearn's within 0.01 per cell and the coefficients within 2e-3 relative, and benchmarks/bench_probe.py
compares them on the demo model.

On the analysis contract (`heatwidget.analysis`): the item is one batch of cells (`CellBatch`: the chunks fitted
concurrently), `fit_cells` the public per-item function, `PROBE_AUC` the declaration; the driver runs it in this
process (the features may be a memmap on this machine's disk).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._validate import finite_number, positive_int
from ..analysis import Analysis, Config, Option, Run, Table, current_config, legacy_config, run_analysis
from ..matrix import HeatMatrix
from ._logreg import SOLVERS, fit_logreg, resolve_solver, roc_auc
from .collect import COLLECT_SITES, Activations, collect
from .positions import position_label

__all__ = ["probe_auc", "fit_cells", "split_indices", "MIN_PER_CLASS", "PROBE_AUC", "CellBatch", "CellFit"]

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
    return perm[n_test : n_test + n_train], perm[:n_test]


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
        raise ValueError(
            f"only {n1} correct and {n0} wrong examples: a probe needs at least {min_per_class} of "
            "each class (collect more questions, or pass min_per_class= to override)"
        )
    for name, idx in (("training", train), ("test", test)):
        k1 = int(y[idx].sum())
        if k1 == 0 or k1 == len(idx):
            raise ValueError(
                f"the {name} split holds only one class ({k1} of {len(idx)} correct); "
                "use another seed or a larger test_size"
            )


def _default_device(lm: Any) -> torch.device:
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


# ---- the data and the items ------------------------------------------------------------------------------------


@dataclass
class _Features:
    """The checked features of one probe_auc call, shared (by reference) by all its items."""

    flat: Any  # [N, K, d] view of X (a memmap stays one): cell k = (layer k // P, position k % P)
    y: np.ndarray  # [N] 0/1
    train: np.ndarray
    test: np.ndarray
    shape: tuple[int, int, int, int]  # N, L, P, d
    rows: list[str]
    cols: list[str]
    acts: Activations | None
    device: torch.device
    method: str
    per: int  # cells per chunk


@dataclass
class CellBatch:
    """One item of probe_auc: the cell chunks [k0, k1) fitted together (concurrently on CPU threads)."""

    data: _Features
    chunks: list[tuple[int, int]]


@dataclass
class CellFit:
    """`fit_cells`' result for one batch (numpy): per cell its AUC, test scores and the probe."""

    chunks: list[tuple[int, int]]
    auc: np.ndarray
    test_scores: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    seconds: float = 0.0  # fitting time of the batch


def _plain_features(
    X: Any, y: Any, rows: Sequence[Any] | None, cols: Sequence[Any] | None
) -> tuple[Any, Any, list, list]:
    if y is None:
        raise ValueError("labels y are missing: probe_auc(X, y) with X [N, L, P, d] and y [N]")
    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"features must be [N, layers, positions, d], got shape {tuple(X.shape)}")
    return (
        X,
        y,
        list(rows) if rows is not None else [str(i) for i in range(X.shape[1])],
        list(cols) if cols is not None else [str(i) for i in range(X.shape[2])],
    )


def _at_site(acts: Activations, site: str | None) -> Activations:
    """The same answers, layers and positions collected at `site` (the activations themselves when it is theirs)."""
    if site is None or site == acts.site:
        return acts
    if acts.lm is None or acts.answers is None:
        raise ValueError(
            f"site={site!r} needs activations that keep their model and answers (hw.collect's); "
            f"these are at site {acts.site!r}"
        )
    return collect(acts.lm, acts.answers, positions=acts.positions, layers=acts.layers, site=site)


def _check_features(
    X: Any, labels: Any, C: float, max_iter: Any, tol: Any, min_per_class: Any
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    n, L, P, d = (int(s) for s in X.shape)
    if not np.issubdtype(np.dtype(X.dtype), np.floating):
        raise ValueError(f"features must be floating point, got {X.dtype}")
    if min(L, P, d) == 0:
        raise ValueError(f"features of shape {tuple(X.shape)} [N, layers, positions, d] have an empty axis")
    yv = _as_labels(labels, n)
    if not C > 0 or not math.isfinite(C):
        raise ValueError(f"C must be a positive number, got {C}")
    if max_iter is not None:
        positive_int(max_iter, "max_iter")
    finite_number(tol, "tol", minimum=0.0)
    positive_int(min_per_class, "min_per_class")
    return (n, L, P, d), yv


def _items(
    lm: Any,
    acts: Any,
    y: Any = None,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
    title: str | None = None,
    device: str | torch.device | None = None,
    *,
    site: str | None,
    test_size: float | int,
    seed: int,
    C: float,
    solver: str,
    max_iter: int | None,
    tol: float,
    min_per_class: int,
) -> list[CellBatch]:
    """Check everything before any fitting; the cells in batches of chunks."""
    a = acts if isinstance(acts, Activations) else None
    if a is not None:
        if y is not None:
            raise ValueError("pass either Activations (labels included) or features X with labels y, not both")
        a = _at_site(a, site)
        X, labels = a.values, a.labels
        rows = list(rows) if rows is not None else [str(layer) for layer in a.layers]
        cols = list(cols) if cols is not None else a.position_labels
    else:
        if site is not None:
            raise ValueError(f"site={site!r} needs hw.collect's Activations; plain features have no site")
        X, labels, rows, cols = _plain_features(acts, y, rows, cols)
    shape, yv = _check_features(X, labels, C, max_iter, tol, min_per_class)
    n, L, P, d = shape
    train, test = split_indices(n, test_size, seed)
    _check_classes(yv, train, test, min_per_class)
    dev = torch.device(device) if device is not None else _default_device(lm)
    budget = current_config().memory_budget_mb
    K = L * P
    per = min(K, _cells_per_chunk(n, len(train), d, dev, None if budget is None else int(budget * 2**20)))
    data = _Features(
        X.reshape(n, K, d), yv, train, test, shape, list(rows), list(cols), a, dev, resolve_solver(solver, dev), per
    )
    chunks = [(k0, min(K, k0 + per)) for k0 in range(0, K, per)]
    # CPU: chunks fitted in parallel threads, each op single-threaded. Intra-op threads on a few-MB chunk mostly
    # wait at barriers (7x slower than one thread on a busy 2-core machine); whole chunks per thread never do.
    width = min(torch.get_num_threads(), len(chunks)) if dev.type == "cpu" else 1
    return [CellBatch(data, chunks[i : i + max(1, width)]) for i in range(0, len(chunks), max(1, width))]


# ---- per item: fit one batch of cells ------------------------------------------------------------------------


def _fit_chunk(data: _Features, k0: int, k1: int, C: float, max_iter: int | None, tol: float) -> tuple:
    block = np.asarray(data.flat[:, k0:k1], dtype=np.float32)  # [N, k, d], read from disk if memmapped
    bad = ~np.isfinite(block)
    if bad.any():
        i, k, _ = np.argwhere(bad)[0]
        cell, P = k0 + int(k), data.shape[2]
        raise ValueError(
            f"features contain NaN/inf (first at example {int(i)}, layer {data.rows[cell // P]}, "
            f"position {data.cols[cell % P]}): drop those rows, or re-collect in float32"
        )
    dev = data.device
    Xb = torch.from_numpy(block).to(dev).transpose(0, 1)  # [k, N, d]
    ytr = torch.as_tensor(data.y[data.train], dtype=torch.float32, device=dev)
    fit = fit_logreg(Xb[:, data.train], ytr, C, max_iter=max_iter, tol=tol, solver=data.method)
    s = fit.decision_function(Xb[:, data.test]).float().cpu().numpy()
    return (
        roc_auc(s, data.y[data.test]),
        s,
        fit.coef.float().cpu().numpy(),
        fit.intercept.float().cpu().numpy(),
        fit.n_iter.cpu().numpy(),
        fit.converged.cpu().numpy(),
    )


def fit_cells(
    lm: Any,
    item: CellBatch,
    *,
    site: str | None = None,
    test_size: float | int = 0.2,
    seed: int = 0,
    C: float = 1.0,
    solver: str = "auto",
    max_iter: int | None = None,
    tol: float = 1e-9,
) -> CellFit:
    """probe_auc's per-item step: fit the probes of one batch of cells and score them on the test split. `site`,
    `test_size`, `seed` and `solver` shaped the item (features, split, solver); they are parameters so that a
    change of them refits rather than re-reduces."""
    data, chunks = item.data, item.chunks
    t0 = time.perf_counter()
    if len(chunks) == 1:
        parts = [_fit_chunk(data, *chunks[0], C, max_iter, tol)]
    else:
        old_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(len(chunks), thread_name_prefix="heatwidget-probe") as pool:
                parts = list(pool.map(lambda ch: _fit_chunk(data, ch[0], ch[1], C, max_iter, tol), chunks))
        finally:
            torch.set_num_threads(old_threads)
    auc, scores, coef, intercept, n_iter, conv = (np.concatenate(x) for x in zip(*parts, strict=True))
    return CellFit(chunks, auc, scores, coef, intercept, n_iter, conv, time.perf_counter() - t0)


# ---- reduce ----------------------------------------------------------------------------------------------------


def _gather(run: Run) -> dict[str, np.ndarray]:
    """The batches' results as [L, P, ...] arrays."""
    data: _Features = run.items[0].data
    n, L, P, d = data.shape
    out = {
        k: np.concatenate([getattr(r, k) for r in run.results])
        for k in ("auc", "test_scores", "coef", "intercept", "n_iter", "converged")
    }
    return {k: v.reshape(L, P, *v.shape[1:]) for k, v in out.items()}


def _baselines(acts: Activations, data: _Features) -> dict[str, float]:
    """The answers' own log-probability scores, as AUCs on the same test split."""
    base = {}
    yt = data.y[data.test]
    assert acts.answers is not None
    for name, sc in acts.answers.logprob_scores().items():
        ok = np.isfinite(sc[data.test])
        base[name] = float(roc_auc(sc[data.test][ok], yt[ok])[0]) if ok.all() else float("nan")
    return base


def _activation_meta(a: Activations, data: _Features) -> dict[str, Any]:
    meta: dict[str, Any] = dict(
        model=a.meta.get("model", ""),
        model_path=a.meta.get("model_path", ""),
        site=a.site,
        layers=list(a.layers),
        positions=[position_label(p) for p in a.positions],
        n_dropped_answers=a.meta.get("n_dropped_answers", 0),
    )
    if a.answers is not None:
        meta["baselines"] = _baselines(a, data)
    return meta


def _reduce(run: Run) -> Table:
    data: _Features = run.items[0].data
    o = run.options
    g = _gather(run)
    meta: dict[str, Any] = dict(
        n=data.shape[0],
        n_train=len(data.train),
        n_test=len(data.test),
        n_correct=int(data.y.sum()),
        test_size=o["test_size"],
        seed=o["seed"],
        C=o["C"],
        train_idx=data.train,
        test_idx=data.test,
        vmin=0.5,
        vmax=1.0,
        colormap="blues",
        site=None,
        solver=dict(
            method=SOLVERS[data.method],
            name=data.method,
            max_iter=o["max_iter"],
            tol=o["tol"],
            n_iter_max=int(g["n_iter"].max()),
            all_converged=bool(g["converged"].all()),
            device=str(data.device),
            cells_per_chunk=data.per,
            seconds=round(sum(r.seconds for r in run.results), 3),
        ),
        test_scores=g["test_scores"],
        coef=g["coef"],
        intercept=g["intercept"],
        n_iter=g["n_iter"],
        converged=g["converged"],
        notes=_flat_score_notes(g["test_scores"].reshape(-1, len(data.test)), o["C"]),
    )
    if data.acts is not None:
        meta.update(_activation_meta(data.acts, data))
    title = run.inputs.get("title")
    if title is None:
        where = f" · {meta['site']}" if meta["site"] else ""
        who = f" · {meta.get('model')}" if meta.get("model") else ""
        title = f"Probe AUC per layer and token{where}{who}"
    return Table(
        g["auc"], data.rows, data.cols, title=title, row_title="Layer", col_title="Token", metric="AUC", meta=meta
    )


def _flat_score_notes(test_scores: np.ndarray, C: float) -> list[str]:
    """A cell whose probe gives every test example the same score has AUC 0.5 by construction: with features of
    tiny magnitude the L2 penalty (as sklearn's C defines it, on the raw features) pulls every weight to 0."""
    flat = int((np.ptp(test_scores, axis=1) == 0).sum())
    if not flat:
        return []
    return [
        f"{flat} of {len(test_scores)} cells score every test example alike (AUC 0.5): the L2 penalty "
        f"(C={C:g}) outweighs features this small; pass a larger C or rescale the features"
    ]


def _drill(run: Run, m: HeatMatrix, r: int, c: int) -> Any:
    from .drill import probe_drill

    data: _Features = run.items[0].data
    return probe_drill(run, data.acts, data.y, m, r, c)


PROBE_AUC = Analysis(
    name="probe_auc",
    options=(
        Option(
            "site",
            None,
            choices=tuple(COLLECT_SITES),
            nullable=True,
            doc="collect the same answers at another site first (None: the activations' own)",
        ),
        Option(
            "test_size",
            0.2,
            kind="fraction or count",
            doc="held-out share (a float in (0, 1)) or number (an int) of examples",
        ),
        Option("seed", 0, kind=int, min=0, doc="the split's random_state"),
        Option("C", 1.0, kind=float, doc="inverse L2 strength, as sklearn's"),
        Option("solver", "auto", choices=("auto", *SOLVERS), doc="auto: L-BFGS on CPU, Newton on a GPU"),
        # ranges checked in `_items`, whose messages say more ("max_iter must be at least 1")
        Option("max_iter", None, kind=int, nullable=True, doc="default 50 Newton / 1000 L-BFGS iterations"),
        Option("tol", 1e-9, kind=float, doc="stop at a Newton decrement below tol · (1 + f)"),
        Option("min_per_class", MIN_PER_CLASS, kind=int, doc="fewest examples of each class"),
    ),
    items=_items,
    per_item=fit_cells,
    reduce=_reduce,
    drill=_drill,
    executors=("local",),
)


def probe_auc(
    acts: Activations | np.ndarray | torch.Tensor,
    y: Any = None,
    *,
    site: str | None = None,
    test_size: float | int = 0.2,
    seed: int = 0,
    C: float = 1.0,
    solver: str = "auto",
    max_iter: int | None = None,
    tol: float = 1e-9,
    min_per_class: int = MIN_PER_CLASS,
    rows: Sequence[Any] | None = None,
    cols: Sequence[Any] | None = None,
    title: str | None = None,
    device: str | torch.device | None = None,
    config: Config | Mapping[str, Any] | None = None,
    memory_budget: int | None = None,
) -> HeatMatrix:
    """Probe AUC per (layer, position): rows = layers, cols = positions, values = held-out ROC AUC.

    acts: what hw.collect returns, or plain features X [N, L, P, d] (numpy, memmap or torch) with labels y [N]
    (1 = correct). The split is sklearn's train_test_split(test_size=, random_state=seed); meta["train_idx"] /
    meta["test_idx"] hold it. C: inverse L2 strength, as sklearn's. solver: "auto" (L-BFGS on CPU, Newton on a
    GPU), "lbfgs" or "newton"; both reach sklearn's optimum (see heatwidget.probing._logreg). site: re-collect the
    activations' answers at another site first. device: where the probes are fitted (default: the model's
    accelerator, else a GPU if there is one, else the CPU). The features are read chunk by chunk of cells, so a
    disk-backed array never has to fit in memory; the chunk size follows `hw.config(memory_budget_mb=...)`
    (`memory_budget=` in bytes still works). Bad input (one class, < min_per_class examples of a class, NaN/inf
    features, mismatched N) raises a ValueError that says what to fix.
    """
    if memory_budget is not None:
        positive_int(memory_budget, "memory_budget")
        config = legacy_config(config, {"memory_budget_mb": memory_budget / 2**20}, "probe_auc")
    lm = acts.lm if isinstance(acts, Activations) else None
    if isinstance(acts, Activations) and site is None:
        site = acts.site  # recorded as the option, so the explorer offers the other sites
    return run_analysis(
        PROBE_AUC,
        lm,
        {"acts": acts, "y": y, "rows": rows, "cols": cols, "title": title, "device": device},
        {
            "site": site,
            "test_size": test_size,
            "seed": seed,
            "C": C,
            "solver": solver,
            "max_iter": max_iter,
            "tol": tol,
            "min_per_class": min_per_class,
        },
        config,
    )
