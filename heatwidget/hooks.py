"""Every intervention on a model's internals, as context managers that always remove their hooks.

The only module that registers hooks. Blocks may return a tensor (recent transformers) or a tuple whose first item
is the hidden state (older releases, attention modules); both are handled. Selections are (rows, positions):
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
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "Selection", "selection_mask", "edit_output", "edit_input", "skip", "zero", "replace", "add", "project_out",
    "capture", "capture_all", "block_attention", "stack", "BlockCall", "record_calls", "probe_calls", "run_block",
]

Rows = int | Sequence[int] | slice | torch.Tensor | None
Positions = int | Sequence[int] | slice | torch.Tensor | None
Selection = tuple[Rows, Positions]
EditFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


# ---- hooks that act only in the context that entered them ------------------------------------------------------

# The owners (one per entered context manager) whose hooks act in the current context. A new thread starts with
# an empty context, so another thread's forward passes never see them.
_active: contextvars.ContextVar[frozenset[_Owner]] = contextvars.ContextVar("heatwidget_active_hooks",
                                                                              default=frozenset())


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
    idx = [int(spec)] if isinstance(spec, int) or (isinstance(spec, torch.Tensor) and spec.ndim == 0) else \
        [int(i) for i in spec]
    for i in idx:
        if not -n <= i < n:
            raise IndexError(f"{what} {i} is out of range for a sequence of {n}")
        m[i] = True
    return m


def selection_mask(shape: tuple[int, int], rows: Rows = None, positions: Positions = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
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
    raise TypeError("cannot find the module's input hidden state (neither a first positional tensor nor "
                    "a hidden_states= keyword)")


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
def edit_output(module: nn.Module, fn: EditFn, *, rows: Rows = None, positions: Positions = None,
                needs_input: bool = False) -> Iterator[None]:
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
def edit_input(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], *, rows: Rows = None,
               positions: Positions = None) -> Iterator[None]:
    """Replace the module's input hidden state x by fn(x) on the selection, before the module runs."""

    def hook(_mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = _input_of(args, kwargs)
        return _with_input(args, kwargs, _blend(x, fn(x), rows, positions))

    owner = _Owner()
    handle = module.register_forward_pre_hook(owner.only_here(hook), with_kwargs=True, prepend=True)
    with _owning(owner, [handle]):
        yield


def skip(block: nn.Module, *, rows: Rows = None, positions: Positions = None) -> contextlib.AbstractContextManager:
    """Skip a residual block: its output := its input (the block's whole contribution removed)."""
    return edit_output(block, lambda h, x: x, rows=rows, positions=positions, needs_input=True)


def zero(module: nn.Module, *, rows: Rows = None, positions: Positions = None) -> contextlib.AbstractContextManager:
    """Zero the module's output (e.g. an attention or MLP sublayer: removes its write to the residual stream)."""
    return edit_output(module, lambda h, x: torch.zeros_like(h), rows=rows, positions=positions)


def replace(module: nn.Module, value: torch.Tensor, *, rows: Rows = None,
            positions: Positions = None) -> contextlib.AbstractContextManager:
    """Set the module's output to `value` (broadcast to [B, T, d]) on the selection."""
    return edit_output(module, lambda h, x: value.to(h.device, h.dtype).expand_as(h), rows=rows, positions=positions)


def add(module: nn.Module, vector: torch.Tensor, alpha: float = 1.0, *, rows: Rows = None,
        positions: Positions = None) -> contextlib.AbstractContextManager:
    """Add alpha·vector to the module's output (steering); vector broadcasts to [B, T, d]."""
    return edit_output(module, lambda h, x: h + alpha * vector.to(h.device, h.dtype), rows=rows,
                       positions=positions)


def project_out(module: nn.Module, direction: torch.Tensor, *, rows: Rows = None,
                positions: Positions = None) -> contextlib.AbstractContextManager:
    """Remove the component of the module's output along `direction` (normalised here)."""
    if direction.ndim != 1 or not torch.isfinite(direction).all() or float(direction.norm()) == 0.0:
        raise ValueError("direction must be a finite, non-zero vector [d]")

    def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        u = (direction / direction.norm()).to(h.device, h.dtype)
        return h - (h @ u)[..., None] * u

    return edit_output(module, fn, rows=rows, positions=positions)


# ---- reading ---------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def capture(modules: Mapping[str, nn.Module] | Sequence[nn.Module], what: str = "output", *,
            positions: Positions = None, detach: bool = True) -> Iterator[dict[Any, torch.Tensor]]:
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
def capture_all(modules: Mapping[str, nn.Module] | Sequence[nn.Module], what: str = "output") -> Iterator[Captured]:
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


