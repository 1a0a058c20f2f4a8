"""hooks: every intervention checked against a hand-written forward, removal on exceptions, tuple outputs."""

import pytest
import torch
from torch import nn

import heatwidget as hw
from heatwidget import hooks


@pytest.fixture(scope="module")
def llama(tiny_dir):
    return hw.load(tiny_dir("llama"))


def _manual_forward(lm, ids, edit_layer=None, edit=None):
    """A plain re-implementation: run the blocks one by one, editing one block's output by hand."""
    m = lm.model.model
    h = m.embed_tokens(ids)
    pos = torch.arange(ids.shape[1])[None]
    pe = m.rotary_emb(h, position_ids=pos)
    for i, block in enumerate(m.layers):
        out = block(h, attention_mask=None, position_embeddings=pe, position_ids=pos)
        out = out[0] if isinstance(out, tuple) else out
        if i == edit_layer:
            out = edit(out, h)
        h = out
    return lm.model.lm_head(m.norm(h))


def test_skip_equals_manual_skip(llama):
    ids = llama.encode("the capital of Velmora is")["input_ids"]
    with hooks.skip(llama.anatomy.layers[1]):
        got = llama.model(ids).logits
    want = _manual_forward(llama, ids, 1, lambda out, inp: inp)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    clean = llama.model(ids).logits
    assert not torch.allclose(clean, got)


def test_hooks_are_removed_even_on_exceptions(llama):
    block = llama.anatomy.layers[0]
    n_before = len(block._forward_hooks) + len(block._forward_pre_hooks)
    with pytest.raises(RuntimeError, match="boom"), hooks.skip(block), hooks.zero(llama.anatomy.mlp[0]):
        raise RuntimeError("boom")
    assert len(block._forward_hooks) + len(block._forward_pre_hooks) == n_before
    assert len(llama.anatomy.mlp[0]._forward_hooks) == 0


def test_row_and_position_selection_only_touch_the_selection(llama):
    enc = llama.encode(["the capital of Velmora is", "the capital of Velmora is"])
    ids = enc["input_ids"]
    with (
        hooks.capture({"in": llama.anatomy.layers[2]}, what="input") as cap_in,
        hooks.capture({"out": llama.anatomy.layers[2]}) as cap_out,
        hooks.zero(llama.anatomy.layers[2], rows=[1], positions=[-1, 2]),
    ):
        llama.model(ids)
    out = cap_out["out"]
    assert torch.equal(out[1, -1], torch.zeros_like(out[1, -1])) and torch.equal(out[1, 2], torch.zeros_like(out[1, 2]))
    assert out[0].abs().sum() > 0 and out[1, 0].abs().sum() > 0
    assert cap_in["in"].shape == out.shape


def test_per_row_position_masks(llama):
    ids = llama.encode(["a b c d", "a b c d"])["input_ids"]
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    mask[0, 1] = True
    mask[1, 3] = True
    v = torch.full((llama.model.config.hidden_size,), 7.0)
    with hooks.capture([llama.anatomy.layers[0]]) as cap, hooks.replace(llama.anatomy.layers[0], v, positions=mask):
        llama.model(ids)
    h = cap[0]
    assert torch.all(h[0, 1] == 7) and torch.all(h[1, 3] == 7)
    assert not torch.all(h[0, 3] == 7) and not torch.all(h[1, 1] == 7)


def test_add_and_project_out(llama):
    ids = llama.encode("the capital of")["input_ids"]
    d = llama.model.config.hidden_size
    v = torch.randn(d)
    blk = llama.anatomy.layers[1]
    with hooks.capture([blk]) as c0:
        llama.model(ids)
    with hooks.capture([blk]) as c1, hooks.add(blk, v, alpha=2.0):
        llama.model(ids)
    torch.testing.assert_close(c1[0], c0[0] + 2.0 * v)
    with hooks.capture([blk]) as c2, hooks.project_out(blk, v):
        llama.model(ids)
    assert (c2[0] @ (v / v.norm())).abs().max() < 1e-4
    with pytest.raises(ValueError, match="non-zero"):
        hooks.project_out(blk, torch.zeros(d))


