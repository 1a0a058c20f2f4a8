"""hw.patching (causal tracing) against a naive loop: one hooked forward of the model per (layer, token)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget.divergence.knockout import corruption_noise, subject_positions
from heatwidget.divergence.patching import patch_window


def naive_trace(lm, clean, corrupted=None, subject=None, site="resid", window=1, seed=0, noise_scale=3.0,
                noise_ref="embedding"):
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
        sigma = (lm.anatomy.embed.weight.detach().float().std() if noise_ref == "embedding" else emb["e"].float().std())
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
