"""Resuming a forward part-way: hooks.capture_all, and the engine internals record_calls, trace_calls, run_block."""

from __future__ import annotations

import pytest
import torch

import heatwidget as hw
from heatwidget import _block_calls, hooks
from heatwidget.divergence._engine import next_step_args


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tiny_dir):
    return hw.load(tiny_dir(request.param))


def _counter(module):
    calls = []
    return calls, module.register_forward_hook(lambda *a: calls.append(1))


def test_capture_all_over_a_cached_generation_equals_one_full_forward(lm):
    ids = lm.encode("the capital of Velmora is")["input_ids"]
    layers = list(lm.anatomy.layers)
    with (
        torch.inference_mode(),
        hooks.capture_all(layers, what="input") as ins,
        hooks.capture_all([layers[-1]]) as outs,
    ):
        out = lm.model(ids, use_cache=True)
        nxt = out.logits[:, -1:].argmax(-1)
        lm.model(nxt, **next_step_args(lm.model, out))  # the cache under the name this transformers takes
    full_ids = torch.cat([ids, nxt], 1)
    with torch.inference_mode(), hooks.capture(layers, what="input") as ref_in, hooks.capture([layers[-1]]) as ref_out:
        lm.model(full_ids)
    # (blocks return a tuple under transformers 4.x, a tensor under 5.x: the outputs are compared below either way)
    assert all(len(v) == 2 for v in ins.values())
    for i in range(len(layers)):
        torch.testing.assert_close(torch.cat(ins[i], 1), ref_in[i], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat(outs[0], 1), ref_out[0], atol=1e-5, rtol=1e-5)


def test_record_calls_and_run_block_reproduce_every_block(lm):
    ids = lm.encode(["the capital of Velmora is"])["input_ids"]
    layers = list(lm.anatomy.layers)
    with torch.inference_mode(), _block_calls.record_calls(layers) as calls, hooks.capture(layers) as outs:
        lm.model(ids, use_cache=False)
    with torch.inference_mode():
        for i, blk in enumerate(layers):
            got = _block_calls.run_block(blk, calls[i], calls[i].hidden)
            torch.testing.assert_close(got, outs[i], atol=1e-6, rtol=0)
            # a batch of 3 rows re-uses the batch-1 recorded arguments by broadcasting
            got3 = _block_calls.run_block(blk, calls[i], calls[i].hidden.expand(3, -1, -1))
            torch.testing.assert_close(got3, outs[i].expand(3, -1, -1), atol=1e-5, rtol=0)
    with torch.inference_mode(), _block_calls.record_calls(layers) as cached:
        lm.model(ids, use_cache=True)
    with pytest.raises(ValueError, match="KV cache"):
        _block_calls.run_block(layers[0], cached[0], cached[0].hidden)


def test_trace_calls_records_the_real_arguments_without_running_blocks(lm):
    ids = lm.encode("the capital of Velmora is")["input_ids"]
    layers = list(lm.anatomy.layers)
    with torch.inference_mode(), _block_calls.record_calls(layers, keep_hidden=False) as real:
        lm.model(ids, use_cache=False)
    mlp_calls, h1 = _counter(lm.anatomy.mlp[0])
    head_calls, h2 = _counter(lm.anatomy.unembed)
    try:
        traced = _block_calls.trace_calls(layers, lambda: lm.model(ids, use_cache=False), lm.anatomy.final_norm)
    finally:
        h1.remove()
        h2.remove()
    assert not mlp_calls and not head_calls  # nothing but embedding, masks and position tables ran
    assert all("forward" not in blk.__dict__ for blk in layers)  # the blocks' own forward is back
    for p, r in zip(traced, (real[i] for i in range(len(layers))), strict=True):
        assert p.hidden_kw == r.hidden_kw and len(p.args) == len(r.args) and set(p.kwargs) == set(r.kwargs)
        for k, v in r.kwargs.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(p.kwargs[k], v), k
            elif isinstance(v, tuple) and v and isinstance(v[0], torch.Tensor):
                assert all(torch.equal(a, b) for a, b in zip(p.kwargs[k], v, strict=True)), k
    # the blocks still work normally afterwards
    with torch.inference_mode():
        lm.model(ids)


def test_trace_calls_restores_blocks_when_the_forward_fails(lm):
    layers = list(lm.anatomy.layers)

    def boom():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _block_calls.trace_calls(layers, boom, lm.anatomy.final_norm)
    assert all("forward" not in blk.__dict__ for blk in layers)
    assert not lm.anatomy.final_norm._forward_pre_hooks
