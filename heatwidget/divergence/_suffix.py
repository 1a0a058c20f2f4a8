"""Resuming intervened runs at a position as well as at a layer: the suffix engine of activation patching.

A row that changes the hidden state at position t only (a restored activation) leaves every position before t as
it was in the base run, at every layer: causal attention never looks forward. Such a row needs the blocks above
its first changed layer (the "staircase" of `_engine`) and, in each of them, only the positions t … T−1, which
attend to the base run's keys and values at positions < t. `SuffixBase` holds the base run (block inputs and
each block's keys/values) and turns each block's recorded call into one that runs the suffix: the hidden state
[B, T−t, d], the position tables and the attention mask cut to the suffix's rows, and a `PrefixCache` in place
of the model's KV cache that prepends the base run's keys/values for positions < t.

The cut calls are checked once per base run (every block, run on the suffix of the base input, must reproduce
the base output there); a model whose blocks cannot be cut so reports why and the caller falls back to
full-sequence rows (`_engine.run_rows` over the whole prompt).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from .. import _block_calls, hooks
from .._lm import LM
from ._engine import Clean, _close, keep_logits_arg, recorded_inputs

__all__ = ["PrefixCache", "SuffixBase", "base_forward", "prepare", "cut_call", "suffix_clean"]

_CACHE_ARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


class PrefixCache:
    """Stands in for the model's KV cache during a suffix run: `update` returns the base run's keys/values of
    positions < t followed by the suffix's own, and stores nothing (so one instance serves every call)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], t: int) -> None:
        self.keys = [k[:, :, :t] for k in keys]
        self.values = [v[:, :, :t] for v in values]

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b = key.shape[0]
        pk = self.keys[layer_idx].to(key.device, key.dtype).expand(b, -1, -1, -1)
        pv = self.values[layer_idx].to(value.device, value.dtype).expand(b, -1, -1, -1)
        return torch.cat([pk, key], dim=2), torch.cat([pv, value], dim=2)


