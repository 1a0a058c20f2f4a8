"""hw.probe_auc on plain arrays: sklearn-exact split, solver and AUC; planted signal; shuffled labels; bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget.probing import fit_logreg, roc_auc, roc_curve, split_indices

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.metrics import roc_curve as sk_roc_curve  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def _data(n: int, L: int, P: int, d: int, seed: int = 0, signal: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Features whose label signal differs per cell (so AUCs spread over 0.5..1), with an offset and mixed scales."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(np.int64)
    X = rng.normal(size=(n, L, P, d)) * rng.uniform(0.5, 2.0, size=(1, L, P, d)) + rng.normal(size=(1, L, P, d))
    strength = signal * rng.uniform(0.0, 0.6, size=(L, P))
    direction = rng.normal(size=(L, P, d)) / np.sqrt(d)
    X += (2 * y - 1)[:, None, None, None] * strength[None, :, :, None] * direction[None] * np.sqrt(d) / 2
    return X.astype(np.float32), y


# ---- split and AUC are sklearn's ----------------------------------------------------------------------------


@pytest.mark.parametrize("n,test_size,seed", [(100, 0.2, 0), (257, 0.2, 3), (50, 0.33, 7), (40, 9, 1)])
def test_split_is_sklearns_train_test_split(n: int, test_size: float, seed: int) -> None:
    tr, te = split_indices(n, test_size, seed)
    sk_tr, sk_te = train_test_split(np.arange(n), test_size=test_size, random_state=seed)
    assert np.array_equal(tr, sk_tr) and np.array_equal(te, sk_te)


def test_roc_auc_and_curve_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=200)
    scores = np.round(rng.normal(size=(4, 200)) + y, 1)  # rounding makes many ties
    assert np.allclose(roc_auc(scores, y), [roc_auc_score(y, s) for s in scores], atol=1e-12)
    fpr, tpr, _ = roc_curve(scores[0], y)
    sf, st, _ = sk_roc_curve(y, scores[0], drop_intermediate=False)
    assert np.allclose(fpr, sf) and np.allclose(tpr, st)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)


# ---- the solver ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
@pytest.mark.parametrize("n,d", [(300, 20), (120, 200)])  # primal (d < n) and row-space (d > n) paths
def test_batched_solvers_reach_sklearns_optimum(n: int, d: int, solver: str) -> None:
    X, y = _data(n, 2, 2, d, seed=n)
    Xk = torch.from_numpy(X.reshape(n, 4, d)).transpose(0, 1)
    fit = fit_logreg(Xk, torch.from_numpy(y).float(), C=1.0, solver=solver)
    assert bool(fit.converged.all())
    for k in range(4):
        ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(X.reshape(n, 4, d)[:, k].astype(np.float64), y)
        scale = np.abs(ref.coef_).max()
        assert np.abs(fit.coef[k].numpy() - ref.coef_[0]).max() < 2e-3 * scale + 1e-4
        assert abs(float(fit.intercept[k]) - ref.intercept_[0]) < 2e-3 * (1 + abs(ref.intercept_[0]))


@pytest.mark.parametrize("solver", ["newton", "lbfgs"])
def test_solver_handles_separable_cells_and_C(solver: str) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    X = rng.normal(size=(60, 5)).astype(np.float32)
    X[:, 0] += 6 * (2 * y - 1)  # perfectly separable: only the penalty keeps w finite
    for C in (0.1, 1.0, 10.0):
        fit = fit_logreg(torch.from_numpy(X)[None], torch.from_numpy(y).float(), C=C, solver=solver)
        ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(X.astype(np.float64), y)
        assert np.allclose(fit.coef[0].numpy(), ref.coef_[0], rtol=2e-3, atol=1e-4), C


# ---- probe_auc = a loop of sklearn fits on the same split ------------------------------------------------------


def test_activation_like_features_need_whitening_not_thousands_of_iterations() -> None:
    """Raw activations: a large shared offset, a few outlier dimensions 30x the rest (as in LLM residual streams).
    L-BFGS in the bound's whitened coordinates converges in tens of iterations to Newton's optimum."""
    rng = np.random.default_rng(3)
    n, d = 400, 64
    y = (rng.random(n) < 0.7).astype(np.int64)
    X = rng.normal(size=(n, d)) + 5.0
    X[:, :3] *= 30
    X += (2 * y - 1)[:, None] * rng.normal(size=d) * 0.3
    Xt = torch.from_numpy(X.astype(np.float32))[None]
    yt = torch.from_numpy(y).float()
    newton = fit_logreg(Xt, yt, solver="newton")
    lbfgs = fit_logreg(Xt, yt, solver="lbfgs")
    assert bool(lbfgs.converged.all()) and int(lbfgs.n_iter.max()) < 150
    rel = float((lbfgs.coef - newton.coef).norm() / newton.coef.norm())
    assert rel < 3e-3, rel


def test_rewhitening_by_the_hessian_cuts_iterations_not_the_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """Confident fits sit where p(1-p) << 1/4, far below Böhning's bound: re-whitening by the Hessian there (small d)
    takes a fraction of the bound-whitened iterations, to the same optimum as Newton's."""
    from heatwidget.probing import _logreg

    rng = np.random.default_rng(5)
    n, K, d = 600, 6, 96
    y = (rng.random(n) < 0.75).astype(np.int64)
    X = rng.normal(size=(K, n, d)) * rng.lognormal(size=(K, 1, d)) + 3.0  # mixed scales, an offset, outliers
    X[:, :, :2] *= 20
    X += (2 * y - 1)[None, :, None] * rng.normal(size=(K, 1, d)) * rng.uniform(0.3, 0.6, size=(K, 1, 1))
    Xt, yt = torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y).float()
    newton = fit_logreg(Xt, yt, solver="newton")
    rewhitened = fit_logreg(Xt, yt, solver="lbfgs")
    monkeypatch.setattr(_logreg, "REWHITEN_MAX_DIM", 0)
    bound_only = fit_logreg(Xt, yt, solver="lbfgs")
    assert bool(rewhitened.converged.all()) and bool(bound_only.converged.all())
    assert int(rewhitened.n_iter.sum()) < 0.5 * int(bound_only.n_iter.sum()), (rewhitened.n_iter, bound_only.n_iter)
    for fit in (rewhitened, bound_only):
        rel = (fit.coef - newton.coef).norm(dim=1) / newton.coef.norm(dim=1)
        assert float(rel.max()) < 3e-3, rel
        assert float((fit.intercept - newton.intercept).abs().max()) < 3e-3 * (1 + float(newton.intercept.abs().max()))


