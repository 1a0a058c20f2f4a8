"""Divergence analyses (ablation_kl, knockout_js, logit_lens) against plain, obviously-correct loops.

Every reference here runs one hooked forward at a time with the hooks module's own context managers and a greedy
generation without a KV cache, then compares with the batched, resumed results to ≤ 1e-4 nats.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

import heatwidget as hw
from heatwidget import hooks
from heatwidget.divergence import js_div, kl_div, subject_positions
from heatwidget.divergence._stats import log_probs
from heatwidget.divergence.knockout import corruption_noise, window_layers

PROMPT = "the capital of Velmora is"
PROMPTS = ["the capital of Velmora is", "Q : what is the capital of Brisa ? A :", "Kelvar is a city in"]
SUBJECTS = ["Velmora", "Brisa", "Kelvar"]
T = 4
TOL = 1e-4


def _tiny(tiny_dir, family: str):
    # 4 layers, and weights 10× the default init scale so that interventions move the output by O(1) nats
    # (at the default 0.02 a random model barely reacts and a 1e-4 comparison would say little).
    layers = {"n_layer": 4} if family == "gpt2" else {"num_hidden_layers": 4}
    return tiny_dir(family, initializer_range=0.2, **layers)


@pytest.fixture(scope="module")
def lms(tiny_dir):
    from tiny_models import tiny_tokenizer

    cache: dict = {}

    def get(family: str, **kw) -> hw.LM:
        key = (family, tuple(sorted(kw.items())))
        if key not in cache:
            lm = hw.load(_tiny(tiny_dir, family), **kw)
            # AutoTokenizer rebuilds the saved word-level tokenizer as the family's own class for some families
            # (Qwen2: every word becomes <unk>); analyses need real words and offsets, so use the original.
            cache[key] = hw.LM.wrap(lm.model, tiny_tokenizer(), name=lm.name)
        return cache[key]

    return get


# ---- the plain references ----------------------------------------------------------------------------------------


def greedy(lm: hw.LM, ids: torch.Tensor, n: int, ctx=()) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy generation the obvious way: a full forward over the growing sequence per step, no cache."""
    seq, toks, lps = ids, [], []
    with torch.inference_mode(), hooks.stack(*ctx):
        for _ in range(n):
            lp = log_probs(lm.model(seq).logits[0, -1])
            toks.append(int(lp.argmax()))
            lps.append(lp)
            seq = torch.cat([seq, lp.argmax().view(1, 1)], 1)
    return toks, lps


def plain_ablation(lm: hw.LM, prompt: str, make_ctx, layers=None) -> np.ndarray:
    """value[l, t]: one forward per (layer, generated token) over the prefix, with layer l hooked."""
    ids = lm.encode(prompt)["input_ids"]
    P = ids.shape[1]
    toks, clean = greedy(lm, ids, T)
    seq = torch.cat([ids, torch.tensor([toks])], 1)
    layers = range(lm.n_layers) if layers is None else layers
    out = np.zeros((len(layers), T))
    with torch.inference_mode():
        for i, layer in enumerate(layers):
            for t in range(T):
                with make_ctx(lm, layer, seq[:, :P]):
                    lp = log_probs(lm.model(seq[:, : P + t]).logits[0, -1])
                out[i, t] = float(kl_div(clean[t], lp))
    return out


def _out(lm, layer, prompt_ids):
    with torch.inference_mode(), hooks.capture([lm.anatomy.layers[layer]]) as cap:
        lm.model(prompt_ids)
    return cap[0][0]


def _mean_out(lm, layer, prompt_ids):
    return _out(lm, layer, prompt_ids).mean(0)


REF_CTX = {
    "skip": lambda lm, l, p: hooks.skip(lm.anatomy.layers[l]),
    "zero_attn": lambda lm, l, p: hooks.zero(lm.anatomy.attn[l]),
    "zero_mlp": lambda lm, l, p: hooks.zero(lm.anatomy.mlp[l]),
    "mean": lambda lm, l, p: hooks.replace(lm.anatomy.layers[l], _mean_out(lm, l, p)),
    "none": lambda lm, l, p: hooks.edit_output(lm.anatomy.layers[l], lambda h, x: h),
}


def _steer_vec(lm):
    g = torch.Generator().manual_seed(5)
    return torch.randn(lm.n_layers, lm.model.config.hidden_size, generator=g)


# ---- KL / JS ---------------------------------------------------------------------------------------------------


