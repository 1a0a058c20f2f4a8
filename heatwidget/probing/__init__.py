"""Probing for truthfulness per (layer, token), after Orgad et al. 2024, "LLMs Know More Than They Show".

ans  = hw.answer(lm, questions, golds)          # greedy answers, labels, exact-answer token spans
acts = hw.collect(lm, ans, positions=hw.PAPER_POSITIONS, site="resid")   # [N, L, P, d]
m    = hw.probe_auc(acts)                        # HeatMatrix: rows = layers, cols = positions, held-out AUC
"""

from __future__ import annotations

from ._logreg import fit_logreg, roc_auc, roc_curve
from .answers import AnswerSet, answer
from .collect import COLLECT_SITES, SITES, Activations, collect
from .positions import NAMED_POSITIONS, PAPER_POSITIONS
from .probe import probe_auc, split_indices

__all__ = [
    "answer",
    "AnswerSet",
    "collect",
    "Activations",
    "COLLECT_SITES",
    "SITES",
    "probe_auc",
    "split_indices",
    "PAPER_POSITIONS",
    "NAMED_POSITIONS",
    "fit_logreg",
    "roc_auc",
    "roc_curve",
]
