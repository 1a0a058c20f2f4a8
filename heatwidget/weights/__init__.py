"""Module × layer statistics of model weights: how much each attention/MLP projection changed between two
checkpoints (`weight_change`), or its norm / gradient norm in one model (`module_stats`).

Rows are the decoder layers, columns the seven projections of `MODULES` (attn.q/k/v/o, mlp.up/down/gate); a module
the family lacks (GPT-2 and GPT-NeoX have no gate) is NaN, "n/a" in the widget. Everything about where a projection
lives (GPT-2's fused, transposed `c_attn`, NeoX's per-head interleaved `query_key_value`, Phi-3's `qkv_proj`) comes
from the anatomy: this package only ever sees [out, in] matrices.

- `sources.py`: live models and checkpoint directories (streamed: one stored tensor of each side is read, reduced
  in float32 and dropped before the next is read, so two 14B checkpoints never sit in memory together; a fused
  tensor is read once for all the projections it holds), and the checks that two of them line up;
- `stats.py`: the statistics; `gradients.py`: ∂L/∂W without touching the model;
- `change.py` (`weight_change`) and `norms.py` (`module_stats`): the two analyses on the contract;
- `drill.py`: what a click shows.
"""

from __future__ import annotations

from .._checkpoint import CheckpointError
from .change import WEIGHT_CHANGE, weight_change
from .drill import expert_detail
from .norms import MODULE_STATS_ANALYSIS, module_stats
from .sources import WeightMismatchError
from .stats import CHANGE_STATS, MODULE_STATS, effective_rank, moe_meta

__all__ = [
    "weight_change",
    "module_stats",
    "WeightMismatchError",
    "CheckpointError",
    "CHANGE_STATS",
    "MODULE_STATS",
    "effective_rank",
    "WEIGHT_CHANGE",
    "MODULE_STATS_ANALYSIS",
    "moe_meta",
    "expert_detail",
]
