"""batch_size=None (the default of hw.answer and hw.collect) sizes batches from the model: big for a small model,
small for a large one, and the results do not depend on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import heatwidget as hw
from heatwidget._limits import AUTO_BATCH_MAX_ROWS, rows_per_forward
from heatwidget.demo import exact_answer


@pytest.fixture(scope="module")
def demo_lm():
    return hw.demo_model()


def test_small_model_gets_the_largest_batch(demo_lm):
    assert rows_per_forward(demo_lm, 40) == AUTO_BATCH_MAX_ROWS
    assert rows_per_forward(demo_lm, 40, kv_cache=True) == AUTO_BATCH_MAX_ROWS


def test_large_model_gets_a_batch_that_fits_the_budget():
    # An 8B-shaped Llama on the meta device: real module shapes, no memory.
    cfg = LlamaConfig(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=1000,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    lm = hw.LM.wrap(model, None)
    forward_rows = rows_per_forward(lm, 64)
    generate_rows = rows_per_forward(lm, 64, kv_cache=True)
    # 64 tokens x 14336 wide x 3 buffers x 2 bytes = 5.5 MB a row: 195 rows in 1 GiB; keys and values add
    # 64 x 32 layers x 2 x 1024 x 2 bytes = 8.4 MB a row.
    assert forward_rows == 195
    assert generate_rows == (1 << 30) // (64 * (3 * 14336 * 2 + 2 * 32 * 1024 * 2)) == 77
    assert 1 <= generate_rows < forward_rows < AUTO_BATCH_MAX_ROWS


def test_auto_batches_change_nothing(demo_lm):
    qs = hw.demo_questions()[:40]
    auto = hw.answer(demo_lm, qs, extractor=exact_answer, max_new_tokens=8)
    small = hw.answer(demo_lm, qs, extractor=exact_answer, max_new_tokens=8, batch_size=3)
    assert auto.meta["n_kept"] == small.meta["n_kept"]
    assert [list(x) for x in auto.ids] == [list(x) for x in small.ids]
    a = hw.collect(demo_lm, auto, positions=["last_q", -1], layers=[0, 7])
    b = hw.collect(demo_lm, small, positions=["last_q", -1], layers=[0, 7], batch_size=3)
    np.testing.assert_allclose(np.asarray(a.values), np.asarray(b.values), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_explicit_batch_size_is_still_checked(demo_lm, bad):
    with pytest.raises((ValueError, TypeError), match="batch_size"):
        hw.answer(demo_lm, hw.demo_questions()[:2], batch_size=bad)


def test_configs_that_refuse_a_global_head_count_fall_back_to_the_hidden_size():
    """Per-layer configs (Gemma 4, dots3) raise on `config.num_attention_heads`; sizing must not."""
    from heatwidget._limits import _config_int

    class PerLayer:
        hidden_size = 64

        @property
        def num_attention_heads(self):
            # transformers' AmbiguousGlobalPerLayerAttributeError is a RuntimeError, which getattr's default does
            # not catch (an AttributeError would be, and would not test the fallback)
            raise RuntimeError("'num_attention_heads' is a per-layer attribute and may vary across layers")

    assert _config_int(PerLayer(), "num_attention_heads") is None
    assert _config_int(PerLayer(), "hidden_size") == 64
    assert _config_int(PerLayer(), "missing") is None
