"""Small pieces shared by the divergence analyses: argument checks, token labels, top-k and spread charts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._lm import LM
from .._validate import text_list
from ..matrix import Chart, Series

ArrayLike = Sequence[Any] | np.ndarray  # top-k ids / probabilities: lists or numpy rows

__all__ = [
    "check_max_new_tokens",
    "given",
    "selected_layers",
    "as_prompt_list",
    "check_each",
    "token_labels",
    "unique_labels",
    "topk_chart",
    "spread_chart",
    "nanmean",
]


def check_max_new_tokens(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"max_new_tokens must be an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"max_new_tokens must be at least 1 (got {n}): there is no generated token to measure")
    return int(n)


def given(**keywords: Any) -> dict[str, Any]:
    """The keywords a caller actually passed (None = not given): the old execution keywords for
    `analysis.legacy_config`."""
    return {k: v for k, v in keywords.items() if v is not None}


def selected_layers(lm: LM, layers: Any) -> list[int]:
    """The layer indices a user's `layers` selects (None: all; an int; any sequence of ints, negative from the
    end), checked by the anatomy with its messages ("layer must be an int, got 0.5")."""
    return lm.anatomy.resolve_layers(layers)


def as_prompt_list(prompt: str | Sequence[str], what: str = "prompt") -> tuple[list[str], bool]:
    """(prompts, was_single): a str is one prompt; a list/tuple of non-empty str is several (errors name the
    index of the offending prompt in the user's list)."""
    return text_list(prompt, what)


def check_each(items: Sequence[Any], single: bool, check: Any, what: str = "prompt") -> None:
    """Run `check(item)` on every item before any model time is spent; a ValueError from item i of a list is
    re-raised naming it ("prompt 1: ..."), since the check itself only ever sees one item."""
    for i, item in enumerate(items):
        try:
            check(item)
        except ValueError as e:
            if single:
                raise
            raise ValueError(f"{what} {i}: {e}") from None


def token_labels(lm: LM, ids: Sequence[int]) -> list[str]:
    """Token strings for labels (user data: the widget escapes them)."""
    return lm.token_strings(list(ids))


def unique_labels(labels: list[str], ids: list[int]) -> list[str]:
    """Bar-chart categories must be distinct: different ids that decode alike get their id appended."""
    seen: dict[str, int] = {}
    for s in labels:
        seen[s] = seen.get(s, 0) + 1
    return [f"{s} #{i}" if seen[s] > 1 else s for s, i in zip(labels, ids, strict=False)]


def topk_chart(
    lm: LM,
    title: str,
    a_ids: ArrayLike,
    a_p: ArrayLike,
    b_ids: ArrayLike,
    b_p: ArrayLike,
    a_at_b: ArrayLike,
    b_at_a: ArrayLike,
    names: tuple[str, str] = ("clean", "intervened"),
) -> tuple[Chart, Any]:
    """One bar chart over the union of two top-k lists (a's order first), both probabilities per token, and the
    same as a DataFrame. a_at_b[i] = P_a(b_ids[i]); b_at_a[i] = P_b(a_ids[i])."""
    import pandas as pd

    pa: dict[int, float] = {int(i): float(p) for i, p in zip(a_ids, a_p, strict=False)}
    pb: dict[int, float] = {int(i): float(p) for i, p in zip(b_ids, b_p, strict=False)}
    for i, p in zip(b_ids, a_at_b, strict=False):
        pa.setdefault(int(i), float(p))
    for i, p in zip(a_ids, b_at_a, strict=False):
        pb.setdefault(int(i), float(p))
    ids = [int(i) for i in a_ids] + [int(i) for i in b_ids if int(i) not in {int(x) for x in a_ids}]
    labels = unique_labels(token_labels(lm, ids), ids)
    ya, yb = [pa[i] for i in ids], [pb[i] for i in ids]
    chart = Chart(
        title,
        "bar",
        [Series(names[0], labels, ya), Series(names[1], labels, yb)],
        x_title="token",
        y_title="probability",
    )
    table = pd.DataFrame({"token": labels, "id": ids, f"p_{names[0]}": ya, f"p_{names[1]}": yb})
    return chart, table


def spread_chart(title: str, labels: list[str], values: np.ndarray, metric: str) -> tuple[Chart, Any]:
    """Per-prompt values of one cell: a bar per prompt, largest first (a histogram beyond 30 prompts) + a table."""
    import pandas as pd

    order = [i for i in np.argsort(-np.nan_to_num(values, nan=-np.inf)) if math.isfinite(values[i])]
    xs = [labels[i] for i in order]
    ys = [float(values[i]) for i in order]
    if len(order) > 30:  # raw samples (x left empty): the view bins them
        chart = Chart(title, "hist", [Series(metric, [], ys)], x_title=metric, y_title="prompts")
    else:
        chart = Chart(title, "bar", [Series(metric, xs, ys)], x_title="prompt", y_title=metric)
    table = pd.DataFrame({"prompt": xs, metric: ys})
    return chart, table


def nanmean(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean ignoring NaN (cells after an EOS); all-NaN stays NaN without a RuntimeWarning."""
    a = np.asarray(a, dtype=np.float64)
    n = np.sum(~np.isnan(a), axis=axis)
    s = np.nansum(a, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)
