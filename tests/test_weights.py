"""hw.weight_change / hw.module_stats: known perturbations give exactly their ratios, fused projections split right,
sharded == single-file, streaming stays at about one tensor pair, bad input names the first differing tensor."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import heatwidget as hw
from heatwidget._checkpoint import Checkpoint, CheckpointError, checkpoint_anatomy, map_part_keys
from heatwidget.anatomy import MODULES, find_anatomy
from heatwidget.weights import WeightMismatchError, effective_rank

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "heatwidget" / "demo" / "weights"
Edit = Callable[[torch.Tensor], torch.Tensor]


@pytest.fixture(scope="module")
def base_dir(tiny_dir, tmp_path_factory) -> Path:
    """The demo model's checkpoint once it has been trained and shipped; until then a tiny random Llama stored the
    way the demo is (float16 safetensors), so the perturbation tests meet the same storage either way."""
    if (DEMO / "model.safetensors").exists() and (DEMO / "config.json").exists():
        return DEMO
    out = tmp_path_factory.mktemp("fp16_llama")
    lm = hw.load(tiny_dir("llama"))
    lm.model.to(torch.float16).save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    return out


def keys_of(path: Path) -> dict[tuple[int, str], str]:
    """(layer, module) -> the checkpoint key of the stored tensor holding it."""
    anatomy, _ = checkpoint_anatomy(path)
    names = {(i, n): p.param_name for i, n, p in anatomy.iter_parts()}
    km = map_part_keys(anatomy, names.values(), Checkpoint(path).keys())
    return {k: km[v] for k, v in names.items()}


def edited_copy(src: Path, dst: Path, edits: dict[str, Edit], drop: tuple[str, ...] = ()) -> Path:
    """Copy a single-file checkpoint directory, applying `edits` (key -> fn(tensor) -> tensor) and dropping keys."""
    shutil.copytree(src, dst)
    sd = load_file(str(src / "model.safetensors"))
    for k, fn in edits.items():
        sd[k] = fn(sd[k].clone()).contiguous()
    for k in drop:
        del sd[k]
    save_file(sd, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def scaled_noise(r: float, seed: int, rows: slice | None = None, cols: slice | None = None) -> Edit:
    """W -> W + ΔW with ‖ΔW‖_F = r ‖W[block]‖_F, ΔW nonzero only in the block (rows/cols of the stored tensor)."""

    def fn(w: torch.Tensor) -> torch.Tensor:
        block = (rows or slice(None), cols or slice(None))
        g = torch.Generator().manual_seed(seed)
        n = torch.randn(w[block].shape, generator=g, dtype=torch.float64)
        w[block] = (w[block].double() + r * w[block].double().norm() * n / n.norm()).to(w.dtype)
        return w

    return fn


def true_relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((b - a).norm() / a.norm())


# ---- exact ratios -------------------------------------------------------------------------------------------------


def times(k: float) -> Edit:
    """W -> k·W. For k in {-1, 0, 2, 4} this is exact in every float format, so ‖ΔW‖/‖W‖ = |k − 1| exactly."""
    return lambda w: w * k


def test_known_perturbations_give_their_ratios(base_dir, tmp_path):
    keys = keys_of(base_dir)
    n_layers = max(i for i, _ in keys) + 1
    exact = {
        (1, "attn.k"): (-1.0, 2.0),
        (n_layers - 1, "mlp.down"): (2.0, 1.0),
        (0, "mlp.gate"): (0.0, 1.0),
        (0, "attn.q"): (4.0, 3.0),
    }
    noisy = (n_layers // 2, "attn.v")  # a fine-tuning-sized change: 5 % in a random direction
    edits = {keys[cell]: times(k) for cell, (k, _) in exact.items()}
    edits[keys[noisy]] = scaled_noise(0.05, seed=0)
    b = edited_copy(base_dir, tmp_path / "b", edits)
    m = hw.weight_change(base_dir, b)
    assert m.shape == (n_layers, 7)
    assert m.rows == [str(i) for i in range(n_layers)] and m.cols == list(MODULES)
    assert (m.row_title, m.col_title) == ("Layer", "Module")
    assert m.title.startswith("Attention and MLP component analysis") and m.metric == "‖W_b − W_a‖_F / ‖W_a‖_F"
    expected = np.zeros((n_layers, 7))
    for (layer, name), (_, ratio) in exact.items():
        expected[layer, MODULES.index(name)] = ratio
    sa, sb = load_file(str(base_dir / "model.safetensors")), load_file(str(b / "model.safetensors"))
    k = keys[noisy]
    expected[noisy[0], MODULES.index(noisy[1])] = true_relative(sa[k], sb[k])  # 0.05 up to the storage rounding
    assert expected[noisy[0], MODULES.index(noisy[1])] == pytest.approx(0.05, rel=0.02 if sa[k].itemsize < 4 else 1e-5)
    # Untouched modules are exactly 0; scaling by -1, 0 or 2 gives exactly 2, 1, 1 (power-of-two scalings commute
    # with float32 rounding); 4·W and the noise agree to float32 reduction accuracy.
    np.testing.assert_allclose(m.values, expected, rtol=2e-5, atol=0)
    for (layer, name), (k_, ratio) in exact.items():
        if k_ != 4.0:
            assert m.values[layer, MODULES.index(name)] == ratio
    assert m.meta["streamed"] == {"a": True, "b": True} and m.meta["stat"] == "relative"

    absolute = hw.weight_change(base_dir, b, stat="absolute")
    for layer, name in [*exact, noisy]:
        k = keys[(layer, name)]
        want = float((sb[k].double() - sa[k].double()).norm())
        assert absolute.values[layer, MODULES.index(name)] == pytest.approx(want, rel=1e-5)


def test_density_counts_elements_above_eps(base_dir, tmp_path):
    keys = keys_of(base_dir)
    k = keys[(0, "mlp.up")]

    def fn(w: torch.Tensor) -> torch.Tensor:
        w[:5] += 1e-3  # far above eps in any storage format
        w[5:9] = torch.nextafter(w[5:9], torch.tensor(float("inf"), dtype=w.dtype))  # one ulp: a change, tiny
        return w

    b = edited_copy(base_dir, tmp_path / "b", {k: fn})
    m = hw.weight_change(base_dir, b, stat="density")
    wa = load_file(str(base_dir / "model.safetensors"))[k].double()
    wb = load_file(str(b / "model.safetensors"))[k].double()
    j = MODULES.index("mlp.up")
    want = np.zeros(m.shape, np.float32)
    want[0, j] = float(((wb - wa).abs() > 1e-5).double().mean())
    np.testing.assert_array_equal(m.values, want)
    assert want[0, j] >= 5 / wa.shape[0]
    if wa.dtype == torch.float32:
        assert want[0, j] == np.float32(5 / wa.shape[0])  # float32 ulps are far below 1e-5
    assert "1e-05" in m.metric
    every = hw.weight_change(base_dir, b, stat="density", eps=0)
    assert every.values[0, j] == np.float32(9 / wa.shape[0])


def test_live_models_and_dirs_agree(tiny_dir, tmp_path):
    a_dir = tiny_dir("llama")
    b_dir = edited_copy(a_dir, tmp_path / "b", {"model.layers.2.self_attn.v_proj.weight": scaled_noise(0.1, 3)})
    ref = hw.weight_change(a_dir, b_dir)
    lm_a, lm_b = hw.load(a_dir), hw.load(b_dir)
    for a, b in [(lm_a, lm_b), (lm_a.model, b_dir), (a_dir, lm_b)]:
        m = hw.weight_change(a, b)
        np.testing.assert_allclose(m.values, ref.values, rtol=1e-6, atol=0)
    assert hw.weight_change(lm_a, lm_a).values.max() == 0
    # a live bfloat16 model is upcast to float32 before differences are taken
    lm_a.model.to(torch.bfloat16)
    m = hw.weight_change(lm_a, lm_b)
    want = true_relative(lm_a.model.model.layers[0].mlp.up_proj.weight, lm_b.model.model.layers[0].mlp.up_proj.weight)
    assert m.values[0, MODULES.index("mlp.up")] == pytest.approx(want, rel=1e-5)


def test_bfloat16_checkpoints_accumulate_in_float32(tiny_dir, tmp_path):
    lm = hw.load(tiny_dir("qwen2"))
    lm.model.to(torch.bfloat16).save_pretrained(tmp_path / "a")
    with torch.no_grad():
        w = lm.model.model.layers[1].mlp.down_proj.weight
        w.add_(0.02 * torch.randn_like(w))
    lm.model.save_pretrained(tmp_path / "b")
    m = hw.weight_change(tmp_path / "a", tmp_path / "b")
    k = "model.layers.1.mlp.down_proj.weight"
    sa, sb = load_file(str(tmp_path / "a" / "model.safetensors")), load_file(str(tmp_path / "b" / "model.safetensors"))
    assert sa[k].dtype == torch.bfloat16
    assert m.values[1, MODULES.index("mlp.down")] == pytest.approx(true_relative(sa[k], sb[k]), rel=1e-5)
    assert np.count_nonzero(m.values) == 1


# ---- fused projections --------------------------------------------------------------------------------------------


def test_gpt2_fused_c_attn_split_into_q_k_v(tiny_dir, tmp_path):
    a = tiny_dir("gpt2")
    d = 64  # n_embd; Conv1D stores c_attn as [in, 3d]: q | k | v along the columns
    b = edited_copy(
        a,
        tmp_path / "b",
        {
            "transformer.h.1.attn.c_attn.weight": scaled_noise(0.2, 1, cols=slice(d, 2 * d)),  # k only
            "transformer.h.2.attn.c_attn.weight": scaled_noise(0.4, 2, cols=slice(2 * d, 3 * d)),  # v only
            "transformer.h.0.mlp.c_proj.weight": scaled_noise(0.1, 3),  # down (Conv1D, transposed)
            "transformer.h.0.attn.c_proj.weight": scaled_noise(0.3, 4),  # o
        },
    )
    m = hw.weight_change(a, b)
    want = np.zeros((3, 7))
    want[:, MODULES.index("mlp.gate")] = np.nan
    want[1, MODULES.index("attn.k")] = 0.2
    want[2, MODULES.index("attn.v")] = 0.4
    want[0, MODULES.index("mlp.down")] = 0.1
    want[0, MODULES.index("attn.o")] = 0.3
    np.testing.assert_allclose(m.values, want, rtol=1e-4, atol=0)
    assert any("mlp.gate" in n for n in m.meta["notes"])
    det = m.drill(0, "mlp.gate")
    assert np.isnan(det.value) and "n/a" in det.texts
    # the per-head child of a fused layout: only the k column of layer 1 moved
    child = m.drill(1, "attn.k").children["heads"]
    assert child.shape == (4, 4) and child.cols == ["q", "k", "v", "o"]
    assert np.all(child.values[:, 1] > 0) and np.all(child.values[:, [0, 2, 3]] == 0)


def test_gpt_neox_interleaved_qkv_split(tiny_dir, tmp_path):
    a = tiny_dir("gpt_neox")
    n_heads, head_dim, hidden = 4, 16, 64

    def v_only(w: torch.Tensor) -> torch.Tensor:  # query_key_value rows are [head, (q|k|v), head_dim]
        view = w.view(n_heads, 3, head_dim, hidden)
        view[:, 2] += 0.01 * torch.randn(n_heads, head_dim, hidden, generator=torch.Generator().manual_seed(0))
        return w

    b = edited_copy(a, tmp_path / "b", {"gpt_neox.layers.1.attention.query_key_value.weight": v_only})
    m = hw.weight_change(a, b)
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    k = "gpt_neox.layers.1.attention.query_key_value.weight"
    va = sa[k].view(n_heads, 3, head_dim, hidden)[:, 2]
    vb = sb[k].view(n_heads, 3, head_dim, hidden)[:, 2]
    changed = np.argwhere(m.values > 0).tolist()
    assert changed == [[1, MODULES.index("attn.v")]]
    assert m.values[1, MODULES.index("attn.v")] == pytest.approx(true_relative(va, vb), rel=1e-5)


def test_phi3_fused_qkv_and_gate_up(tiny_dir, tmp_path):
    a = tiny_dir("phi3")
    inter = 128
    b = edited_copy(
        a,
        tmp_path / "b",
        {
            "model.layers.0.mlp.gate_up_proj.weight": scaled_noise(0.25, 0, rows=slice(0, inter)),  # gate half
            "model.layers.1.self_attn.qkv_proj.weight": scaled_noise(0.5, 1, rows=slice(64, 96)),  # k (2 kv heads × 16)
        },
    )
    m = hw.weight_change(a, b)
    want = np.zeros((2, 7))
    want[0, MODULES.index("mlp.gate")] = 0.25
    want[1, MODULES.index("attn.k")] = 0.5
    np.testing.assert_allclose(m.values, want, rtol=1e-4, atol=0)


# ---- checkpoint layouts -------------------------------------------------------------------------------------------


def test_sharded_equals_single_file(base_dir, tmp_path):
    keys = keys_of(base_dir)
    b = edited_copy(
        base_dir,
        tmp_path / "b",
        {keys[(0, "attn.o")]: scaled_noise(0.07, 5), keys[(1, "mlp.up")]: scaled_noise(0.02, 6)},
    )
    single = hw.weight_change(base_dir, b)
    from transformers import AutoModelForCausalLM

    model_b = AutoModelForCausalLM.from_pretrained(b)  # re-saved as sharded, in whatever dtype it loads
    shard_kb = max(8, (b / "model.safetensors").stat().st_size // 1024 // 6)
    model_b.save_pretrained(tmp_path / "b_sharded", max_shard_size=f"{shard_kb}KB")
    ck = Checkpoint(tmp_path / "b_sharded")
    assert ck.sharded and len(set(ck.weight_map.values())) > 2
    sharded = hw.weight_change(base_dir, tmp_path / "b_sharded")
    assert np.array_equal(sharded.values, single.values)
    both = hw.weight_change(tmp_path / "b_sharded", tmp_path / "b_sharded")
    assert both.values.max() == 0


def test_base_model_checkpoint_without_prefix(tiny_dir, tmp_path):
    """A bare LlamaModel saves `layers.0...`; the causal LM names the same tensors `model.layers.0...`."""
    a = tiny_dir("llama")
    lm = hw.load(a)
    lm.model.model.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        lm.model.model.layers[1].mlp.gate_proj.weight.mul_(1.5)
    lm.model.model.save_pretrained(tmp_path / "base_b")
    assert "layers.0.self_attn.q_proj.weight" in Checkpoint(tmp_path / "base")
    assert hw.weight_change(a, tmp_path / "base").values.max() == 0
    m = hw.weight_change(tmp_path / "base", tmp_path / "base_b")
    assert np.argwhere(m.values > 0).tolist() == [[1, MODULES.index("mlp.gate")]]
    assert m.values[1, MODULES.index("mlp.gate")] == pytest.approx(0.5, rel=1e-6)


def test_map_part_keys_prefixes():
    anatomy, _ = checkpoint_anatomy_for("gpt2")
    names = [p.param_name for _, _, p in anatomy.iter_parts()]
    stripped = {n.removeprefix("transformer.") for n in names} | {"wte.weight"}
    km = map_part_keys(anatomy, names, stripped)  # old hub GPT-2 checkpoints: "h.0.attn.c_attn.weight"
    assert km["transformer.h.0.attn.c_attn.weight"] == "h.0.attn.c_attn.weight"
    prefixed = {"base." + n for n in names}
    km = map_part_keys(anatomy, names, prefixed)
    assert km["transformer.h.1.mlp.c_fc.weight"] == "base.transformer.h.1.mlp.c_fc.weight"


def checkpoint_anatomy_for(family: str):
    import transformers
    from tiny_models import FAMILIES

    cls_name, kw = FAMILIES[family]
    cfg = getattr(transformers, cls_name)(vocab_size=64, **kw)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return find_anatomy(model), cfg


# ---- drill-down ---------------------------------------------------------------------------------------------------


def test_drill_spectra_histogram_and_gqa_heads(base_dir, tmp_path):
    keys = keys_of(base_dir)
    cfg = json.loads((base_dir / "config.json").read_text())
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    last_kv = slice((n_kv - 1) * head_dim, n_kv * head_dim)

    def rank_one(w: torch.Tensor) -> torch.Tensor:  # doubling one output row: ΔW is that row, rank 1 exactly
        w[3] *= 2
        return w

    def negate_last_kv_head(w: torch.Tensor) -> torch.Tensor:  # per-head relative change 2 for that KV head
        w[last_kv] *= -1
        return w

    def double_head_1_input(w: torch.Tensor) -> torch.Tensor:  # o reads head 1 through these columns: ratio 1
        w[:, head_dim : 2 * head_dim] *= 2
        return w

    b = edited_copy(
        base_dir,
        tmp_path / "b",
        {
            keys[(0, "mlp.up")]: rank_one,
            keys[(1, "attn.k")]: negate_last_kv_head,
            keys[(1, "attn.o")]: double_head_1_input,
        },
    )
    m = hw.weight_change(base_dir, b)

    det = m.drill("0", "mlp.up")
    kinds = {c.kind for c in det.charts}
    assert {"hist", "line"} <= kinds
    hist = next(c for c in det.charts if c.kind == "hist")
    numel = int(m.meta["numel"][0, MODULES.index("mlp.up")])
    row = load_file(str(base_dir / "model.safetensors"))[keys[(0, "mlp.up")]][3]
    assert sum(hist.series[0].y) == int((row != 0).sum())  # every changed element with W_a != 0 is binned
    assert sum(hist.series[0].y) <= numel
    mode = hist.series[0].x[int(np.argmax(hist.series[0].y))]
    assert abs(mode) < 1e-3  # a doubled row changes each element by exactly its own size: log10(1) = 0
    assert det.meta["effective_rank_delta"] == pytest.approx(1.0, abs=1e-6)
    assert det.meta["effective_rank_a"] > 5
    spectra = next(c for c in det.charts if c.title.startswith("Singular"))
    assert [s.name.split(" (")[0] for s in spectra.series] == ["W_a", "ΔW"]
    assert "eff. rank" in spectra.series[1].name and "effective rank" in det.texts["spectra"]
    assert "heads" not in det.children  # MLP modules have no heads

    child = m.drill(1, "attn.k").children["heads"]
    assert child.shape == (n_heads, 4) and child.row_title == "Head"
    group = n_heads // n_kv
    k_col, o_col = child.values[:, 1], child.values[:, 3]
    moved = np.array([h // group == n_kv - 1 for h in range(n_heads)])
    np.testing.assert_allclose(k_col[moved], 2.0, rtol=2e-5)
    assert np.all(k_col[~moved] == 0)
    assert child.meta["kv_head_of_row"] == [h // group for h in range(n_heads)]
    np.testing.assert_allclose(o_col[1], 1.0, rtol=2e-5)
    assert np.all(np.delete(o_col, 1) == 0) and np.all(child.values[:, [0, 2]] == 0)
    # the module-level relative change of k is the head-block norm ratio scaled by the block's share of ‖W‖
    sa = load_file(str(base_dir / "model.safetensors"))[keys[(1, "attn.k")]]
    share = float(sa[last_kv].double().norm() / sa.double().norm())
    assert m.values[1, MODULES.index("attn.k")] == pytest.approx(2.0 * share, rel=1e-5)


def test_effective_rank():
    assert effective_rank(np.array([2.0, 0, 0])) == pytest.approx(1.0)
    assert effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert effective_rank(np.zeros(3)) == 0.0


def test_matrix_round_trips_with_meta(tiny_dir, tmp_path):
    m = hw.weight_change(tiny_dir("gpt2"), tiny_dir("gpt2"))
    back = hw.HeatMatrix.load(m.save(tmp_path / "m.npz"))
    assert back == m and np.array_equal(back.meta["numel"], m.meta["numel"])


# ---- one model -------------------------------------------------------------------------------------------------


def test_module_stats_norms_streamed_and_live(tiny_dir):
    d = tiny_dir("llama")
    lm = hw.load(d)
    norm = hw.module_stats(lm, "norm")
    streamed = hw.module_stats(d, "norm")
    np.testing.assert_allclose(streamed.values, norm.values, rtol=1e-6)
    assert streamed.meta["streamed"] and not norm.meta["streamed"]
    w = lm.model.model.layers[2].self_attn.v_proj.weight.detach()
    assert norm.values[2, MODULES.index("attn.v")] == pytest.approx(float(w.double().norm()), rel=1e-5)
    rms = hw.module_stats(lm, "rms")
    assert rms.values[2, MODULES.index("attn.v")] == pytest.approx(
        float(w.double().norm()) / w.numel() ** 0.5, rel=1e-5
    )
    det = norm.drill(0, "attn.q")
    assert det.children["heads"].shape == (4, 4) and any(c.kind == "line" for c in det.charts)
    head0 = float(w.detach()[:16].double().norm())  # v: 2 KV heads of dim 16; query heads 0-1 read KV head 0
    assert hw.module_stats(lm, "norm").drill(2, "attn.v").children["heads"].values[0, 2] == pytest.approx(
        head0, rel=1e-5
    )


TEXTS = ["the capital of Velmora is a city in the north", "Q : what language is spoken in Ostrand ? A :"]


def test_gradient_norms_match_hf_loss_backward(tiny_dir):
    lm = hw.load(tiny_dir("llama"))
    params = list(lm.model.parameters())
    assert all(p.grad is None for p in params)
    m = hw.module_stats(lm, "grad", texts=TEXTS, batch_size=1)
    assert all(p.grad is None for p in params) and all(p.requires_grad for p in params)  # nothing left behind
    batched = hw.module_stats(lm, "grad", texts=TEXTS, batch_size=8)
    np.testing.assert_allclose(batched.values, m.values, rtol=1e-4)

    tok = lm.tokenizer
    tok.padding_side = "right"
    enc = tok(TEXTS, return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    lm.model(**enc, labels=labels).loss.backward()
    for layer, name, part in lm.anatomy.iter_parts():
        want = float(part.weight(part.module.weight.grad).double().norm())
        assert m.values[layer, MODULES.index(name)] == pytest.approx(want, rel=1e-4), (layer, name)
    rel = hw.module_stats(lm, "grad_relative", texts=TEXTS)
    w = lm.model.model.layers[0].mlp.up_proj.weight
    assert rel.values[0, MODULES.index("mlp.up")] == pytest.approx(float(w.grad.norm() / w.detach().norm()), rel=1e-4)
    lm.model.zero_grad(set_to_none=True)
    det = m.drill(1, "attn.o")
    assert det.children["heads"].shape == (4, 4) and "∂L/∂W" in det.texts["spectrum"]


def test_gradient_norms_gpt2_split(tiny_dir):
    lm = hw.load(tiny_dir("gpt2"))
    m = hw.module_stats(lm, "grad", texts=TEXTS[:1])
    enc = lm.encode(TEXTS[:1])  # input_ids and attention_mask, as module_stats feeds them (transformers 4.x
    lm.model(**enc, labels=enc["input_ids"]).loss.backward()  # tokenizers add token_type_ids, which GPT-2 embeds)
    g = lm.model.transformer.h[1].attn.c_attn.weight.grad  # [in, 3d]
    for j, name in enumerate(("attn.q", "attn.k", "attn.v")):
        assert m.values[1, MODULES.index(name)] == pytest.approx(float(g[:, j * 64 : (j + 1) * 64].norm()), rel=1e-4)
    assert np.isnan(m.values[:, MODULES.index("mlp.gate")]).all()


# ---- bad input --------------------------------------------------------------------------------------------------


def test_mismatched_architectures_name_first_tensor(tiny_dir):
    with pytest.raises(WeightMismatchError) as e:
        hw.weight_change(tiny_dir("llama"), tiny_dir("gpt2"))
    assert e.value.tensor == "model.layers.0.self_attn.q_proj.weight"
    assert "model.layers.0.self_attn.q_proj.weight" in str(e.value) and "transformer.h.0.attn.c_attn.weight" in str(
        e.value
    )


def test_different_layer_counts(tiny_dir):
    with pytest.raises(WeightMismatchError) as e:
        hw.weight_change(tiny_dir("llama"), tiny_dir("llama", num_hidden_layers=2))
    assert e.value.tensor == "model.layers.2.self_attn.q_proj.weight"
    assert "b has 2 layers, a has 3" in str(e.value)


def test_mismatched_shapes(tiny_dir):
    with pytest.raises(WeightMismatchError) as e:
        hw.weight_change(tiny_dir("llama"), tiny_dir("llama", intermediate_size=96))
    assert e.value.tensor == "model.layers.0.mlp.up_proj.weight"
    assert "[128, 64] in a, [96, 64] in b" in str(e.value)


def test_missing_tensor_and_shard(tiny_dir, tmp_path):
    a = tiny_dir("llama")
    b = edited_copy(a, tmp_path / "b", {}, drop=("model.layers.1.self_attn.v_proj.weight",))
    with pytest.raises(WeightMismatchError) as e:
        hw.weight_change(a, b)
    assert e.value.tensor == "model.layers.1.self_attn.v_proj.weight" and str(b) in str(e.value)
    with pytest.raises(WeightMismatchError, match="v_proj"):
        hw.module_stats(b, "norm")

    hw.load(a).model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shard = sorted((tmp_path / "sharded").glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(CheckpointError, match=shard.name):
        hw.weight_change(a, tmp_path / "sharded")


def test_bad_arguments(tiny_dir, tmp_path):
    a = tiny_dir("llama")
    with pytest.raises(CheckpointError, match="no such checkpoint directory"):
        hw.weight_change(a, tmp_path / "nope")
    with pytest.raises(CheckpointError, match="is a file"):
        hw.weight_change(a, a / "config.json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(CheckpointError, match="pickled"):
        hw.weight_change(a, tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown stat"):
        hw.weight_change(a, a, stat="cosine")
    with pytest.raises(TypeError, match="checkpoint directory"):
        hw.weight_change(a, 3)
    with pytest.raises(ValueError, match="need texts"):
        hw.module_stats(a, "grad")
    with pytest.raises(TypeError, match="hw.LM"):
        hw.module_stats(hw.load(a).model, "grad", texts=TEXTS)


# ---- memory ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_streaming_peak_memory_is_about_one_tensor_pair(tmp_path):
    """A fresh process streams two ~50 MB checkpoints; its RSS high-water mark rises by about the largest tensor
    pair (plus a 4 MB working block), far below one checkpoint, let alone the two that loading would hold."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_weights

    a, b, size = bench_weights.make_pair(tmp_path, hidden=768, intermediate=2048, layers=2)
    res = bench_weights.run_mode("stream", a, b, tmp_path)
    pair = res["largest_pair_mb"]
    assert res["peak_mb"] < pair + 16, res
    assert res["peak_mb"] < 0.5 * size / 2**20, (res, size)  # loading both would need 2 × size


def test_drill_renders_in_the_detail_view(tiny_dir, tmp_path):
    """The Detail is something the explorer can draw: hist/line charts, the heads child, texts."""
    pytest.importorskip("bqplot")
    import html

    import ipywidgets as W

    from heatwidget._detail_view import detail_widgets

    a = tiny_dir("llama")
    b = edited_copy(a, tmp_path / "b", {"model.layers.1.self_attn.k_proj.weight": scaled_noise(0.1, 0)})
    det = hw.weight_change(a, b).drill(1, "attn.k")
    opened = []
    widgets = detail_widgets(det, open_matrix=lambda name, m: opened.append(name), run_rerun=lambda *_: None)
    assert len(widgets) >= 3  # title, charts, child heatmap (+ the texts, all in one widget)
    texts = [w.value for w in widgets if isinstance(w, W.HTML) and "hw-detail-text" in w.value]
    assert len(texts) == 1 and all(html.escape(name) in texts[0] for name in det.texts), texts
