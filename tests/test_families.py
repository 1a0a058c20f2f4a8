"""The family sweep: every decoder-only text model type of the installed transformers, tiny and random, through
every analysis (scripts/model_sweep.py), and docs/models.md current for this transformers version."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import transformers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import model_sweep as sweep  # noqa: E402

import heatwidget as hw  # noqa: E402

DOC = ROOT / "docs" / "models.md"
VERSION = transformers.__version__
# torch's own errors about shapes: a family that cannot run an analysis must say so in heatwidget's words instead.
SHAPE_ERRORS = ("must match the size", "expanded size", "shape", "size of tensor")


@pytest.fixture(scope="module")
def results():
    res, excluded = sweep.sweep()
    return res, excluded


def test_docs_models_md_is_current(results):
    section = sweep.section_of(DOC, VERSION)
    if section is None:
        pytest.skip(f"docs/models.md has no section for transformers {VERSION}: run "
                    "python scripts/model_sweep.py --write docs/models.md")
    res, excluded = results
    assert sweep.render(res, excluded, VERSION) == section, (
        "docs/models.md is stale: run python scripts/model_sweep.py --write docs/models.md")


def test_95_percent_of_buildable_decoder_families_run_every_analysis(results):
    res, _ = results
    runs = [r for r in res if "build" not in r.status]
    full = [r.family for r in runs if r.all_ok]
    assert len(full) >= 0.95 * len(runs), sorted(r.family for r in runs if not r.all_ok)


def test_issue_families_run_every_analysis(results):
    res, _ = results
    by = {r.family: r for r in res}
    for fam in ("bloom", "deepseek_v3", "deepseek_v2", "xglm", "granitemoe", "mixtral", "mpt"):
        if fam not in by:
            continue  # this transformers has no such model type
        assert by[fam].all_ok, (fam, {k: v for k, v in by[fam].status.items() if v != "ok"})


def test_failures_are_heatwidget_errors_not_shape_errors(results):
    """What a family cannot run fails with a message, never with torch's broadcasting complaint."""
    res, _ = results
    for r in res:
        for name, s in r.status.items():
            if s == "ok" or name == "build" or s.startswith("not run"):
                continue
            assert not any(e in s for e in SHAPE_ERRORS) or "AnatomyError" in s, (r.family, name, s)


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
    # mlp.up of expert 2 is what the expert computes: the second half of its fused gate_up rows
    x = torch.randn(3, 64)
    fused = a.mlp[0].experts.gate_up_proj[2]
    torch.testing.assert_close(x @ up.weight()[2].T, (x @ fused.T)[:, 128:])
    ms = hw.module_stats(lm)
    col = list(hw.MODULES).index("mlp.up")
    assert ms.values[0, col] == pytest.approx(float(up.weight().norm()), rel=1e-5)
    assert "Frobenius" in ms.meta["experts_note"]
    d = ms.drill(0, col)
    per = d.meta["per_expert"]
    assert per.shape == (4,) and per == pytest.approx([float(up.weight()[e].norm()) for e in range(4)], rel=1e-5)
    assert "experts" in d.children
