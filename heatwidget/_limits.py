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