def test_tuple_returning_modules_are_handled(llama):
    """Attention modules return (output, weights): edit_output must keep the tuple shape."""
    attn = llama.anatomy.attn[0]
    ids = llama.encode("the capital of")["input_ids"]
    with hooks.capture([attn]) as cap, hooks.zero(attn):
        llama.model(ids)
    assert torch.count_nonzero(cap[0]) == 0

    class TupleBlock(nn.Module):
        def forward(self, x):
            return (x * 2, "extra")

    blk = TupleBlock()
    with hooks.skip(blk):
        out = blk(torch.ones(1, 2, 3))
    assert torch.equal(out[0], torch.ones(1, 2, 3)) and out[1] == "extra"


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "qwen2"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_knockout_equals_an_explicit_mask(tiny_dir, family, impl):
    """Blocking last→subject attention via the hook equals zeroing those attention probabilities by hand:
    checked by comparing eager and sdpa (two different mask code paths) and against a manual softmax edit."""
    lm = hw.load(tiny_dir(family), attn_implementation=impl)
    ids = lm.encode(["the capital of Velmora is", "Q what is the capital of Brisa ?"])["input_ids"]
    keys = torch.zeros(ids.shape, dtype=torch.bool)
    keys[0, 4] = True
    keys[1, ids.shape[1] - 3] = True
    clean = lm.model(ids).logits
    with hooks.block_attention(lm.anatomy.attn, queries=[-1], keys=keys):
        ko = lm.model(ids).logits
    # only the last position changes
    torch.testing.assert_close(ko[:, :-1], clean[:, :-1], atol=1e-5, rtol=1e-5)
    assert (ko[:, -1] - clean[:, -1]).abs().max() > 1e-4
    ref = hw.load(tiny_dir(family), attn_implementation="eager")
    with hooks.block_attention(ref.anatomy.attn, queries=[-1], keys=keys):
        ko_eager = ref.model(ids).logits
    torch.testing.assert_close(ko, ko_eager, atol=1e-4, rtol=1e-4)


def test_knockout_with_padding_keeps_padding_masked(tiny_dir):
    lm = hw.load(tiny_dir("llama"))
    enc = lm.encode(["the capital of Velmora is", "capital"])
    single = lm.model(**lm.encode("capital")).logits[0, -1]
    with hooks.block_attention(lm.anatomy.attn, queries=[-1], keys=[0], rows=[0]):
        batched = lm.model(**enc).logits
    torch.testing.assert_close(batched[1, -1], single, atol=1e-4, rtol=1e-4)


def test_knockout_matches_manual_attention_probability_edit(tiny_dir):
    """Reference: eager attention with the blocked probabilities removed by hand (mask -inf before softmax)."""
    lm = hw.load(tiny_dir("gpt2"), attn_implementation="eager")
    ids = lm.encode("the capital of Velmora is")["input_ids"]
    t = ids.shape[1]
    causal = torch.full((t, t), float("-inf")).triu(1)
    causal[-1, 2] = float("-inf")
    import transformers.models.gpt2.modeling_gpt2 as g

    orig = g.eager_attention_forward

    def patched(module, query, key, value, attention_mask, **kw):
        return orig(module, query, key, value, causal[None, None], **kw)

    g.eager_attention_forward = patched
    try:
        want = lm.model(ids).logits
    finally:
        g.eager_attention_forward = orig
    with hooks.block_attention(lm.anatomy.attn, queries=[-1], keys=[2]):
        got = lm.model(ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_selection_errors():
    with pytest.raises(IndexError, match="out of range"):
        hooks.selection_mask((2, 5), positions=[7])
    with pytest.raises(ValueError, match="shape"):
        hooks.selection_mask((2, 5), positions=torch.zeros(3, 5, dtype=torch.bool))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("step", [1, 3])
def test_knockout_after_a_cached_prefix_equals_the_full_forward(tiny_dir, family, step):
    """With a KV cache the attention modules see only the new tokens; for one new token sdpa gets no mask, and
    the causal mask the hook builds must span the cached prefix too, whatever name the module receives the cache
    under (`cache` in transformers 5.2x, `past_key_value(s)`/`layer_past` before). Blocking new position 0 for the
    last query must equal blocking absolute position P in one uncached forward."""
    from heatwidget.divergence._engine import next_step_args

    lm = hw.load(tiny_dir(family), attn_implementation="sdpa")
    ids = lm.encode("the capital of Velmora is a city in the north")["input_ids"]
    p = 5
    ids = ids[:, : p + step]
    with torch.no_grad():
        with hooks.block_attention(lm.anatomy.attn, queries=[-1], keys=[p]):
            want = lm.model(input_ids=ids, use_cache=False).logits[:, p:]
        prefix = lm.model(input_ids=ids[:, :p], use_cache=True)
        with hooks.block_attention(lm.anatomy.attn, queries=[-1], keys=[0]):
            got = lm.model(input_ids=ids[:, p:], **next_step_args(lm.model, prefix)).logits
        clean = lm.model(input_ids=ids, use_cache=False).logits[:, p:]
    assert (want[:, -1] - clean[:, -1]).abs().max() > 1e-4  # the knockout changes the last position
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