def test_kl_js_match_scipy_and_bounds():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=g) * 3
    lp, lq = log_probs(logits[:3]), log_probs(logits[3:])
    p, q = lp.exp().double().numpy(), lq.exp().double().numpy()
    for i in range(3):
        assert abs(float(kl_div(lp[i], lq[i])) - entropy(p[i], q[i])) < 1e-5
        assert abs(float(js_div(lp[i], lq[i])) - jensenshannon(p[i], q[i]) ** 2) < 1e-5  # scipy: sqrt, base e
    assert torch.all(kl_div(lp, lp) == 0)
    assert torch.all(js_div(lp, lp) == 0)
    # disjoint supports: JS reaches ln 2 and never exceeds it; KL with zeros in p is finite
    a = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    b = torch.log(torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert abs(float(js_div(a, b)) - math.log(2)) < 1e-6
    assert float(js_div(a, b)) <= math.log(2)
    assert math.isfinite(float(kl_div(a, torch.log(torch.full((4,), 0.25)))))
    assert torch.all(js_div(lp, lq) <= math.log(2)) and torch.all(js_div(lp, lq) >= 0)


# ---- ablation_kl ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("intervention", ["skip", "zero_attn", "zero_mlp", "mean"])
def test_ablation_matches_plain_loop(lms, family, intervention):
    lm = lms(family)
    want = plain_ablation(lm, PROMPT, REF_CTX[intervention])
    for resume in (None, False):
        m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention=intervention, resume=resume)
        assert m.values.shape == (lm.n_layers, T)
        assert m.rows == [str(i) for i in range(lm.n_layers)] and m.cols == [f"Gen{t}" for t in range(T)]
        np.testing.assert_allclose(m.values, want, atol=TOL, rtol=0)
        assert m.meta["engine"] == (["resume"] if resume is None else ["batched"])
    assert want.max() > 1e-3  # the intervention does something: the comparison is not vacuous


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_steering_and_projection_match_plain_loop(lms, family):
    lm = lms(family)
    v = _steer_vec(lm)
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention=hw.Steer(v, alpha=2.0))
    want = plain_ablation(lm, PROMPT, lambda lm_, l, p: hooks.add(lm_.anatomy.layers[l], v[l], alpha=2.0))
    np.testing.assert_allclose(m.values, want, atol=TOL, rtol=0)
    d = v[0]
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention=hw.ProjectOut(d))
    want = plain_ablation(lm, PROMPT, lambda lm_, l, p: hooks.project_out(lm_.anatomy.layers[l], d))
    np.testing.assert_allclose(m.values, want, atol=TOL, rtol=0)
    assert m.meta["options"]["intervention"] == "project_out"


def test_no_op_interventions_give_zeros(lms):
    lm = lms("llama")
    for iv in ("none", hw.Steer(torch.zeros(lm.model.config.hidden_size)), lambda h, x: h):
        m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention=iv)
        assert np.nanmax(np.abs(m.values)) < 1e-5, iv


def test_layers_any_order_and_negative(lms):
    lm = lms("qwen2")
    full = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, layers=[3, 0, 2])
    assert m.rows == ["3", "0", "2"]
    np.testing.assert_allclose(m.values, full.values[[3, 0, 2]], atol=1e-6)
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, layers=[-1])
    assert m.rows == ["3"]


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma", "phi3", "gpt2", "gpt_neox", "opt"])
def test_resume_engine_equals_batched_engine(lms, family):
    """The staircase (blocks re-run from recorded arguments) against full batched forwards, every family."""
    lm = lms(family)
    ivs = ["skip", "mean"] + ([] if family == "opt" else ["zero_attn"])
    for iv in ivs:
        a = hw.ablation_kl(lm, PROMPT, max_new_tokens=3, intervention=iv, resume=True)
        b = hw.ablation_kl(lm, PROMPT, max_new_tokens=3, intervention=iv, resume=False)
        assert a.meta["engine"] == ["resume"] and b.meta["engine"] == ["batched"]
        np.testing.assert_allclose(a.values, b.values, atol=TOL, rtol=0, equal_nan=True)
    k1 = hw.knockout_js(lm, PROMPT, "Velmora", resume=True)
    k2 = hw.knockout_js(lm, PROMPT, "Velmora", resume=False)
    np.testing.assert_allclose(k1.values, k2.values, atol=TOL, rtol=0)