class _RecordingCache:
    """Records the keys/values a block computes over the full sequence (and returns them unchanged)."""

    def __init__(self) -> None:
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def update(
        self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.keys[layer_idx], self.values[layer_idx] = key, value
        return key, value


@dataclass
class SuffixBase:
    """The base run over ids [1, T]: block inputs, final output, per-block calls and keys/values."""

    ids: torch.Tensor
    inputs: list[torch.Tensor]  # [1, T, d] entering block j
    final: torch.Tensor  # [1, T, d] leaving the last block
    calls: list[_block_calls.BlockCall]  # recorded with a KV cache argument (replaced by a PrefixCache per suffix)
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    ok: bool = False
    note: str = ""

    def out(self, layer: int) -> torch.Tensor:
        return self.inputs[layer + 1] if layer + 1 < len(self.inputs) else self.final


def base_forward(lm: LM, ids: torch.Tensor) -> tuple[SuffixBase, torch.Tensor]:
    """One forward over ids [1, T] (with whatever hooks the caller has entered, e.g. embedding noise), recording
    each block's input and call; returns (base, logits at the last position [V]). Keys/values are recorded and
    the cut calls verified by `prepare`."""
    layers = list(lm.anatomy.layers)
    with torch.inference_mode(), _block_calls.record_calls(layers) as calls, hooks.capture({0: layers[-1]}) as fin:
        logits = lm.model(input_ids=ids, use_cache=True, **keep_logits_arg(lm.model, 1)).logits[0, -1]
    rec = [calls[i] for i in range(len(layers))]
    inputs = recorded_inputs(rec)
    for c in rec:
        c.hidden = None
    return SuffixBase(ids, inputs, fin[0], rec, [], []), logits


def _cache_slot(block: torch.nn.Module, call: _block_calls.BlockCall) -> tuple[str, Any]:
    """Where the KV cache travels in this block's call: ("kw", name) or ("arg", index)."""
    for name in _CACHE_ARGS:
        if name in call.kwargs:
            return "kw", name
    for i, a in enumerate(call.args):
        if hasattr(a, "update") and hasattr(a, "get_seq_length"):
            return "arg", i
    params = [p for p in inspect.signature(block.forward).parameters if p != "self"][1:]  # after hidden_states
    for name in _CACHE_ARGS:
        if name in params and params.index(name) < len(call.args):
            return "arg", params.index(name)
    raise RuntimeError("cannot find the KV-cache argument of the block's call")


def _mask_slot(block: torch.nn.Module, call: _block_calls.BlockCall) -> tuple[str, Any]:
    if "attention_mask" in call.kwargs:
        return "kw", "attention_mask"
    params = [p for p in inspect.signature(block.forward).parameters if p != "self"][1:]
    if "attention_mask" in params and params.index("attention_mask") < len(call.args):
        return "arg", params.index("attention_mask")
    return "kw", "attention_mask"


def _cut(x: object, t: int, n: int) -> object:
    """A recorded argument cut to the suffix positions t … n−1 (position ids/tables); others unchanged."""
    if isinstance(x, (tuple, list)):
        return type(x)(_cut(v, t, n) for v in x)
    if not isinstance(x, torch.Tensor) or x.ndim == 0 or x.ndim == 4:
        return x
    if x.ndim == 1 and x.shape[0] == n:  # cache_position
        return x[t:]
    if x.ndim == 2 and x.shape[-1] == n:  # position_ids [1, T]
        return x[:, t:]
    if x.ndim == 3 and x.shape[1] == n:  # rotary cos/sin [1, T, d_head]
        return x[:, t:]
    return x


def _suffix_mask(lm: LM, mask: object, t: int, n: int, device: torch.device) -> torch.Tensor:
    """The attention mask of queries t … n−1 over keys 0 … n−1."""
    if isinstance(mask, torch.Tensor):
        if mask.ndim != 4 or mask.shape[-2] != n:
            raise RuntimeError(f"unexpected attention mask of shape {tuple(mask.shape)}")
        return mask[:, :, t:, :]
    impl = getattr(lm.config, "_attn_implementation", None)
    if mask is None and impl == "sdpa":  # sdpa's implicit causal mask, made explicit and offset by t
        return torch.ones(n - t, n, dtype=torch.bool, device=device).tril(diagonal=t)[None, None]
    raise RuntimeError(f"cannot cut the attention mask ({type(mask).__name__}) of {impl!r} attention")


def cut_call(lm: LM, j: int, call: _block_calls.BlockCall, cache: object, t: int, n: int) -> _block_calls.BlockCall:
    """Block j's recorded call, cut to the suffix t … n−1, with `cache` in place of the model's KV cache."""
    block = lm.anatomy.layers[j]
    args = list(_cut(a, t, n) for a in call.args)
    kwargs = {k: _cut(v, t, n) for k, v in call.kwargs.items()}
    where, slot = _mask_slot(block, call)
    old = kwargs.get(slot) if where == "kw" else call.args[slot]
    new_mask = _suffix_mask(lm, old, t, n, lm.device)
    for (w, s), value in (((where, slot), new_mask), (_cache_slot(block, call), cache)):
        if w == "kw":
            kwargs[s] = value
        else:
            args[s] = value
    return _block_calls.BlockCall(tuple(args), kwargs, call.hidden_kw)


def prepare(lm: LM, base: SuffixBase) -> None:
    """Record every block's keys/values over the full sequence and check the cut calls reproduce the base run
    (sets base.ok and base.note; never raises for a model that cannot be cut)."""
    n = int(base.ids.shape[1])
    try:
        rec = _RecordingCache()
        with torch.inference_mode():
            for j, block in enumerate(lm.anatomy.layers):
                _block_calls.run_block(block, cut_call(lm, j, base.calls[j], rec, 0, n), base.inputs[j])
                if j not in rec.keys:
                    raise RuntimeError(f"block {j} never updated its KV cache")
            base.keys = [rec.keys[j] for j in range(len(base.inputs))]
            base.values = [rec.values[j] for j in range(len(base.inputs))]
            t = n // 2
            cache = PrefixCache(base.keys, base.values, t)
            for j, block in enumerate(lm.anatomy.layers):
                got = _block_calls.run_block(block, cut_call(lm, j, base.calls[j], cache, t, n), base.inputs[j][:, t:])
                ok, err = _close(got, base.out(j)[:, t:], lm.dtype)  # the resume engine's own tolerance
                if not ok:
                    raise RuntimeError(f"block {j} run on positions {t}… differs from the full run by {err:.3g}")
    except Exception as e:  # any layout the cut calls cannot follow: full-sequence rows still work
        base.ok, base.note = False, f"suffix runs unavailable ({type(e).__name__}: {str(e)[:200]})"
        return
    base.ok, base.note = True, "verified: every block run on a suffix reproduces the base run"


def suffix_clean(lm: LM, base: SuffixBase, t: int) -> Clean:
    """The base run restricted to positions t … T−1, as the `Clean` that `_engine.run_rows` resumes from."""
    n = int(base.ids.shape[1])
    cache = PrefixCache(base.keys, base.values, t)
    calls = [cut_call(lm, j, c, cache, t, n) for j, c in enumerate(base.calls)]
    return Clean(
        ids=base.ids[:, t:],
        inputs=[x[:, t:] for x in base.inputs],
        final=base.final[:, t:],
        calls=calls,
        resume_ok=True,
        resume_note=base.note,
    )