# ---- re-running blocks from recorded calls (resuming a forward part-way) -------------------------------------

class BlockCall:
    """How the model called one decoder block, minus the hidden state: the other positional arguments and the
    keyword arguments (attention mask, position ids/embeddings, cache flags). `run_block(block, call, h)` calls
    the block again on a new hidden state, so an analysis can resume a forward from cached activations at any
    layer without re-running the layers below (the batched analyses' "staircase")."""

    __slots__ = ("args", "kwargs", "hidden_kw", "hidden")

    def __init__(self, args: tuple, kwargs: dict, hidden_kw: bool, hidden: torch.Tensor | None = None) -> None:
        self.args, self.kwargs, self.hidden_kw, self.hidden = args, kwargs, hidden_kw, hidden

    @classmethod
    def of(cls, args: tuple, kwargs: dict, keep_hidden: bool = False) -> BlockCall:
        if args and isinstance(args[0], torch.Tensor):
            return cls(tuple(args[1:]), dict(kwargs), False, args[0].detach() if keep_hidden else None)
        h = kwargs.get("hidden_states")
        if not isinstance(h, torch.Tensor):
            raise TypeError("cannot find the block's input hidden state")
        rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        return cls(tuple(args), rest, True, h.detach() if keep_hidden else None)


def run_block(block: nn.Module, call: BlockCall, h: torch.Tensor) -> torch.Tensor:
    """Call `block` on hidden state h [B, T, d] with the recorded arguments; returns the output hidden state.

    Recorded tensors with batch size 1 (masks [1, 1, T, T], rotary tables [1, T, d_head]) broadcast over B.
    Hooks registered on the block and its submodules (edits, knockouts) apply as in a normal forward.
    A call recorded with a KV cache is refused: re-running it would append to (and corrupt) that cache.
    """
    if any(hasattr(v, "get_seq_length") for v in (*call.args, *call.kwargs.values())):
        raise ValueError("this block call was recorded with a KV cache; record it from a forward with "
                         "use_cache=False to re-run the block")
    args = tuple(_for_batch(v, h) for v in call.args)
    kwargs = {k: _for_batch(v, h, k) for k, v in call.kwargs.items()}
    out = block(*args, hidden_states=h, **kwargs) if call.hidden_kw else block(h, *args, **kwargs)
    return _hidden_of(out)


def _for_batch(v: Any, h: torch.Tensor, name: str = "") -> Any:
    """A tensor recorded for a batch of 1, made to fit h's batch where broadcasting does not do it: 4-D masks
    [1, 1, T, KV] (XGLM checks the mask's batch size), Bloom's ALiBi bias [1·heads, 1, KV] (batch folded into the
    head axis) and hidden states [1, T, d] passed alongside h (Zamba concatenates the embeddings with h)."""
    b = h.shape[0]
    if b == 1 or not isinstance(v, torch.Tensor):
        return v
    if name == "alibi" and v.ndim == 3:
        return v.repeat(b, 1, 1)
    if v.ndim == 4 and v.shape[0] == 1:
        return v.expand(b, *v.shape[1:])
    if v.ndim == 3 and v.shape[0] == 1 and v.shape[1:] == h.shape[1:]:
        return v.expand(b, *v.shape[1:])
    return v


@contextlib.contextmanager
def record_calls(modules: Sequence[nn.Module], *, keep_hidden: bool = True) -> Iterator[dict[int, BlockCall]]:
    """Record each module's last call (arguments and, by default, its input hidden state) during a real forward."""
    store: dict[int, BlockCall] = {}
    owner = _Owner()
    handles = []
    for i, mod in enumerate(modules):
        def pre(_mod, args, kwargs, _i=i):
            store[_i] = BlockCall.of(args, kwargs, keep_hidden)

        handles.append(mod.register_forward_pre_hook(owner.only_here(pre), with_kwargs=True))
    with _owning(owner, handles):
        yield store


class _Stop(Exception):
    """Raised by `probe_calls` to end a probing forward before the (expensive) head runs."""


# Blocks whose forward `probe_calls` has replaced: module -> (its instance forward before, or None for the class's;
# the replacement of each probe running on it). One dispatching forward per module, installed by the first probe
# and removed by the last, so probes that overlap (other threads) never restore each other's replacement.
_probed: dict[nn.Module, tuple[Any, dict[_Owner, Callable[..., Any]]]] = {}
_probed_lock = threading.Lock()


