"""The analysis contract (heatwidget.analysis): options, execution settings, the driver's loop, meta, recompute,
progress and cancellation — on a small analysis declared here against a real model, and on hw.patching."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget._progress import Cancelled, Task, running
from heatwidget.analysis import Analysis, Config, Option, Table, current_config, run_analysis

CALLS: list[str] = []


def last_norms(lm, prompt: str, *, norm: str = "l2") -> np.ndarray:
    """Per item: the norm of each block's output at the last token."""
    CALLS.append(prompt)
    with torch.inference_mode(), hw.hooks.capture(list(lm.anatomy.layers), positions=[-1]) as acts:
        lm.model(**lm.encode(prompt))
    vals = [acts[j][0, -1].norm() if norm == "l2" else acts[j][0, -1].abs().max() for j in range(lm.n_layers)]
    return torch.stack(vals).float().numpy()


def _items(lm, prompts, **options):
    if not prompts:
        raise ValueError("no prompts")
    return list(prompts)


def _reduce(run):
    scale = run.options["scale"]
    return Table(
        np.stack(run.results).T * scale,
        [str(i) for i in range(run.lm.n_layers)],
        [f"p{i}" for i in range(len(run.items))],
        title="norms",
        metric="norm",
        meta={"n_results": len(run.results)},
    )


NORMS = Analysis(
    "last_norms",
    (Option("norm", "l2", choices=("l2", "max")), Option("scale", 1.0, kind=float, min=0.0, max=10.0)),
    items=_items,
    per_item=last_norms,
    reduce=_reduce,
    drill=lambda run, m, r, c: m.cell(r, c, meta={"prompt": run.items[c]}),
)


@pytest.fixture(scope="module")
def lm():
    return hw.demo_model()


PROMPTS = ["The capital of Biasland is", "Q: What is the capital of Velmora? A:", "The river of"]


def test_driver_runs_items_and_builds_the_matrix(lm):
    CALLS.clear()
    m = run_analysis(NORMS, lm, {"prompts": PROMPTS}, {"scale": 2.0})
    assert CALLS == PROMPTS
    np.testing.assert_allclose(m.values[:, 1], 2.0 * last_norms(lm, PROMPTS[1]), rtol=1e-6)
    meta = m.meta
    assert meta["analysis"] == "last_norms" and meta["options"] == {"norm": "l2", "scale": 2.0}
    assert meta["option_specs"]["norm"]["choices"] == ["l2", "max"]
    assert meta["option_specs"]["scale"] == {
        "kind": "float",
        "default": 1.0,
        "nullable": False,
        "doc": "",
        "min": 0.0,
        "max": 10.0,
    }
    assert meta["model"] == "demo model" and meta["model_path"] == lm.name
    assert set(meta["versions"]) >= {"heatwidget", "torch", "transformers"}
    assert meta["executor"] == "local" and meta["n_results"] == 3
    assert m.drill(0, 2).meta["prompt"] == PROMPTS[2]


def test_recompute_reuses_results_when_only_reduce_options_change(lm):
    m = run_analysis(NORMS, lm, {"prompts": PROMPTS}, {})
    CALLS.clear()
    doubled = m.recompute(scale=2.0)
    assert CALLS == []  # `scale` is not a per_item parameter: the results were reduced again
    np.testing.assert_allclose(doubled.values, 2 * m.values, rtol=1e-6)
    other = doubled.recompute(norm="max")
    assert CALLS == PROMPTS and other.meta["options"] == {"norm": "max", "scale": 2.0}
    CALLS.clear()
    fewer = m.recompute(prompts=PROMPTS[:1])
    assert CALLS == PROMPTS[:1] and fewer.shape == (lm.n_layers, 1)
    with pytest.raises(TypeError, match=r"cannot recompute with \['colour'\]"):
        m.recompute(colour="red")


