"""Ray executor: collect / knockout_js / ablation_kl sharded over 2 actors on a real local Ray instance equal the
local results; a worker killed mid-run is retried (same result) or fails loudly (no partial matrix)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget import scale

ray = pytest.importorskip(
    "ray",
    reason="RAY IS NOT INSTALLED: the Ray executor is untested here "
    '(pip install "heatwidget[ray]" or pip install -e ".[dev]")',
)


@pytest.fixture(scope="module")
def cluster():
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    scale._test_hook = None
    scale.shutdown_workers()
    ray.shutdown()


@pytest.fixture(scope="module")
def lm():
    return hw.demo_model()


@pytest.fixture(scope="module")
def data(lm):
    qs = hw.demo_questions()[:40]
    ans = hw.answer(lm, [q["question"] for q in qs], [q["gold"] for q in qs], max_new_tokens=8)
    return qs, ans


def test_collect_ray_equals_local(cluster, lm, data):
    _, ans = data
    a = hw.collect(lm, ans, batch_size=4)
    b = hw.collect(lm, ans, batch_size=4, executor="ray", num_workers=2)
    np.testing.assert_array_equal(np.asarray(b.values), np.asarray(a.values))  # bit for bit
    np.testing.assert_array_equal(b.labels, a.labels)
    assert b.token_index.tolist() == a.token_index.tolist()
    with hw.config(executor="ray", workers=2):  # the documented way: execution settings in one place
        c = hw.collect(lm, ans, batch_size=4)
    assert c.meta["executor"] == "ray" and a.meta["executor"] == "local"
    np.testing.assert_array_equal(np.asarray(c.values), np.asarray(a.values))


def test_knockout_and_ablation_ray_equal_local(cluster, lm, data):
    qs, _ = data
    prompts, subjects = [q["prompt"] for q in qs[:5]], [q["subject"] for q in qs[:5]]
    a = hw.knockout_js(lm, prompts, subjects)
    b = hw.knockout_js(lm, prompts, subjects, executor="ray")
    np.testing.assert_allclose(b.values, a.values, atol=1e-6, rtol=0)
    np.testing.assert_allclose(b.meta["per_prompt"], a.meta["per_prompt"], atol=1e-6, rtol=0)
    a = hw.ablation_kl(lm, prompts[:4], max_new_tokens=3)
    b = hw.ablation_kl(lm, prompts[:4], max_new_tokens=3, executor="ray")
    np.testing.assert_allclose(b.values, a.values, atol=1e-6, rtol=0)
    assert b.meta["generated_ids"] == a.meta["generated_ids"]
    assert b.drill(0, 0).texts  # drill-downs work on results that came back from workers


def test_killed_worker_is_retried(cluster, lm, data):
    _, ans = data
    ref = hw.collect(lm, ans, batch_size=4)
    killed = []

    def kill_first(actors, n_done):
        if n_done == 1:  # after the first shard: the others are queued or running
            ray.kill(actors[0], no_restart=False)  # Ray restarts it and retries its call
            killed.append(n_done)

    scale._test_hook = kill_first
    try:
        got = hw.collect(lm, ans, batch_size=4, executor="ray", num_workers=2)
    finally:
        scale._test_hook = None
    assert killed
    np.testing.assert_array_equal(np.asarray(got.values), np.asarray(ref.values))


def test_dead_worker_fails_loudly(cluster, lm, data):
    qs, _ = data

    def kill_for_good(actors, n_done):
        if n_done == 1:
            for a in actors:
                ray.kill(a, no_restart=True)

    scale._test_hook = kill_for_good
    try:
        with pytest.raises(scale.ShardFailedError, match="no partial result"):
            hw.knockout_js(lm, [q["prompt"] for q in qs[:10]], [q["subject"] for q in qs[:10]], executor="ray")
    finally:
        scale._test_hook = None


def test_wrapped_model_and_bad_executor(cluster, lm, data):
    qs, ans = data
    with pytest.raises(ValueError, match="executor"):
        hw.collect(lm, ans, executor="dask")
    wrapped = hw.LM.wrap(lm.model, lm.tokenizer)
    with pytest.raises(ValueError, match="hw.load"):
        hw.knockout_js(wrapped, [qs[0]["prompt"]], [qs[0]["subject"]], executor="ray")


def test_missing_ray_names_the_extra(monkeypatch, lm, data):
    qs, _ = data
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ImportError, match=r'pip install "heatwidget\[ray\]"'):
        hw.knockout_js(lm, [qs[0]["prompt"]], [qs[0]["subject"]], executor="ray")
