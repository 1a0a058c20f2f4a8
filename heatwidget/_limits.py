"""Two facts about a model that several analyses need, with one rule each: how many positions its context holds,
and which tokens end a generation."""

from __future__ import annotations

from typing import Any

__all__ = ["context_length", "stop_token_ids"]


def context_length(config: Any) -> int | None:
    """The model's context in tokens (`max_position_embeddings`, or GPT-2's `n_positions`); None: unbounded or
    unknown (e.g. state-space models)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Token ids that end a greedy generation: every EOS id the model's generation config names and the
    tokenizer's EOS (a chat model's config often lists its end-of-turn token besides the tokenizer's EOS)."""
    ids: set[int] = set()
    for src in (getattr(model, "generation_config", None), tokenizer):
        e = getattr(src, "eos_token_id", None) if src is not None else None
        if isinstance(e, int):
            ids.add(e)
        elif isinstance(e, (list, tuple, set)):
            ids.update(int(x) for x in e)
    return ids


# What one forward of an automatically sized batch may hold in activations (and, when generating, KV cache). A
# few large batches keep a small model's matmuls busy (on CPU, 16 rows of the demo model are mostly Python
# overhead); the budget keeps a 70B model's batch within any accelerator's memory.
AUTO_BATCH_BYTES = 1 << 30
AUTO_BATCH_MAX_ROWS = 256


def _widest_block_matrix(layers: Any) -> int:
    """The largest dimension of a 2-D weight in the first block: the MLP's width, whatever the family calls it."""
    dims = [max(p.shape) for p in layers[0].parameters() if p.dim() == 2] if len(layers) else []
    return max(dims, default=0)


def _config_int(cfg: Any, name: str) -> int | None:
    """A config's integer attribute, or None where it has none or refuses one global value (configs whose layers
    differ raise on e.g. `num_attention_heads`; then the estimate falls back to the hidden size)."""
    try:
        value = getattr(cfg, name, None)
    except Exception:  # transformers' AmbiguousGlobalPerLayerAttributeError and kin
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def rows_per_forward(lm: Any, tokens: int, *, kv_cache: bool = False) -> int:
    """How many rows of `tokens` tokens one forward should batch when the caller did not say (batch_size=None):
    as many as fit AUTO_BATCH_BYTES of activations — the block's widest matrix per token, three buffers deep — plus,
    when generating, every layer's keys and values (AUTO_BATCH_MAX_ROWS at most)."""
    model = lm.model
    hidden = int(model.get_input_embeddings().weight.shape[1])
    width = max(hidden, _widest_block_matrix(lm.anatomy.layers))
    elem = next(model.parameters()).element_size()
    per_token = 3 * width * elem
    if kv_cache:
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        heads = _config_int(cfg, "num_attention_heads")
        kv_heads = _config_int(cfg, "num_key_value_heads") or heads
        head_dim = _config_int(cfg, "head_dim") or (hidden // heads if heads else None)
        kv_width = kv_heads * head_dim if kv_heads and head_dim else hidden
        per_token += 2 * lm.anatomy.n_layers * kv_width * elem
    rows = AUTO_BATCH_BYTES // max(1, tokens * per_token)
    return int(min(AUTO_BATCH_MAX_ROWS, max(1, rows)))
