"""The family sweep: every decoder-only text model type of the installed transformers, tiny and random, through
every analysis (scripts/model_sweep.py), and docs/models.md current for this transformers version."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import model_sweep as sweep  # noqa: E402

import heatwidget as hw  # noqa: E402

DOC = ROOT / "docs" / "models.md"
VERSION = transformers.__version__


@pytest.fixture(scope="module")
def results():
    res, excluded = sweep.sweep()
    return res, excluded


def test_docs_models_md_is_current(results):
    section = sweep.section_of(DOC, VERSION)
    if section is None:
        pytest.skip(
            f"docs/models.md has no section for transformers {VERSION}: run "
            "python scripts/model_sweep.py --write docs/models.md"
        )
    res, excluded = results
    assert sweep.render(res, excluded, VERSION) == section, (
        "docs/models.md is stale: run python scripts/model_sweep.py --write docs/models.md"
    )


def test_buildable_decoder_families_run_every_analysis_their_architecture_has(results):
    """The issue's target: >= 95 % of the buildable decoder families run every analysis their architecture has
    parts for ("n/a" = refused by name because the part is missing, see test_not_applicable_is_only_the_refusal)."""
    res, _ = results
    has, n, nine = sweep.counts(res)
    bad = sorted(r.family for r in res if "build" not in r.status and not r.all_it_has)
    assert has >= THRESHOLD * n, (has, n, bad)
    assert nine <= has


# The issue's 95 %, under both versions (measured: 5.24.0 134 of 140, 4.57.6 86 of 90).
THRESHOLD = 0.95


def test_issue_families_run_every_analysis(results):
    res, _ = results
    by = {r.family: r for r in res}
    for fam in (
        "bloom",
        "deepseek_v3",
        "deepseek_v2",
        "xglm",
        "granitemoe",
        "mixtral",
        "mpt",
        # fixed since: nested/listed attention, dict masks, fused Wqkv, tied unembedding, recurrent state
        "longcat_flash",
        "zaya",
        "dbrx",
        "open-llama",
        "recurrent_gemma",
    ):
        if fam not in by or "build" in by[fam].status:
            continue  # this transformers has no such model type (or cannot build it: listed in docs/models.md)
        assert by[fam].all_ok, (fam, {k: v for k, v in by[fam].status.items() if v != "ok"})


def test_not_applicable_is_only_the_refusal(results):
    """ "n/a" is given only where the sweep declares the family lacks the part (LACKS) and heatwidget refused with
    its own error type naming the family and the part; a torch error, another family, or a message that does not
    name the family stays a failure."""
    res, _ = results
    for r in res:
        for name, s in r.status.items():
            if sweep.is_na(s):
                assert sweep.NEEDS[name][0] in sweep.LACKS[r.family], (r.family, name, s)
    for fam, lacks in sweep.LACKS.items():
        by = {r.family: r for r in res}
        if fam in by and "build" not in by[fam].status:
            assert by[fam].all_it_has, (fam, by[fam].status)
            assert all(
                sweep.is_na(by[fam].status[a])
                for a, need in sweep.NEEDS.items()
                if need[0] in lacks and by[fam].status[a] != "ok"
            )
    refusal = (
        "AnatomyError: knockout_js's Attn. row blocks attention edges, and this mamba model has no softmax "
        "attention in any layer (an attention-free model): use ablation_kl"
    )
    assert sweep.not_applicable("mamba", "knockout_js", refusal)
    assert not sweep.not_applicable("zamba", "knockout_js", refusal.replace("mamba", "zamba"))  # has attention
    assert not sweep.not_applicable("mamba", "knockout_js", refusal.replace("AnatomyError", "RuntimeError"))
    assert not sweep.not_applicable("mamba", "knockout_js", refusal.replace("mamba", "this"))
    assert not sweep.not_applicable("mamba", "logit_lens", refusal)  # logit_lens needs no attention
    assert not sweep.not_applicable("mamba", "knockout_js", "RuntimeError: The size of tensor a (4) must match")


def test_failures_name_the_family(results):
    """What a family cannot run fails with heatwidget's own one-sentence error naming the family (and what is
    missing), never with torch's broadcasting complaint from deep inside the model."""
    res, _ = results
    for r in res:
        for name, s in r.status.items():
            if s == "ok" or name == "build" or s.startswith("not run"):
                continue
            if (r.family, VERSION.split(".")[0]) in sweep.UPSTREAM:
                continue  # a transformers bug, stated in docs/models.md
            assert _plain(r.family) in _plain(s), (r.family, name, s)


