"""The statistics of weight matrices that `weight_change` and `module_stats` show, and the notes that explain a
cell that is not finite. Every reduction is in float32, with sums of squares added in float64."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..anatomy import Anatomy, Part
from .sources import Source

__all__ = [
    "CHANGE_STATS",
    "MODULE_STATS",
    "pair_stats",
    "change_value",
    "single_value",
    "effective_rank",
    "check_stat",
    "nonfinite_notes",
    "stat_notes",
    "moe_meta",
]


CHANGE_STATS: dict[str, str] = {
    "relative": "‖W_b − W_a‖_F / ‖W_a‖_F",
    "density": "fraction of |W_b − W_a| > eps",
    "absolute": "‖W_b − W_a‖_F",
}
MODULE_STATS: dict[str, str] = {
    "norm": "‖W‖_F",
    "rms": "‖W‖_F / √numel",
    "grad": "‖∂L/∂W‖_F",
    "grad_relative": "‖∂L/∂W‖_F / ‖W‖_F",
}

_CHUNK_ELEMENTS = 1 << 20  # 4 MB of float32 per ΔW block


def pair_stats(wa: torch.Tensor, wb: torch.Tensor, eps: float) -> tuple[float, float, float, int, int]:
    """(‖W_a‖, ‖W_b‖, ‖ΔW‖, #|ΔW| > eps, numel) of two float32 matrices.

    ΔW is formed in row blocks of about 4 MB, never whole, so the reduction adds a few MB to the pair being
    compared rather than another tensor's worth. Each block is reduced in float32; the block sums of squares
    are added in float64.
    """
    rows = wa.shape[0] if wa.ndim > 1 else 1
    wa2, wb2 = wa.reshape(rows, -1), wb.reshape(rows, -1)
    step = max(1, _CHUNK_ELEMENTS // max(1, wa2.shape[1]))
    sa = sb = sd = 0.0
    changed = 0
    for i in range(0, rows, step):
        a, b = wa2[i : i + step], wb2[i : i + step]
        d = b - a
        sa += float(torch.linalg.vector_norm(a)) ** 2
        sb += float(torch.linalg.vector_norm(b)) ** 2
        sd += float(torch.linalg.vector_norm(d)) ** 2
        changed += int(torch.count_nonzero(d.abs_() > eps))
    return math.sqrt(sa), math.sqrt(sb), math.sqrt(sd), changed, wa.numel()


def _nonfinite_note(src: Source, part: Part, layer: int, name: str, w: torch.Tensor, of: str = "") -> str:
    """Name a weight whose statistics are not finite (tensor, layer, module) for meta["notes"] and the widget."""
    nan, inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
    found = [f"{k:,} {what}" for k, what in ((nan, "NaN"), (inf, "±inf")) if k]
    what = f"{' and '.join(found)} value{'s' if nan + inf > 1 else ''}" if found else "values too large for float32"
    return f"{src.role}: layer {layer} {name}{of} ({src.key(part)} in {src.where()}) has {what}: shown as n/a"


def nonfinite_notes(sides: list[tuple[Source, Part, torch.Tensor, float]], layer: int, name: str) -> list[str]:
    """Notes for a cell whose norms are not finite: each side (source, part, weight, its norm) that is to blame,
    or the difference itself when only ‖ΔW‖ overflowed."""
    notes = [_nonfinite_note(src, part, layer, name, w) for src, part, w, norm in sides if not math.isfinite(norm)]
    return notes or [
        f"layer {layer} {name}: ‖W_b − W_a‖ overflows float32 ({sides[0][0].key(sides[0][1])}): shown as n/a"
    ]


def stat_notes(
    src: Source, part: Part, layer: int, name: str, w: torch.Tensor, g: torch.Tensor | None, v: float
) -> list[str]:
    """module_stats: why a cell is not finite (a NaN/inf weight or gradient, named), if it is not a plain 0/0."""
    if not bool(torch.isfinite(w).all()):
        return [_nonfinite_note(src, part, layer, name, w)]
    if g is not None and not bool(torch.isfinite(g).all()):
        return [_nonfinite_note(src, part, layer, name, g, of=" gradient")]
    return [] if v != v else [_nonfinite_note(src, part, layer, name, w)]


def change_value(stat: str, na: float, nd: float, changed: int, numel: int) -> float:
    if stat == "relative":
        return nd / na if na > 0 else (0.0 if nd == 0 else math.nan)
    if stat == "density":
        return changed / numel if numel else math.nan
    return nd


def check_stat(stat: str, allowed: dict[str, str]) -> str:
    if not isinstance(stat, str) or stat not in allowed:
        raise ValueError(f"unknown stat {stat!r}; use one of {list(allowed)}")
    return stat


def effective_rank(s: torch.Tensor | np.ndarray) -> float:
    """Effective rank of a spectrum (Roy & Vetterli 2007): exp of the entropy of σ_i / Σσ; 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def single_value(stat: str, w: torch.Tensor, g: torch.Tensor | None) -> float:
    if stat == "norm":
        return float(torch.linalg.vector_norm(w))
    if stat == "rms":
        return float(torch.linalg.vector_norm(w)) / math.sqrt(w.numel())
    assert g is not None
    ng = float(torch.linalg.vector_norm(g))
    if stat == "grad":
        return ng
    nw = float(torch.linalg.vector_norm(w))
    return ng / nw if nw > 0 else math.nan


def moe_meta(anatomy: Anatomy) -> dict[str, Any]:
    """How a mixture-of-experts model's mlp.* cells are computed (empty for a dense model)."""
    if not anatomy.n_experts:
        return {}
    return {
        "experts": anatomy.n_experts,
        "experts_note": "mlp.up/mlp.down/mlp.gate of an MoE layer are over all its experts: the Frobenius norm "
        "of the stacked [experts, out, in] tensor (density: over all its elements); the drill "
        "shows each expert. The router (mlp.router) is not a column.",
    }