def test_options_are_checked_before_any_model_time(lm):
    CALLS.clear()
    with pytest.raises(ValueError, match=r"norm must be one of \['l2', 'max'\], got 'l1'"):
        run_analysis(NORMS, lm, {"prompts": PROMPTS}, {"norm": "l1"})
    with pytest.raises(ValueError, match=r"scale must be in \[0.0, 10.0\], got 11"):
        run_analysis(NORMS, lm, {"prompts": PROMPTS}, {"scale": 11})
    with pytest.raises(ValueError, match="scale must be a finite number"):
        run_analysis(NORMS, lm, {"prompts": PROMPTS}, {"scale": float("nan")})
    with pytest.raises(TypeError, match=r"last_norms has no option\(s\) \['nrom'\]"):
        run_analysis(NORMS, lm, {"prompts": PROMPTS}, {"nrom": "l2"})
    with pytest.raises(ValueError, match="no prompts"):
        run_analysis(NORMS, lm, {"prompts": []}, {})
    assert CALLS == []


def test_option_kinds():
    layers = Option("layers", None, kind="layers", nullable=True)
    assert layers.check(None) is None and layers.check(np.int64(3)) == [3] and layers.check((1, 2)) == [1, 2]
    with pytest.raises(ValueError, match=r"layers\[1\] is 'x', not an int"):
        layers.check([1, "x"])
    window = Option("window", 1, kind=int, min=1)
    assert window.check(np.int32(4)) == 4 and type(window.check(np.int32(4))) is int
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="window must be"):
            window.check(bad)


def test_config_context_and_per_call_override():
    assert current_config() == Config()
    with hw.config(workers=4) as outer:
        assert outer.workers == 4 and current_config().executor == "local"
        with hw.config(executor="ray", memory_budget_mb=64):
            assert current_config() == Config(executor="ray", workers=4, memory_budget_mb=64)
        assert current_config() is outer
        seen = []
        t = threading.Thread(target=lambda: seen.append(current_config()))
        t.start()
        t.join()
        assert seen == [Config()]  # a context variable: other threads keep their own settings
    assert current_config() == Config()
    with pytest.raises(TypeError, match=r"unknown execution setting\(s\) \['worker'\]"):
        hw.config(worker=2)
    with pytest.raises(ValueError, match=r"executor must be one of \['local', 'ray'\], got 'dask'"):
        Config(executor="dask")
    with pytest.raises(ValueError, match="workers must be a positive int"):
        Config(workers=0)


def test_per_call_config_reaches_per_item(lm):
    seen = []

    def budget_probe(lm_, item):
        seen.append(current_config().memory_budget_mb)
        return np.zeros(lm_.n_layers, np.float32) + 1

    probe = Analysis("probe_budget", (), items=_items, per_item=budget_probe, reduce=_reduce_plain)
    with hw.config(memory_budget_mb=32):
        run_analysis(probe, lm, {"prompts": ["a"]}, {})
        run_analysis(probe, lm, {"prompts": ["a"]}, {}, config={"memory_budget_mb": 8})
        run_analysis(probe, lm, {"prompts": ["a"]}, {}, config=Config())
    assert seen == [32, 8, None]


def _reduce_plain(run):
    return Table(np.stack(run.results).T, None, None)


def test_progress_and_cancellation(lm):
    fractions: list[float] = []
    task = Task(on_progress=lambda f, d: fractions.append(round(f, 3)))
    with running(task):
        run_analysis(NORMS, lm, {"prompts": PROMPTS}, {})
    assert fractions == [0.0, 0.333, 0.667, 1.0]

    CALLS.clear()
    task = Task(on_progress=lambda f, d: task.cancel() if f > 0.3 else None)
    with running(task), pytest.raises(Cancelled):
        run_analysis(NORMS, lm, {"prompts": PROMPTS}, {})
    assert CALLS == PROMPTS[:1]  # stopped at the next step, not after the loop

    task = Task()
    task.cancel()
    with running(task), pytest.raises(Cancelled):
        hw.patching(lm, PROMPTS[0], subject="Biasland")


def test_patching_declares_its_options_for_the_explorer(lm):
    m = hw.patching(lm, PROMPTS[0], subject="Biasland", layers=[0, 1])
    specs = m.meta["option_specs"]
    assert specs["site"]["choices"] == ["resid", "mlp", "attn"]
    assert specs["metric"]["choices"] == ["prob", "logit_diff"]
    assert specs["window"]["kind"] == "int" and specs["window"]["min"] == 1
    assert specs["noise_scale"]["kind"] == "float"
    assert m.meta["options"]["layers"] == [0, 1]
    ld = m.recompute(metric="logit_diff")  # results reused: only the reduce step runs
    np.testing.assert_array_equal(ld.values, m.meta["logit_diff"])


