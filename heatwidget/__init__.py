"""heatwidget: layer-by-token matrices of Hugging Face causal LMs, explored as an interactive heatmap widget.

import heatwidget as hw
lm = hw.demo_model()                      # or hw.load("Qwen/Qwen2.5-0.5B") / hw.load("/local/dir")
m = hw.ablation_kl(lm, "Q: What is the capital of Velmora? A:")
hw.explore(m)                             # click a cell: drill down, re-run for that layer or token
"""

from __future__ import annotations

from . import hooks
from ._lm import LM, ModelLoadError, load
from .analysis import Config, config
from .anatomy import MODULES, Anatomy, AnatomyError
from .divergence import ProjectOut, Steer, ablation_kl, knockout_js, logit_lens
from .divergence.patching import patching
from .explorer import Explorer, explore
from .matrix import Chart, Detail, HeatMatrix, Series, register_explorer
from .probing import PAPER_POSITIONS, Activations, AnswerSet, answer, collect, probe_auc
from .weights import CheckpointError, WeightMismatchError, module_stats, weight_change
from .widget import Heatmap

register_explorer(explore)  # HeatMatrix.explore() without matrix.py importing widget code

__version__ = "0.1.0"

__all__ = [
    "LM",
    "load",
    "ModelLoadError",
    "Anatomy",
    "AnatomyError",
    "MODULES",
    "HeatMatrix",
    "Detail",
    "Chart",
    "Series",
    "hooks",
    "demo_model",
    "demo_questions",
    "Heatmap",
    "explore",
    "Explorer",
    "ablation_kl",
    "knockout_js",
    "logit_lens",
    "Steer",
    "ProjectOut",
    "weight_change",
    "module_stats",
    "WeightMismatchError",
    "CheckpointError",
    "answer",
    "collect",
    "probe_auc",
    "PAPER_POSITIONS",
    "AnswerSet",
    "Activations",
    "patching",
    "config",
    "Config",
]


def demo_model(device: str = "cpu", dtype=None) -> LM:
    """The shipped tiny trained Llama-style model of a synthetic fact world (no download)."""
    from .demo import demo_model as _demo_model

    return _demo_model(device=device, dtype=dtype)


def demo_questions(*args, **kwargs) -> list[dict]:
    """The demo model's QA set: dicts with question, gold, subject, prompt, attribute, mult."""
    from .demo import demo_questions as _demo_questions

    return _demo_questions(*args, **kwargs)