def test_failed_self_check_falls_back_to_the_batched_engine(tiny_dir):
    """If the head cannot reproduce the model's logits, the resume engine must not be used (and says why)."""
    lm = hw.load(_tiny(tiny_dir, "llama"))
    ref = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    lm.model.config.logit_scale = 2.0  # a Cohere-style scale this Llama does not apply: head() now disagrees
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    assert m.meta["engine"] == ["batched"] and "unembedding differ" in m.meta["engine_note"][0]
    np.testing.assert_allclose(m.values, ref.values, atol=TOL, rtol=0)
    # forcing the resume engine without recorded block arguments is a clear error, not a wrong answer
    from heatwidget.divergence._engine import generate_clean, run_rows

    gen = generate_clean(lm, lm.encode(PROMPT)["input_ids"], 2, trace=False)
    with pytest.raises(RuntimeError, match="cannot be resumed"):
        run_rows(lm, gen.clean, [], torch.tensor([0]), lambda *a: None, resume=True)


def test_resume_costs_about_half_a_forward_per_layer(lms):
    lm = lms("llama")
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    L = lm.n_layers
    assert m.meta["block_evaluations"] == L * (L - 1) // 2  # skip at l: blocks l+1..L-1 only
    assert m.meta["clean_forward_equivalents"] < L / 2 + 1e-9
    b = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, resume=False)
    assert b.meta["block_evaluations"] == L * L


def test_chunking_to_a_memory_budget_changes_nothing(lms):
    lm = lms("gpt2")
    a = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention="zero_attn")
    b = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention="zero_attn", memory_budget_mb=1e-6)  # 1 row
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)


def test_clean_generation_matches_transformers_generate(lms):
    lm = lms("llama")
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    ids = lm.encode(PROMPT)["input_ids"]
    g = lm.model.generate(ids, max_new_tokens=T, do_sample=False)
    assert m.meta["generated_ids"][0] == g[0, ids.shape[1] :].tolist()
    assert m.meta["generated_tokens"][0] == lm.token_strings(g[0, ids.shape[1] :])


def test_free_running_matches_plain_loop(lms):
    lm = lms("llama")
    ids = lm.encode(PROMPT)["input_ids"]
    _toks, clean = greedy(lm, ids, T)
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, mode="free_running")
    assert "free-running" in m.title
    for layer in range(lm.n_layers):
        own, lps = greedy(lm, ids, T, ctx=[hooks.skip(lm.anatomy.layers[layer])])
        want = [float(kl_div(c, q)) for c, q in zip(clean, lps, strict=True)]
        np.testing.assert_allclose(m.values[layer], want, atol=TOL, rtol=0)
        d = m.drill(layer, 0)
        assert d.texts[f"intervened continuation (layer {layer}, skip)"] == lm.tokenizer.decode(own)


def test_several_prompts_average_and_keep_per_prompt(lms):
    lm = lms("llama")
    m = hw.ablation_kl(lm, PROMPTS, max_new_tokens=T, progress_bar=True)
    singles = np.stack([hw.ablation_kl(lm, p, max_new_tokens=T).values for p in PROMPTS])
    np.testing.assert_allclose(m.meta["per_prompt"], singles, atol=1e-6)
    np.testing.assert_allclose(m.values, singles.mean(0), atol=1e-6)
    d = m.drill(1, 2)
    assert "per prompt" in d.tables and len(d.tables["per prompt"]) == len(PROMPTS)
    assert any(c.title.startswith("KL per prompt") for c in d.charts)
    assert "per-prompt spread" in d.texts


def test_eos_before_max_new_tokens_gives_nan_after_it(lms, tiny_dir):
    lm = hw.load(_tiny(tiny_dir, "llama"))
    toks = hw.ablation_kl(lm, PROMPT, max_new_tokens=T).meta["generated_ids"][0]
    eos = toks[1]
    stop = toks.index(eos)
    lm.model.generation_config.eos_token_id = eos
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    assert m.meta["eos"] == [stop] and m.meta["generated_ids"][0] == toks[: stop + 1]
    assert np.isfinite(m.values[:, : stop + 1]).all() and np.isnan(m.values[:, stop + 1 :]).all()
    assert any("EOS" in n for n in m.meta["notes"])
    if stop + 1 < T:
        d = m.drill(0, T - 1)
        assert "EOS" in d.texts["note"] and not d.charts
    # the analysis of the cells before the EOS is unchanged
    lm2 = hw.load(_tiny(tiny_dir, "llama"))
    ref = hw.ablation_kl(lm2, PROMPT, max_new_tokens=T)
    np.testing.assert_allclose(m.values[:, : stop + 1], ref.values[:, : stop + 1], atol=1e-6)


