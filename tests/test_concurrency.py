"""Interventions touch only their own computation: the explorer drills on its worker thread while the user keeps
running forwards and analyses on the same model in the main thread, and every result is the one computed alone."""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch

import heatwidget as hw
from heatwidget import hooks
from heatwidget._concurrency import locks_model, model_lock

T = 3  # generated tokens per ablation prompt: small, so a drill is a few forwards
PROMPTS = ["Q: What is the capital of Biasland? A:", "The", "Q: What is the currency of Biasland? It is"]


@pytest.fixture(scope="module")
def lm():
    return hw.demo_model()


def _ids(lm, text: str) -> torch.Tensor:
    return lm.encode(text)["input_ids"]


# ---- unit: a hooks context entered in thread A does not touch a forward in thread B ---------------------------


def _managers(lm) -> dict[str, Callable[[], Any]]:
    a, d = lm.anatomy, lm.config.hidden_size
    layers = list(a.layers)
    return {
        "skip": lambda: hooks.skip(layers[2]),
        "zero": lambda: hooks.zero(a.attn[1]),
        "replace": lambda: hooks.replace(a.mlp[1], torch.ones(d)),
        "add": lambda: hooks.add(layers[3], torch.ones(d), 5.0),
        "project_out": lambda: hooks.project_out(layers[3], torch.arange(d, dtype=torch.float32) + 1),
        "edit_input": lambda: hooks.edit_input(layers[4], lambda x: x * 0),
        "block_attention": lambda: hooks.block_attention(a.attn, queries=-1, keys=slice(0, -1)),
        "stack": lambda: hooks.stack(hooks.skip(layers[1]), hooks.zero(a.mlp[5])),
        "capture": lambda: hooks.capture(layers),
        "capture_input": lambda: hooks.capture(layers, what="input"),
        "capture_all": lambda: hooks.capture_all(layers),
        "capture_at": lambda: hooks.capture_at(layers, torch.tensor([[0, 1]])),
        "record_calls": lambda: hooks.record_calls(layers),
    }


KINDS = [
    "skip",
    "zero",
    "replace",
    "add",
    "project_out",
    "edit_input",
    "block_attention",
    "stack",
    "capture",
    "capture_input",
    "capture_all",
    "capture_at",
    "record_calls",
]
EDITS = {"skip", "zero", "replace", "add", "project_out", "edit_input", "block_attention", "stack"}


def _snapshot(store: Any) -> dict:
    """A copy of what a capture holds; a forward from another thread that wrote into it would change it."""
    if not isinstance(store, dict):
        return {}
    out = {}
    for k, v in store.items():
        if isinstance(v, list):
            out[k] = [t.clone() for t in v]
        elif isinstance(v, torch.Tensor):
            out[k] = v.clone()
        else:  # a BlockCall
            out[k] = v.hidden.clone()
    return out


def _same(a: dict, b: dict) -> bool:
    def eq(x: Any, y: Any) -> bool:
        if isinstance(x, list):
            return isinstance(y, list) and len(x) == len(y) and all(map(eq, x, y))
        return x.shape == y.shape and torch.equal(x, y)

    return a.keys() == b.keys() and all(eq(a[k], b[k]) for k in a)


def _run_while_held(hold: Callable[[Callable[[], None]], None], other: Callable[[], None]) -> None:
    """Run hold(wait) on thread A; when A calls `wait()` (inside its hooks context), run other() here (thread B)."""
    entered, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        entered.set()
        assert release.wait(30), "thread B never released thread A"

    def target() -> None:
        try:
            hold(wait)
        except BaseException as e:  # reported in thread B
            errors.append(e)
        finally:
            entered.set()

    t = threading.Thread(target=target)
    t.start()
    try:
        assert entered.wait(30)
        other()
    finally:
        release.set()
        t.join(30)
    if errors:
        raise errors[0]


