"""Every intervention on a model's internals, as context managers that always remove their hooks.

With `_block_calls` (the engines' internals, built on it), the only module that registers hooks. Blocks may return
a tensor (recent transformers) or a tuple whose first item is the hidden state (older releases, attention
modules); both are handled. Selections are (rows, positions):
`rows` picks batch rows, `positions` picks token positions of the current forward's input (ints, negative ints,
a slice, or a bool mask [T] or [B, T] for per-row positions such as subject tokens). Interventions are computed
on the full tensor and blended in with `torch.where`, so one batched forward can carry a different intervention
in each row (the basis of the batched analyses). Edits are registered ahead of captures (prepend), so a capture
always sees the edited value whichever context was entered first.

Every hook acts only in the context that entered its manager (a `contextvars` context: the thread, or the asyncio
task, that ran the `with`): a forward pass run meanwhile by another thread on the same model, such as the user's
own cell while the explorer drills on its worker thread, goes through the hooks unchanged. Nested managers in one
thread all act, as before.

    with hooks.skip(lm.anatomy.layers[3]):                  # block output := block input
        logits = lm.model(**enc).logits
    with hooks.capture({"l3": lm.anatomy.layers[3]}) as acts:
        lm.model(**enc)
    acts["l3"]                                             # [B, T, d]
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "Selection",
    "selection_mask",
    "edit_output",
    "edit_input",
    "skip",
    "zero",
    "replace",
    "add",
    "project_out",
    "capture",
    "capture_all",
    "block_attention",
    "stack",
]

# Engine internals that lived here before (recording and re-running block calls, per-row gathering, early
# stopping) are in `heatwidget._block_calls`; the old names still resolve, for code written against them.
_MOVED = {
    "BlockCall": "BlockCall",
    "run_block": "run_block",
    "record_calls": "record_calls",
    "probe_calls": "trace_calls",
    "capture_at": "capture_at",
    "halt_after": "halt_after",
    "ForwardHalted": "ForwardHalted",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from . import _block_calls

        return getattr(_block_calls, _MOVED[name])
    raise AttributeError(f"module 'heatwidget.hooks' has no attribute {name!r}")


Rows = int | Sequence[int] | slice | torch.Tensor | None
Positions = int | Sequence[int] | slice | torch.Tensor | None
Selection = tuple[Rows, Positions]
EditFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


# ---- hooks that act only in the context that entered them ------------------------------------------------------

# The owners (one per entered context manager) whose hooks act in the current context. A new thread starts with
# an empty context, so another thread's forward passes never see them.
_active: contextvars.ContextVar[frozenset[_Owner]] = contextvars.ContextVar(
    "heatwidget_active_hooks", default=frozenset()
)


class _Owner:
    """The identity of one entered context manager; its hooks act only while it is active in the current context."""

    __slots__ = ("__weakref__",)

    def active(self) -> bool:
        return self in _active.get()

    def only_here(self, hook: Callable[..., Any]) -> Callable[..., Any]:
        """`hook`, acting only in a context where this owner is active; elsewhere it returns None (no change)."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return hook(*args, **kwargs) if self.active() else None

        return guarded


@contextlib.contextmanager
def _owning(owner: _Owner, handles: list) -> Iterator[None]:
    """Make `owner` active in this context for the block; then deactivate it and remove every hook handle, also on
    exceptions (every context manager here uses it)."""
    _active.set(_active.get() | {owner})
    try:
        yield
    finally:
        # Set, not reset: managers exited out of order (by hand) must not re-activate each other.
        _active.set(_active.get() - {owner})
        for h in handles:
            h.remove()


# ---- selections ------------------------------------------------------------------------------------------------


def _index_mask(spec: Any, n: int, device: torch.device, what: str) -> torch.Tensor:
    """A bool vector [n] from None / int / ints / slice / bool tensor."""
    if spec is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    if isinstance(spec, torch.Tensor) and spec.dtype == torch.bool:
        if spec.shape != (n,):
            raise ValueError(f"{what} mask has shape {tuple(spec.shape)}, expected ({n},)")
        return spec.to(device)
    m = torch.zeros(n, dtype=torch.bool, device=device)
    if isinstance(spec, slice):
        m[spec] = True
        return m
    idx = (
        [int(spec)]
        if isinstance(spec, int) or (isinstance(spec, torch.Tensor) and spec.ndim == 0)
        else [int(i) for i in spec]
    )
    for i in idx:
        if not -n <= i < n:
            raise IndexError(f"{what} {i} is out of range for a sequence of {n}")
        m[i] = True
    return m


