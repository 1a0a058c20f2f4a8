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

__all__ = ["LogRegFit", "fit_logreg", "roc_auc", "roc_curve"]


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


def fit_logreg(X: torch.Tensor, y: torch.Tensor, C: float = 1.0, *, max_iter: int = 50, tol: float = 1e-9
               ) -> LogRegFit:
    """Fit K L2 logistic regressions on X [K, n, d] (float32/64) with shared labels y [n] in {0, 1}.

    tol: stop a cell when its Newton decrement (≈ twice the remaining objective gap) falls below tol·(1 + f), or
    when its objective stops decreasing at the features' float resolution. (A batched L-BFGS was tried and
    dropped: on real activations it needed over 1000 iterations for what Newton reaches in ~10.)
    """
    if X.ndim != 3:
        raise ValueError(f"X must be [cells, examples, features], got {tuple(X.shape)}")
    K, n, d = X.shape
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    y = y.to(X.device)
    with _full_precision(), torch.no_grad():
        mu = X.mean(1, keepdim=True)
        Xc = X - mu
        Q = None
        if d > n:
            # Row space of the centred data (rank <= n - 1): Xc = F Q^T with F = Xc Q [K, n, n].
            with _lapack_threads(X.device, n):
                Q, R = torch.linalg.qr(Xc.transpose(1, 2), mode="reduced")  # Q [K, d, n], R [K, n, n]
            F = R.transpose(1, 2).contiguous()
        else:
            F = Xc
        w, b, n_iter, conv = _newton(F, y, 1.0 / C, max_iter, tol)
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