@pytest.mark.parametrize("kind", KINDS)
def test_hooks_entered_in_one_thread_leave_another_threads_forward_unchanged(lm, kind):
    ids_a, ids_b = _ids(lm, PROMPTS[0]), _ids(lm, PROMPTS[2])
    with torch.inference_mode():
        ref_a, ref_b = lm.model(input_ids=ids_a).logits, lm.model(input_ids=ids_b).logits
    seen: dict[str, Any] = {}

    def hold(wait: Callable[[], None]) -> None:
        with torch.inference_mode(), _managers(lm)[kind]() as store:
            seen["own"] = lm.model(input_ids=ids_a).logits
            seen["before"] = _snapshot(store)
            wait()  # thread B runs its forward now, while this context's hooks are registered
            seen["after"] = _snapshot(store)

    def other_thread() -> None:
        with torch.inference_mode():
            seen["b"] = lm.model(input_ids=ids_b).logits

    _run_while_held(hold, other_thread)
    assert torch.equal(seen["b"], ref_b), f"{kind} entered in thread A changed thread B's forward"
    assert _same(seen["after"], seen["before"]), f"{kind} recorded thread B's forward"
    if kind in EDITS:  # ...while it still acts in its own thread
        assert not torch.equal(seen["own"], ref_a)
    else:
        assert seen["before"] and torch.equal(seen["own"], ref_a)


def test_halt_after_and_probe_calls_in_one_thread_leave_another_threads_forward_unchanged(lm):
    ids_a, ids_b = _ids(lm, PROMPTS[0]), _ids(lm, PROMPTS[2])
    layers = list(lm.anatomy.layers)
    with torch.inference_mode():
        ref_b = lm.model(input_ids=ids_b).logits
    seen: dict[str, Any] = {}

    def other_thread() -> None:
        with torch.inference_mode():
            seen.setdefault("b", []).append(lm.model(input_ids=ids_b).logits)

    def hold_halt(wait: Callable[[], None]) -> None:
        with hooks.halt_after(layers[0]):
            wait()

    def hold_probe(wait: Callable[[], None]) -> None:
        def run() -> None:  # the blocks are replaced and the final norm halts while this waits
            wait()
            lm.model(input_ids=ids_a, use_cache=False)

        seen["calls"] = hooks.probe_calls(layers, run, lm.anatomy.final_norm)

    _run_while_held(hold_halt, other_thread)
    _run_while_held(hold_probe, other_thread)
    assert len(seen["b"]) == 2 and all(torch.equal(b, ref_b) for b in seen["b"])
    assert len(seen["calls"]) == len(layers) and seen["calls"][0].args is not None
    assert all("forward" not in m.__dict__ for m in layers)  # restored


def test_nested_managers_in_one_thread_all_act_and_another_thread_sees_none(lm):
    ids = _ids(lm, PROMPTS[0])
    layers = list(lm.anatomy.layers)
    with torch.inference_mode():
        ref = lm.model(input_ids=ids).logits
        with hooks.skip(layers[1]):
            one = lm.model(input_ids=ids).logits
            with hooks.zero(lm.anatomy.mlp[4]), hooks.capture({"x": layers[5]}) as got:
                both = lm.model(input_ids=ids).logits
                other: list[torch.Tensor] = []
                t = threading.Thread(target=lambda: other.append(lm.model(input_ids=ids).logits))
                t.start()
                t.join(30)
            after_inner = lm.model(input_ids=ids).logits
    assert not torch.equal(one, ref) and not torch.equal(both, one) and "x" in got
    assert torch.equal(after_inner, one)  # the inner managers stopped acting on exit, the outer one still acts
    assert torch.equal(other[0], ref)