def test_ablation_bad_inputs(lms):
    lm = lms("llama")
    with pytest.raises(ValueError, match="empty"):
        hw.ablation_kl(lm, "   ")
    with pytest.raises(IndexError, match="out of range"):
        hw.ablation_kl(lm, PROMPT, layers=[0, 9])
    with pytest.raises(ValueError, match="at least 1"):
        hw.ablation_kl(lm, PROMPT, max_new_tokens=0)
    with pytest.raises(TypeError, match="int"):
        hw.ablation_kl(lm, PROMPT, max_new_tokens=2.5)
    with pytest.raises(ValueError, match="context"):
        hw.ablation_kl(lm, " ".join(["the"] * 300))
    with pytest.raises(ValueError, match="max_new_tokens"):
        hw.ablation_kl(lm, " ".join(["the"] * 250), max_new_tokens=10)  # fits alone, not with the generation
    with pytest.raises(ValueError, match="unknown intervention"):
        hw.ablation_kl(lm, PROMPT, intervention="explode")
    with pytest.raises(ValueError, match="shape"):
        hw.ablation_kl(lm, PROMPT, intervention=hw.Steer(torch.ones(7)))
    with pytest.raises(ValueError, match="mode"):
        hw.ablation_kl(lm, PROMPT, mode="sampled")
    with pytest.raises(ValueError, match="duplicates"):
        hw.ablation_kl(lm, PROMPT, layers=[1, 1])
    with pytest.raises(ValueError, match="empty"):
        hw.ablation_kl(lm, [PROMPT, ""])  # a bad prompt anywhere in the list fails before any work


def test_ablation_drill_topk_rank_and_reruns(lms):
    lm = lms("llama")
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention="skip")
    layer, t = 2, 1
    d = m.drill(layer, t)
    assert d.value == pytest.approx(float(m.values[layer, t]))
    chart = d.charts[0]
    assert chart.kind == "bar" and [s.name for s in chart.series] == ["clean", "intervened"]
    # the rank and the probabilities against a hand-made hooked forward
    ids = lm.encode(PROMPT)["input_ids"]
    P = ids.shape[1]
    toks = m.meta["generated_ids"][0]
    seq = torch.cat([ids, torch.tensor([toks[:t]])], 1)
    with torch.inference_mode(), hooks.skip(lm.anatomy.layers[layer]):
        lq = log_probs(lm.model(seq).logits[0, -1])
    rank = int((lq > lq[toks[t]]).sum()) + 1
    assert d.meta["clean_token_rank"] == rank
    assert d.texts["rank of the clean token under the intervention"].startswith(str(rank))
    top = lq.topk(3).indices.tolist()
    table = d.tables["top-k"]
    for i in top:
        row = table[table["id"] == i]
        assert len(row) == 1 and abs(float(row["p_intervened"].iloc[0]) - float(lq[i].exp())) < 1e-5
    # the intervened continuation: a greedy generation with the layer skipped
    own, _ = greedy(lm, ids, T, ctx=[hooks.skip(lm.anatomy.layers[layer])])
    assert d.texts[f"intervened continuation (layer {layer}, skip)"] == lm.tokenizer.decode(own)
    # row click: per-position KL over the whole sequence; its generated positions equal the row of the matrix
    per_pos = d.reruns[f"KL at every position, layer {layer}"]()
    assert per_pos.values.shape == (1, P + T)
    np.testing.assert_allclose(per_pos.values[0, P - 1 : P - 1 + T], m.values[layer], atol=TOL)
    assert per_pos.drill(0, P).charts[0].kind == "bar"
    # column click: logit lens at that generated token (context up to the position predicting Gen t)
    lens = d.reruns[f"logit lens at Gen{t}"]()
    assert lens.values.shape == (lm.n_layers, P + t)