def _two_loop(S: torch.Tensor, Y: torch.Tensor, valid: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Nocedal & Wright's Algorithm 7.4, pair by pair (oldest first in S, Y); skipped pairs have rho = 0."""
    if S.shape[1] == 0:
        return g.clone()  # no pairs yet: steepest descent
    rho = torch.where(valid, 1 / (S * Y).sum(2), torch.zeros(valid.shape, dtype=g.dtype))
    q, alpha = g.clone(), torch.zeros_like(rho)
    for j in reversed(range(S.shape[1])):
        alpha[:, j] = rho[:, j] * (S[:, j] * q).sum(1)
        q -= alpha[:, j, None] * Y[:, j]
    gamma = (S[:, -1] * Y[:, -1]).sum(1) / (Y[:, -1] ** 2).sum(1)
    q *= torch.where(valid[:, -1], gamma, torch.ones_like(gamma))[:, None]
    for j in range(S.shape[1]):
        q += (alpha[:, j] - rho[:, j] * (Y[:, j] * q).sum(1))[:, None] * S[:, j]
    return q


@pytest.mark.parametrize("pairs", [0, 1, 4, 10])
def test_compact_lbfgs_direction_equals_the_two_loop_recursion(pairs: int) -> None:
    from heatwidget.probing._logreg import _inverse_hessian_times

    gen = torch.Generator().manual_seed(pairs)
    K, d = 4, 30
    A = torch.randn(K, d, d, generator=gen, dtype=torch.float64)
    H = A @ A.transpose(1, 2) + torch.eye(d, dtype=torch.float64)
    S = torch.randn(K, pairs, d, generator=gen, dtype=torch.float64)
    Y = torch.bmm(S, H)
    valid = torch.ones(K, pairs, dtype=torch.bool)
    if pairs > 2:
        valid[1, 1] = False  # a skipped pair holding junk
        S[1, 1], Y[1, 1] = torch.randn(d, generator=gen, dtype=torch.float64), -S[1, 1]
        valid[2, -1] = False  # the newest pair skipped: gamma falls back to 1
    g = torch.randn(K, d, generator=gen, dtype=torch.float64)
    got, want = _inverse_hessian_times(S, Y, valid, g), _two_loop(S, Y, valid, g)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_solver_choice() -> None:
    from heatwidget.probing._logreg import resolve_solver

    assert resolve_solver("auto", "cpu") == "lbfgs" and resolve_solver("auto", "cuda:0") == "newton"
    assert resolve_solver("newton", "cpu") == "newton"
    with pytest.raises(ValueError, match="unknown solver 'sgd'"):
        resolve_solver("sgd", "cpu")
    X, y = _data(120, 1, 2, 8)
    m = hw.probe_auc(X, y)
    assert m.meta["solver"]["name"] == "lbfgs" and m.meta["solver"]["all_converged"]


@pytest.mark.parametrize("solver", ["auto", "newton"])
@pytest.mark.parametrize("d", [12, 160])
def test_probe_auc_matches_sklearn_per_cell(d: int, solver: str) -> None:
    n, L, P = 200, 3, 4
    X, y = _data(n, L, P, d, seed=d)
    m = hw.probe_auc(X, y, test_size=0.2, seed=0, solver=solver)
    assert m.shape == (L, P) and m.row_title == "Layer" and m.col_title == "Token" and m.metric == "AUC"
    tr, te = m.meta["train_idx"], m.meta["test_idx"]
    sk_tr, sk_te = train_test_split(np.arange(n), test_size=0.2, random_state=0)
    assert np.array_equal(tr, sk_tr) and np.array_equal(te, sk_te)
    ref = np.empty((L, P))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning at max_iter=100 is part of the reference
        for i in range(L):
            for j in range(P):
                clf = LogisticRegression(C=1.0).fit(X[tr, i, j], y[tr])
                ref[i, j] = roc_auc_score(y[te], clf.decision_function(X[te, i, j]))
    assert np.abs(m.values - ref).max() <= 0.01
    assert m.values.std() > 0.05  # the cells really differ: the comparison is not trivially 0.5 vs 0.5
    assert m.meta["solver"]["all_converged"]


def test_planted_signal_is_found_in_its_cell() -> None:
    rng = np.random.default_rng(5)
    n, L, P, d = 240, 4, 5, 24
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, L, P, d)).astype(np.float32)
    X[:, 2, 3, 7] += 2.5 * y  # the only informative cell
    m = hw.probe_auc(X, y, rows=[f"L{i}" for i in range(L)], cols=list("abcde"))
    r, c = np.unravel_index(np.argmax(m.values), m.shape)
    assert (r, c) == (2, 3) and m.values[2, 3] > 0.9
    others = np.delete(m.values.ravel(), 2 * P + 3)
    assert others.max() < 0.75 and abs(others.mean() - 0.5) < 0.08
    assert m.rows == ["L0", "L1", "L2", "L3"] and m.cols == list("abcde")


