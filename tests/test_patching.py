"""hw.patching (causal tracing) against a naive loop: one hooked forward of the model per (layer, token)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget.divergence.knockout import corruption_noise, subject_positions
from heatwidget.divergence.patching import patch_window


def naive_trace(
    lm, clean, corrupted=None, subject=None, site="resid", window=1, seed=0, noise_scale=3.0, noise_ref="embedding"
):
    """(prob [L, T], logit_diff [L, T], p_clean, p_corrupted): plain forwards with forward hooks, no batching."""
    layers = lm.anatomy.layers
    mods = {"resid": list(layers), "mlp": list(lm.anatomy.mlp), "attn": list(lm.anatomy.attn)}[site]
    ids = lm.encode(clean)["input_ids"]
    n, L = ids.shape[1], len(layers)
    acts = {}

    def keep(j):
        def hook(_m, _a, out):
            acts[j] = (out[0] if isinstance(out, tuple) else out).detach().clone()

        return hook

    def put(j, t):
        def hook(_m, _a, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            h[:, t] = acts[j][:, t]
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return hook

    handles = [m.register_forward_hook(keep(j)) for j, m in enumerate(mods)]
    with torch.no_grad():
        emb = {}
        h0 = lm.anatomy.embed.register_forward_hook(lambda _m, _a, out: emb.setdefault("e", out.detach()))
        lp_clean = torch.log_softmax(lm.model(input_ids=ids).logits[0, -1].float(), -1)
        h0.remove()
    for h in handles:
        h.remove()
    answer = int(lp_clean.argmax())
    if corrupted is not None:
        base_ids, noise_hook = lm.encode(corrupted)["input_ids"], None
    else:
        base_ids = ids
        pos = subject_positions(lm, clean, subject)
        sigma = lm.anatomy.embed.weight.detach().float().std() if noise_ref == "embedding" else emb["e"].float().std()
        noise = corruption_noise(seed, 0, 0, 0, len(pos), emb["e"].shape[-1]) * noise_scale * float(sigma)

        def noise_hook(_m, _a, out):
            out = out.clone()
            out[0, pos] += noise.to(out.dtype)
            return out

    def run(extra=()):
        hs = [lm.anatomy.embed.register_forward_hook(noise_hook)] if noise_hook else []
        hs += [m.register_forward_hook(put(j, t)) for j, t in extra for m in [mods[j]]]
        try:
            with torch.no_grad():
                return torch.log_softmax(lm.model(input_ids=base_ids).logits[0, -1].float(), -1)
        finally:
            for h in hs:
                h.remove()

    lp_corr = run()
    rival = int(lp_corr.masked_fill(torch.arange(lp_corr.shape[0]) == answer, -torch.inf).argmax())
    prob, diff = np.zeros((L, n)), np.zeros((L, n))
    for layer in range(L):
        for t in range(n):
            js = [layer] if site == "resid" else patch_window(layer, window, L)
            lp = run([(j, t) for j in js])
            prob[layer, t] = float(lp[answer].exp())
            diff[layer, t] = float(lp[answer] - lp[rival])
    return prob, diff, float(lp_clean[answer].exp()), float(lp_corr[answer].exp())


@pytest.fixture(scope="module")
def demo():
    return hw.demo_model()


@pytest.fixture(scope="module")
def fact():
    q = hw.demo_questions()[0]
    return q["prompt"], q["subject"]


@pytest.mark.parametrize("site,window", [("resid", 1), ("mlp", 3), ("attn", 2)])
def test_demo_matches_naive_loop(demo, fact, site, window):
    prompt, subject = fact
    m = hw.patching(demo, prompt, subject=subject, site=site, window=window)
    prob, diff, p_clean, p_corr = naive_trace(demo, prompt, subject=subject, site=site, window=window)
    assert m.meta["engine"] == "suffix"
    np.testing.assert_allclose(m.values, prob, atol=1e-5, rtol=0)
    np.testing.assert_allclose(m.meta["logit_diff"], diff, atol=1e-4, rtol=0)
    assert abs(m.meta["p_clean"] - p_clean) <= 1e-6 and abs(m.meta["p_corrupted"] - p_corr) <= 1e-6
    assert m.shape == (demo.n_layers, len(m.meta["tokens"]))


PROMPT, SUBJECT, COUNTER = "the capital of Velmora is a city in", "Velmora", "the capital of Ostrand is a city in"


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    cache = {}

    def make(family, impl="sdpa"):
        if (family, impl) not in cache:
            cache[family, impl] = hw.load(tiny_dir(family), attn_implementation=impl)
        return cache[family, impl]

    return make


@pytest.mark.parametrize("family,impl", [("gpt2", "sdpa"), ("gpt2", "eager"), ("llama", "sdpa")])
@pytest.mark.parametrize("site", ["resid", "mlp", "attn"])
def test_tiny_models_match_naive_loop(tiny, family, impl, site):
    lm = tiny(family, impl)
    m = hw.patching(lm, PROMPT, subject=SUBJECT, site=site, window=2)
    prob, diff, p_clean, p_corr = naive_trace(lm, PROMPT, subject=SUBJECT, site=site, window=2)
    assert m.meta["engine"] == "suffix", m.meta["engine_note"]
    np.testing.assert_allclose(m.values, prob, atol=1e-5, rtol=0)
    np.testing.assert_allclose(m.meta["logit_diff"], diff, atol=1e-4, rtol=0)
    assert m.meta["p_clean"] == pytest.approx(p_clean, abs=1e-6)
    assert m.meta["p_corrupted"] == pytest.approx(p_corr, abs=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_corrupted_prompt_and_logit_diff(tiny, family):
    lm = tiny(family)
    m = hw.patching(lm, PROMPT, COUNTER, metric="logit_diff")
    prob, diff, _, _ = naive_trace(lm, PROMPT, COUNTER)
    np.testing.assert_allclose(m.values, diff, atol=1e-4, rtol=0)
    np.testing.assert_allclose(m.meta["prob"], prob, atol=1e-5, rtol=0)
    assert m.meta["noised_positions"] == [] and m.meta["rival_id"] != m.meta["answer_id"]
    # positions before the first differing token restore nothing: those cells are the corrupted run itself
    assert np.allclose(m.values[:, :3], m.meta["logit_diff_corrupted"], atol=1e-5)
    assert m.values[-1, -1] == pytest.approx(m.meta["logit_diff_clean"], abs=1e-4)  # the last block, last token


def test_noise_ref_residual_and_layer_subset(tiny):
    lm = tiny("llama")
    m = hw.patching(lm, PROMPT, subject=SUBJECT, noise_ref="residual", noise_scale=2.0, seed=3, layers=[2, 0])
    prob, _, _, _ = naive_trace(lm, PROMPT, subject=SUBJECT, noise_ref="residual", noise_scale=2.0, seed=3)
    assert m.rows == ["2", "0"]
    np.testing.assert_allclose(m.values, prob[[2, 0]], atol=1e-5, rtol=0)
    other = hw.patching(lm, PROMPT, subject=SUBJECT, noise_ref="residual", noise_scale=2.0, seed=4, layers=[2, 0])
    assert other.meta["p_corrupted"] != m.meta["p_corrupted"]  # the seed is used


def test_full_sequence_fallback_is_exact(tiny, monkeypatch):
    """A model whose blocks cannot be cut to a suffix runs every row over the whole prompt, with equal values."""
    from heatwidget.divergence import patching as P

    def refuse(lm, base):
        base.ok, base.note = False, "suffix runs refused by the test"

    monkeypatch.setattr(P, "prepare", refuse)
    lm = tiny("gpt2")
    for site in ("resid", "mlp"):
        m = hw.patching(lm, PROMPT, subject=SUBJECT, site=site, window=3)
        assert m.meta["engine"] == "resume" and m.meta["engine_note"] == "suffix runs refused by the test"
        np.testing.assert_allclose(
            m.values, naive_trace(lm, PROMPT, subject=SUBJECT, site=site, window=3)[0], atol=1e-5, rtol=0
        )


def test_patch_window_is_the_papers():
    assert patch_window(5, 1, 12) == [5]
    assert patch_window(5, 3, 12) == [4, 5, 6]
    assert patch_window(5, 10, 12) == list(range(0, 10))  # l − 5 … l + 4
    assert patch_window(0, 4, 12) == [0, 1] and patch_window(11, 4, 12) == [9, 10, 11]


def test_bad_inputs_fail_clearly(tiny):
    lm = tiny("gpt2")
    with pytest.raises(ValueError, match="corrupted prompt has 5 tokens but the clean prompt has 9"):
        hw.patching(lm, PROMPT, "the capital of Ostrand")
    with pytest.raises(ValueError, match="give subject="):
        hw.patching(lm, PROMPT)
    with pytest.raises(ValueError, match="does not occur"):
        hw.patching(lm, PROMPT, subject="Kelvar")
    with pytest.raises(ValueError, match=r"site must be one of \['resid', 'mlp', 'attn'\], got 'block'"):
        hw.patching(lm, PROMPT, subject=SUBJECT, site="block")
    with pytest.raises(ValueError, match=r"window must be in \[1"):
        hw.patching(lm, PROMPT, subject=SUBJECT, site="mlp", window=0)
    with pytest.raises(IndexError, match="layer 7 is out of range"):
        hw.patching(lm, PROMPT, subject=SUBJECT, layers=[7])


def test_causal_tracing_structure_on_demo(demo, fact):
    """The paper's two sites on the demo model: restoring the residual stream helps at the subject in early
    layers and at the last token in late layers, and nowhere before the subject."""
    prompt, subject = fact
    m = hw.patching(demo, prompt, subject=subject)
    v, subj = m.values, m.meta["noised_positions"]
    others = [i for i in range(v.shape[1] - 1) if i not in subj]
    assert v[0, subj].max() > 10 * v[0, others].max()
    assert v[-1, -1] == pytest.approx(m.meta["p_clean"], abs=1e-5)  # the final state at the last token is clean
    assert v[-1, -1] > 10 * v[-1, subj].max()
    assert np.allclose(v[:, : subj[0]], m.meta["p_corrupted"], atol=1e-6)


def test_drill_and_reruns(demo, fact):
    prompt, subject = fact
    m = hw.patching(demo, prompt, subject=subject, site="mlp", window=3)
    r, c = 1, m.meta["noised_positions"][-1]
    d = m.drill(r, c)
    topk, row_curve, col_curve = d.charts
    assert [s.name for s in topk.series] == ["clean", "corrupted", "patched"]
    assert row_curve.series[0].y == pytest.approx(m.values[r].tolist())
    assert col_curve.series[0].y == pytest.approx(m.values[:, c].tolist())
    table = d.tables["this cell at each site"].set_index("site")
    assert table.loc["mlp", "p(answer)"] == pytest.approx(float(m.values[r, c]), abs=1e-5)
    assert set(d.reruns) == {"causal trace of the resid site", "causal trace of the attn site"}
    resid = d.reruns["causal trace of the resid site"]()
    assert resid.meta["options"]["site"] == "resid"
    assert float(resid.values[r, c]) == pytest.approx(table.loc["resid", "p(answer)"], abs=1e-5)
    assert d.texts["corruption"].startswith("N(0, ") and "mlp output of layer(s) [0, 1, 2]" in d.texts["restored"]


def test_saved_matrix_keeps_its_provenance(demo, fact, tmp_path):
    prompt, subject = fact
    m = hw.patching(demo, prompt, subject=subject, layers=[0, 3])
    back = hw.HeatMatrix.load(m.save(tmp_path / "trace"))
    np.testing.assert_array_equal(back.values, m.values)
    assert back.meta["analysis"] == "patching" and back.meta["options"]["layers"] == [0, 3]
    assert back.meta["p_clean"] == m.meta["p_clean"] and back.meta["option_specs"]["site"]["choices"] == [
        "resid",
        "mlp",
        "attn",
    ]
    np.testing.assert_array_equal(back.meta["logit_diff"], m.meta["logit_diff"])


@pytest.mark.parametrize("family", ["mamba", "zamba2"])
def test_models_without_per_layer_attention_trace_resid_and_refuse_other_sites_by_name(tmp_path, family):
    """An attention-free (Mamba) or hybrid (Zamba2) model: the block outputs are traced (the drill re-runs only the
    sites the model has); mlp/attn are refused with one sentence naming the family and the layers, before any
    model time, never a capture KeyError."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import model_sweep

    lm = hw.load(model_sweep.build_tiny(family, tmp_path / family))
    model_sweep._keep_word_tokenizer(lm)
    words = [w.lstrip("Ġ▁") for w in lm.tokenizer.convert_ids_to_tokens(list(range(5, 12)))]
    prompt = " ".join(words)
    m = hw.patching(lm, prompt, subject=words[1], site="resid")
    assert m.values.shape == (lm.n_layers, len(lm.encode(prompt)["input_ids"][0]))
    sites = list(m.drill(0, 0).tables["this cell at each site"]["site"])
    assert "resid" in sites and "attn" not in sites
    for site in ("attn",) if family == "zamba2" else ("attn", "mlp"):
        with pytest.raises(hw.AnatomyError, match=rf"site='{site}'.*{family} model's layers \["):
            hw.patching(lm, prompt, subject=words[1], site=site)