def test_ablation_meta_provenance_recompute_and_save(lms, tmp_path):
    lm = lms("gpt2")
    m = hw.ablation_kl(lm, PROMPT, max_new_tokens=T)
    meta = m.meta
    assert meta["model"] == lm.display_name and meta["model_path"] == lm.name
    assert meta["options"]["intervention"] == "skip"
    assert meta["options"]["mode"] == "teacher_forced" and meta["options"]["prompt"] == PROMPT
    assert meta["prompt_tokens"][0] == lm.token_strings(lm.encode(PROMPT)["input_ids"][0])
    assert len(meta["generated_tokens"][0]) == T and "versions" in meta
    assert m.metric.startswith("KL") and m.row_title == "layer"
    z = m.recompute(intervention="zero_attn")
    assert z.meta["options"]["intervention"] == "zero_attn" and z.values.shape == m.values.shape
    back = hw.HeatMatrix.load(m.save(tmp_path / "abl"))
    assert back == m and back.meta["options"] == meta["options"]


def test_ablation_is_deterministic(lms):
    lm = lms("qwen2")
    a = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention="mean")
    b = hw.ablation_kl(lm, PROMPT, max_new_tokens=T, intervention="mean")
    assert np.array_equal(a.values, b.values)


# ---- knockout_js ---------------------------------------------------------------------------------------------


def plain_knockout(
    lm: hw.LM, prompts, subjects, corruption="noise", noise_scale=3.0, window=5, seed=0, noise_ref="embedding"
):
    """One hooked forward per (prompt, site, layer); JS by scipy on float64 probabilities."""
    L = lm.n_layers
    sigma = float(lm.anatomy.embed.weight.detach().float().std())
    d = lm.model.config.hidden_size
    out = np.zeros((len(prompts), 3, L))
    for i, (prompt, subj) in enumerate(zip(prompts, subjects, strict=True)):
        ids = lm.encode(prompt)["input_ids"]
        S = ids.shape[1]
        pos = subject_positions(lm, prompt, subj)
        with torch.inference_mode():
            p = torch.softmax(lm.model(ids).logits[0, -1].double(), -1).numpy()
        for layer in range(L):
            ctxs = []
            for site, where in ((0, pos), (2, [S - 1])):
                blk = lm.anatomy.layers[layer]
                if corruption == "noise":
                    std = sigma if noise_ref == "embedding" else float(_out(lm, layer, ids).std())
                    full = torch.zeros(S, d)
                    full[where] = corruption_noise(seed, i, site, layer, len(where), d) * noise_scale * std
                    ctxs.append((site, hooks.add(blk, full, positions=where)))
                elif corruption == "zero":
                    ctxs.append((site, hooks.zero(blk, positions=where)))
                else:
                    ctxs.append((site, hooks.replace(blk, _mean_out(lm, layer, ids), positions=where)))
            ctxs.append(
                (
                    1,
                    hooks.block_attention(
                        [lm.anatomy.attn[j] for j in window_layers(layer, window, L)], queries=[-1], keys=pos
                    ),
                )
            )
            for site, ctx in ctxs:
                with torch.inference_mode(), ctx:
                    q = torch.softmax(lm.model(ids).logits[0, -1].double(), -1).numpy()
                out[i, site, layer] = jensenshannon(p, q) ** 2
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_knockout_matches_plain_loop(lms, family, impl):
    lm = lms(family, attn_implementation=impl)
    want = plain_knockout(lm, PROMPTS[:2], SUBJECTS[:2])
    m = hw.knockout_js(lm, PROMPTS[:2], SUBJECTS[:2])
    assert m.rows == ["Subj.", "Attn.", "Last."] and m.cols == [str(i) for i in range(lm.n_layers)]
    np.testing.assert_allclose(m.meta["per_prompt"], want, atol=TOL, rtol=0)
    np.testing.assert_allclose(m.values, want.mean(0), atol=TOL, rtol=0)
    assert (m.values >= 0).all() and (m.values <= math.log(2)).all()
    assert want.max() > 1e-2 and want[:, 0].max() > 1e-4  # knockouts bite: the comparison is not vacuous


@pytest.mark.parametrize("corruption", ["zero", "mean"])
def test_knockout_other_corruptions_match_plain_loop(lms, corruption):
    lm = lms("llama")
    want = plain_knockout(lm, PROMPTS[:1], SUBJECTS[:1], corruption=corruption, window=3)
    m = hw.knockout_js(lm, PROMPTS[0], SUBJECTS[0], corruption=corruption, window=3)
    np.testing.assert_allclose(m.values, want[0], atol=TOL, rtol=0)
    assert m.meta["attention_windows"]["0"] == [0, 1] and m.meta["options"]["window"] == 3


