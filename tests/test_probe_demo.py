"""The probe pipeline on the shipped demo model: hand-checked exact-answer positions on real BPE answers, and a
probe matrix with real structure (far above chance; chance again with shuffled labels)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import heatwidget as hw
from heatwidget.demo import WEIGHTS_DIR, exact_answer
from heatwidget.demo.evaluate import figure_numbers

pytestmark = pytest.mark.skipif(
    not (WEIGHTS_DIR / "model.safetensors").exists(), reason="demo weights not shipped in this checkout"
)


@pytest.fixture(scope="module")
def demo():
    lm = hw.demo_model()
    qs = hw.demo_questions()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every demo answer must be located: a drop here is a bug, not noise
        ans = hw.answer(lm, qs, extractor=exact_answer, required_positions=hw.PAPER_POSITIONS, batch_size=64)
    return lm, qs, ans


@pytest.fixture(scope="module")
def probe(demo):
    """The tour's probe figure: resid activations at the paper's positions, one probe per cell."""
    lm, _qs, ans = demo
    acts = hw.collect(lm, ans, hw.PAPER_POSITIONS, site="resid", batch_size=64)
    return acts, hw.probe_auc(acts)


def test_demo_answers_labels_and_spans(demo) -> None:
    lm, qs, ans = demo
    assert len(ans) == len(qs) and ans.meta["n_dropped"] == 0 and ans.meta["chat_template"] is False
    acc = ans.labels.mean()
    assert 0.6 < acc < 0.95  # a mix of right and wrong answers: what the probes need
    tok = lm.tokenizer
    for i in range(len(ans)):
        lo, hi = ans.span[i]
        piece = tok.decode(ans.ids[i][lo : hi + 1], skip_special_tokens=True)
        assert ans.exact[i].lower() in piece.lower()
        assert ans.prompt_len[i] <= lo <= hi < len(ans.ids[i])
        if ans.labels[i]:
            assert ans.exact[i].lower() == ans.golds[i][0].lower()
    # the model's own confidence separates right from wrong answers (the paper's logprob baseline)
    from heatwidget.probing import roc_auc

    assert roc_auc(ans.logprob_scores()["logprob_mean"], ans.labels)[0] > 0.8


def test_demo_positions_by_hand(demo) -> None:
    lm, qs, ans = demo
    # "Q: What is the capital of Gatrelia? A:" -> " Houxzharum</s>": a 5-token answer, then EOS
    i = next(k for k, q in enumerate(ans.questions) if q == "Q: What is the capital of Gatrelia? A:")
    toks = ans.tokens(i)
    assert ans.answers[i].strip() == "Houxzharum" and ans.labels[i] == 1
    p0 = int(ans.prompt_len[i])
    assert toks[p0 - 1] == ":" and toks[0] == "<s>"
    assert "".join(toks[p0:-1]) == " Houxzharum" and len(toks) - 1 - p0 >= 2 and toks[-1] == "</s>"
    pos = dict(zip(hw.PAPER_POSITIONS, ans.positions(hw.PAPER_POSITIONS)[i].tolist(), strict=True))
    n = len(toks)
    assert pos["last_q"] == p0 - 1 and pos["first_answer"] == p0 and pos["second_answer"] == p0 + 1
    assert pos["exact_answer_before_first"] == p0 - 1 and pos["exact_answer_first"] == p0
    assert pos["exact_answer_last"] == n - 2 and pos["exact_answer_after_last"] == n - 1  # the EOS
    assert [pos[k] for k in range(-8, 0)] == list(range(n - 8, n))


def test_demo_probe_matrix_has_real_structure(demo, probe) -> None:
    lm, qs, ans = demo
    acts, m = probe
    assert acts.shape == (len(ans), 8, 15, 192)
    assert m.shape == (8, 15) and m.rows == [str(i) for i in range(8)] and m.cols[:2] == ["last_q", "first_answer"]
    assert m.meta["solver"]["all_converged"]
    # Real signal in every layer, far above the chance level shuffled labels give on the same features
    shuffled = hw.probe_auc(acts.values, np.random.default_rng(0).permutation(acts.labels))
    assert m.values.mean() > 0.62 and m.values.max() > 0.7
    assert (m.values.mean(axis=1) > 0.6).all()
    assert abs(float(shuffled.values.mean()) - 0.5) < 0.05
    assert m.meta["baselines"]["logprob_mean"] > 0.8
    det = m.drill("7", "exact_answer_first")
    top = det.tables["scored most likely correct"]
    assert (top["label"] == "correct").mean() >= 0.6  # the surest examples are mostly right
    assert all("⟦" in t and "⟧" in t for t in top["text"])


def test_demo_probe_figure_numbers_are_the_documented_ones(demo, probe) -> None:
    """docs/demo-model.md quotes these numbers of the shipped model's probe figure (all demo questions)."""
    _lm, qs, ans = demo
    f = figure_numbers(probe[1], float(ans.labels.mean()))
    assert len(ans) == len(qs) == 1200
    assert f["accuracy"] == pytest.approx(0.78, abs=0.01)
    assert f["targets_met"]["accuracy_min"] and f["targets_met"]["accuracy_max"]
    assert f["best_auc"] == pytest.approx(0.757, abs=0.02)
    assert f["depth_rise"] == pytest.approx(0.011, abs=0.02)
    assert f["answer_over_tail"] == pytest.approx(0.034, abs=0.02)
    assert f["baselines"]["logprob_mean"] == pytest.approx(0.917, abs=0.01)
    # what the docs say in words: the model's own confidence beats every probe cell on this model
    assert f["baselines"]["logprob_mean"] > f["best_auc"] + 0.1


