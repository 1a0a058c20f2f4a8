"""Many L2 logistic regressions at once: one batched Newton solve, the optimum sklearn's LogisticRegression seeks.

Each cell k fits   min_{w,b}  sum_i log(1 + exp(-(2y_i - 1)(x_ki . w + b))) + ||w||^2 / (2C)
(sklearn's `C * sum(loss) + ||w||^2 / 2`, same minimiser; the intercept is not penalised). All cells move together:
gradients, Hessians and Cholesky solves are batched tensor ops, so K cells cost a few large matmuls per iteration
instead of K Python-level optimiser runs; Newton needs ~5-10 iterations where L-BFGS needs up to hundreds.

Exactness tricks (each leaves the minimiser unchanged):
- features are centred on the training mean (the free intercept absorbs the shift), which conditions H;
- when d > n the problem is solved in the n-dim row space of the centred data (thin QR, X = F Q^T with Q
  orthonormal): the penalty only ever pulls w into that space, and ||Q v|| = ||v||, so it is the same problem;
- the Hessian is scaled to unit diagonal before its Cholesky factorisation, in float64;
- a backtracking line search keeps every step a descent step (damped Newton: global convergence).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["LogRegFit", "fit_logreg", "choose_solver", "roc_auc", "roc_curve"]


@dataclass
class LogRegFit:
    coef: torch.Tensor       # [K, d] in the original feature space
    intercept: torch.Tensor  # [K]
    n_iter: torch.Tensor     # [K] Newton iterations taken
    converged: torch.Tensor  # [K] bool: Newton decrement below tolerance

    def decision_function(self, X: torch.Tensor) -> torch.Tensor:
        """Scores [K, m] for features X [K, m, d] (higher = more likely label 1)."""
        return _matvec(X.to(self.coef.dtype), self.coef) + self.intercept[:, None]


@contextlib.contextmanager
def _full_precision() -> Iterator[None]:
    """TF32 matmuls (a user's global speed setting on Ampere+) would cost three digits of the gradient."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@contextlib.contextmanager
def _lapack_threads(device: torch.device, size: int) -> Iterator[None]:
    """One thread for batched LAPACK on small CPU matrices: torch loops over the batch and each small
    factorisation gains nothing from MKL's threads, while their spin-waits cost 10-50x on a busy machine."""
    if device.type != "cpu" or size > 512:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _matvec(F: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """F [K, n, m] · w [K, m] -> [K, n]. As a row vector times F^T: MKL runs this as a small GEMM, ~10x faster on
    CPU than the batched matrix-vector product torch picks for F @ w[..., None]."""
    return torch.bmm(w[:, None, :], F.transpose(1, 2))[:, 0]


def _objective(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: float) -> torch.Tensor:
    z = z.double()
    return (torch.nn.functional.softplus(z) - y * z).sum(-1) + 0.5 * lam * (w.double() ** 2).sum(-1)


def _newton(F: torch.Tensor, y: torch.Tensor, lam: float, max_iter: int, tol: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Damped Newton on features F [K, n, m] (centred), labels y [n] in {0, 1}."""
    K, n, m = F.shape
    dev = F.device
    yd = y.to(dev, torch.float64)
    ybar = float(yd.mean())
    w = torch.zeros(K, m, dtype=torch.float64, device=dev)
    b = torch.full((K,), float(np.log(ybar / (1 - ybar))), dtype=torch.float64, device=dev)  # optimum at w = 0
    n_iter = torch.zeros(K, dtype=torch.long, device=dev)
    done = torch.zeros(K, dtype=torch.bool, device=dev)
    eye = torch.eye(m + 1, dtype=torch.float64, device=dev)
    eps = float(torch.finfo(F.dtype).eps)
    for _ in range(max_iter):
        act = (~done).nonzero()[:, 0]
        if act.numel() == 0:
            break
        # Work on the unfinished cells only once enough have finished to pay for the copy.
        Fa = F if act.numel() == K else F[act]
        wa, ba = w[act], b[act]
        z = _matvec(Fa, wa.to(F.dtype)).double() + ba[:, None]
        p = torch.sigmoid(z)
        s = p * (1 - p)
        r = p - yd
        f0 = _objective(z, yd, wa, lam)
        g = torch.cat([torch.bmm(r.to(F.dtype)[:, None, :], Fa)[:, 0].double() + lam * wa,
                       r.sum(-1, keepdim=True)], dim=1)
        Fs = Fa * s.to(F.dtype)[..., None]
        H = torch.empty(act.numel(), m + 1, m + 1, dtype=torch.float64, device=dev)
        H[:, :m, :m] = (Fa.transpose(1, 2) @ Fs).double()
        H[:, :m, :m] += lam * eye[:m, :m]
        H[:, :m, m] = Fs.sum(1).double()
        H[:, m, :m] = H[:, :m, m]
        H[:, m, m] = s.sum(-1)
        dsc = H.diagonal(dim1=1, dim2=2).clamp_min(1e-300).rsqrt()  # unit-diagonal scaling
        Hs = H * dsc[:, :, None] * dsc[:, None, :]
        with _lapack_threads(dev, m):
            L, info = torch.linalg.cholesky_ex(Hs)
            if bool((info != 0).any()):  # numerically indefinite (float32 round-off): a touch of ridge
                L, _ = torch.linalg.cholesky_ex(Hs + 1e-10 * eye)
            step = torch.cholesky_solve((g * dsc)[..., None], L)[..., 0] * dsc
        dec = (g * step).sum(-1)  # Newton decrement squared: f - f* ~ dec / 2 near the optimum
        fin = (dec / 2 <= tol * (1 + f0.abs())) | ~torch.isfinite(dec)
        # Backtracking (Armijo) per cell; a full step is accepted almost always.
        t = torch.ones_like(dec)
        f_new = f0.clone()
        todo = ~fin
        u = _matvec(Fa, step[:, :m].to(F.dtype)).double() + step[:, m:]  # z moves along -t·u
        for _ls in range(20):
            if not bool(todo.any()):
                break
            f_try = _objective(z - t[:, None] * u, yd, wa - t[:, None] * step[:, :m], lam)
            ok = todo & (f_try <= f0 - 1e-4 * t * dec)
            f_new = torch.where(ok, f_try, f_new)
            todo = todo & ~ok
            t = torch.where(todo, t / 2, t)
        # Done also when no step decreases f, or the decrease is below the features' float resolution (the
        # objective itself is only that exact): further iterations would chase round-off.
        fin = fin | todo | (f0 - f_new <= 2 * eps * (1 + f0.abs()))
        t = torch.where(fin, torch.zeros_like(t), t)
        w[act] = wa - t[:, None] * step[:, :m]
        b[act] = ba - t * step[:, m]
        n_iter[act] += (~fin).long()
        done[act] = fin
    return w.to(F.dtype), b, n_iter, done


def _lbfgs(F: torch.Tensor, y: torch.Tensor, lam: float, max_iter: int, tol: float, history: int = 10
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched L-BFGS (diagonally preconditioned) on features F [K, n, m] (centred), labels y [n] in {0, 1}.

    Costs two batched matrix-vector products per iteration, like sklearn's lbfgs per fit: u = F·d for the search
    direction (every trial step of the line search is then z + t·u, free) and F^T·r for the gradient. The
    preconditioner is the inverse of the Hessian diagonal's upper bound (s <= 1/4), which evens out the outlier
    feature scales of transformer activations that make plain L-BFGS crawl.
    Stops per cell when max|grad| <= tol * n (the mean-loss gradient below tol), when f stalls at float64
    resolution, or when no step decreases f (the float32 features' precision floor).
    """
    K, n, m = F.shape
    dev, dt = F.device, F.dtype
    f64 = torch.float64
    yd = y.to(dev, f64)
    ybar = float(yd.mean())
    w = torch.zeros(K, m, dtype=f64, device=dev)
    b = torch.full((K,), float(np.log(ybar / (1 - ybar))), dtype=f64, device=dev)
    D = torch.cat([1.0 / (0.25 * (F * F).sum(1).double() + lam), torch.full((K, 1), 4.0 / n, dtype=f64, device=dev)],
                  dim=1)
    z = b[:, None].expand(K, n).clone()

    def grad(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r = torch.sigmoid(z) - yd
        return torch.cat([torch.bmm(r.to(dt)[:, None, :], F)[:, 0].double() + lam * w, r.sum(-1, keepdim=True)], 1)

    f = _objective(z, yd, w, lam)
    g = grad(z, w)
    S = torch.zeros(K, history, m + 1, dtype=f64, device=dev)
    Y = torch.zeros_like(S)
    rho = torch.zeros(K, history, dtype=f64, device=dev)
    gamma = torch.ones(K, dtype=f64, device=dev)
    done = g.abs().amax(-1) <= tol * n
    n_iter = torch.zeros(K, dtype=torch.long, device=dev)
    for it in range(max_iter):
        act = ~done
        if not bool(act.any()):
            break
        # Two-loop recursion, newest pair first; empty or rejected slots have rho = 0 and change nothing.
        q = -g
        slots = [(it - 1 - j) % history for j in range(min(it, history))]
        alphas = []
        for sl in slots:
            a = rho[:, sl] * (S[:, sl] * q).sum(-1)
            q = q - a[:, None] * Y[:, sl]
            alphas.append(a)
        d = gamma[:, None] * D * q
        for sl, a in zip(reversed(slots), reversed(alphas), strict=True):
            beta = rho[:, sl] * (Y[:, sl] * d).sum(-1)
            d = d + (a - beta)[:, None] * S[:, sl]
        gd = (g * d).sum(-1)
        uphill = gd >= 0  # cannot happen in exact arithmetic; fall back to the preconditioned gradient
        if bool(uphill.any()):
            d = torch.where(uphill[:, None], -D * g, d)
            gd = (g * d).sum(-1)
        u = _matvec(F, d[:, :m].to(dt)).double() + d[:, m:]
        t = torch.ones(K, dtype=f64, device=dev)
        ok = ~act
        f_new = f.clone()
        for _ls in range(40):
            f_try = _objective(z + t[:, None] * u, yd, w + t[:, None] * d[:, :m], lam)
            good = ~ok & (f_try <= f + 1e-4 * t * gd)
            f_new = torch.where(good, f_try, f_new)
            ok = ok | good
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        moved = act & ok
        t = torch.where(moved, t, torch.zeros_like(t))
        step = t[:, None] * d
        w = w + step[:, :m]
        b = b + step[:, m]
        z = z + t[:, None] * u
        g_new = grad(z, w)
        yv = g_new - g
        sy = (step * yv).sum(-1)
        keep = moved & (sy > 1e-12 * (step * step).sum(-1).sqrt() * (yv * yv).sum(-1).sqrt())
        sl = it % history
        S[:, sl] = torch.where(keep[:, None], step, torch.zeros_like(step))
        Y[:, sl] = torch.where(keep[:, None], yv, torch.zeros_like(yv))
        rho[:, sl] = torch.where(keep, 1.0 / sy.where(keep, torch.ones_like(sy)), torch.zeros_like(sy))
        gamma = torch.where(keep, sy / (yv * D * yv).sum(-1).clamp_min(1e-300), gamma)
        stalled = (f - f_new) <= 1e-13 * torch.maximum(f.abs(), torch.ones_like(f))
        f = torch.where(moved, f_new, f)
        g = torch.where(moved[:, None], g_new, g)
        n_iter += act.long()
        done = done | (act & (~ok | stalled | (g.abs().amax(-1) <= tol * n)))
    conv = g.abs().amax(-1) <= tol * n
    return w.to(dt), b, n_iter, conv | done & (n_iter < max_iter)


def choose_solver(n: int, d: int, device: torch.device | None = None) -> str:
    """"newton" unless its (m+1)² Hessian per cell (m = min(n, d)) would pass 8192² entries: then "lbfgs".

    Measured (benchmarks/bench_probe.py): Newton needs ~10 iterations where L-BFGS needs 100-200 to the same
    precision on transformer activations (nearly separable classes make the curvature uneven, which no feature
    preconditioner fixes), and its Hessian products run at matrix-matrix speed, so it wins on CPU and GPU alike.
    """
    return "newton" if min(n, d) <= 8192 else "lbfgs"


def fit_logreg(X: torch.Tensor, y: torch.Tensor, C: float = 1.0, *, solver: str = "auto", max_iter: int | None = None,
               tol: float | None = None) -> LogRegFit:
    """Fit K L2 logistic regressions on X [K, n, d] (float32/64) with shared labels y [n] in {0, 1}.

    solver: "newton" (few exact steps; tol on the Newton decrement, relative to f; default 1e-9, max_iter 50),
    "lbfgs" (tol on the mean-loss gradient's max-abs; default 1e-6, 100x stricter than sklearn's; max_iter 1000),
    or "auto" (choose_solver). Both reach the same optimum.
    """
    if X.ndim != 3:
        raise ValueError(f"X must be [cells, examples, features], got {tuple(X.shape)}")
    K, n, d = X.shape
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    if solver == "auto":
        solver = choose_solver(n, d, X.device)
    if solver not in ("newton", "lbfgs"):
        raise ValueError(f"solver must be 'auto', 'newton' or 'lbfgs', got {solver!r}")
    y = y.to(X.device)
    with _full_precision(), torch.no_grad():
        mu = X.mean(1, keepdim=True)
        Xc = X - mu
        Q = None
        if solver == "lbfgs":
            w, b, n_iter, conv = _lbfgs(Xc, y, 1.0 / C, max_iter or 1000, tol if tol is not None else 1e-6)
        else:
            if d > n:
                # Row space of the centred data (rank <= n - 1): Xc = F Q^T with F = Xc Q [K, n, n].
                with _lapack_threads(X.device, n):
                    Q, R = torch.linalg.qr(Xc.transpose(1, 2), mode="reduced")  # Q [K, d, n], R [K, n, n]
                F = R.transpose(1, 2).contiguous()
            else:
                F = Xc
            w, b, n_iter, conv = _newton(F, y, 1.0 / C, max_iter or 50, tol if tol is not None else 1e-9)
        coef = (Q @ w[..., None])[..., 0] if Q is not None else w
        intercept = b - torch.einsum("kd,kd->k", mu[:, 0].double(), coef.double())
    return LogRegFit(coef=coef, intercept=intercept.to(coef.dtype), n_iter=n_iter, converged=conv)


# ---- ROC ---------------------------------------------------------------------------------------------------

def _avg_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged (scipy.stats.rankdata's 'average'), for one row."""
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    new = np.r_[True, ss[1:] != ss[:-1]]
    grp = np.cumsum(new) - 1
    starts = np.r_[np.nonzero(new)[0], len(s)]
    avg = 0.5 * (starts[grp] + starts[grp + 1] - 1) + 1
    out = np.empty(len(s), dtype=np.float64)
    out[order] = avg
    return out


def roc_auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of scores [K, m] against binary labels y [m] (Mann-Whitney U; ties count 1/2)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("ROC AUC needs both classes among the scored examples")
    out = np.empty(scores.shape[0])
    for k in range(scores.shape[0]):
        out[k] = (_avg_ranks(scores[k])[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    return out


def roc_curve(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) to (1, 1), label 1 positive."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(s[1:] != s[:-1])[0], len(s) - 1]  # last index of each distinct threshold
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tpr = np.r_[0.0, tp / max(int(y.sum()), 1)]
    fpr = np.r_[0.0, fp / max(int((~y).sum()), 1)]
    return fpr, tpr, np.r_[np.inf, s[last]]
