"""probe_auc, answer, collect, weight_change and module_stats on the analysis contract: declared options in meta,
execution settings from hw.config (and the old keywords), progress and cancellation in the stages, recompute that
re-reduces without recomputing, and local-only analyses under executor="ray"."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

import heatwidget as hw
from heatwidget._memory import release_freed_memory
from heatwidget._progress import Cancelled, Task, running
from heatwidget.probing import COLLECT_SITES, SITES


def _features(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2, 3, 6)).astype(np.float32)
    y = (X[:, 1, 2, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
    return X, y


# ---- probe_auc ---------------------------------------------------------------------------------------------------


def test_probe_auc_declares_its_options_and_recomputes_them():
    X, y = _features()
    m = hw.probe_auc(X, y)
    specs = m.meta["option_specs"]
    assert specs["site"]["choices"] == list(COLLECT_SITES) and specs["solver"]["choices"] == ["auto", "newton", "lbfgs"]
    assert specs["seed"]["kind"] == "int" and specs["C"]["kind"] == "float"
    assert m.meta["options"]["C"] == 1.0 and m.meta["analysis"] == "probe_auc" and "versions" in m.meta
    assert 0 <= m.meta["solver"]["seconds"] <= m.meta["seconds"]  # fitting time, within the whole call's
    again = m.recompute(C=0.01, seed=3)
    ref = hw.probe_auc(X, y, C=0.01, seed=3)
    np.testing.assert_array_equal(again.values, ref.values)
    assert np.array_equal(again.meta["test_idx"], ref.meta["test_idx"]) and again.meta["C"] == 0.01
    with pytest.raises(ValueError, match="plain features have no site"):
        m.recompute(site="mlp")
    with pytest.raises(ValueError, match="solver must be one of"):
        hw.probe_auc(X, y, solver="sgd")
    assert SITES is COLLECT_SITES  # the old name still works


def test_probe_chunks_follow_the_configured_memory_budget():
    X, y = _features()
    with hw.config(memory_budget_mb=1 / 2**20):  # one byte: one cell per chunk
        small = hw.probe_auc(X, y)
    assert small.meta["solver"]["cells_per_chunk"] == 1
    assert hw.probe_auc(X, y, config={"memory_budget_mb": 1 / 2**20}).meta["solver"]["cells_per_chunk"] == 1
    whole = hw.probe_auc(X, y)
    assert whole.meta["solver"]["cells_per_chunk"] == 6
    np.testing.assert_allclose(small.values, whole.values, atol=1e-6)


def test_local_only_analyses_run_locally_under_ray_settings():
    X, y = _features()
    with hw.config(executor="ray", workers=3):  # probe features live in this process: no Ray is started
        m = hw.probe_auc(X, y)
    assert m.meta["executor"] == "local"


# ---- answer and collect: stages ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return hw.load(tiny_dir("llama"))


QS = ["a b c ? A :", "d e ? A :", "f g h i ? A :", "j ? A :", "k l m ? A :"]


def test_stages_report_progress_and_stop_when_cancelled(lm):
    seen: list[tuple[float, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with running(Task(lambda f, d: seen.append((f, d)))):
            ans = hw.answer(lm, QS, ["x"] * len(QS), max_new_tokens=3, batch_size=2)
    assert [d for _, d in seen] == ["answer"] * 4 and seen[-1][0] == 1.0  # 3 batches of prompts
    assert ans.meta["executor"] == "local"
    seen.clear()
    with running(Task(lambda f, d: seen.append((f, d)))):
        acts = hw.collect(lm, ans, positions=["last_q", -1], batch_size=2)
    assert seen[-1] == (1.0, "collect") and len(seen) == 1 + -(-len(ans) // 2)
    task = Task()
    task.cancel()
    with running(task), pytest.raises(Cancelled):
        hw.collect(lm, ans, positions=["last_q", -1])
    with running(task), pytest.raises(Cancelled):
        hw.answer(lm, QS, ["x"] * len(QS), max_new_tokens=3)
    assert acts.meta["executor"] == "local"


def test_stage_execution_keywords_old_and_new(lm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ans = hw.answer(lm, QS, ["x"] * len(QS), max_new_tokens=3)
    a = hw.collect(lm, ans, positions=[-1], executor="local", num_workers=3)  # the keywords before hw.config
    b = hw.collect(lm, ans, positions=[-1], config={"progress": False})
    np.testing.assert_array_equal(a.values, b.values)
    with pytest.raises(TypeError, match=r"collect\(\) got unexpected keyword argument\(s\) \['workerz'\]"):
        hw.collect(lm, ans, workerz=2)
    with pytest.raises(ValueError, match="executor must be one of"):
        hw.answer(lm, QS, ["x"] * len(QS), executor="dask")


# ---- weight_change / module_stats ----------------------------------------------------------------------------------


def test_weight_change_stat_switch_reuses_the_per_layer_results(tiny_dir, tmp_path):
    a = tiny_dir("llama")
    b = shutil.copytree(tiny_dir("llama", seed=1), tmp_path / "b")
    m = hw.weight_change(a, b)
    assert m.meta["option_specs"]["stat"]["choices"] == ["relative", "density", "absolute"]
    assert m.meta["options"] == {"stat": "relative", "eps": 1e-5} and m.meta["executor"] == "local"
    absolute = hw.weight_change(a, b, "absolute")
    shutil.rmtree(b)
    shutil.copytree(tiny_dir("llama", seed=2), b)  # other weights under the same name: a re-read would see them
    switched = m.recompute(stat="absolute")
    np.testing.assert_array_equal(switched.values, absolute.values)  # the per-layer norms were reused
    assert switched.meta["stat"] == "absolute" and switched.title == absolute.title
    assert not np.allclose(hw.weight_change(a, b, "absolute").values, absolute.values)
    refit = m.recompute(eps=0.1)  # a new eps counts elements again: it reads the tensors
    np.testing.assert_array_equal(refit.values, hw.weight_change(a, b, eps=0.1).values)


def test_module_stats_on_the_contract(tiny_dir):
    lm = hw.load(tiny_dir("llama"))
    m = hw.module_stats(lm, "rms")
    assert m.meta["option_specs"]["stat"]["choices"] == ["norm", "rms", "grad", "grad_relative"]
    assert m.meta["family"] == "llama" and m.meta["dtype"] == "torch.float32"  # provenance of the live model
    norm = m.recompute(stat="norm")
    assert np.allclose(norm.values, hw.module_stats(lm, "norm").values, equal_nan=True)
    release_freed_memory()  # a no-op where glibc's malloc_trim is absent; never raises
