"""`hw.weight_change`: how much each attention/MLP projection changed between two models or checkpoints.

On the analysis contract (`heatwidget.analysis`): the item is one layer of the two models (`LayerPair`),
`layer_change` the public per-item function (it reads each stored tensor pair of the layer once, reduces it and
drops it before the next), `WEIGHT_CHANGE` the declaration. The per-layer results hold the norms and counts of
every statistic, so switching `stat` re-reduces without reading a tensor again. It runs in this process: the
sources are this process's models or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._lm import display_name
from .._memory import release_freed_memory
from ..analysis import Analysis, Config, Option, Run, Table, run_analysis
from ..anatomy import MODULES
from ..matrix import HeatMatrix, suggests_log_scale
from .drill import change_drill
from .sources import Source, check_compatible, require_parts, source, tensor_groups
from .stats import CHANGE_STATS, change_value, check_stat, moe_meta, nonfinite_notes, pair_stats

__all__ = ["weight_change", "layer_change", "LayerPair", "LayerChange", "WEIGHT_CHANGE", "FIGURE_TITLE"]

# The figure's title, as in the module × layer weight-change heatmaps this reproduces.
FIGURE_TITLE = "Attention and MLP component analysis"


@dataclass
class _Pair:
    """The two sources of one weight_change call, shared by its items."""

    a: Source
    b: Source
    device: torch.device | None
    notes: list[str] = field(default_factory=list)


@dataclass
class LayerPair:
    """One item of weight_change: a layer of both sources."""

    pair: _Pair
    layer: int


@dataclass
class LayerChange:
    """`layer_change`'s result: per module (MODULES order) the norms, the count of |ΔW| > eps and the size."""

    norm_a: np.ndarray
    norm_b: np.ndarray
    norm_diff: np.ndarray
    changed: np.ndarray
    numel: np.ndarray
    nonfinite: np.ndarray
    notes: list[str]
    largest_pair_bytes: int


def layer_change(lm: Any, item: LayerPair, *, eps: float = 1e-5) -> LayerChange:
    """weight_change's per-item step: every projection of one layer, each stored tensor pair read once (a fused
    tensor serves all the projections it holds) and freed before the next is read."""
    a, b, layer = item.pair.a, item.pair.b, item.layer
    k = len(MODULES)
    out = LayerChange(
        np.full(k, np.nan),
        np.full(k, np.nan),
        np.full(k, np.nan),
        np.zeros(k, np.int64),
        np.zeros(k, np.int64),
        np.zeros(k, bool),
        [],
        0,
    )
    with torch.no_grad():
        for names in tensor_groups(a, b, layer).values():
            pa0, pb0 = a.part(layer, names[0]), b.part(layer, names[0])
            assert pa0 is not None and pb0 is not None
            ra = a.raw(pa0, item.pair.device)
            rb = b.raw(pb0, ra.device)
            out.largest_pair_bytes = max(out.largest_pair_bytes, ra.nbytes + rb.nbytes)
            for name in names:
                _one_module(out, a, b, layer, name, ra, rb, eps)
            del ra, rb  # before the next read: this is what keeps peak memory at one pair
            release_freed_memory()
    return out


def _one_module(
    out: LayerChange, a: Source, b: Source, layer: int, name: str, ra: torch.Tensor, rb: torch.Tensor, eps: float
) -> None:
    pa, pb = a.part(layer, name), b.part(layer, name)
    assert pa is not None and pb is not None
    j = MODULES.index(name)
    na, nb, nd, ch, n = pair_stats(pa.weight(ra), pb.weight(rb), eps)
    out.norm_a[j], out.norm_b[j], out.norm_diff[j] = na, nb, nd
    if not math.isfinite(na + nb + nd):  # rare: count the bad values only then
        out.nonfinite[j] = True
        out.notes += nonfinite_notes([(a, pa, pa.weight(ra), na), (b, pb, pb.weight(rb), nb)], layer, name)
    out.changed[j], out.numel[j] = ch, n


def _items(lm: Any, a: Any, b: Any, device: str | torch.device | None = None, **_options: Any) -> list[LayerPair]:
    """The sources opened (no weights read yet) and checked tensor by tensor; one item per layer."""
    sa, sb = source(a, "a"), source(b, "b")
    pair = _Pair(sa, sb, torch.device(device) if device is not None else None, check_compatible(sa, sb))
    require_parts(sa)
    return [LayerPair(pair, layer) for layer in range(sa.n_layers)]