def _plain(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


@pytest.fixture(scope="module")
def mamba(tmp_path_factory):
    if "mamba" not in sweep.causal_lm_types():
        pytest.skip(f"transformers {VERSION} has no mamba")
    return hw.load(sweep.build_tiny("mamba", tmp_path_factory.mktemp("mamba") / "m"))


def test_attention_free_model_loads_with_a_partial_anatomy(mamba):
    a = mamba.anatomy
    assert a.n_layers == 3 and a.final_norm is not None and a.unembed is not None
    assert a.attn == [None] * 3 and a.attention_layers == []
    m = hw.ablation_kl(mamba, sweep.PROMPT, max_new_tokens=2, intervention="skip")
    assert m.values.shape == (3, 2) and (m.values[:, :1] > 0).all()
    assert hw.logit_lens(mamba, sweep.PROMPT).values.shape[0] == 3
    with pytest.raises(hw.AnatomyError, match="mamba.*no softmax attention"):
        hw.knockout_js(mamba, sweep.PROMPT, sweep.SUBJECT)
    with pytest.raises(hw.AnatomyError, match="zero_attn needs the attention module of layer 0.*mamba"):
        hw.ablation_kl(mamba, sweep.PROMPT, max_new_tokens=1, intervention="zero_attn")


def test_moe_experts_stack_and_router_is_its_own_module(tmp_path):
    lm = hw.load(sweep.build_tiny("mixtral", tmp_path / "mixtral"))
    a = lm.anatomy
    up, gate, router = a.part(0, "mlp.up"), a.part(0, "mlp.gate"), a.part(0, "mlp.router")
    assert up.experts == 4 and up.weight().shape == (4, 128, 64) and gate.weight().shape == (4, 128, 64)
    assert a.part(0, "mlp.down").weight().shape == (4, 64, 128)
    assert router is not None and router.weight().shape == (4, 64) and router.module is not gate.module
    # mlp.up of expert 2 is what the expert computes: the second half of its fused gate_up rows (transformers 5),
    # or its w3 (transformers 4: a list of expert MLPs)
    experts = a.mlp[0].experts
    want = experts.gate_up_proj[2][128:] if hasattr(experts, "gate_up_proj") else experts[2].w3.weight
    torch.testing.assert_close(up.weight()[2], want)
    ms = hw.module_stats(lm)
    col = list(hw.MODULES).index("mlp.up")
    assert ms.values[0, col] == pytest.approx(float(up.weight().detach().norm()), rel=1e-5)
    assert "Frobenius" in ms.meta["experts_note"]
    d = ms.drill(0, col)
    per = d.meta["per_expert"]
    assert per.shape == (4,) and per == pytest.approx(
        [float(up.weight()[e].detach().norm()) for e in range(4)], rel=1e-5
    )
    assert "experts" in d.children
    # gradient statistics of routed experts: autograd on their stored weights, equal to a plain backward
    from heatwidget.weights.gradients import expert_leaves

    g = hw.module_stats(lm, stat="grad", texts=[sweep.PROMPT])
    assert all(p.grad is None for p in lm.model.parameters())  # nothing left behind
    enc = lm.encode([sweep.PROMPT])
    lm.model(**enc, labels=enc["input_ids"]).loss.backward()
    for name in ("mlp.up", "mlp.gate", "mlp.down"):
        part, leaves = a.part(1, name), expert_leaves(a.part(1, name))
        grad = leaves[0].grad if len(leaves) == 1 and leaves[0].ndim == 3 else torch.stack([t.grad for t in leaves])
        want = float(part.weight(grad).double().norm())
        assert g.values[1, list(hw.MODULES).index(name)] == pytest.approx(want, rel=1e-4), name
    lm.model.zero_grad(set_to_none=True)
    for t in expert_leaves(up):
        t.requires_grad_(False)
    with pytest.raises(ValueError, match=r"experts\.gate_up_proj is frozen|w\d\.weight|is frozen"):
        hw.module_stats(lm, stat="grad", texts=[sweep.PROMPT])


@pytest.mark.parametrize("family", ["bloom", "xglm", "openai-gpt"])
def test_resumed_rows_equal_full_forwards(tmp_path, family):
    """Bloom's per-row ALiBi, XGLM's mask check and GPT-1's missing KV cache: the resume engine (blocks re-run
    from recorded arguments on a batch of rows) gives what full forwards of the model give."""
    if family not in sweep.causal_lm_types():
        pytest.skip(f"transformers {VERSION} has no {family}")
    lm = hw.load(sweep.build_tiny(family, tmp_path / family))
    fast = hw.ablation_kl(lm, sweep.PROMPT, max_new_tokens=3)
    full = hw.ablation_kl(lm, sweep.PROMPT, max_new_tokens=3, resume=False)
    # GPT-1's blocks cannot be replayed (the engine falls back to full forwards); its generation has no KV cache
    assert fast.meta["engine"] == (["batched"] if family == "openai-gpt" else ["resume"])
    assert full.meta["engine"] == ["batched"]
    np.testing.assert_allclose(fast.values, full.values, rtol=1e-4, atol=1e-6)
    assert np.isfinite(fast.values).all() and (fast.values > 0).any()


@pytest.mark.parametrize("family", ["zaya", "longcat_flash"])
def test_knockout_reaches_dict_masks_and_attention_sub_layers(tmp_path, family):
    """ZAYA's attention takes {"causal": mask, "conv": mask}; LongCat-Flash runs two attention sub-layers per
    block (self_attn is a ModuleList of latent-attention modules): knocking out the last token's attention to
    the subject changes the prediction in every layer, and zero_attn refuses one module per layer by name."""
    if family not in sweep.causal_lm_types():
        pytest.skip(f"transformers {VERSION} has no {family}")
    lm = hw.load(sweep.build_tiny(family, tmp_path / family))
    assert lm.anatomy.attention_layers == list(range(lm.n_layers))
    m = hw.knockout_js(lm, sweep.PROMPT, sweep.SUBJECT, window=1)
    attn_row = m.values[1]  # rows: Subj., Attn., Last.
    assert np.isfinite(attn_row).all() and (attn_row > 0).any(), m.values
    if family == "longcat_flash":
        with pytest.raises(
            hw.AnatomyError,
            match="zero_attn needs one attention module in layer 0.*longcat_flash.*2 attention sub-layers",
        ):
            hw.ablation_kl(lm, sweep.PROMPT, max_new_tokens=1, intervention="zero_attn")


def test_zamba_attention_is_per_layer_or_refused_by_name(tmp_path):
    """Zamba's hybrid layers run attention inside a shared transformer block. transformers 5 builds one module per
    layer with tied weights: knockout reaches each layer's own attention. transformers 4 calls one module object
    from every hybrid layer: a hook there would act in all of them, so knockout refuses, naming the layers."""
    if "zamba" not in sweep.causal_lm_types():
        pytest.skip(f"transformers {VERSION} has no zamba")
    lm = hw.load(sweep.build_tiny("zamba", tmp_path / "zamba"))
    a = lm.anatomy
    hybrid = [i for i, b in enumerate(a.layers) if hasattr(b, "shared_transf")]
    assert hybrid == [2, 3] and a.part(2, "attn.q") is not None and a.part(3, "mlp.down") is not None
    if a.attention_layers:
        assert a.attention_layers == hybrid and a.attn[2] is not a.attn[3]
        torch.testing.assert_close(a.part(2, "attn.q").weight(), a.part(3, "attn.q").weight())  # tied
        m = hw.knockout_js(lm, sweep.PROMPT, sweep.SUBJECT, window=1)
        # layers 0-1 have nothing to knock out: their row is the engine's float noise (~1e-8)
        assert m.values[1, hybrid].min() > 5 * m.values[1, :2].max(), m.values
    else:
        assert a.layers[2].shared_transf is a.layers[3].shared_transf
        with pytest.raises(
            hw.AnatomyError,
            match=r"zamba model has no attention module of its own.*layers \[2, 3\] "
            "call one shared attention module",
        ):
            hw.knockout_js(lm, sweep.PROMPT, sweep.SUBJECT)


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "granitemoe"])
def test_weight_change_reads_moe_checkpoints_saved_expert_by_expert(tmp_path, family):
    """transformers 5 saves these MoE models one expert at a time (Mixtral as block_sparse_moe.experts.<e>.w1/w2/w3,
    GraniteMoE as input_linear/output_linear), transformers 4 lists its experts: streamed from the directories,
    weight_change gives what it gives on the loaded models."""
    src = sweep.build_tiny(family, tmp_path / "a")
    other = sweep.perturbed_copy(src, tmp_path / "b")
    from_dirs = hw.weight_change(str(src), str(other))
    live = hw.weight_change(hw.load(src), hw.load(other))
    np.testing.assert_allclose(from_dirs.values, live.values, rtol=1e-6)
    up = list(hw.MODULES).index("mlp.up")
    assert np.isfinite(from_dirs.values[:, up]).all() and (from_dirs.values[:, up] > 0).all()


def test_expert_stacks_only_complete_sets_gate_rows_first():
    from heatwidget._checkpoint import expert_stacks

    keys = [f"m.layers.0.moe.experts.{e}.{p}.weight" for e in range(2) for p in ("w1", "w2", "w3")]
    st = expert_stacks(keys + ["m.layers.1.mlp.experts.1.up_proj.weight"])  # layer 1: expert 0 is missing
    assert st["m.layers.0.moe.experts.gate_up_proj"] == [
        [f"m.layers.0.moe.experts.{e}.w1.weight", f"m.layers.0.moe.experts.{e}.w3.weight"] for e in range(2)
    ]
    assert st["m.layers.0.moe.experts.down_proj"] == [[f"m.layers.0.moe.experts.{e}.w2.weight"] for e in range(2)]
    assert st["m.layers.0.moe.experts.*.w3.weight"] == [[f"m.layers.0.moe.experts.{e}.w3.weight"] for e in range(2)]
    assert not any(k.startswith("m.layers.1") for k in st)
