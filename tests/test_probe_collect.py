"""hw.collect: per-row positions gathered inside batched forwards equal one-row forwards, at every site; memmap
storage; hooks.capture_at / halt_after; probe_auc end to end on collected activations (drill, re-run)."""

from __future__ import annotations

import gc
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget import hooks


def _questions(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    from tiny_models import WORDS

    rng = random.Random(seed)
    qs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))) + " ? A :" for _ in range(n)]
    return qs, [rng.choice(WORDS) for _ in qs]


@pytest.fixture(scope="module")
def setup(tiny_dir):
    lm = hw.load(tiny_dir("llama"))
    qs, golds = _questions(60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some random-model answers are empty: counted, tested elsewhere
        ans = hw.answer(lm, qs, golds, max_new_tokens=10, required_positions=hw.PAPER_POSITIONS)
    return lm, ans


def _reference(lm, ans, site: str, layers: list[int], token_index: np.ndarray) -> np.ndarray:
    """One forward per row, whole sequence captured with the plain `capture`, positions picked afterwards."""
    an = lm.anatomy
    mods = {
        "resid": an.layers,
        "mlp": an.mlp,
        "mlp_in": [p["mlp.down"].module for p in an.parts],
        "attn": [p["attn.o"].module for p in an.parts],
    }[site]
    out = []
    for i in range(len(ans)):
        with hooks.capture({j: mods[j] for j in layers}, what="input" if site == "mlp_in" else "output") as got:
            lm.model(input_ids=torch.tensor([ans.ids[i]]))
        out.append(np.stack([got[j][0, token_index[i]].numpy() for j in layers]))
    return np.stack(out)


@pytest.mark.parametrize("site", ["resid", "mlp", "mlp_in", "attn"])
def test_collect_equals_one_row_forwards(setup, site: str) -> None:
    lm, ans = setup
    sub = ans.subset(np.arange(12))
    acts = hw.collect(lm, sub, layers=[0, 2], site=site, batch_size=5)
    n, L, P, d = acts.shape
    assert (n, L, P) == (12, 2, 15) and d == (128 if site == "mlp_in" else 64)
    assert acts.layers == [0, 2] and acts.position_labels[-1] == "-1" and not acts.on_disk
    assert np.array_equal(acts.token_index, sub.positions(hw.PAPER_POSITIONS))
    assert np.allclose(acts.values, _reference(lm, sub, site, [0, 2], acts.token_index), atol=1e-5)
    assert np.array_equal(acts.labels, sub.labels)


def test_collect_gpt2_conv1d_mlp_in(tiny_dir) -> None:
    lm = hw.load(tiny_dir("gpt2"))
    qs, golds = _questions(6, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ans = hw.answer(lm, qs, golds, max_new_tokens=4)
    acts = hw.collect(lm, ans, positions=["last_q", "first_answer", -1], site="mlp_in")
    ref = []
    for i in range(len(ans)):
        with hooks.capture([p["mlp.down"].module for p in lm.anatomy.parts], what="input") as got:
            lm.model(input_ids=torch.tensor([ans.ids[i]]))
        ref.append(np.stack([got[j][0, acts.token_index[i]].numpy() for j in range(3)]))
    assert acts.shape[-1] == 256 and np.allclose(acts.values, np.stack(ref), atol=1e-5)


def test_memmap_when_over_budget_and_user_path(setup, tmp_path: Path) -> None:
    lm, ans = setup
    mem = hw.collect(lm, ans, layers=[1], positions=["last_q", -1])
    disk = hw.collect(lm, ans, layers=[1], positions=["last_q", -1], memory_budget="1KB", batch_size=7)
    assert not mem.on_disk and disk.on_disk and isinstance(disk.values, np.memmap)
    assert np.allclose(np.asarray(disk.values), mem.values, atol=1e-6)
    tmp = disk.path.parent
    assert tmp.exists() and "heatwidget-acts-" in tmp.name
    del disk
    gc.collect()
    assert not tmp.exists()  # the temporary file lives as long as the Activations
    kept = hw.collect(lm, ans, layers=[1], positions=["last_q", -1], path=tmp_path / "acts", dtype="float16")
    assert kept.path == tmp_path / "acts" / "values.npy" and kept.values.dtype == np.float16
    again = np.load(kept.path, mmap_mode="r")
    assert np.allclose(again, mem.values, atol=1e-2)
    assert np.array_equal(mem.cell(1, "last_q_token"), mem.values[:, 0, 0]) and mem.cell(1, -1).dtype == np.float32
    with pytest.raises(KeyError, match="layer 0 was not collected"):
        mem.cell(0, -1)
    from heatwidget.probing.collect import parse_bytes

    assert parse_bytes("1.5 GiB") == 3 * 2**29 and parse_bytes("500MB") == 500_000_000 and parse_bytes(2e9) == 2e9
    with pytest.raises(ValueError, match="as a size"):
        parse_bytes("lots")


def test_capture_at_and_halt_after(setup) -> None:
    lm, ans = setup
    layers = lm.anatomy.layers
    ids = torch.tensor([ans.ids[0][:6], ans.ids[1][:6]])
    index = torch.tensor([[5, 0], [2, 2]])
    calls = []
    with hooks.capture([layers[2]]) as full:
        lm.model(input_ids=ids)
    h = layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        with hooks.capture_at([layers[0], layers[1]], index) as got, hooks.halt_after(layers[1]):
            lm.model(input_ids=ids)
    finally:
        h.remove()
    assert not calls  # layer 2 never ran
    assert got[0].shape == (2, 2, 64)
    with hooks.capture([layers[1]]) as ref:
        lm.model(input_ids=ids)
    assert torch.allclose(got[1][0, 0], ref[0][0, 5]) and torch.allclose(got[1][1, 1], ref[0][1, 2])
    assert full[0].shape == (2, 6, 64)
    with pytest.raises(IndexError, match="out of range"), hooks.capture_at([layers[0]], torch.tensor([[9], [0]])):
        lm.model(input_ids=ids)
    assert not layers[0]._forward_hooks  # hooks removed after the error


def test_collect_bad_input(setup) -> None:
    lm, ans = setup
    with pytest.raises(ValueError, match="unknown site"):
        hw.collect(lm, ans, site="heads")
    with pytest.raises(IndexError, match="layer 7 is out of range"):
        hw.collect(lm, ans, layers=[7])
    with pytest.raises(ValueError, match="position -40 is token"):
        hw.collect(lm, ans, positions=[-40])
    with pytest.raises(TypeError, match="AnswerSet"):
        hw.collect(lm, ans.ids)


def test_probe_end_to_end_drill_and_rerun(setup) -> None:
    lm, ans = setup
    ans = ans.subset(np.arange(len(ans)))
    # Random-weight model answers are all wrong: plant labels tied to the prompt so the probe has a target.
    ans.labels = np.array([int(len(q.split()) > 6) for q in ans.questions])
    acts = hw.collect(lm, ans, layers=[0, 1])
    m = hw.probe_auc(acts, min_per_class=5)
    assert m.shape == (2, 15) and m.rows == ["0", "1"] and m.cols[0] == "last_q"
    assert set(m.meta["baselines"]) == {"logprob_mean", "logprob_min", "logprob_exact_mean"}
    assert m.meta["options"]["site"] == "resid" and m.meta["n_dropped_answers"] == ans.meta["n_dropped"]
    det = m.drill(1, "exact_answer_first")
    assert [c.kind for c in det.charts] == ["line", "hist"]
    top = det.tables["scored most likely correct"]
    assert list(top["score"]) == sorted(top["score"], reverse=True) and len(top) == 5
    row = top.iloc[0]
    i = int(np.nonzero(ans.index == row["example"])[0][0])
    t = acts.token_index[i, 4]
    assert row["token_index"] == t and row["text"].count("⟦") == 1
    assert f"⟦{row['probed_token']}⟧" in row["text"] and row["probed_token"].strip() == ans.tokens(i)[t].strip()
    assert set(det.reruns) == {f"site={s}: every layer at token exact_answer_first" for s in ("mlp", "mlp_in", "attn")}
    sub = det.reruns["site=attn: every layer at token exact_answer_first"]()
    assert sub.shape == (2, 1) and sub.meta["site"] == "attn"
    assert np.array_equal(sub.meta["test_idx"], m.meta["test_idx"])
    again = m.recompute(site="mlp")
    assert again.meta["site"] == "mlp" and again.shape == m.shape