def test_figure_numbers_measure_the_seed_figures_shape() -> None:
    """figure_numbers on a hand-made matrix with the seed figures' shape, and on a flat one."""
    cols = [str(p) for p in hw.PAPER_POSITIONS]
    rows = [str(i) for i in range(8)]
    depth = np.linspace(0.6, 0.9, 8)[:, None]
    answer = np.array([0.05 if c == "last_q" or c.startswith("exact_answer_") else 0.0 for c in cols])[None]
    shaped = hw.HeatMatrix(np.clip(depth + answer, 0, 1), rows, cols)
    f = figure_numbers(shaped, 0.6)
    assert f["best_auc"] == pytest.approx(0.95) and f["best_cell"] == ["7", "last_q"]
    assert f["depth_rise"] == pytest.approx(np.mean(depth[4:]) - np.mean(depth[:4]), abs=1e-3)  # rounded
    assert f["answer_over_tail"] == pytest.approx(0.05, abs=1e-3)
    assert all(f["targets_met"].values())
    flat = figure_numbers(hw.HeatMatrix(np.full((8, 15), 0.7), rows, cols), 0.9)
    assert not any(flat["targets_met"][k] for k in ("accuracy_max", "best_auc", "depth_rise", "answer_over_tail"))
    with pytest.raises(ValueError, match="columns"):
        figure_numbers(hw.HeatMatrix(np.full((2, 2), 0.7)), 0.5)


@pytest.mark.parametrize(
    ("site", "best", "rise", "answer_over_tail"),
    [("mlp_in", 0.781, 0.010, 0.024), ("mlp", 0.775, 0.013, 0.032), ("attn", 0.749, 0.015, 0.020)],
)
def test_demo_probe_figure_at_the_other_sites_is_the_documented_one(demo, site, best, rise, answer_over_tail) -> None:
    """docs/demo-model.md: no other read-out of the layers gives the figure the seeds' shape on this model either
    (`python -m heatwidget.demo.evaluate DIR --figure --site SITE` reproduces these)."""
    from heatwidget.demo.evaluate import probe_figure

    lm, qs, ans = demo
    _, auc, f = probe_figure(lm, qs, site=site, answers=ans)
    assert f["site"] == auc.meta["site"] == site
    assert f["best_auc"] == pytest.approx(best, abs=0.02)
    assert f["depth_rise"] == pytest.approx(rise, abs=0.02)
    assert f["answer_over_tail"] == pytest.approx(answer_over_tail, abs=0.02)
