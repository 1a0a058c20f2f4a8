"""Clean output: no deprecated transformers/torch calls in any analysis, no third-party progress bars or log lines
from `hw.load`, and titles that name the model, never a machine path."""

from __future__ import annotations

import logging
import warnings

import pytest

import heatwidget as hw
from heatwidget.demo import WEIGHTS_DIR


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def transformers_log():
    """Warnings transformers logs (its deprecation notices go through its logger, not only through `warnings`)."""
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()  # the "transformers" logger, which does not propagate to Python's root
    handler = _Records()
    root.addHandler(handler)
    try:
        yield handler.messages
    finally:
        root.removeHandler(handler)


def test_every_analysis_runs_without_deprecated_calls(transformers_log):
    """FutureWarning/DeprecationWarning raised by transformers, torch or heatwidget are errors here, and
    transformers' logger says nothing about deprecation: each analysis (and a drill into it) uses the API the
    installed transformers expects (e.g. the KV cache keyword `cache` where `past_key_values` is deprecated)."""
    lm = hw.demo_model()
    qs = [q for q in hw.demo_questions(split="train")][:24] + [q for q in hw.demo_questions(split="test")][:16]
    facts = [q for q in hw.demo_questions(attribute="capital") if q["mult"] >= 8][:2]
    with warnings.catch_warnings():
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("error", category=category, module=r"(transformers|torch|heatwidget)")
        m = hw.ablation_kl(lm, "Q: What is the capital of Rallelia? A:", max_new_tokens=3, layers=[0, 4])
        m.drill(1, 2)
        hw.ablation_kl(lm, facts[0]["prompt"], max_new_tokens=2, layers=[2], mode="free_running").drill(0, 1)
        js = hw.knockout_js(lm, [q["prompt"] for q in facts], [q["subject"] for q in facts], layers=[0, 5])
        js.drill(1, 0)
        hw.logit_lens(lm, facts[0]["prompt"]).drill(3, 2)
        ans = hw.answer(lm, qs, max_new_tokens=8)
        acts = hw.collect(lm, ans, positions=["last_q", "first_answer"], layers=[0, 4, 7])
        hw.probe_auc(acts).drill(1, 0)
        hw.weight_change(lm, WEIGHTS_DIR).drill(2, 0)
        hw.module_stats(lm, "grad", texts=[facts[0]["prompt"]]).drill(0, 0)
    deprecations = [msg for msg in transformers_log if "deprecat" in msg.lower()]
    assert not deprecations, deprecations[:3]