@pytest.mark.slow
def test_patching_on_ray_equals_local(lm):
    """The driver maps the public per-item function (`trace`) onto Ray actors holding model replicas."""
    ray = pytest.importorskip("ray", reason="RAY IS NOT INSTALLED: the Ray executor is untested here")
    from heatwidget import scale

    prompt, subject = "The capital of Biasland is", "Biasland"
    local = hw.patching(lm, prompt, subject=subject, site="mlp", window=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with hw.config(executor="ray", workers=1):
            remote = hw.patching(lm, prompt, subject=subject, site="mlp", window=3)
        also = hw.patching(lm, prompt, subject=subject, config={"executor": "ray", "workers": 1}, metric="logit_diff")
    finally:
        scale.shutdown_workers()
        ray.shutdown()
    assert remote.meta["executor"] == "ray" and local.meta["executor"] == "local"
    np.testing.assert_allclose(remote.values, local.values, atol=1e-6, rtol=0)
    assert remote.meta["p_corrupted"] == pytest.approx(local.meta["p_corrupted"], abs=1e-7)
    assert also.meta["executor"] == "ray" and also.meta["options"]["metric"] == "logit_diff"
    assert remote.drill(2, 3).charts  # drill-downs run on the driver's model


def test_explorer_builds_controls_from_the_declared_options(lm):
    import ipywidgets as W

    m = hw.patching(lm, PROMPTS[0], subject="Biasland")
    ex = hw.explore(m)
    try:
        ctl = {w.description: w for w in ex.controls.children if hasattr(w, "description")}
        assert ctl["site"].options == ("resid", "mlp", "attn")  # not another analysis's sites
        assert isinstance(ctl["window"], W.BoundedIntText) and ctl["window"].min == 1
        assert isinstance(ctl["noise_scale"], W.BoundedFloatText) and ctl["noise_scale"].value == 3.0
        assert isinstance(ctl["seed"], W.BoundedIntText) and ctl["noise_ref"].value == "embedding"
        ctl["metric"].value = "logit_diff"
        ctl["re-run"].click()
        got = ex.wait(120)
        assert ex.matrix is got and got.meta["options"]["metric"] == "logit_diff"
        np.testing.assert_array_equal(got.values, m.meta["logit_diff"])
        ctl = {w.description: w for w in ex.controls.children if hasattr(w, "description")}
        ctl["site"].value, ctl["window"].value = "attn", 3
        ctl["re-run"].click()
        assert ex.wait(120).meta["options"] == {**got.meta["options"], "site": "attn", "window": 3}
    finally:
        ex.close()


def test_driver_holds_the_model_lock(lm):
    """While per_item, reduce and drill run, no other thread can start an analysis on the same model."""
    from heatwidget._concurrency import model_lock

    free: list[bool] = []

    def other_thread_can_lock() -> None:
        def try_lock():
            lock = model_lock(lm)
            got = lock.acquire(blocking=False)
            if got:
                lock.release()
            free.append(got)

        t = threading.Thread(target=try_lock)
        t.start()
        t.join()

    def per_item(lm_, item):
        other_thread_can_lock()
        return np.ones(lm_.n_layers, np.float32)

    def reduce(run):
        other_thread_can_lock()
        return _reduce_plain(run)

    a = Analysis(
        "locked",
        (),
        items=_items,
        per_item=per_item,
        reduce=reduce,
        drill=lambda run, m, r, c: (other_thread_can_lock(), m.cell(r, c))[1],
    )
    m = run_analysis(a, lm, {"prompts": ["x"]}, {})
    m.drill(0, 0)
    other_thread_can_lock()
    assert free == [False, False, False, True]


def test_executor_none_means_local_in_config_too():
    from heatwidget.analysis import Config, current_config

    assert Config(executor=None).executor == "local"
    with hw.config(executor=None):
        assert current_config().executor == "local"
    with pytest.raises(ValueError, match="executor must be one of"):
        Config(executor="threads")
