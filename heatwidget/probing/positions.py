"""Token positions by name, as in Orgad et al. 2024 ("LLMs Know More Than They Show"): where a probe looks.

Every position is an index into one row's full sequence (prompt tokens + generated tokens, no padding):

    last_q                      prompt_len - 1        the last prompt token (predicts the first answer token)
    first_answer                prompt_len            the first generated token
    second_answer               prompt_len + 1
    exact_answer_before_first   span_first - 1        the token before the exact answer
    exact_answer_first          span_first            the exact answer's first token
    exact_answer_last           span_last             the exact answer's last token
    exact_answer_after_last     min(len-1, span_last + 1)   (the paper's clamp at the end of the sequence)
    -k                          len - k               counted from the end of the full sequence
    k >= 0                      k                     an absolute index

A position a row does not have (second_answer of a one-token answer, -8 of a 6-token sequence) is an error that
names the row, never a silent clamp: a probe on shifted tokens would measure something else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "PAPER_POSITIONS",
    "NAMED_POSITIONS",
    "normalize_positions",
    "position_label",
    "position_index",
    "position_valid",
]

NAMED_POSITIONS: tuple[str, ...] = (
    "last_q",
    "first_answer",
    "second_answer",
    "exact_answer_before_first",
    "exact_answer_first",
    "exact_answer_last",
    "exact_answer_after_last",
)
# The columns of the paper's probing heatmaps, in their order: 7 named tokens, then the last 8 tokens of the sequence.
PAPER_POSITIONS: tuple[str | int, ...] = (*NAMED_POSITIONS, *range(-8, 0))

# The paper's code spells them with a "_token" suffix (last_q_token, exact_answer_first_token, ...).
_ALIASES = {f"{n}_token": n for n in NAMED_POSITIONS}


def _one(p: object) -> str | int:
    if isinstance(p, (bool, np.bool_)):
        raise TypeError(f"position {p!r} is a bool; give a name like 'last_q' or an int like -1")
    if isinstance(p, (int, np.integer)):
        return int(p)
    if isinstance(p, str):
        s = p.strip()
        if s in NAMED_POSITIONS:
            return s
        if s in _ALIASES:
            return _ALIASES[s]
        try:
            return int(s)  # "-3" from a matrix column label
        except ValueError:
            pass
        raise ValueError(f"unknown position {p!r}; use one of {list(NAMED_POSITIONS)} or an int (-1 = last token)")
    raise TypeError(f"position must be a name or an int, got {type(p).__name__}")


def normalize_positions(positions: str | int | Sequence[str | int]) -> list[str | int]:
    """Validated positions in the given order: names (paper aliases accepted) and ints; duplicates refused."""
    if isinstance(positions, (str, int, np.integer)):
        positions = [positions]
    out = [_one(p) for p in positions]
    if not out:
        raise ValueError("positions is empty: give at least one, e.g. hw.PAPER_POSITIONS")
    if len(set(out)) != len(out):
        raise ValueError(f"positions {list(positions)} contain duplicates")
    return out


def position_label(p: str | int) -> str:
    return str(p)


def position_index(
    positions: Sequence[str | int], prompt_len: np.ndarray, seq_len: np.ndarray, span: np.ndarray | None
) -> np.ndarray:
    """Absolute token index [N, P] of each position in each row; a ValueError names the first impossible one.

    prompt_len, seq_len: [N]; span: [N, 2] inclusive (first, last) token indices of the exact answer (or None
    when no exact answer was located: then the exact_answer_* positions are refused).
    """
    prompt_len = np.asarray(prompt_len, dtype=np.int64)
    seq_len = np.asarray(seq_len, dtype=np.int64)
    pos, out = _columns(positions, prompt_len, seq_len, span)
    for j, p in enumerate(pos):
        col = out[:, j]
        bad = np.nonzero((col < 0) | (col >= seq_len))[0]
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"position {p!r} is token {int(col[i])} of row {i}, but that row has only {int(seq_len[i])} tokens "
                f"(prompt {int(prompt_len[i])} + answer {int(seq_len[i] - prompt_len[i])}); {bad.size} row(s) lack "
                "it: drop them (answers.subset(...)), generate longer answers, or choose other positions"
            )
    return out


def position_valid(
    positions: Sequence[str | int], prompt_len: np.ndarray, seq_len: np.ndarray, span: np.ndarray | None
) -> np.ndarray:
    """Bool [N, P]: whether each row has each position (the rows `position_index` would refuse, all at once)."""
    seq_len = np.asarray(seq_len, dtype=np.int64)
    _, out = _columns(positions, np.asarray(prompt_len, dtype=np.int64), seq_len, span)
    return (out >= 0) & (out < seq_len[:, None])


def _columns(
    positions: Sequence[str | int], prompt_len: np.ndarray, seq_len: np.ndarray, span: np.ndarray | None
) -> tuple[list[str | int], np.ndarray]:
    """The validated positions, and the token index [N, P] each names in each row, in range or not."""
    n = prompt_len.shape[0]
    pos = normalize_positions(positions)
    out = np.empty((n, len(pos)), dtype=np.int64)
    for j, p in enumerate(pos):
        if isinstance(p, int):
            col = seq_len + p if p < 0 else np.full(n, p, dtype=np.int64)
        elif p == "last_q":
            col = prompt_len - 1
        elif p == "first_answer":
            col = prompt_len.copy()
        elif p == "second_answer":
            col = prompt_len + 1
        else:
            if span is None:
                raise ValueError(f"position {p!r} needs exact-answer spans; these rows have none")
            sp = np.asarray(span, dtype=np.int64)
            if p == "exact_answer_before_first":
                col = sp[:, 0] - 1
            elif p == "exact_answer_first":
                col = sp[:, 0].copy()
            elif p == "exact_answer_last":
                col = np.minimum(seq_len - 1, sp[:, 1])
            else:  # exact_answer_after_last
                col = np.minimum(seq_len - 1, sp[:, 1] + 1)
        out[:, j] = col
    return pos, out
