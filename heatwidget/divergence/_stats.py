"""Divergences between next-token distributions, computed on the device from log-probabilities (float32, nats).

Working in log space keeps tiny probabilities exact (a softmax followed by log would underflow them to -inf) and
lets KL/JS reduce over the vocabulary where the logits already are, so only [rows, positions] leave the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["log_probs", "kl_div", "js_div", "top_k", "rank_of"]

LN2 = math.log(2.0)
# The largest float32 not above ln 2: float32(ln 2) rounds *up*, and a JS "≤ ln 2" must hold in the stored matrix.
LN2_F32 = float(np.nextafter(np.float32(LN2), np.float32(0)))


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Temperature-1 log-softmax over the last axis, in float32 whatever the model's dtype."""
    return torch.log_softmax(logits.float(), dim=-1)


def kl_div(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) = Σ p (log p − log q) over the last axis, from log-probabilities; broadcasts.

    Terms with p = 0 contribute 0 (exp(-inf) · finite = 0 is guarded explicitly); rounding can leave
    values of order -1e-7 for identical inputs, which are clamped to 0 (a divergence is never negative).
    """
    p = logp.exp()
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))
    return terms.sum(-1).clamp_min(0.0)


def js_div(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence ½KL(P‖M) + ½KL(Q‖M), M = (P+Q)/2, in nats (0 ≤ JS ≤ ln 2).

    Note: scipy.spatial.distance.jensenshannon returns the square root of this (a distance), in its base.
    """
    # log M = mx + log(½(e^(log p − mx) + e^(log q − mx))): exactly log p when p = q (so JS(p, p) is exactly 0),
    # and never an overflow; tokens impossible under both stay -inf.
    mx = torch.maximum(logp, logq)
    finite = torch.isfinite(mx)
    safe = torch.where(finite, mx, torch.zeros_like(mx))
    logm = safe + torch.log(0.5 * ((logp - safe).exp() + (logq - safe).exp()))
    logm = torch.where(finite, logm, mx)
    return (0.5 * kl_div(logp, logm) + 0.5 * kl_div(logq, logm)).clamp(0.0, LN2_F32)


def top_k(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most likely tokens: (ids, probabilities), each [..., k], most likely first."""
    k = min(int(k), logp.shape[-1])
    v, i = logp.topk(k, dim=-1)
    return i, v.exp()


def rank_of(logp: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """1-based rank of `token` (ids [...]) under log-probabilities [..., V]: 1 + #tokens strictly more likely."""
    own = logp.gather(-1, token[..., None])
    return (logp > own).sum(-1) + 1
