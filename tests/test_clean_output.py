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


@pytest.fixture(scope="module")
def every_analysis():
    """Every analysis on the demo model, and a drill into each, with FutureWarning/DeprecationWarning raised by
    transformers, torch or heatwidget turned into errors; also what transformers logged at warning level meanwhile
    (its deprecation notices go through its logger as well as through `warnings`)."""
    from transformers.utils import logging as hf_logging

    root = hf_logging.get_logger()  # the "transformers" logger, which does not propagate to Python's root
    handler = _Records()
    root.addHandler(handler)
    lm = hw.demo_model()
    qs = hw.demo_questions(split="train")[:24] + hw.demo_questions(split="test")[:16]
    facts = [q for q in hw.demo_questions(attribute="capital") if q["mult"] >= 8][:2]
    try:
        with warnings.catch_warnings():
            for category in (FutureWarning, DeprecationWarning):
                warnings.filterwarnings("error", category=category, module=r"(transformers|torch|heatwidget)")
            ms = {
                "ablation_kl": hw.ablation_kl(
                    lm, "Q: What is the capital of Rallelia? A:", max_new_tokens=3, layers=[0, 4]
                ),
                "ablation_kl free": hw.ablation_kl(
                    lm, facts[0]["prompt"], max_new_tokens=2, layers=[2], mode="free_running"
                ),
                "knockout_js": hw.knockout_js(
                    lm, [q["prompt"] for q in facts], [q["subject"] for q in facts], layers=[0, 5]
                ),
                "logit_lens": hw.logit_lens(lm, facts[0]["prompt"]),
            }
            ans = hw.answer(lm, qs, max_new_tokens=8)
            acts = hw.collect(lm, ans, positions=["last_q", "first_answer"], layers=[0, 4, 7])
            ms["probe_auc"] = hw.probe_auc(acts)
            ms["weight_change"] = hw.weight_change(lm, WEIGHTS_DIR)
            ms["module_stats"] = hw.module_stats(lm, "grad", texts=[facts[0]["prompt"]])
            details = [m.drill(m.shape[0] - 1, m.shape[1] - 1) for m in ms.values()]
    finally:
        root.removeHandler(handler)
    return lm, ms, details, ans, acts, handler.messages


def test_every_analysis_runs_without_deprecated_calls(every_analysis):
    """Each analysis uses the API the installed transformers expects (e.g. the KV cache keyword `cache` where
    `past_key_values` is deprecated): the fixture raised on any deprecation warning, and the log holds none."""
    *_, log = every_analysis
    deprecations = [msg for msg in log if "deprecat" in msg.lower()]
    assert not deprecations, deprecations[:3]


def test_titles_and_widgets_name_the_model_never_its_path(every_analysis):
    lm, ms, details, ans, acts, _ = every_analysis
    assert lm.display_name == "demo model" and lm.name == str(WEIGHTS_DIR)
    path = str(WEIGHTS_DIR)
    assert "demo model" in ms["probe_auc"].title
    for what, m in ms.items():
        assert path not in m.title and path not in hw.Heatmap(m).title, what
        model = m.meta.get("model", m.meta.get("a"))
        assert model == "demo model", (what, model)
        assert path in (m.meta.get("model_path"), m.meta.get("a_path")), what
    for d in details:
        assert path not in d.title
    assert ans.meta["model"] == acts.meta["model"] == "demo model" and acts.meta["model_path"] == path


def test_display_name_of_directories_hub_ids_and_wrapped_models(tiny_dir):
    d = tiny_dir("gpt2")
    lm = hw.load(d)
    assert lm.display_name == d.name and lm.name == str(d)
    assert hw.LM.wrap(lm.model, lm.tokenizer).display_name == d.name  # config._name_or_path is the directory
    assert hw.LM.wrap(lm.model, name="Qwen/Qwen2.5-0.5B").display_name == "Qwen/Qwen2.5-0.5B"
    m = hw.logit_lens(lm, "the capital of Velmora is")
    assert m.meta["model"] == d.name and m.meta["model_path"] == str(d)


def test_load_prints_nothing_and_restores_transformers_settings(tiny_dir, capfd):
    """No "Loading weights" bar, no load report: hw.load's output is empty, and transformers' own progress-bar and
    verbosity settings are as the user left them."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    d = tiny_dir("llama")
    capfd.readouterr()
    before = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity(), hub_utils.are_progress_bars_disabled())
    assert before[0], "transformers' progress bars should be on by default"
    hw.load(d)
    hw.demo_model()
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)
    after = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity(), hub_utils.are_progress_bars_disabled())
    assert after == before
    hf_logging.disable_progress_bar()  # a user's own choice survives too
    try:
        hw.load(d)
        assert not hf_logging.is_progress_bar_enabled() and hub_utils.are_progress_bars_disabled()
    finally:
        hf_logging.enable_progress_bar()