def test_shuffled_labels_give_chance_auc() -> None:
    X, y = _data(300, 3, 5, 16, seed=2, signal=3.0)
    real = hw.probe_auc(X, y)
    shuffled = hw.probe_auc(X, np.random.default_rng(0).permutation(y))
    assert real.values.mean() > 0.75
    assert abs(float(shuffled.values.mean()) - 0.5) < 0.06 and shuffled.values.max() < 0.72


def test_memmap_features_and_torch_input(tmp_path) -> None:
    X, y = _data(120, 2, 3, 8, seed=4)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    a = hw.probe_auc(mm, y, memory_budget=1)  # one cell per chunk
    b = hw.probe_auc(torch.from_numpy(X), torch.from_numpy(y))
    assert np.allclose(a.values, b.values, atol=1e-6) and a.meta["solver"]["cells_per_chunk"] == 1


def test_drill_on_arrays_and_save_roundtrip(tmp_path) -> None:
    X, y = _data(150, 2, 3, 10, seed=6)
    m = hw.probe_auc(X, y)
    det = m.drill(1, 2)
    roc, hist = det.charts
    assert roc.kind == "line" and hist.kind == "hist"
    probe = roc.series[0]
    assert (probe.x[0], probe.y[0], probe.x[-1], probe.y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert sum(hist.series[0].y) + sum(hist.series[1].y) == len(m.meta["test_idx"])
    assert abs(det.meta["auc"] - m.values[1, 2]) < 1e-6 and not det.reruns
    assert "iterations of batched L-BFGS" in det.texts["summary"]  # the solver that ran, not a fixed name
    back = hw.HeatMatrix.load(m.save(tmp_path / "probe.npz"))
    assert np.array_equal(back.meta["test_idx"], m.meta["test_idx"]) and back.meta["vmin"] == 0.5


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case,match",
    [
        ("one_label", "all 200 labels are correct"),
        ("few", "at least 10 of each class"),
        ("nan", r"NaN/inf \(first at example 5, layer 1, position 2\)"),
        ("mismatch", "N=200 examples but labels have 199"),
        ("ndim", r"\[N, layers, positions, d\]"),
        ("labels", "labels must be 0/1"),
        ("no_y", "labels y are missing"),
        ("split", "test split holds only one class"),
    ],
)
def test_bad_input_is_a_clear_error(case: str, match: str) -> None:
    X, y = _data(200, 2, 3, 4, seed=0)
    kw: dict = {}
    if case == "one_label":
        y = np.ones_like(y)
    elif case == "few":
        y = np.zeros_like(y)
        y[:6] = 1
    elif case == "nan":
        X[5, 1, 2, 0] = np.nan
    elif case == "mismatch":
        y = y[:-1]
    elif case == "ndim":
        X = X[:, 0]
    elif case == "labels":
        y = y + 1
    elif case == "no_y":
        y = None
    elif case == "split":
        y = np.zeros_like(y)
        _tr, te = split_indices(200, 0.2, 0)
        y[np.setdiff1d(np.arange(200), te)[:20]] = 1  # every correct example lands in the training split
    with pytest.raises(ValueError, match=match):
        hw.probe_auc(X, y, **kw)


