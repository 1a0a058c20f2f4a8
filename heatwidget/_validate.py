"""Argument checks shared by the public entry points: one sentence naming what is wrong (and which item of a list).

Each check returns the cleaned value, so an entry point reads `T = positive_int(max_new_tokens, "max_new_tokens")`.
Checks run before any model time is spent, over the whole list, so the error names the item the user wrote (the
second prompt is "prompt 1"), not the first item of whatever batch happened to fail later.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np

__all__ = ["text_list", "token_ids", "is_bool", "positive_int", "finite_number", "optional_budget"]


def text_list(items: Any, what: str = "prompt", *, plural: str | None = None) -> tuple[list[str], bool]:
    """(texts, was_single): a str is one text; a list/tuple of non-empty str is several (errors name the index)."""
    many = plural or f"{what}s"
    if isinstance(items, str):
        if not items.strip():
            raise ValueError(f"the {what} is empty: give a non-empty str")
        return [items], True
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{many} must be a str or a list of str, got {type(items).__name__}")
    if not items:
        raise ValueError(f"no {many} given (an empty list)")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"{what} {i} has type {type(t).__name__}, not str")
        if not t.strip():
            raise ValueError(f"{what} {i} of {len(items)} is empty: give a non-empty str")
    return list(items), False


def token_ids(ids: Any, vocab_size: int, what: str = "prompt") -> list[int]:
    """A 1-D sequence (list, numpy array, tensor; or [1, n]) of integer token ids in [0, vocab_size)."""
    if hasattr(ids, "detach"):  # a torch tensor, without importing torch here
        ids = ids.detach().cpu().numpy()
    if isinstance(ids, (list, tuple)) and any(isinstance(t, str) for t in ids):
        raise TypeError(
            f"{what} is a list of str where token ids (ints) were expected: pass one prompt as a str, "
            "or token ids from the tokenizer"
        )
    arr = np.asarray(ids, dtype=object) if isinstance(ids, (list, tuple)) else np.asarray(ids)
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a str or a non-empty 1-D sequence of token ids, got shape {arr.shape}")
    out = []
    for i, t in enumerate(arr.tolist()):
        if isinstance(t, bool) or not isinstance(t, int):
            raise TypeError(f"token id {i} of the {what} is {t!r} ({type(t).__name__}): token ids are ints")
        if not 0 <= t < vocab_size:
            raise ValueError(f"token id {i} of the {what} is {t}, outside the vocabulary [0, {vocab_size})")
        out.append(t)
    return out


def is_bool(x: Any) -> bool:
    """A Python, numpy or torch boolean (a 0-d bool tensor too): operator.index would read it as 0 or 1."""
    return isinstance(x, (bool, np.bool_)) or str(getattr(x, "dtype", "")) == "torch.bool"


def positive_int(x: Any, name: str, minimum: int = 1) -> int:
    if is_bool(x):
        raise TypeError(f"{name} must be an int, got a bool ({x})")
    try:
        v = operator.index(x)  # ints, numpy and torch integers; never a float
    except TypeError:
        raise TypeError(f"{name} must be an int, got {x!r} ({type(x).__name__})") from None
    if v < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {v}")
    return v


def finite_number(x: Any, name: str, *, minimum: float | None = None, positive: bool = False) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {x!r} ({type(x).__name__})")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v}")
    if positive and not v > 0:
        raise ValueError(f"{name} must be > 0, got {v:g}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {v:g}")
    return v


def optional_budget(x: Any, name: str) -> float | None:
    """None (the default budget) or a positive finite number of megabytes."""
    return None if x is None else finite_number(x, name, positive=True)
