"""Divergence analyses: layer × generated-token KL (`ablation_kl`), site × layer Jensen–Shannon (`knockout_js`),
the logit lens (`logit_lens`) and causal tracing (`patching`), each declared on the analysis contract
(`heatwidget.analysis`) with a public per-item function, and returning a `HeatMatrix` with drill-downs and re-runs.

All intervened runs of one prompt go through one batched pass that resumes from the clean run's cached
activations (`_engine`); KL/JS are reduced on the device (`_stats`) and only small matrices reach the CPU.
"""

from __future__ import annotations

from ._stats import js_div, kl_div
from .ablation import ABLATION, INTERVENTIONS, MODES, ProjectOut, Steer, ablate_prompt, ablation_kl, per_position_kl
from .knockout import (
    CORRUPTIONS,
    KNOCKOUT,
    KNOCKOUT_ROWS,
    NOISE_REFS,
    SITES,
    knockout_js,
    knockout_prompt,
    subject_positions,
)
from .lens import LENS, LENS_METRICS, lens_prompt, logit_lens
from .patching import PATCHING, trace  # (hw.patching is the function; divergence.patching stays the module)

__all__ = [
    "ablation_kl",
    "knockout_js",
    "logit_lens",
    "Steer",
    "ProjectOut",
    "INTERVENTIONS",
    "MODES",
    "SITES",
    "KNOCKOUT_ROWS",
    "CORRUPTIONS",
    "NOISE_REFS",
    "LENS_METRICS",
    "subject_positions",
    "per_position_kl",
    "kl_div",
    "js_div",
    "ablate_prompt",
    "knockout_prompt",
    "lens_prompt",
    "trace",
    "ABLATION",
    "KNOCKOUT",
    "LENS",
    "PATCHING",
]