def _dispatching_forward(mod: nn.Module) -> Callable[..., Any]:
    """A forward for `mod` that runs the replacement of the probe active in the current context, else the real one."""

    def forward(*args: Any, **kwargs: Any) -> Any:
        saved, fakes = _probed[mod]
        active = _active.get()
        for owner, fake in list(fakes.items()):
            if owner in active:
                return fake(*args, **kwargs)
        return saved(*args, **kwargs) if saved is not None else type(mod).forward(mod, *args, **kwargs)

    return forward


def _replace_forward(mod: nn.Module, owner: _Owner, fake: Callable[..., Any]) -> None:
    with _probed_lock:
        if mod not in _probed:
            # An instance attribute shadows the class's forward (nn.Module.__call__ looks up self.forward);
            # accelerate's own instance-level wrappers are saved, called through, and put back as they were.
            _probed[mod] = (mod.__dict__.get("forward"), {})
            mod.forward = _dispatching_forward(mod)
        _probed[mod][1][owner] = fake


def _restore_forward(mod: nn.Module, owner: _Owner) -> None:
    with _probed_lock:
        saved, fakes = _probed[mod]
        fakes.pop(owner, None)
        if fakes:
            return
        del _probed[mod]
        if saved is None:
            del mod.forward
        else:
            mod.forward = saved


def probe_calls(modules: Sequence[nn.Module], run: Callable[[], Any], stop: nn.Module, *,
                returns_tuple: bool = False) -> list[BlockCall]:
    """The arguments the model passes to each block for some input, at almost no cost.

    While `run()` executes (a forward of the model), every block is replaced by the identity that records its
    call, and the forward is stopped when it reaches `stop` (the final norm or the unembedding): only the
    embedding, the masks and the position tables are computed. `returns_tuple` mimics blocks that return
    (hidden, ...) tuples (older transformers). The blocks' own forward methods are restored on exit; forwards
    from other threads meanwhile run the real blocks.
    """
    store: dict[int, BlockCall] = {}
    owner = _Owner()

    def halt(*_a: Any, **_k: Any) -> None:
        raise _Stop

    handle = stop.register_forward_pre_hook(owner.only_here(halt))
    patched: list[nn.Module] = []
    try:
        for i, mod in enumerate(modules):
            def fake(*args, _i=i, **kwargs):
                call = BlockCall.of(args, kwargs)
                store[_i] = call
                h = kwargs["hidden_states"] if call.hidden_kw else args[0]
                return (h,) if returns_tuple else h

            _replace_forward(mod, owner, fake)
            patched.append(mod)
        with _owning(owner, [handle]), torch.no_grad():
            run()
    except _Stop:
        pass
    finally:
        handle.remove()
        for mod in patched:
            _restore_forward(mod, owner)
    if len(store) != len(modules):
        missing = [i for i in range(len(modules)) if i not in store]
        raise RuntimeError(f"probe_calls: blocks {missing[:5]} were not called before the stop module")
    return [store[i] for i in range(len(modules))]


# ---- attention knockout --------------------------------------------------------------------------------------------

