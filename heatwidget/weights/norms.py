"""`hw.module_stats`: one model's projections in the same layers × MODULES grid as `weight_change` — weight norms,
or gradient norms of the mean next-token loss over texts.

On the analysis contract (`heatwidget.analysis`): the item is one layer (`ModelLayer`), `layer_stats` the public
per-item function, `MODULE_STATS_ANALYSIS` the declaration. The gradients of every projection come from one
backward pass over the texts, run by the first item that needs them and shared by the others. It runs in this
process (the source may be a checkpoint directory streamed from this machine's disk).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._lm import display_name
from .._memory import release_freed_memory
from .._validate import positive_int
from ..analysis import Analysis, Config, Option, Run, Table, run_analysis
from ..anatomy import MODULES
from ..matrix import HeatMatrix
from .change import FIGURE_TITLE
from .drill import stats_drill
from .gradients import as_lm, expert_leaves, gradient_texts, lm_loss_grads
from .sources import Source, check_present, require_parts, source
from .stats import MODULE_STATS, check_stat, moe_meta, single_value, stat_notes

__all__ = ["module_stats", "layer_stats", "ModelLayer", "MODULE_STATS_ANALYSIS"]


@dataclass
class _Model:
    """The source of one module_stats call, and its gradients once the first item has computed them."""

    src: Source
    texts: list[str] | None
    batch_size: int
    grads: dict[str, torch.Tensor] | None = None

    def gradients(self) -> dict[str, torch.Tensor]:
        if self.grads is None:
            assert self.src.lm is not None and self.texts is not None
            parts = [p for _, _, p in self.src.anatomy.iter_parts()]
            self.grads = lm_loss_grads(self.src.lm, self.texts, parts, self.batch_size)
        return self.grads


@dataclass
class ModelLayer:
    """One item of module_stats: a layer of the model."""

    model: _Model
    layer: int


def layer_stats(lm: Any, item: ModelLayer, *, stat: str = "norm") -> tuple[np.ndarray, list[str]]:
    """module_stats' per-item step: the statistic of each projection of one layer (MODULES order; NaN where the
    family has none) and notes naming any weight or gradient that is not finite."""
    src, layer = item.model.src, item.layer
    grads = item.model.gradients() if stat.startswith("grad") else None
    values = np.full(len(MODULES), np.nan)
    notes: list[str] = []
    by_tensor: dict[str, list[str]] = {}
    for name, part in src.anatomy.parts[layer].items():
        if name in MODULES:  # the MoE router ("mlp.router") is no column
            by_tensor.setdefault(part.param_name, []).append(name)
    with torch.no_grad():
        for names in by_tensor.values():
            raw = src.raw(src.anatomy.parts[layer][names[0]])
            for name in names:
                part = src.anatomy.parts[layer][name]
                g = part.weight(grads[part.param_name]) if grads is not None else None
                v = single_value(stat, part.weight(raw), g)
                if not math.isfinite(v):  # n/a; say why unless it is grad_relative's 0/0 of an all-zero W
                    notes += stat_notes(src, part, layer, name, part.weight(raw), g, v)
                    v = math.nan
                values[MODULES.index(name)] = v
            del raw
            release_freed_memory()
    return values, notes


def _items(lm: Any, texts: str | Sequence[str] | None = None, *, stat: str, batch_size: int) -> list[ModelLayer]:
    """Texts, batch size and the model's tensors checked (no weights read); one item per layer."""
    grad = stat.startswith("grad")
    text_list = gradient_texts(texts) if grad else None
    if grad:
        positive_int(batch_size, "batch_size")
    src = source(as_lm(lm) if grad else lm, "model")
    require_parts(src)
    if grad:  # routed experts are differentiated as stored tensors: they must be trainable (checked up front)
        for _, _, part in src.anatomy.iter_parts():
            if part.experts:
                expert_leaves(part)
    for layer, name, part in src.anatomy.iter_parts():
        check_present(src, part, layer, name)
    model = _Model(src, text_list, batch_size)
    return [ModelLayer(model, layer) for layer in range(src.n_layers)]


def _reduce(run: Run) -> Table:
    model: _Model = run.items[0].model
    src, stat = model.src, run.options["stat"]
    values = np.stack([v for v, _ in run.results])
    grad = stat.startswith("grad")
    meta: dict[str, Any] = dict(
        stat=stat,
        model=display_name(src.label),
        model_path=src.label,
        family=src.anatomy.family,
        streamed=src.streamed,
        notes=[n for _, ns in run.results for n in ns],
        **moe_meta(src.anatomy),
    )
    if grad:
        meta.update(texts=model.texts, loss="mean next-token cross-entropy over non-pad tokens (nats)")
    return Table(
        values,
        [str(i) for i in range(len(values))],
        list(MODULES),
        title=f"{FIGURE_TITLE}: {'gradient norms' if grad else 'weight norms'}",
        row_title="Layer",
        col_title="Module",
        metric=MODULE_STATS[stat],
        meta=meta,
    )


MODULE_STATS_ANALYSIS = Analysis(
    name="module_stats",
    options=(
        Option("stat", "norm", choices=tuple(MODULE_STATS), doc="which statistic each cell shows"),
        Option("batch_size", 8, kind=int, doc="texts per forward for the gradient statistics"),
    ),
    items=_items,
    per_item=layer_stats,
    reduce=_reduce,
    drill=stats_drill,
    executors=("local",),
)


def module_stats(
    lm: Any,
    stat: str = "norm",
    texts: str | Sequence[str] | None = None,
    *,
    batch_size: int = 8,
    config: Config | dict[str, Any] | None = None,
) -> HeatMatrix:
    """One model's projections in the same layers × MODULES grid as `weight_change`.

    stat: "norm" ‖W‖_F, "rms" ‖W‖_F/√numel (size-normalised, so GQA's small k/v compare with q), "grad"
    ‖∂L/∂W‖_F and "grad_relative" ‖∂L/∂W‖_F / ‖W‖_F, where L is the mean next-token cross-entropy (nats) over all
    non-pad tokens of `texts` (one loss; batches of `batch_size` texts are accumulated). lm: an `hw.LM`, a
    transformers model (weight stats only) or a checkpoint directory (weight stats are streamed; gradient stats
    load it with `hw.load`).
    """
    stat = check_stat(stat, MODULE_STATS)
    if stat.startswith("grad") and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return run_analysis(MODULE_STATS_ANALYSIS, lm, {"texts": texts}, {"stat": stat, "batch_size": batch_size}, config)
