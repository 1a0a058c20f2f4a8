"""The probe pipeline on the shipped demo model: hand-checked exact-answer positions on real BPE answers, and a
probe matrix with real structure (far above chance; chance again with shuffled labels)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import heatwidget as hw
from heatwidget.demo import WEIGHTS_DIR

pytestmark = pytest.mark.skipif(not (WEIGHTS_DIR / "model.safetensors").exists(),
                                reason="demo weights not shipped in this checkout")


@pytest.fixture(scope="module")
def demo():
    lm = hw.demo_model()
    qs = hw.demo_questions()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every demo answer must be located: a drop here is a bug, not noise
        ans = hw.answer(lm, qs, required_positions=hw.PAPER_POSITIONS, batch_size=64)
    return lm, qs, ans


def test_demo_answers_labels_and_spans(demo) -> None:
    lm, qs, ans = demo
    assert len(ans) == len(qs) and ans.meta["n_dropped"] == 0 and ans.meta["chat_template"] is False
    acc = ans.labels.mean()
    assert 0.6 < acc < 0.95  # a mix of right and wrong answers: what the probes need
    tok = lm.tokenizer
    for i in range(len(ans)):
        lo, hi = ans.span[i]
        piece = tok.decode(ans.ids[i][lo:hi + 1], skip_special_tokens=True)
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


def test_demo_probe_matrix_has_real_structure(demo) -> None:
    lm, qs, ans = demo
    acts = hw.collect(lm, ans, site="resid", batch_size=64)
    assert acts.shape == (len(ans), 8, 15, 192)
    m = hw.probe_auc(acts)
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
