"""One analysis at a time per model.

The explorer drills on a worker thread while the user keeps running cells in the main thread, so two analyses can
ask for the same model at once. Their hooks only act in the context that registered them (see `hooks`), but the
analyses still share the module objects (e.g. `_block_calls.trace_calls` swaps block forwards while it runs), so
every analysis entry point holds the model's lock: analyses on one model run one after the other, never interleaved.
The lock is re-entrant, so an analysis that calls another (a drill-down re-running `ablation_kl`) just nests.
Plain forwards (`lm.model(...)`) take no lock; hooks isolation keeps them unchanged.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["model_lock", "locks_model"]

F = TypeVar("F", bound=Callable[..., Any])

_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()  # creating a model's lock is itself a race between threads


def _module_of(x: Any) -> nn.Module | None:
    """The nn.Module behind an `hw.LM` or a transformers model; None for anything else (e.g. a path)."""
    if isinstance(x, nn.Module):
        return x
    model = getattr(x, "model", None)
    return model if isinstance(model, nn.Module) else None


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock of `model` (an nn.Module or an `hw.LM`): `with model_lock(lm): ...` runs alone on it.

    One lock per module object, dropped with the module (weak keys).
    """
    module = _module_of(model)
    if module is None:
        raise TypeError(f"model_lock needs an nn.Module or an hw.LM, got {type(model).__name__}")
    with _locks_guard:
        lock = _locks.get(module)
        if lock is None:
            lock = _locks[module] = threading.RLock()
        return lock


def locks_model(fn: F) -> F:
    """Run `fn` holding the lock of the model passed as its first argument (or `lm=`).

    A first argument that is no model (a checkpoint path the analysis loads itself) needs no lock: nobody else
    holds that model.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        target = args[0] if args else kwargs.get("lm")
        module = _module_of(target)
        if module is None:
            return fn(*args, **kwargs)
        with model_lock(module):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