def test_knockout_noise_relative_to_the_residual_matches_plain_loop(lms):
    lm = lms("gpt2")
    want = plain_knockout(lm, PROMPTS[:2], SUBJECTS[:2], noise_scale=0.5, noise_ref="residual")
    m = hw.knockout_js(lm, PROMPTS[:2], SUBJECTS[:2], noise_scale=0.5, noise_ref="residual")
    np.testing.assert_allclose(m.values, want.mean(0), atol=TOL, rtol=0)
    assert m.meta["options"]["noise_ref"] == "residual" and "corrupted layer" in m.meta["noise_note"]
    with pytest.raises(ValueError, match="noise_ref"):
        hw.knockout_js(lm, PROMPT, "Velmora", noise_ref="input")


def test_knockout_seeded_and_deterministic(lms):
    lm = lms("llama")
    a = hw.knockout_js(lm, PROMPTS, SUBJECTS, seed=3, layers=[0, 2])
    b = hw.knockout_js(lm, PROMPTS, SUBJECTS, seed=3, layers=[0, 2])
    c = hw.knockout_js(lm, PROMPTS, SUBJECTS, seed=4, layers=[0, 2])
    assert np.array_equal(a.values, b.values)
    assert not np.allclose(a.values[[0, 2]], c.values[[0, 2]])  # the noise rows depend on the seed
    np.testing.assert_allclose(a.values[1], c.values[1], atol=1e-7)  # attention knockout has no noise
    assert a.meta["seed"] == 3 and a.meta["noise_std"] == pytest.approx(3.0 * a.meta["sigma_emb"])
    # no corruption at all: noise_scale 0 gives zeros in Subj./Last.
    z = hw.knockout_js(lm, PROMPTS[0], SUBJECTS[0], noise_scale=0.0)
    assert np.abs(z.values[[0, 2]]).max() < 1e-6


def test_subject_positions_by_offsets(lms):
    lm = lms("llama")
    ids = lm.encode(PROMPT)["input_ids"][0].tolist()
    toks = lm.token_strings(ids)
    assert [toks[i] for i in subject_positions(lm, PROMPT, "Velmora")] == ["Velmora"]
    assert [toks[i] for i in subject_positions(lm, PROMPT, "capital of")] == ["capital", "of"]
    assert [toks[i] for i in subject_positions(lm, PROMPT, "apital o")] == ["capital", "of"]  # partial overlap
    p = "Brisa and Brisa"
    assert subject_positions(lm, p, "Brisa") == [1]  # first occurrence (after the BOS token)


def test_knockout_bad_inputs(lms):
    lm = lms("llama")
    with pytest.raises(ValueError, match="does not occur"):
        hw.knockout_js(lm, PROMPT, "Ostrand")
    with pytest.raises(ValueError, match="non-empty"):
        hw.knockout_js(lm, PROMPT, "")
    with pytest.raises(ValueError, match="one subject per prompt"):
        hw.knockout_js(lm, PROMPTS, SUBJECTS[:2])
    with pytest.raises(ValueError, match="empty"):
        hw.knockout_js(lm, "  ", "x")
    with pytest.raises(IndexError, match="out of range"):
        hw.knockout_js(lm, PROMPT, "Velmora", layers=[4])
    with pytest.raises(ValueError, match="corruption"):
        hw.knockout_js(lm, PROMPT, "Velmora", corruption="blur")
    with pytest.raises(ValueError, match="window"):
        hw.knockout_js(lm, PROMPT, "Velmora", window=0)
    with pytest.raises(ValueError, match="context"):
        hw.knockout_js(lm, " ".join(["Velmora"] * 300), "Velmora")


def test_knockout_drill(lms):
    lm = lms("gpt2")
    m = hw.knockout_js(lm, PROMPTS, SUBJECTS)
    d = m.drill("Subj.", "1")
    assert d.charts[0].kind == "bar" and [s.name for s in d.charts[0].series] == ["P (clean)", "Q (knocked out)"]
    assert any(c.title.startswith("JS per prompt") for c in d.charts)
    ex = d.tables["examples by JS"]
    assert len(ex) == 3 and list(ex["JS"]) == sorted(ex["JS"], reverse=True)
    np.testing.assert_allclose(sorted(ex["JS"]), sorted(m.meta["per_prompt"][:, 0, 1]), atol=1e-7)
    assert "attention last → subject blocked" in m.drill("Attn.", "2").texts["intervention"]
    lens = next(iter(d.reruns.values()))()
    assert lens.values.shape[0] == lm.n_layers
    assert m.recompute(corruption="zero").meta["options"]["corruption"] == "zero"


