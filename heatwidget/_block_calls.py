"""Engine internals behind the batched analyses: recording how the model calls each decoder block, re-running a
block from such a record (resuming a forward part-way), and gathering per-row positions / stopping a forward early.

Users intervene with `heatwidget.hooks`; these tools serve the analyses' engines (`divergence/_engine.py`,
`divergence/_suffix.py`, activation collection). They build on hooks' context-scoped ownership: every hook acts
only in the context (thread) that entered its manager.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .hooks import _active, _hidden_of, _input_of, _Owner, _owning

__all__ = ["BlockCall", "run_block", "record_calls", "trace_calls", "capture_at", "halt_after", "ForwardHalted"]


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
        raise ValueError(
            "this block call was recorded with a KV cache; record it from a forward with "
            "use_cache=False to re-run the block"
        )
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
    """Raised by `trace_calls` to end a tracing forward before the (expensive) head runs."""


# Blocks whose forward `trace_calls` has replaced: module -> (its instance forward before, or None for the class's;
# the replacement of each trace running on it). One dispatching forward per module, installed by the first trace
# and removed by the last, so traces that overlap (other threads) never restore each other's replacement.
_traced: dict[nn.Module, tuple[Any, dict[_Owner, Callable[..., Any]]]] = {}
_traced_lock = threading.Lock()


def _dispatching_forward(mod: nn.Module) -> Callable[..., Any]:
    """A forward for `mod` that runs the replacement of the trace active in the current context, else the real one."""

    def forward(*args: Any, **kwargs: Any) -> Any:
        saved, fakes = _traced[mod]
        active = _active.get()
        for owner, fake in list(fakes.items()):
            if owner in active:
                return fake(*args, **kwargs)
        return saved(*args, **kwargs) if saved is not None else type(mod).forward(mod, *args, **kwargs)

    return forward


def _replace_forward(mod: nn.Module, owner: _Owner, fake: Callable[..., Any]) -> None:
    with _traced_lock:
        if mod not in _traced:
            # An instance attribute shadows the class's forward (nn.Module.__call__ looks up self.forward);
            # accelerate's own instance-level wrappers are saved, called through, and put back as they were.
            _traced[mod] = (mod.__dict__.get("forward"), {})
            mod.forward = _dispatching_forward(mod)
        _traced[mod][1][owner] = fake


def _restore_forward(mod: nn.Module, owner: _Owner) -> None:
    with _traced_lock:
        saved, fakes = _traced[mod]
        fakes.pop(owner, None)
        if fakes:
            return
        del _traced[mod]
        if saved is None:
            del mod.forward
        else:
            mod.forward = saved


def trace_calls(
    modules: Sequence[nn.Module], run: Callable[[], Any], stop: nn.Module, *, returns_tuple: bool = False
) -> list[BlockCall]:
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
        raise RuntimeError(f"trace_calls: blocks {missing[:5]} were not called before the stop module")
    return [store[i] for i in range(len(modules))]


# ---- per-row gathering and early stopping (activation collection) ---------------------------------------------


@contextlib.contextmanager
def capture_at(
    modules: Mapping[Any, nn.Module] | Sequence[nn.Module], index: torch.Tensor, what: str = "output"
) -> Iterator[dict[Any, torch.Tensor]]:
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
            raise ValueError(
                f"capture_at expects a [batch={index.shape[0]}, seq, d] hidden state, got {tuple(h.shape)}"
            )
        idx = index.to(h.device, torch.int64)
        if int(idx.max()) >= h.shape[1] or int(idx.min()) < 0:
            raise IndexError(f"position index out of range for a sequence of {h.shape[1]} tokens")
        store[key] = h.detach().gather(1, idx[..., None].expand(-1, -1, h.shape[-1]))

    for key, mod in items:
        if what == "output":
            handles.append(
                mod.register_forward_hook(
                    owner.only_here(lambda _m, args, kwargs, out, _k=key: gather(_k, _hidden_of(out))), with_kwargs=True
                )
            )
        else:
            handles.append(
                mod.register_forward_pre_hook(
                    owner.only_here(lambda _m, args, kwargs, _k=key: gather(_k, _input_of(args, kwargs))),
                    with_kwargs=True,
                )
            )
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
