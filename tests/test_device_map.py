"""Every analysis on a model dispatched by accelerate (half the layers offloaded to disk) equals the plain model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget.demo import WEIGHTS_DIR

pytest.importorskip("accelerate", reason="device_map needs accelerate (pip install accelerate)")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(plain demo model, the same weights with layers 4-7 on "disk" offload and the rest on "cpu")."""
    torch.set_num_threads(1)
    ref = hw.demo_model()
    dm = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu"}
    dm.update({f"model.layers.{i}": ("cpu" if i < 4 else "disk") for i in range(ref.n_layers)})
    off = hw.load(WEIGHTS_DIR, device_map=dm, offload_folder=str(tmp_path_factory.mktemp("offload")))
    assert off.anatomy.parts[5]["attn.q"].module.weight.device.type == "meta"  # really offloaded
    assert str(off.device) == "cpu"
    return ref, off


@pytest.fixture(scope="module")
def qs():
    return hw.demo_questions()[:6]


def test_ablation_kl_offloaded_equals_plain(pair, qs):
    ref, off = pair
    prompts = [q["prompt"] for q in qs[:2]]
    a = hw.ablation_kl(ref, prompts, max_new_tokens=3)
    b = hw.ablation_kl(off, prompts, max_new_tokens=3)
    assert isinstance(b.values, np.ndarray) and b.values.shape == (ref.n_layers, 3)
    np.testing.assert_allclose(b.values, a.values, atol=1e-6, rtol=0)


def test_knockout_js_offloaded_equals_plain(pair, qs):
    ref, off = pair
    prompts, subjects = [q["prompt"] for q in qs[:2]], [q["subject"] for q in qs[:2]]
    a = hw.knockout_js(ref, prompts, subjects)
    b = hw.knockout_js(off, prompts, subjects)
    assert b.meta["sigma_emb"] == a.meta["sigma_emb"]
    np.testing.assert_allclose(b.values, a.values, atol=1e-6, rtol=0)


def test_collect_offloaded_equals_plain(pair, qs):
    ref, off = pair
    ans = hw.answer(ref, [q["question"] for q in qs], [q["gold"] for q in qs], max_new_tokens=8)
    ans_off = hw.answer(off, [q["question"] for q in qs], [q["gold"] for q in qs], max_new_tokens=8)
    assert ans_off.answers == ans.answers
    for site in ("resid", "mlp_in"):
        a = hw.collect(ref, ans, site=site)
        b = hw.collect(off, ans, site=site)
        np.testing.assert_allclose(np.asarray(b.values), np.asarray(a.values), atol=1e-6, rtol=0)


def test_weight_change_offloaded_equals_plain(pair):
    ref, off = pair
    zero = hw.weight_change(ref, off)  # offloaded weights are read from accelerate's map, not "meta"
    assert np.nanmax(zero.values) == 0.0
    a = hw.weight_change(WEIGHTS_DIR, ref)
    b = hw.weight_change(WEIGHTS_DIR, off)
    np.testing.assert_array_equal(b.values, a.values)


def test_logit_lens_offloaded_equals_plain(pair, qs):
    ref, off = pair
    a = hw.logit_lens(ref, qs[0]["prompt"])
    b = hw.logit_lens(off, qs[0]["prompt"])
    np.testing.assert_allclose(b.values, a.values, atol=1e-6, rtol=0)