def test_spread_chart_is_a_histogram_for_many_prompts():
    from heatwidget.divergence._common import spread_chart

    vals = np.linspace(0, 1, 40)
    vals[3] = np.nan
    chart, table = spread_chart("t", [str(i) for i in range(40)], vals, "JS")
    assert chart.kind == "hist" and len(chart.series[0].y) == 39 and len(table) == 39
    chart, _ = spread_chart("t", ["a", "b"], np.array([0.1, 0.3]), "JS")
    assert chart.kind == "bar" and chart.series[0].x == ["b", "a"]


# ---- logit_lens ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_logit_lens_matches_plain_loop(lms, family):
    lm = lms(family)
    ids = lm.encode(PROMPT)["input_ids"]
    a = lm.anatomy
    with torch.inference_mode():
        final = log_probs(lm.model(ids).logits[0])
        want = np.zeros((lm.n_layers, ids.shape[1]))
        want_p = np.zeros_like(want)
        for layer in range(lm.n_layers):
            with hooks.capture([a.layers[layer]]) as cap:
                lm.model(ids)
            lens = log_probs(a.unembed(a.final_norm(cap[0]))[0])
            want[layer] = kl_div(final, lens).numpy()
            want_p[layer] = lens.gather(-1, final.argmax(-1)[:, None])[:, 0].exp().numpy()
    m = hw.logit_lens(lm, PROMPT)
    assert m.cols == lm.token_strings(ids[0]) and m.rows == [str(i) for i in range(lm.n_layers)]
    np.testing.assert_allclose(m.values, want, atol=TOL, rtol=0)
    assert np.abs(m.values[-1]).max() < 1e-5  # the last layer's lens is the model's output
    p = hw.logit_lens(lm, PROMPT, metric="prob")
    np.testing.assert_allclose(p.values, want_p, atol=TOL, rtol=0)
    d = m.drill(1, 2)
    assert d.charts[0].kind == "bar" and d.texts["actual next token"] == lm.token_strings(ids[0])[3]


def test_logit_lens_inputs(lms):
    lm = lms("llama")
    ids = lm.encode(PROMPT)["input_ids"][0]
    np.testing.assert_allclose(hw.logit_lens(lm, ids.tolist()).values, hw.logit_lens(lm, PROMPT).values, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        hw.logit_lens(lm, "")
    with pytest.raises(ValueError, match="metric"):
        hw.logit_lens(lm, PROMPT, metric="entropy")
    with pytest.raises(ValueError, match="context"):
        hw.logit_lens(lm, [5] * 300)
    m = hw.logit_lens(lm, PROMPT, layers=[2, 0])
    assert m.rows == ["2", "0"]


# ---- the demo model ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo():
    from heatwidget.demo import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "config.json").exists():
        pytest.skip(f"demo weights not built yet ({WEIGHTS_DIR} has no config.json): run heatwidget.demo.train")
    return hw.demo_model(), hw.demo_questions()


def test_demo_ablation_matches_plain_loop(demo):
    lm, qs = demo
    prompt = qs[0]["question"]
    for iv in ("skip", "zero_attn", "zero_mlp", "mean"):
        want = plain_ablation(lm, prompt, REF_CTX[iv])
        m = hw.ablation_kl(lm, prompt, max_new_tokens=T, intervention=iv)
        assert m.meta["engine"] == ["resume"]
        np.testing.assert_allclose(m.values, want, atol=TOL, rtol=0, equal_nan=True)
        assert np.nanmax(want) > 1e-2


def test_demo_knockout_and_lens_match_plain_loop(demo):
    lm, qs = demo
    prompts, subjects = [q["prompt"] for q in qs[:3]], [q["subject"] for q in qs[:3]]
    for ref in ("embedding", "residual"):
        want = plain_knockout(lm, prompts, subjects, noise_ref=ref)
        m = hw.knockout_js(lm, prompts, subjects, noise_ref=ref)
        assert m.meta["engine"] == ["resume"]
        np.testing.assert_allclose(m.meta["per_prompt"], want, atol=TOL, rtol=0)
        assert (m.values >= 0).all() and (m.values <= math.log(2)).all()
    lens = hw.logit_lens(lm, prompts[0])
    assert np.abs(lens.values[-1]).max() < 1e-5 and lens.values[0].max() > 1e-2
