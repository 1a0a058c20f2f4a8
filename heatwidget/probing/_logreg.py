"""Many L2 logistic regressions at once: batched solvers for the optimum sklearn's LogisticRegression seeks.

Each cell k fits   min_{w,b}  sum_i log(1 + exp(-(2y_i - 1)(x_ki . w + b))) + ||w||^2 / (2C)
(sklearn's `C * sum(loss) + ||w||^2 / 2`, same minimiser; the intercept is not penalised). All cells move together:
every step is a batched tensor op, so K cells cost a few large matmuls per iteration instead of K Python-level
optimiser runs. Two solvers reach the same optimum:

- "newton": damped Newton, ~5-10 iterations, each forming and factorising the [d, d] Hessian of every cell. Suits
  accelerators, where those matmuls are nearly free and every iteration costs a host sync.
- "lbfgs": L-BFGS in coordinates whitened by Böhning's bound. The logistic Hessian never exceeds X^T X / 4 + lam I
  (Böhning & Lindsay 1988), so with R^T R = that bound and v = R w, the Hessian in v has its eigenvalues in (0, 1]:
  one Gram matrix and one Cholesky factorisation per cell, then O(n d) iterations (79-199 on the demo model, where
  sklearn's unpreconditioned lbfgs needs up to ~1,900 on the same raw activations). For small d, after a few
  iterations it re-whitens once by the Hessian at the current point (then ~8 iterations more: see
  REWHITEN_AFTER). On CPU it is faster than Newton (measured in benchmarks/bench_probe.py), so it is the CPU
  default.

Exactness tricks (each leaves the minimiser unchanged):
- features are centred on the training mean (the free intercept absorbs the shift), which conditions H and makes
  the bound block-diagonal (the intercept's entry is n / 4);
- when d > n the problem is solved in the n-dim row space of the centred data (thin QR, X = F Q^T with Q
  orthonormal): the penalty only ever pulls w into that space, and ||Q v|| = ||v||, so it is the same problem;
- matrices are scaled to unit diagonal before their Cholesky factorisation, in float64;
- a backtracking line search keeps every step a descent step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SOLVERS", "LogRegFit", "fit_logreg", "resolve_solver", "roc_auc", "roc_curve"]


@dataclass
class LogRegFit:
    coef: torch.Tensor  # [K, d] in the original feature space
    intercept: torch.Tensor  # [K]
    n_iter: torch.Tensor  # [K] Newton iterations taken
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


def _objective(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Per cell; lam [K] is each cell's L2 strength (1/C, rescaled with its features: see _magnitude_scale)."""
    z = z.double()
    return (torch.nn.functional.softplus(z) - y * z).sum(-1) + 0.5 * lam * (w.double() ** 2).sum(-1)