def _values(stat: str, st: dict[str, np.ndarray]) -> np.ndarray:
    values = np.full(st["numel"].shape, np.nan)
    present = (st["numel"] > 0) & ~st["nonfinite"]
    for i, j in zip(*np.nonzero(present), strict=True):
        values[i, j] = change_value(
            stat, st["norm_a"][i, j], st["norm_diff"][i, j], int(st["changed"][i, j]), int(st["numel"][i, j])
        )
    return values


def _reduce(run: Run) -> Table:
    pair: _Pair = run.items[0].pair
    stat, eps = run.options["stat"], run.options["eps"]
    st = {
        k: np.stack([getattr(r, k) for r in run.results])
        for k in ("norm_a", "norm_b", "norm_diff", "changed", "numel", "nonfinite")
    }
    values = _values(stat, st)
    notes = list(pair.notes) + [n for r in run.results for n in r.notes]
    present = (st["numel"] > 0) & ~st["nonfinite"]
    if stat == "relative" and np.any(present & (st["norm_a"] == 0) & (st["norm_diff"] > 0)):
        notes.append("some W_a are all zero while W_b is not: their relative change is undefined (NaN)")
    absent = [m for j, m in enumerate(MODULES) if not (st["numel"][:, j] > 0).any()]
    if absent:
        notes.append(f"{pair.a.anatomy.family} has no {', '.join(absent)}: shown as n/a")
    meta = dict(
        stat=stat,
        eps=float(eps),
        a=display_name(pair.a.label),
        b=display_name(pair.b.label),
        a_path=pair.a.label,
        b_path=pair.b.label,
        family=pair.a.anatomy.family,
        streamed={"a": pair.a.streamed, "b": pair.b.streamed},
        norm_a=st["norm_a"],
        norm_b=st["norm_b"],
        norm_diff=st["norm_diff"],
        changed=st["changed"],
        numel=st["numel"],
        largest_pair_bytes=int(max(r.largest_pair_bytes for r in run.results)),
        notes=notes,
        log=suggests_log_scale(values),
        **moe_meta(pair.a.anatomy),
    )
    return Table(
        values,
        [str(i) for i in range(len(values))],
        list(MODULES),
        title=f"{FIGURE_TITLE}: {stat} weight change",
        row_title="Layer",
        col_title="Module",
        metric=CHANGE_STATS[stat].replace("eps", f"{eps:g}"),
        meta=meta,
    )


WEIGHT_CHANGE = Analysis(
    name="weight_change",
    options=(
        Option("stat", "relative", choices=tuple(CHANGE_STATS), doc="which change each cell shows"),
        Option("eps", 1e-5, kind=float, min=0.0, doc="density counts elements with |ΔW| > eps"),
    ),
    items=_items,
    per_item=layer_change,
    reduce=_reduce,
    drill=change_drill,
    executors=("local",),
)


def weight_change(
    a: Any,
    b: Any,
    stat: str = "relative",
    *,
    eps: float = 1e-5,
    device: str | torch.device | None = None,
    config: Config | dict[str, Any] | None = None,
) -> HeatMatrix:
    """How much each projection changed from `a` to `b`: a layers × MODULES HeatMatrix (rows = decoder layers,
    cols = attn.q/k/v/o, mlp.up/down/gate; a module the family lacks is n/a).

    a, b: an `hw.LM`, a transformers model, or a checkpoint directory (single `model.safetensors` or sharded with
    `model.safetensors.index.json`), in any combination. Directories are streamed one stored tensor at a time.
    stat: "relative" ‖W_b − W_a‖_F / ‖W_a‖_F, "density" mean(|W_b − W_a| > eps), or "absolute" ‖W_b − W_a‖_F.
    Differences are taken in float32 whatever the stored dtype. device: where streamed tensors are reduced
    (default: the live model's device if one side is live, else the CPU).
    Raises WeightMismatchError naming the first stored tensor that differs (layer count, architecture, shape, or a
    tensor missing from a checkpoint).
    """
    stat = check_stat(stat, CHANGE_STATS)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    return run_analysis(WEIGHT_CHANGE, None, {"a": a, "b": b, "device": device}, {"stat": stat, "eps": eps}, config)