def selection_mask(
    shape: tuple[int, int], rows: Rows = None, positions: Positions = None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The bool mask [B, T] of the cells a (rows, positions) selection picks."""
    b, t = shape
    device = torch.device(device)
    if isinstance(positions, torch.Tensor) and positions.dtype == torch.bool and positions.ndim == 2:
        if tuple(positions.shape) != (b, t):
            raise ValueError(f"positions mask has shape {tuple(positions.shape)}, expected {(b, t)}")
        pos = positions.to(device)
    else:
        pos = _index_mask(positions, t, device, "position")[None, :].expand(b, t)
    return pos & _index_mask(rows, b, device, "row")[:, None]


# ---- getting at a module's hidden state, whatever it returns -----------------------------------------------------


def _hidden_of(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and isinstance(out.get("hidden_states", None), torch.Tensor):
        return out["hidden_states"]
    raise TypeError(f"cannot find a hidden-state tensor in a module output of type {type(out).__name__}")


def _with_hidden(out: Any, h: torch.Tensor) -> Any:
    if isinstance(out, torch.Tensor):
        return h
    if isinstance(out, tuple):
        return (h, *out[1:])
    if isinstance(out, list):
        return [h, *out[1:]]
    out["hidden_states"] = h  # Mapping case (ModelOutput)
    return out


def _input_of(args: tuple, kwargs: dict) -> torch.Tensor:
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    h = kwargs.get("hidden_states")
    if isinstance(h, torch.Tensor):
        return h
    raise TypeError(
        "cannot find the module's input hidden state (neither a first positional tensor nor a hidden_states= keyword)"
    )


def _with_input(args: tuple, kwargs: dict, h: torch.Tensor) -> tuple[tuple, dict]:
    if args and isinstance(args[0], torch.Tensor):
        return (h, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": h}


def _blend(old: torch.Tensor, new: torch.Tensor, rows: Rows, positions: Positions) -> torch.Tensor:
    if rows is None and positions is None:
        return new.to(old.dtype).expand_as(old)
    if old.ndim != 3:
        raise ValueError(f"row/position selections need a [batch, seq, d] hidden state, got {tuple(old.shape)}")
    m = selection_mask((old.shape[0], old.shape[1]), rows, positions, old.device)
    return torch.where(m[..., None], new.to(old.dtype), old)


# ---- edits -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def edit_output(
    module: nn.Module, fn: EditFn, *, rows: Rows = None, positions: Positions = None, needs_input: bool = False
) -> Iterator[None]:
    """Replace the module's output hidden state h by fn(h, x) on the selection (x = its input if needs_input)."""

    def hook(_mod: nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        h = _hidden_of(out)
        x = _input_of(args, kwargs) if needs_input else None
        return _with_hidden(out, _blend(h, fn(h, x), rows, positions))

    owner = _Owner()
    handle = module.register_forward_hook(owner.only_here(hook), with_kwargs=True, prepend=True)
    with _owning(owner, [handle]):
        yield


@contextlib.contextmanager
def edit_input(
    module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], *, rows: Rows = None, positions: Positions = None
) -> Iterator[None]:
    """Replace the module's input hidden state x by fn(x) on the selection, before the module runs."""

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = _input_of(args, kwargs)
        return _with_input(args, kwargs, _blend(x, fn(x), rows, positions))

    owner = _Owner()
    handle = module.register_forward_pre_hook(owner.only_here(hook), with_kwargs=True, prepend=True)
    with _owning(owner, [handle]):
        yield


def _block_input(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
    assert x is not None  # registered with needs_input=True
    return x


def skip(block: nn.Module, *, rows: Rows = None, positions: Positions = None) -> contextlib.AbstractContextManager:
    """Skip a residual block: its output := its input (the block's whole contribution removed)."""
    return edit_output(block, _block_input, rows=rows, positions=positions, needs_input=True)


def zero(module: nn.Module, *, rows: Rows = None, positions: Positions = None) -> contextlib.AbstractContextManager:
    """Zero the module's output (e.g. an attention or MLP sublayer: removes its write to the residual stream)."""
    return edit_output(module, lambda h, x: torch.zeros_like(h), rows=rows, positions=positions)


def replace(
    module: nn.Module, value: torch.Tensor, *, rows: Rows = None, positions: Positions = None
) -> contextlib.AbstractContextManager:
    """Set the module's output to `value` (broadcast to [B, T, d]) on the selection."""
    return edit_output(module, lambda h, x: value.to(h.device, h.dtype).expand_as(h), rows=rows, positions=positions)


def add(
    module: nn.Module, vector: torch.Tensor, alpha: float = 1.0, *, rows: Rows = None, positions: Positions = None
) -> contextlib.AbstractContextManager:
    """Add alpha·vector to the module's output (steering); vector broadcasts to [B, T, d]."""
    return edit_output(module, lambda h, x: h + alpha * vector.to(h.device, h.dtype), rows=rows, positions=positions)


def project_out(
    module: nn.Module, direction: torch.Tensor, *, rows: Rows = None, positions: Positions = None
) -> contextlib.AbstractContextManager:
    """Remove the component of the module's output along `direction` (normalised here)."""
    if direction.ndim != 1 or not torch.isfinite(direction).all() or float(direction.norm()) == 0.0:
        raise ValueError("direction must be a finite, non-zero vector [d]")

    def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        u = (direction / direction.norm()).to(h.device, h.dtype)
        return h - (h @ u)[..., None] * u

    return edit_output(module, fn, rows=rows, positions=positions)


# ---- reading ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def capture(
    modules: Mapping[Any, nn.Module] | Sequence[nn.Module],
    what: str = "output",
    *,
    positions: Positions = None,
    detach: bool = True,
) -> Iterator[dict[Any, torch.Tensor]]:
    """Record modules' output (or input) hidden states into a dict keyed like `modules` (name or index).

    `positions` (ints/slice, not per-row masks) keeps only those positions, so long sequences cost little memory.
    A module that runs several times (generation) keeps its last call; use `capture_all` for every call.
    """
    if what not in ("output", "input"):
        raise ValueError(f"what must be 'output' or 'input', got {what!r}")
    items = list(modules.items()) if isinstance(modules, Mapping) else list(enumerate(modules))
    store: dict[Any, torch.Tensor] = {}
    owner = _Owner()
    handles = []
    for key, mod in items:

        def hook(_mod, args, kwargs, out=None, _key=key):
            h = _hidden_of(out) if what == "output" else _input_of(args, kwargs)
            if positions is not None:
                h = h[:, positions]
            store[_key] = h.detach() if detach else h

        if what == "output":
            handles.append(mod.register_forward_hook(owner.only_here(hook), with_kwargs=True))
        else:  # called without `out`
            handles.append(mod.register_forward_pre_hook(owner.only_here(hook), with_kwargs=True))
    with _owning(owner, handles):
        yield store


class Captured(dict):
    """What `capture_all` returns: key -> list of tensors (one per call), plus whether outputs were tuples."""

    tuple_output: dict[Any, bool]


@contextlib.contextmanager
def capture_all(modules: Mapping[Any, nn.Module] | Sequence[nn.Module], what: str = "output") -> Iterator[Captured]:
    """Like `capture`, but every call is kept (a list per key): e.g. the prompt step and each cached step of a
    generation, which concatenate along the sequence axis to the activations of the whole generated sequence."""
    if what not in ("output", "input"):
        raise ValueError(f"what must be 'output' or 'input', got {what!r}")
    items = list(modules.items()) if isinstance(modules, Mapping) else list(enumerate(modules))
    store = Captured({key: [] for key, _ in items})
    store.tuple_output = {}
    owner = _Owner()
    handles = []
    for key, mod in items:
        if what == "output":

            def hook(_mod, args, kwargs, out, _key=key):
                store.tuple_output[_key] = isinstance(out, tuple)
                store[_key].append(_hidden_of(out).detach())

            handles.append(mod.register_forward_hook(owner.only_here(hook), with_kwargs=True))
        else:

            def pre(_mod, args, kwargs, _key=key):
                store[_key].append(_input_of(args, kwargs).detach())

            handles.append(mod.register_forward_pre_hook(owner.only_here(pre), with_kwargs=True))
    with _owning(owner, handles):
        yield store


# ---- attention knockout --------------------------------------------------------------------------------------------


def _mask_arg(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, Callable[[Any], tuple[tuple, dict]]]:
    """Find the attention_mask argument (keyword or positional) and a way to put a new one back."""
    if "attention_mask" in kwargs:
        return kwargs["attention_mask"], lambda m: (args, {**kwargs, "attention_mask": m})
    params = list(inspect.signature(module.forward).parameters)
    if "attention_mask" in params:
        i = params.index("attention_mask")
        if i < len(args):
            return args[i], lambda m: ((*args[:i], m, *args[i + 1 :]), kwargs)
    return None, lambda m: (args, {**kwargs, "attention_mask": m})


# The name a block/attention module receives its KV cache under, across transformers versions and families.
_CACHE_KWARGS = ("cache", "past_key_values", "past_key_value", "layer_past")


def _cached_length(module: nn.Module, kwargs: dict) -> int:
    """How many cached positions precede this call's queries (0 without a cache)."""
    cache = next((kwargs[k] for k in _CACHE_KWARGS if kwargs.get(k) is not None), None)
    if cache is None or not hasattr(cache, "get_seq_length"):
        return 0
    return int(cache.get_seq_length(getattr(module, "layer_idx", 0) or 0))


@contextlib.contextmanager
def block_attention(
    attn_modules: Sequence[nn.Module], queries: Positions, keys: Positions, *, rows: Rows = None
) -> Iterator[None]:
    """Attention knockout: the query positions cannot attend to the key positions, all heads, in these modules.

    Edits the 4D attention mask the attention module receives (eager: additive float mask → dtype min; sdpa: bool
    mask → False; no mask (sdpa's implicit causal mask) → an explicit causal mask is built first). Per-row query/key
    sets come as bool masks [B, T]. Flash/flex attention take no such mask: load with attn_implementation="eager".
    """

    def hook(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        impl = getattr(getattr(mod, "config", None), "_attn_implementation", None)
        if impl is not None and impl not in ("eager", "sdpa"):
            raise RuntimeError(
                f"attention knockout needs eager or sdpa attention, this model uses {impl!r}: "
                "load it with attn_implementation='eager'"
            )
        h = _input_of(args, kwargs)
        b, t = h.shape[0], h.shape[1]
        mask, put = _mask_arg(mod, args, kwargs)

        def knock(m: Any) -> torch.Tensor:
            if m is None:  # sdpa's implicit causal mask: make it explicit (offset by any cached prefix)
                past = _cached_length(mod, kwargs)
                m = torch.ones(t, past + t, dtype=torch.bool, device=h.device).tril(diagonal=past)[None, None]
            return _knocked_out(m, mod, b, t, rows, queries, keys)

        if isinstance(mask, dict):  # masks by kind (ZAYA: {"causal": 4D mask or None, "conv": 2D padding mask})
            edits = {
                k: knock(v) for k, v in mask.items() if k == "causal" or (isinstance(v, torch.Tensor) and v.ndim == 4)
            }
            if not edits:
                raise RuntimeError(
                    f"attention knockout edits a 4D attention mask; {type(mod).__name__} receives a "
                    f"dict of masks {sorted(mask)} without one, which heatwidget cannot edit"
                )
            return put({**mask, **edits})
        return put(knock(mask))

    owner = _Owner()
    # A ModuleList: the layer runs several attention sub-layers (LongCat-Flash), all knocked out alike.
    mods = [s for m in attn_modules for s in (m if isinstance(m, nn.ModuleList) else [m])]
    handles = [m.register_forward_pre_hook(owner.only_here(hook), with_kwargs=True) for m in mods]
    with _owning(owner, handles):
        yield


def _knocked_out(
    mask: Any, mod: nn.Module, b: int, t: int, rows: Rows, queries: Positions, keys: Positions
) -> torch.Tensor:
    """The 4D attention mask [B, 1, T, KV] with the (query, key) pairs of the selection blocked."""
    if not isinstance(mask, torch.Tensor):
        raise RuntimeError(
            f"attention knockout edits a 4D attention mask tensor; {type(mod).__name__} receives "
            f"its mask as a {type(mask).__name__}, which heatwidget cannot edit"
        )
    if mask.ndim != 4:
        raise RuntimeError(f"expected a 4D attention mask, got shape {tuple(mask.shape)}")
    kv, dev = mask.shape[-1], mask.device
    q_sel = selection_mask((b, t), rows, queries, dev)
    k_sel = selection_mask((b, t), rows, keys, dev)
    if kv != t:  # a cached prefix: key positions index the full key length, queries the current chunk
        k_sel = torch.cat([torch.zeros(b, kv - t, dtype=torch.bool, device=dev), k_sel], dim=1)
    blocked = (q_sel[:, :, None] & k_sel[:, None, :])[:, None]  # [B, 1, T, KV]
    mask = mask.expand(b, mask.shape[1], t, kv)
    if mask.dtype == torch.bool:
        return mask & ~blocked
    return mask.masked_fill(blocked, torch.finfo(mask.dtype).min)


def stack(*managers: contextlib.AbstractContextManager) -> contextlib.ExitStack:
    """Enter several hook context managers as one (all removed together, also on exceptions)."""
    es = contextlib.ExitStack()
    try:
        for m in managers:
            es.enter_context(m)
    except BaseException:
        es.close()
        raise
    return es
