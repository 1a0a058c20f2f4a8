"""Divergence analyses: layer × generated-token KL (`ablation_kl`), site × layer Jensen–Shannon (`knockout_js`)
and the logit lens (`logit_lens`), each returning a `HeatMatrix` with drill-downs and re-run entry points.

All intervened runs of one analysis go through one batched pass that resumes from the clean run's cached
activations (`_engine`); KL/JS are reduced on the device (`_stats`) and only small matrices reach the CPU.
"""

from __future__ import annotations

from ._stats import js_div, kl_div
from .ablation import INTERVENTIONS, ProjectOut, Steer, ablation_kl, per_position_kl
from .knockout import CORRUPTIONS, SITES, knockout_js, subject_positions
from .lens import logit_lens

__all__ = [
    "ablation_kl", "knockout_js", "logit_lens", "Steer", "ProjectOut", "INTERVENTIONS", "SITES", "CORRUPTIONS",
    "subject_positions", "per_position_kl", "kl_div", "js_div",
]