def _mask_arg(module: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, Callable[[Any], tuple[tuple, dict]]]:
    """Find the attention_mask argument (keyword or positional) and a way to put a new one back."""
    if "attention_mask" in kwargs:
        return kwargs["attention_mask"], lambda m: (args, {**kwargs, "attention_mask": m})
    params = list(inspect.signature(module.forward).parameters)
    if "attention_mask" in params:
        i = params.index("attention_mask")
        if i < len(args):
            return args[i], lambda m: ((*args[:i], m, *args[i + 1:]), kwargs)
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
def block_attention(attn_modules: Sequence[nn.Module], queries: Positions, keys: Positions, *,
                    rows: Rows = None) -> Iterator[None]:
    """Attention knockout: the query positions cannot attend to the key positions, all heads, in these modules.

    Edits the 4D attention mask the attention module receives (eager: additive float mask → dtype min; sdpa: bool
    mask → False; no mask (sdpa's implicit causal mask) → an explicit causal mask is built first). Per-row query/key
    sets come as bool masks [B, T]. Flash/flex attention take no such mask: load with attn_implementation="eager".
    """

    def hook(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        impl = getattr(getattr(mod, "config", None), "_attn_implementation", None)
        if impl is not None and impl not in ("eager", "sdpa"):
            raise RuntimeError(f"attention knockout needs eager or sdpa attention, this model uses {impl!r}: "
                               "load it with attn_implementation='eager'")
        h = _input_of(args, kwargs)
        b, t = h.shape[0], h.shape[1]
        mask, put = _mask_arg(mod, args, kwargs)

        def knock(m: Any) -> torch.Tensor:
            if m is None:  # sdpa's implicit causal mask: make it explicit (offset by any cached prefix)
                past = _cached_length(mod, kwargs)
                m = torch.ones(t, past + t, dtype=torch.bool, device=h.device).tril(diagonal=past)[None, None]
            return _knocked_out(m, mod, b, t, rows, queries, keys)

        if isinstance(mask, dict):  # masks by kind (ZAYA: {"causal": 4D mask or None, "conv": 2D padding mask})
            edits = {k: knock(v) for k, v in mask.items()
                     if k == "causal" or (isinstance(v, torch.Tensor) and v.ndim == 4)}
            if not edits:
                raise RuntimeError(f"attention knockout edits a 4D attention mask; {type(mod).__name__} receives a "
                                   f"dict of masks {sorted(mask)} without one, which heatwidget cannot edit")
            return put({**mask, **edits})
        return put(knock(mask))

    owner = _Owner()
    # A ModuleList: the layer runs several attention sub-layers (LongCat-Flash), all knocked out alike.
    mods = [s for m in attn_modules for s in (m if isinstance(m, nn.ModuleList) else [m])]
    handles = [m.register_forward_pre_hook(owner.only_here(hook), with_kwargs=True) for m in mods]
    with _owning(owner, handles):
        yield


def _knocked_out(mask: Any, mod: nn.Module, b: int, t: int, rows: Rows, queries: Positions,
                 keys: Positions) -> torch.Tensor:
    """The 4D attention mask [B, 1, T, KV] with the (query, key) pairs of the selection blocked."""
    if not isinstance(mask, torch.Tensor):
        raise RuntimeError(f"attention knockout edits a 4D attention mask tensor; {type(mod).__name__} receives "
                           f"its mask as a {type(mask).__name__}, which heatwidget cannot edit")
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


# ---- per-row gathering and early stopping (activation collection) ---------------------------------------------

__all__ += ["capture_at", "halt_after", "ForwardHalted"]


@contextlib.contextmanager
def capture_at(modules: Mapping[str, nn.Module] | Sequence[nn.Module], index: torch.Tensor,
               what: str = "output") -> Iterator[dict[Any, torch.Tensor]]:
    """Record modules' output (or input) hidden states at per-row positions: store[key] = h[b, index[b, p]].

    index: LongTensor [B, P] (positions of each row of the batch; any order, repeats allowed). Only the gathered
    [B, P, d] is kept, so a forward over long sequences stores P vectors per row instead of T.
    """
    if what not in ("output", "input"):
        raise ValueError(f"what must be 'output' or 'input', got {what!r}")
    if index.ndim != 2 or index.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"index must be an integer tensor [batch, positions], got {index.dtype} {tuple(index.shape)}")
    items = list(modules.items()) if isinstance(modules, Mapping) else list(enumerate(modules))
    store: dict[Any, torch.Tensor] = {}
    owner = _Owner()
    handles = []

    def gather(key: Any, h: torch.Tensor) -> None:
        if h.ndim != 3 or h.shape[0] != index.shape[0]:
            raise ValueError(f"capture_at expects a [batch={index.shape[0]}, seq, d] hidden state, "
                             f"got {tuple(h.shape)}")
        idx = index.to(h.device, torch.int64)
        if int(idx.max()) >= h.shape[1] or int(idx.min()) < 0:
            raise IndexError(f"position index out of range for a sequence of {h.shape[1]} tokens")
        store[key] = h.detach().gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))

    for key, mod in items:
        if what == "output":
            handles.append(mod.register_forward_hook(owner.only_here(
                lambda _m, args, kwargs, out, _k=key: gather(_k, _hidden_of(out))), with_kwargs=True))
        else:
            handles.append(mod.register_forward_pre_hook(owner.only_here(
                lambda _m, args, kwargs, _k=key: gather(_k, _input_of(args, kwargs))), with_kwargs=True))
    with _owning(owner, handles):
        yield store


class ForwardHalted(Exception):
    """Raised by `halt_after` once the module it watches has run: the rest of the forward is not needed."""


@contextlib.contextmanager
def halt_after(module: nn.Module) -> Iterator[None]:
    """Stop the forward pass right after `module` (raise ForwardHalted, which the block absorbs).

    Enter it after the captures on the same module, so they see the output first. Collecting layers 0..l of a
    deep model then skips the layers above l and the unembedding (a [B, T, vocab] matmul).
    """

    def hook(_mod: nn.Module, args: tuple, out: Any) -> None:
        raise ForwardHalted

    owner = _Owner()
    handle = module.register_forward_hook(owner.only_here(hook))
    with _owning(owner, [handle]):
        try:
            yield
        except ForwardHalted:
            pass