def test_model_lock_is_one_reentrant_lock_per_model(lm):
    assert model_lock(lm) is model_lock(lm.model)
    assert model_lock(hw.demo_model()) is not model_lock(lm)
    with model_lock(lm), model_lock(lm.model):  # re-entrant: an analysis calling another nests
        pass
    with pytest.raises(TypeError, match="nn.Module or an hw.LM"):
        model_lock("gpt2")

    order: list[str] = []

    @locks_model
    def analysis(model, name):
        order.append(f"{name} in")
        threading.Event().wait(0.05)
        order.append(f"{name} out")

    threads = [threading.Thread(target=analysis, args=(lm, str(i))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(order[i].endswith(" in") and order[i + 1] == order[i].replace(" in", " out") for i in range(0, 6, 2)), (
        order
    )  # never interleaved


# ---- the explorer's worker thread vs the user's main thread, on one model ---------------------------------------


def _canon(x: Any) -> str:
    """A drill-down's or a matrix's content as exact text (floats by repr, so equal means bit for bit)."""
    if isinstance(x, hw.HeatMatrix):
        return json.dumps([x.values.tolist(), x.rows, x.cols])
    charts = [
        [c.title, c.kind, [[s.name, list(map(str, s.x)), [float(v) for v in s.y]] for s in c.series]] for c in x.charts
    ]
    tables = {k: v.to_json() for k, v in x.tables.items()}
    return json.dumps([float(x.value), x.title, x.texts, charts, tables, sorted(x.reruns)], default=repr)


CELLS = [(r, r % T) for r in range(8)]  # one cell per layer: each drill generates its own continuation
OTHER = {"skip": "zero_attn", "zero_attn": "skip"}


class _Reference:
    """Every result the explorers and the main thread will produce, each computed alone first."""

    def __init__(self, lm, interventions: list[str]) -> None:
        self.ids = {p: _ids(lm, p) for p in PROMPTS}
        self.forward = {p: lm.model(input_ids=self.ids[p]).logits.detach() for p in PROMPTS}
        self.lens = {p: _canon(hw.logit_lens(lm, p)) for p in PROMPTS}
        self.matrix, self.detail, self.per_position = {}, {}, {}
        for iv in {*interventions, *(OTHER[i] for i in interventions)}:
            m = hw.ablation_kl(lm, PROMPTS[0], max_new_tokens=T, intervention=iv)
            self.matrix[iv] = _canon(m)
            if iv in interventions:
                for r, c in CELLS:
                    d = m.drill(r, c)
                    self.detail[iv, r, c] = _canon(d)
                    self.per_position[iv, r] = _canon(d.reruns[f"KL at every position, layer {r}"]())


def _explorer_jobs(lm, ex, iv: str, ref: _Reference, failures: list[str]) -> Iterator[Any]:
    """The explorer's work, one request at a time: per cycle, the main thread computes a fresh matrix (its drills
    are not cached yet) and the worker drills 3 cells, recomputes the matrix with another intervention and re-runs
    one drill's per-position KL. Yields each request's Future after checking the previous one's result."""
    for k in range(10_000):
        m = hw.ablation_kl(lm, PROMPTS[0], max_new_tokens=T, intervention=iv)  # main thread, while others drill
        if _canon(m) != ref.matrix[iv]:
            failures.append(f"main-thread ablation_kl ({iv}) differs")
        ex.push(f"cycle {k}", m)
        detail = None
        for j in range(3):
            r, c = CELLS[(3 * k + j) % len(CELLS)]
            fut = ex.select(r, c)
            yield fut
            detail = fut.result()
            if detail is None or _canon(detail) != ref.detail[iv, r, c]:
                failures.append(f"drill {iv} ({r}, {c}) differs: {getattr(ex, 'last_error', '')[-300:]}")
        if detail is None:
            continue
        fut = ex.recompute(intervention=OTHER[iv])  # of the view, this cycle's matrix; its result becomes the view
        yield fut
        if fut.result() is None or _canon(fut.result()) != ref.matrix[OTHER[iv]]:
            failures.append(f"recompute {OTHER[iv]} differs")
        fut = ex.rerun("per position", detail.reruns[f"KL at every position, layer {r}"])
        yield fut
        if fut.result() is None or _canon(fut.result()) != ref.per_position[iv, r]:
            failures.append(f"re-run per-position KL {iv} layer {r} differs")


def _main_call(lm, i: int, ref: _Reference) -> str | None:
    """One call of the user's: mostly a plain forward, every 20th a logit lens. The mismatch, if any."""
    p = PROMPTS[i % len(PROMPTS)]
    try:
        if i % 20 == 19:
            return None if _canon(hw.logit_lens(lm, p)) == ref.lens[p] else f"logit_lens {i} differs"
        got = lm.model(input_ids=ref.ids[p]).logits.detach()
        return (
            None
            if torch.equal(got, ref.forward[p])
            else f"forward {i} differs by {float((got - ref.forward[p]).abs().max()):.3g}"
        )
    except Exception as e:  # e.g. a size mismatch from someone else's hooks
        return f"call {i} raised {type(e).__name__}: {str(e)[:120]}"


def _interleave(lm, interventions: list[str], n_main: int, min_total: int = 0) -> tuple[list[str], int, int]:
    """Main-thread calls while each explorer keeps its worker busy; returns (failures, main calls, worker jobs).
    At least `n_main` main-thread calls, and more until main calls + worker jobs reach `min_total` (how many jobs the
    worker finishes meanwhile depends on the machine's load)."""
    ref = _Reference(lm, interventions)
    # The explorer ends every job with a full gc.collect(), which in a process holding torch, transformers and the
    # test suite's objects costs ~1 s under load; frozen, the objects that exist now are not traversed again.
    gc.freeze()
    failures: list[str] = []
    explorers = [hw.explore(hw.ablation_kl(lm, PROMPTS[0], max_new_tokens=T, intervention=iv)) for iv in interventions]
    plans = [_explorer_jobs(lm, ex, iv, ref, failures) for ex, iv in zip(explorers, interventions, strict=True)]
    current = [next(p) for p in plans]
    jobs = len(current)
    try:
        i = 0
        while i < n_main or i + jobs < min_total:
            for k, plan in enumerate(plans):
                if current[k].done():
                    current[k] = next(plan)
                    jobs += 1
            bad = _main_call(lm, i, ref)
            if bad:
                failures.append(bad)
            i += 1
        for fut in current:
            fut.result(60)
    finally:
        for ex in explorers:
            ex.close()
        gc.unfreeze()
    return failures, i, jobs


def test_explorer_drills_while_the_main_thread_runs_forwards_and_analyses(lm):
    failures, n_main, jobs = _interleave(lm, ["skip"], n_main=400, min_total=500)
    assert n_main + jobs >= 500 and jobs >= 20
    assert not failures, f"{len(failures)} of {n_main} main-thread calls and {jobs} drills differ: {failures[:5]}"


def test_two_explorers_on_one_model(lm):
    failures, n_main, jobs = _interleave(lm, ["skip", "zero_attn"], n_main=120)
    assert jobs >= 20
    assert not failures, f"{len(failures)} of {n_main} main-thread calls and {jobs} drills differ: {failures[:5]}"


def test_requested_model_lock_is_held_by_analyses(lm):
    """An analysis waits for the model's lock: while another thread holds it, logit_lens does not start."""
    started, done = threading.Event(), threading.Event()
    out: list[Any] = []

    def user() -> None:
        started.set()
        out.append(hw.logit_lens(lm, PROMPTS[1]))
        done.set()

    with model_lock(lm):
        t = threading.Thread(target=user)
        t.start()
        assert started.wait(30)
        assert not done.wait(0.3)  # blocked on the lock
    assert done.wait(60)
    t.join(30)
    assert np.isfinite(out[0].values).all()


# ---- gradient statistics leave the model's flags alone ------------------------------------------------------------


def test_gradient_stats_touch_no_requires_grad_flag_seen_by_another_thread(lm):
    """While module_stats("grad") runs its forward on thread A, thread B sees the model's flags as they were."""
    params = list(lm.model.parameters())
    flags = [p.requires_grad for p in params]
    seen: list[list[bool]] = []

    def hold(wait: Callable[[], None]) -> None:
        def pause(_m: Any, _a: Any, _o: Any) -> None:  # a plain hook: pauses thread A mid-forward
            if threading.current_thread() is not threading.main_thread():
                wait()

        handle = lm.anatomy.layers[3].register_forward_hook(pause)
        try:
            hw.module_stats(lm, "grad", texts=PROMPTS[0])
        finally:
            handle.remove()

    _run_while_held(hold, lambda: seen.append([p.requires_grad for p in params]))
    assert seen == [flags]


def test_gradient_stats_of_a_frozen_model_equal_those_of_a_trainable_one(lm):
    want = hw.module_stats(lm, "grad", texts=PROMPTS)
    params = list(lm.model.parameters())
    for p in params:
        p.requires_grad_(False)
    try:
        got = hw.module_stats(lm, "grad", texts=PROMPTS)
        assert not any(p.requires_grad for p in params)  # still frozen
    finally:
        for p in params:
            p.requires_grad_(True)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-6)
    assert np.isfinite(want.values[:, :4]).all() and (want.values[:, :4] > 0).all()