def _scaled_cholesky(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cholesky factor of A [K, m, m] (float64, SPD) scaled to unit diagonal: returns (L, dsc) with
    L L^T = dsc A dsc, dsc = diag(A)^-1/2. Float32 round-off can leave a near-singular A numerically indefinite:
    then a touch of ridge."""
    m = A.shape[-1]
    dsc = A.diagonal(dim1=1, dim2=2).clamp_min(1e-300).rsqrt()
    scaled = A * dsc[:, :, None] * dsc[:, None, :]
    with _lapack_threads(A.device, m):
        L, info = torch.linalg.cholesky_ex(scaled)
        if bool((info != 0).any()):
            L, _ = torch.linalg.cholesky_ex(scaled + 1e-10 * torch.eye(m, dtype=A.dtype, device=A.device))
    return L, dsc


def _backtrack(
    z: torch.Tensor,
    dz: torch.Tensor,
    w: torch.Tensor,
    dw: torch.Tensor,
    y: torch.Tensor,
    lam: torch.Tensor,
    f0: torch.Tensor,
    slope: torch.Tensor,
    todo: torch.Tensor,
    tries: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Armijo backtracking per cell along (z, w) + t (dz, dw), from t = 1, for the cells in `todo`. The objective
    is evaluated from z, so no pass over the features. Returns (t, f at the accepted step, failed): `failed` marks
    cells where no step of `tries` halvings decreased f (at the optimum to the features' float resolution)."""
    t = torch.ones_like(f0)
    f_new = f0.clone()
    todo = todo.clone()
    for _ in range(tries):
        if not bool(todo.any()):
            break
        f_try = _objective(z + t[:, None] * dz, y, w + t[:, None] * dw, lam)
        accept = todo & (f_try <= f0 + 1e-4 * t * slope)
        f_new = torch.where(accept, f_try, f_new)
        todo &= ~accept
        t = torch.where(todo, t / 2, t)
    return t, f_new, todo


def _newton(
    F: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, max_iter: int, tol: float
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
    eps = float(torch.finfo(F.dtype).eps)
    for _ in range(max_iter):
        act = (~done).nonzero()[:, 0]
        if act.numel() == 0:
            break
        # Work on the unfinished cells only once enough have finished to pay for the copy.
        Fa = F if act.numel() == K else F[act]
        wa, ba, lama = w[act], b[act], lam[act]
        z = _matvec(Fa, wa.to(F.dtype)).double() + ba[:, None]
        p = torch.sigmoid(z)
        s = p * (1 - p)
        r = p - yd
        f0 = _objective(z, yd, wa, lama)
        g = torch.cat(
            [torch.bmm(r.to(F.dtype)[:, None, :], Fa)[:, 0].double() + lama[:, None] * wa, r.sum(-1, keepdim=True)],
            dim=1,
        )
        L, dsc = _scaled_cholesky(_logistic_hessian(Fa, s, lama))
        with _lapack_threads(dev, m):
            step = torch.cholesky_solve((g * dsc)[..., None], L)[..., 0] * dsc
        dec = (g * step).sum(-1)  # Newton decrement squared: f - f* ~ dec / 2 near the optimum
        fin = (dec / 2 <= tol * (1 + f0.abs())) | ~torch.isfinite(dec)
        # A full step is accepted almost always.
        u = _matvec(Fa, step[:, :m].to(F.dtype)).double() + step[:, m:]  # z moves along -t·u
        t, f_new, failed = _backtrack(z, -u, wa, -step[:, :m], yd, lama, f0, -dec, ~fin, tries=20)
        # Done also when no step decreases f, or the decrease is below the features' float resolution (the
        # objective itself is only that exact): further iterations would chase round-off.
        fin = fin | failed | (f0 - f_new <= 2 * eps * (1 + f0.abs()))
        t = torch.where(fin, torch.zeros_like(t), t)
        w[act] = wa - t[:, None] * step[:, :m]
        b[act] = ba - t * step[:, m]
        n_iter[act] += (~fin).long()
        done[act] = fin
    return w.to(F.dtype), b, n_iter, done


@dataclass
class _Cells:
    """L-BFGS working state of the cells still being fitted, one row per cell. `take` keeps a subset, so that
    finished cells stop costing passes over their features."""

    index: torch.Tensor  # each row's cell number in the caller's batch
    F: torch.Tensor  # [k, n, m] centred features
    chol: torch.Tensor  # [k, m, m] unit-diagonal Cholesky factor of the whitened w-block (features' dtype)
    dsc: torch.Tensor  # [k, m] its diagonal scaling
    rb: torch.Tensor  # [k] sqrt of the intercept's curvature
    cb: torch.Tensor  # [k, m] the (w, b) cross term over the intercept's curvature
    w: torch.Tensor  # [k, m]
    b: torch.Tensor  # [k]
    z: torch.Tensor  # [k, n] = F w + b
    f: torch.Tensor  # [k] objective
    g: torch.Tensor  # [k, m + 1] gradient in whitened coordinates
    S: torch.Tensor  # [k, memory, m + 1] curvature pairs, in whitened coordinates
    Y: torch.Tensor
    rho: torch.Tensor  # [k, memory]; 0 marks a skipped pair
    lam: torch.Tensor  # [k] L2 strength
    done: torch.Tensor  # [k] bool: finished, waiting for the next take()

    def take(self, keep: torch.Tensor) -> _Cells:
        return _Cells(**{name: value[keep] for name, value in vars(self).items()})


def _inverse_hessian_times(S: torch.Tensor, Y: torch.Tensor, valid: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """L-BFGS's inverse-Hessian estimate times g, for pairs S, Y [K, k, m] (oldest first; `valid` [K, k] False for
    skipped pairs), in the compact form of Byrd, Nocedal & Schnabel (1994):
        H g = gamma g + S^T p - gamma Y^T r,  r = R^-1 S g,  p = R^-T ((D + gamma Y Y^T) r - gamma Y g),
    R = the upper triangle of S Y^T, D its diagonal, gamma = s.y / y.y of the newest pair. Equal to the two-loop
    recursion, in a dozen batched ops instead of ~10 per pair: on CPU the per-op overhead is what L-BFGS costs.
    """
    if S.shape[1] == 0:
        return g.clone()
    keep = valid.to(g.dtype)
    S, Y = S * keep[..., None], Y * keep[..., None]  # a skipped pair contributes nothing ...
    SY = torch.bmm(S, Y.transpose(1, 2))
    R = SY.triu() + torch.diag_embed(1 - keep)  # ... and gets a unit pivot, so R stays invertible
    D = SY.diagonal(dim1=1, dim2=2) + (1 - keep)
    yy = (Y[:, -1] ** 2).sum(1)
    gamma = torch.where(valid[:, -1], SY[:, -1, -1] / yy.clamp_min(1e-300), torch.ones_like(yy))[:, None]
    r = torch.linalg.solve_triangular(R, torch.bmm(S, g[..., None]), upper=True)
    Yr = torch.bmm(Y, torch.bmm(Y.transpose(1, 2), r))
    t = D[..., None] * r + gamma[..., None] * (Yr - torch.bmm(Y, g[..., None]))
    p = torch.linalg.solve_triangular(R.transpose(1, 2), t, upper=False)
    return gamma * g + torch.bmm(p.transpose(1, 2), S)[:, 0] - gamma * torch.bmm(r.transpose(1, 2), Y)[:, 0]


def _to_w(c: _Cells, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R^-1 v: a direction [k, m + 1] in whitened coordinates mapped back to (w [k, m], b [k]).

    v = R (w, b) with v_w = R_w w and v_b = rb (b + cb . w): R_w = L^T D^-1 whitens the w-block (its Schur complement
    once the intercept couples in), and the intercept's own coordinate stays in float64."""
    u = torch.linalg.solve_triangular(c.chol.transpose(1, 2), v[:, :-1].to(c.F.dtype)[..., None], upper=True)
    u = (u[..., 0] * c.dsc).double()
    return u, v[:, -1] / c.rb - (c.cb * u).sum(1)


def _grad_v(c: _Cells, z: torch.Tensor, w: torch.Tensor, yd: torch.Tensor) -> torch.Tensor:
    """The gradient in whitened coordinates, R^-T (g_w, g_b) = (L^-1 D (g_w - cb g_b), g_b / rb)."""
    r = torch.sigmoid(z) - yd
    gb = r.sum(-1)
    gw = torch.bmm(r.to(c.F.dtype)[:, None, :], c.F)[:, 0].double() + c.lam[:, None] * w - c.cb * gb[:, None]
    gv = torch.linalg.solve_triangular(c.chol, (gw.to(c.F.dtype) * c.dsc)[..., None], upper=False)[..., 0]
    return torch.cat([gv.double(), (gb / c.rb)[:, None]], dim=1)


def _lbfgs_start(F: torch.Tensor, yd: torch.Tensor, lam: torch.Tensor, memory: int) -> _Cells:
    """Every cell at w = 0 with the intercept at its optimum there, and the whitening factor of its bound."""
    K, n, m = F.shape
    dev = F.device
    bound = (F.transpose(1, 2) @ F).double() / 4
    bound.diagonal(dim1=1, dim2=2).add_(lam[:, None])
    chol, dsc = _scaled_cholesky(bound)
    del bound
    ybar = float(yd.mean())
    w0 = torch.zeros(K, m, dtype=torch.float64, device=dev)
    b0 = torch.full((K,), float(np.log(ybar / (1 - ybar))), dtype=torch.float64, device=dev)  # optimum at w = 0
    z0 = b0[:, None].repeat(1, n)
    pairs = torch.zeros(K, memory, m + 1, dtype=torch.float64, device=dev)
    # Both maps (_to_w, _grad_v) use the same float32 factor, so they are exact inverses of one change of
    # variables whatever its round-off: the optimum found is the problem's own.
    c = _Cells(
        index=torch.arange(K, device=dev),
        F=F,
        chol=chol.to(F.dtype),
        dsc=dsc.to(F.dtype),
        rb=torch.full((K,), (n / 4) ** 0.5, dtype=torch.float64, device=dev),  # the bound's intercept entry: n / 4
        cb=torch.zeros(K, m, dtype=torch.float64, device=dev),  # centred features: no cross term
        w=w0,
        b=b0,
        z=z0,
        f=_objective(z0, yd, w0, lam),
        g=torch.empty(0),
        S=pairs,
        Y=pairs.clone(),
        rho=torch.zeros(K, memory, dtype=torch.float64, device=dev),
        lam=lam,
        done=torch.zeros(K, dtype=torch.bool, device=dev),
    )
    c.g = _grad_v(c, c.z, c.w, yd)
    return c


def _lbfgs_direction(c: _Cells, it: int, memory: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(direction, slope g·direction) in whitened coordinates; steepest descent where a stale pair bent it uphill."""
    slots = [(it - 1 - j) % memory for j in range(min(it, memory))][::-1]  # oldest pair first
    direction = -_inverse_hessian_times(c.S[:, slots], c.Y[:, slots], c.rho[:, slots] > 0, c.g)
    slope = (c.g * direction).sum(1)
    uphill = slope >= 0
    direction = torch.where(uphill[:, None], -c.g, direction)
    return direction, torch.where(uphill, -(c.g * c.g).sum(1), slope)


def _lbfgs_step(c: _Cells, it: int, memory: int, yd: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One iteration for every unfinished cell; returns (live, finished) per cell of `c`."""
    direction, slope = _lbfgs_direction(c, it, memory)
    # The quasi-Newton decrement g^T H^-1 g / 2 (H^-1 as L-BFGS has learnt it) estimates the remaining gap; the
    # gradient's plain length in v would understate it wherever the fit is confident and H << the bound.
    ok = ~c.done & (-slope / 2 <= tol * (1 + c.f.abs()))
    live = ~c.done & ~ok
    u, ub = _to_w(c, direction)
    Fu = _matvec(c.F, u.to(c.F.dtype)).double() + ub[:, None]
    # In whitened coordinates the unit step is almost always accepted.
    t, f_new, stalled = _backtrack(c.z, Fu, c.w, u, yd, c.lam, c.f, slope, live, tries=30)
    t = torch.where(live & ~stalled, t, torch.zeros_like(t))
    c.z, c.w, c.b = c.z + t[:, None] * Fu, c.w + t[:, None] * u, c.b + t * ub
    g_new = _grad_v(c, c.z, c.w, yd)
    s_v, y_v = t[:, None] * direction, g_new - c.g
    sy = (s_v * y_v).sum(1)
    slot = it % memory
    c.S[:, slot], c.Y[:, slot] = s_v, y_v
    c.rho[:, slot] = torch.where(
        sy > 1e-12 * y_v.norm(dim=1) * s_v.norm(dim=1), 1 / sy.clamp_min(1e-300), torch.zeros_like(sy)
    )
    c.f = torch.where(live & ~stalled, f_new, c.f)
    c.g = torch.where(live[:, None], g_new, c.g)
    return live, ok | stalled


# After REWHITEN_AFTER iterations the fit is near its optimum, where the logistic Hessian is far below Böhning's
# bound (confident examples contribute p(1-p) << 1/4): L-BFGS restarts in coordinates whitened by the Hessian at
# that point, and converges in a handful of iterations more. One more Gram matrix per cell buys it, so only where
# that matrix is cheap next to the passes it saves: on the demo's resid features (m = 192) iterations fall 711 -> 220
# and the fit takes 0.72x the time; at m = 576 (mlp_in) the saved passes only pay for the Gram matrix (measured in
# benchmarks/bench_probe.py).
REWHITEN_AFTER = 8
REWHITEN_MAX_DIM = 384


def _logistic_hessian(F: torch.Tensor, s: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The objective's Hessian in (w, b), [k, m + 1, m + 1] float64, for curvatures s = p(1 - p) [k, n]."""
    k, _n, m = F.shape
    Fs = F * s.to(F.dtype)[..., None]
    H = torch.empty(k, m + 1, m + 1, dtype=torch.float64, device=F.device)
    H[:, :m, :m] = (F.transpose(1, 2) @ Fs).double()
    H.diagonal(dim1=1, dim2=2)[:, :m].add_(lam[:, None])
    H[:, :m, m] = Fs.sum(1).double()
    H[:, m, :m] = H[:, :m, m]
    H[:, m, m] = s.sum(-1)
    return H


def _rewhiten(c: _Cells, yd: torch.Tensor) -> None:
    """Whiten by the Hessian at the current point instead of the bound; the curvature pairs, learnt in the old
    coordinates, are dropped."""
    p = torch.sigmoid(c.z)
    H = _logistic_hessian(c.F, p * (1 - p), c.lam)
    m = c.w.shape[1]
    h, cross = H[:, m, m], H[:, :m, m]
    chol, dsc = _scaled_cholesky(H[:, :m, :m] - cross[:, :, None] * cross[:, None, :] / h[:, None, None])
    c.chol, c.dsc = chol.to(c.F.dtype), dsc.to(c.F.dtype)
    c.rb, c.cb = h.sqrt(), cross / h[:, None]
    c.S.zero_()
    c.Y.zero_()
    c.rho.zero_()
    c.g = _grad_v(c, c.z, c.w, yd)


def _lbfgs(
    F: torch.Tensor, y: torch.Tensor, lam: torch.Tensor, max_iter: int, tol: float, memory: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L-BFGS on features F [K, n, m] (centred), labels y [n] in {0, 1}, in Böhning-whitened coordinates.

    v = R (w, b) with R = L^T D^-1, where D^-1 L L^T D^-1 = the bound [[F^T F / 4 + lam I, 0], [0, n / 4]]
    (unit-diagonal scaled Cholesky), later the Hessian at the current point (see REWHITEN_AFTER). Only w, b and
    z = F w + b are kept; directions found in v are mapped back through R^-1 (two small triangular solves per
    iteration), and the line search moves z along F u without touching F again.
    """
    K, n, m = F.shape
    dev = F.device
    yd = y.to(dev, torch.float64)
    c = _lbfgs_start(F, yd, lam, memory)
    w_out, b_out = c.w.clone(), c.b.clone()
    n_iter = torch.zeros(K, dtype=torch.long, device=dev)
    converged = torch.zeros(K, dtype=torch.bool, device=dev)
    rewhiten_at = REWHITEN_AFTER if m <= REWHITEN_MAX_DIM else -1
    it0 = 0  # the iteration the curvature pairs start from
    for it in range(max_iter):
        if it == rewhiten_at:
            _rewhiten(c, yd)
            it0 = it
        live, finished = _lbfgs_step(c, it - it0, memory, yd, tol)
        n_iter[c.index] += live.long()
        c.done |= finished
        if bool(finished.any()):
            converged[c.index[finished]] = True
            w_out[c.index], b_out[c.index] = c.w, c.b
            if bool(c.done.all()):
                break
            if int(c.done.sum()) * 4 >= len(c.done):  # copy the features only once it pays
                c = c.take(~c.done)
    else:
        w_out[c.index], b_out[c.index] = c.w, c.b
    return w_out.to(F.dtype), b_out, n_iter, converged


def fit_logreg(
    X: torch.Tensor,
    y: torch.Tensor,
    C: float = 1.0,
    *,
    max_iter: int | None = None,
    tol: float = 1e-9,
    solver: str = "auto",
) -> LogRegFit:
    """Fit K L2 logistic regressions on X [K, n, d] (float32/64) with shared labels y [n] in {0, 1}.

    solver: "newton", "lbfgs", or "auto" (L-BFGS on CPU, Newton on accelerators: see the module docstring).
    max_iter: default 50 Newton or 1000 L-BFGS iterations.
    tol: stop a cell when its Newton decrement (≈ the remaining objective gap; for L-BFGS, the same with its
    learnt inverse Hessian) falls below tol·(1 + f), or when its objective stops decreasing at the features' float
    resolution.
    """
    if X.ndim != 3:
        raise ValueError(f"X must be [cells, examples, features], got {tuple(X.shape)}")
    K, n, d = X.shape
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    method = resolve_solver(solver, X.device)
    y = y.to(X.device)
    with _full_precision(), torch.no_grad():
        scale = _magnitude_scale(X)
        if scale is not None:
            X = X / scale[:, None, None]  # exact (powers of two); the penalty follows below
        lam = torch.full((K,), 1.0 / C, dtype=torch.float64, device=X.device)
        if scale is not None:
            lam = lam / scale.double() ** 2
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
        if method == "newton":
            w, b, n_iter, conv = _newton(F, y, lam, max_iter or 50, tol)
        else:
            w, b, n_iter, conv = _lbfgs(F, y, lam, max_iter or 1000, tol)
        coef = (Q @ w[..., None])[..., 0] if Q is not None else w
        intercept = b - torch.einsum("kd,kd->k", mu[:, 0].double(), coef.double())
        if scale is not None:
            coef = coef / scale[:, None]  # back to the caller's features: x . coef = (x / s) . w
    return LogRegFit(coef=coef, intercept=intercept.to(coef.dtype), n_iter=n_iter, converged=conv)


# Features whose largest magnitude lies outside [2^-16, 2^16] are rescaled (see _magnitude_scale); inside it
# nothing changes, so ordinary activations take exactly the unscaled path.
_SAFE_MAGNITUDE = 2.0**16


def _magnitude_scale(X: torch.Tensor) -> torch.Tensor | None:
    """Per-cell powers of two s [K] that bring max |X_k| near 1, or None when every cell is already in range.

    Float32 holds features up to ~3e38, but their Gram matrix (X^T X, ~n·max²) overflows from max ~1e17 on, and
    below ~1e-19 its entries are subnormal: the solvers then return garbage (1e20·X gave AUC 0.15 for a
    separable problem). Solving for w' = s·w on X / s with the penalty lam / s² is the same problem exactly —
    the optimum, and so the AUC, of sklearn's LogisticRegression(C) on X — and dividing by a power of two
    changes no mantissa. The intercept is unaffected (centring absorbs the scale), and the coefficients are
    mapped back to X's units at the end.
    """
    big = torch.maximum(X.amax(dim=(1, 2)), -X.amin(dim=(1, 2))).double()  # no |X| copy
    if bool(((big <= _SAFE_MAGNITUDE) & ((big >= 1 / _SAFE_MAGNITUDE) | (big == 0))).all()):
        return None
    exponent = torch.where(big > 0, torch.round(torch.log2(big.clamp_min(1e-300))), torch.zeros_like(big))
    return torch.exp2(exponent.clamp(-126, 127)).to(X.dtype)  # normal float32 powers of two


SOLVERS = {
    "newton": "batched damped Newton",
    "lbfgs": "batched L-BFGS, whitened by Böhning's bound, then by the Hessian",
}


def resolve_solver(solver: str, device: torch.device | str) -> str:
    """ "auto" -> "lbfgs" on CPU, "newton" elsewhere; a clear error for anything else."""
    if solver == "auto":
        return "lbfgs" if torch.device(device).type == "cpu" else "newton"
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: use 'auto', 'newton' or 'lbfgs'")
    return solver


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