def test_bench_probe_reports_ratios_against_default_and_converged_sklearn() -> None:
    """The benchmark runs end to end (small synthetic features) and reports what the docs quote."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_probe.py"
    # --guard implies --converged; a speed-up target no machine reaches makes it exit 1 with a one-line reason.
    out = subprocess.run(
        [
            sys.executable,
            str(bench),
            "--synthetic",
            "300",
            "2",
            "3",
            "16",
            "--guard",
            "--json",
            "--threads",
            "1",
            "--min-speedup",
            "1e9",
            "--max-dauc",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["cells"] == 6 and r["solver"].startswith("batched L-BFGS")
    assert set(r["sklearn_converged_seconds"]) == {"newton-cholesky", "lbfgs, max_iter=10000"}
    assert r["max_abs_dauc_vs_converged_sklearn"] <= 0.01
    assert r["speedup"] > 0 and r["speedup_vs_converged"] > 0
    summary, reason = out.stderr.strip().splitlines()[-2:]
    assert summary.startswith("guard (≥ 1e+09× converged sklearn")
    assert f"synthetic {r['speedup_vs_converged']:.2f}×" in summary
    assert reason.startswith("guard failed: synthetic: ") and "target ≥ 1e+09×" in reason and "ΔAUC" not in reason
    assert r["guard_failure"] == reason.removeprefix("guard failed: ")


def _bench_probe():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_probe.py"
    spec = importlib.util.spec_from_file_location("bench_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _guard_report(site: str, ratio: float, dauc: float) -> dict:
    return dict(
        source="demo model",
        site=site,
        speedup_vs_converged=ratio,
        max_abs_dauc_vs_converged_sklearn=dauc,
        sklearn_converged_fastest="newton-cholesky",
    )


@pytest.mark.parametrize(
    "ratio, dauc, missed",
    [
        (2.7, 0.0002, None),
        (2.0, 0.002, None),  # the targets themselves hold
        (1.31, 0.0007, "mlp_in: 1.31× sklearn's faster converged configuration (newton-cholesky), target ≥ 2×"),
        (14.0, 0.0031, "mlp_in: max |ΔAUC| 0.0031 vs converged sklearn, target ≤ 0.002"),
        (
            1.9,
            0.01,
            "mlp_in: 1.90× sklearn's faster converged configuration (newton-cholesky), target ≥ 2×; "
            "max |ΔAUC| 0.0100 vs converged sklearn, target ≤ 0.002",
        ),
        (float("nan"), 0.0, "mlp_in: nan× sklearn's faster converged configuration (newton-cholesky), target ≥ 2×"),
    ],
)
def test_bench_probe_guard_trips_on_a_missed_ratio_or_dauc(ratio, dauc, missed) -> None:
    """The regression guard's decision, without timing anything: ≥ 2× converged sklearn at max |ΔAUC| ≤ 0.002."""
    bench = _bench_probe()
    assert bench.guard_failure(_guard_report("mlp_in", ratio, dauc)) == missed


def test_bench_probe_guard_verdict_names_only_the_failing_site() -> None:
    bench = _bench_probe()
    reports = [_guard_report("resid", 2.71, 0.0002), _guard_report("mlp_in", 1.31, 0.0007)]
    summary, reason = bench.guard_verdict(reports)
    assert summary == (
        "guard (≥ 2× converged sklearn, max |ΔAUC| ≤ 0.002): resid 2.71× (max |ΔAUC| 0.0002); "
        "mlp_in 1.31× (max |ΔAUC| 0.0007)"
    )
    assert reason == (
        "guard failed: mlp_in: 1.31× sklearn's faster converged configuration (newton-cholesky), target ≥ 2×"
    )
    assert bench.guard_verdict(reports[:1])[1] is None
    assert bench.guard_verdict(reports, min_speedup=1.2)[1] is None
