"""`hw.answer`: greedy answers to questions, correctness labels and exact-answer token spans (Orgad et al. 2024).

For each question: the model's greedy answer (batched, left padding, the chat template only when the tokenizer has
one); label 1 when any gold alias is a case-insensitive substring of the answer; the exact answer (the matched
alias for a correct answer, `extractor(question, answer)` or else the answer's first line for a wrong one); and its
token span, the smallest window of generated tokens whose decoding contains the exact answer (shrink from the
right, then from the left, as the paper's code does). Rows whose exact answer cannot be located are kept out of
the set, counted in `meta` and listed in `dropped`, with a warning — never silently.

A pipeline stage on the analysis contract (`heatwidget.analysis.run_stage`): the item is one batch of prompts of
similar length (`PromptBatch`), `generate_batch` the public per-item function (it runs on Ray workers too), and
the labels and spans are worked out from all answers at the end.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._limits import context_length, rows_per_forward, stop_token_ids
from .._validate import positive_int, text_list
from ..analysis import Analysis, Config, Option, Run, legacy_config, run_stage
from .positions import normalize_positions, position_index, position_valid

__all__ = ["AnswerSet", "answer", "find_span", "match_gold", "generate_batch", "PromptBatch", "ANSWER"]

Extractor = Callable[[str, str], "str | None"]


@dataclass
class AnswerSet:
    """Answers with labels and exact-answer spans; row i of every field is one question.

    ids[i] is the full sequence the model saw and produced (prompt tokens, then generated tokens up to and
    including the first end-of-sequence token), so ids[i][span[i, 0] : span[i, 1] + 1] are the exact-answer tokens.
    labels: 1 = correct, 0 = wrong. logprobs[i]: the log-probability of each generated token (greedy choice).
    index[i]: the row's position in the questions originally passed to `answer` (dropped rows leave gaps).
    """

    questions: list[str]
    golds: list[list[str]]
    answers: list[str]
    labels: np.ndarray
    exact: list[str]
    ids: list[list[int]]
    prompt_len: np.ndarray
    span: np.ndarray
    logprobs: list[np.ndarray]
    index: np.ndarray
    dropped: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.questions)

    def __repr__(self) -> str:
        n = len(self)
        acc = float(self.labels.mean()) if n else float("nan")
        return (
            f"AnswerSet({n} rows, {int(self.labels.sum())} correct ({acc:.0%}), "
            f"{len(self.dropped)} dropped (exact answer not located))"
        )

    @property
    def seq_len(self) -> np.ndarray:
        return np.array([len(x) for x in self.ids], dtype=np.int64)

    def subset(self, rows: Sequence[int] | np.ndarray) -> AnswerSet:
        """The rows `rows` (ints or a bool mask) as a new AnswerSet (dropped rows and meta carried over)."""
        idx = np.asarray(rows)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"mask has shape {idx.shape}, expected ({len(self)},)")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")

        def pick(xs: list) -> list:
            return [xs[int(i)] for i in idx]

        return AnswerSet(
            questions=pick(self.questions),
            golds=pick(self.golds),
            answers=pick(self.answers),
            labels=self.labels[idx],
            exact=pick(self.exact),
            ids=pick(self.ids),
            prompt_len=self.prompt_len[idx],
            span=self.span[idx],
            logprobs=pick(self.logprobs),
            index=self.index[idx],
            dropped=list(self.dropped),
            meta=dict(self.meta),
            tokenizer=self.tokenizer,
        )

    def positions(self, positions: Sequence[str | int]) -> np.ndarray:
        """Absolute token index [N, P] of each named position in each row (errors name impossible rows)."""
        return position_index(positions, self.prompt_len, self.seq_len, self.span)

    def tokens(self, i: int) -> list[str]:
        """Row i's tokens, each decoded on its own (user data: display as text, never as HTML)."""
        if self.tokenizer is None:
            raise ValueError("this AnswerSet has no tokenizer attached")
        return [self.tokenizer.decode([t]) for t in self.ids[i]]

    def logprob_scores(self) -> dict[str, np.ndarray]:
        """Per-row confidence scores from the model's own log-probabilities (the paper's logprob baselines):
        mean / min over the answer's generated tokens and mean over the exact-answer tokens."""
        mean, low, exact = [], [], []
        for i, lp in enumerate(self.logprobs):
            lp = np.asarray(lp, dtype=np.float64)
            p0 = int(self.prompt_len[i])
            a, b = int(self.span[i, 0]) - p0, int(self.span[i, 1]) - p0
            mean.append(lp.mean() if lp.size else np.nan)
            low.append(lp.min() if lp.size else np.nan)
            ex = lp[a : b + 1]
            exact.append(ex.mean() if ex.size else np.nan)
        return {"logprob_mean": np.array(mean), "logprob_min": np.array(low), "logprob_exact_mean": np.array(exact)}

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(
            {
                "index": self.index,
                "question": self.questions,
                "answer": self.answers,
                "correct": self.labels.astype(bool),
                "exact_answer": self.exact,
                "gold": [" | ".join(g) for g in self.golds],
                "span_first": self.span[:, 0],
                "span_last": self.span[:, 1],
                "prompt_len": self.prompt_len,
                "seq_len": self.seq_len,
            }
        )


# ---- labels and spans (pure functions, unit-tested on their own) ---------------------------------------------


def match_gold(answer_text: str, aliases: Sequence[str]) -> str | None:
    """The alias found in the answer (case-insensitive), as it is written in the answer; None if none is.

    Several matching aliases: the one that starts earliest wins, then the longest (so "New York City" beats
    "New York" at the same place).
    """
    low = answer_text.lower()
    best: tuple[int, int, str] | None = None
    for a in aliases:
        k = a.strip().lower()
        if not k:
            continue
        i = low.find(k)
        if i >= 0 and (best is None or (i, -len(k)) < (best[0], -best[1])):
            best = (i, len(k), answer_text[i : i + len(k)])
    return None if best is None else best[2]


def find_span(
    decode: Callable[[list[int]], str], ids: Sequence[int], start: int, target: str
) -> tuple[int, int] | None:
    """The smallest window [lo, hi] (inclusive, lo >= start) of `ids` whose decoding contains `target`
    (case-insensitive), or None. Shrinks from the right first (the earliest end), then from the left."""
    t = target.strip().lower()
    if not t:
        return None
    ids = list(ids)
    n = len(ids)

    def has(lo: int, hi: int) -> bool:
        return t in decode(ids[lo : hi + 1]).lower()

    if start >= n or not has(start, n - 1):
        return None
    hi = next(h for h in range(start, n) if has(start, h))
    lo = next(lo for lo in range(hi, start - 1, -1) if has(lo, hi))
    return lo, hi


# ---- generation ----------------------------------------------------------------------------------------------


class _ChosenLogprob:
    """A logits processor that records log p(chosen token) at each greedy step without keeping [B, T, V] logits.

    It runs last, on the scores greedy decoding takes the argmax of; the generation config below disables every
    score-changing processor, so these are the model's own next-token log-probabilities.
    """

    def __init__(self) -> None:
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(torch.log_softmax(scores.float(), dim=-1).max(dim=-1).values.cpu())
        return scores


def _golds_list(golds: Any, n: int) -> list[list[str]]:
    if isinstance(golds, (str, bytes)):
        raise TypeError("golds must be one gold (str or list of aliases) per question, not a single string")
    golds = list(golds)
    if len(golds) != n:
        raise ValueError(f"{n} questions but {len(golds)} golds: give exactly one gold per question")
    out = []
    for i, g in enumerate(golds):
        aliases = [g] if isinstance(g, str) else list(g)
        if not aliases or not all(isinstance(a, str) for a in aliases):
            raise TypeError(f"gold {i} must be a str or a non-empty list of str, got {g!r}")
        aliases = [a for a in aliases if a.strip()]
        if not aliases:
            raise ValueError(f"gold {i} is empty: a correct answer needs at least one non-empty alias")
        out.append(aliases)
    return out


def _prompt_ids(lm: Any, questions: list[str], chat: bool) -> tuple[list[list[int]], list[str]]:
    """Token ids of each question (in the chat template when `chat`), and the texts that were tokenized."""
    tok = lm.tokenizer
    texts = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        if chat
        else q
        for q in questions
    ]
    # The chat template already holds the special tokens; plain prompts get the tokenizer's defaults, as every
    # analysis tokenizes prompts.
    enc = tok(texts, add_special_tokens=not chat)["input_ids"]
    return [list(map(int, x)) for x in enc], texts


def _generation_config(lm: Any, max_new_tokens: int) -> Any:
    from transformers import GenerationConfig

    tok = lm.tokenizer
    stops = sorted(stop_token_ids(lm.model, tok)) or None
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        repetition_penalty=1.0,
        pad_token_id=tok.pad_token_id,
        eos_token_id=stops,
        bos_token_id=getattr(tok, "bos_token_id", None),
    )


def _generate_chunk(
    lm: Any, prompts: list[list[int]], cfg: Any, stops: set[int]
) -> tuple[list[list[int]], list[np.ndarray]]:
    """Greedy continuations of one left-padded batch, each cut after its first EOS, with log p of each token."""
    from transformers import LogitsProcessorList

    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for r, p in enumerate(prompts):  # left padding: every row's next token is at the same column
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    rec = _ChosenLogprob()
    out = lm.model.generate(
        input_ids=ids.to(lm.device),
        attention_mask=mask.to(lm.device),
        generation_config=cfg,
        logits_processor=LogitsProcessorList([rec]),
    )
    seqs = (out.sequences if hasattr(out, "sequences") else out)[:, width:].cpu()
    steps = torch.stack(rec.steps, dim=1) if rec.steps else torch.zeros(len(prompts), 0)
    gen, lps = [], []
    for r in range(len(prompts)):
        row = seqs[r].tolist()
        end = next((k + 1 for k, t in enumerate(row) if t in stops), len(row))  # keep the first EOS
        gen.append(row[:end])
        lps.append(steps[r, :end].numpy().astype(np.float32))
    return gen, lps


@torch.inference_mode()
def _generate(
    lm: Any, prompts: list[list[int]], max_new_tokens: int, batch_size: int
) -> tuple[list[list[int]], list[np.ndarray]]:
    """Greedy answers to `prompts` in batches of `batch_size` prompts of similar length (less padding)."""
    cfg, stops = _generation_config(lm, max_new_tokens), stop_token_ids(lm.model, lm.tokenizer)
    order = np.argsort([-len(p) for p in prompts], kind="stable")
    gen: list[list[int]] = [[] for _ in prompts]
    lps: list[np.ndarray] = [np.zeros(0) for _ in prompts]
    for k in range(0, len(order), batch_size):
        chunk = order[k : k + batch_size]
        g, lp = _generate_chunk(lm, [prompts[i] for i in chunk], cfg, stops)
        for i, gi, li in zip(chunk, g, lp, strict=True):
            gen[i], lps[i] = gi, li
    return gen, lps


# ---- the stage: items, per item, reduce -------------------------------------------------------------------------


@dataclass
class PromptBatch:
    """One item of answer: prompts of similar length, generated as one batch; `rows` are their question indices."""

    rows: list[int]
    prompts: list[list[int]]


def generate_batch(lm: Any, item: PromptBatch, *, max_new_tokens: int = 24) -> tuple[list[list[int]], list]:
    """answer's per-item step: the batch's greedy answers (token ids, each up to its first EOS) and the
    log-probability of each generated token."""
    return _generate(lm, item.prompts, max_new_tokens, batch_size=len(item.prompts))


def _questions_and_golds(questions: Any, golds: Any) -> tuple[list[str], list[list[str]]]:
    qs = list(questions)
    if not qs:
        raise ValueError("no questions given")
    if all(isinstance(q, dict) for q in qs):
        if golds is None:
            lacking = [i for i, q in enumerate(qs) if "gold" not in q]
            if lacking:
                raise ValueError(
                    f"question dict {lacking[0]} has no 'gold' key ({len(lacking)} of {len(qs)} lack "
                    "one): give each a gold, or pass golds="
                )
            golds = [q["gold"] for q in qs]
        lacking = [i for i, q in enumerate(qs) if "question" not in q]
        if lacking:
            raise ValueError(
                f"question dict {lacking[0]} has no 'question' key (the prompt to feed; "
                f"{len(lacking)} of {len(qs)} lack one)"
            )
        qs = [q["question"] for q in qs]
    qs = text_list(qs, "question")[0]
    if golds is None:
        raise ValueError("golds is missing: give one gold answer (or list of aliases) per question")
    return qs, _golds_list(golds, len(qs))


def _use_chat(lm: Any, chat_template: bool | None) -> bool:
    has = bool(getattr(lm.tokenizer, "chat_template", None))
    if chat_template and not has:
        raise ValueError("chat_template=True, but this tokenizer has no chat template")
    return has if chat_template is None else bool(chat_template)


def _items(
    lm: Any,
    questions: Any,
    golds: Any,
    extractor: Any,
    chat_template: bool | None,
    required_positions: Any,
    state: dict[str, Any],
    *,
    max_new_tokens: int,
    batch_size: int | None,
) -> list[PromptBatch]:
    """Every check before generating; the prompts in batches of similar length. `state` keeps the checked
    questions, golds and prompts for `_reduce`."""
    qs, gold_lists = _questions_and_golds(questions, golds)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if batch_size is not None:
        positive_int(batch_size, "batch_size")
    if lm.tokenizer is None:
        raise ValueError("this LM has no tokenizer: pass one to LM.wrap(model, tokenizer)")
    chat = _use_chat(lm, chat_template)
    prompts, texts = _prompt_ids(lm, qs, chat)
    limit = context_length(lm.config)
    longest = max(len(p) for p in prompts)
    if limit is not None and longest + max_new_tokens > limit:
        raise ValueError(
            f"the longest prompt is {longest} tokens; with max_new_tokens={max_new_tokens} that exceeds "
            f"the model's context of {limit} tokens"
        )
    if extractor is not None and not callable(extractor):
        raise TypeError("extractor must be a callable extractor(question, answer) -> str | None")
    if required_positions is not None:
        normalize_positions(required_positions)
    state.update(questions=qs, golds=gold_lists, prompts=prompts, texts=texts, chat=chat)
    if batch_size is None:
        batch_size = rows_per_forward(lm, longest + max_new_tokens, kv_cache=True)
    order = np.argsort([-len(p) for p in prompts], kind="stable")  # similar lengths together: less padding
    return [
        PromptBatch([int(i) for i in order[k : k + batch_size]], [prompts[i] for i in order[k : k + batch_size]])
        for k in range(0, len(order), batch_size)
    ]


def _exact_answer(q: str, text: str, hit: str | None, extractor: Extractor | None, i: int) -> str:
    """The matched alias; for a wrong answer the extractor's pick, else the answer's first non-empty line."""
    if hit is not None:
        return hit
    if extractor is not None:
        exact = extractor(q, text)
        if exact is not None and not isinstance(exact, str):
            raise TypeError(
                f"extractor returned a value of type {type(exact).__name__} for question {i}, not a str or None"
            )
        return exact or ""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _label_rows(
    lm: Any, st: dict[str, Any], gen: list[list[int]], lps: list[np.ndarray], extractor: Extractor | None
) -> AnswerSet:
    """Labels, exact answers and their spans; rows whose exact answer cannot be located go to `dropped`."""
    tok = lm.tokenizer

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    keep: list[int] = []
    dropped: list[dict[str, Any]] = []
    answers, labels, exacts, spans = [], [], [], []
    for i, (q, g, p, a_ids) in enumerate(zip(st["questions"], st["golds"], st["prompts"], gen, strict=True)):
        text = decode(a_ids)
        hit = match_gold(text, g)
        exact = _exact_answer(q, text, hit, extractor, i)
        span = find_span(decode, p + a_ids, len(p), exact) if exact else None
        if span is None:
            reason = (
                "empty answer"
                if not text.strip()
                else "no exact answer"
                if not exact
                else "exact answer not found in the answer's tokens"
            )
            dropped.append(dict(index=i, question=q, answer=text, exact_answer=exact, reason=reason))
            continue
        keep.append(i)
        answers.append(text)
        labels.append(int(hit is not None))
        exacts.append(exact)
        spans.append(span)
    return AnswerSet(
        questions=[st["questions"][i] for i in keep],
        golds=[st["golds"][i] for i in keep],
        answers=answers,
        labels=np.array(labels, dtype=np.int64),
        exact=exacts,
        ids=[st["prompts"][i] + gen[i] for i in keep],
        prompt_len=np.array([len(st["prompts"][i]) for i in keep], dtype=np.int64),
        span=np.array(spans, dtype=np.int64).reshape(-1, 2),
        logprobs=[lps[i] for i in keep],
        index=np.array(keep, dtype=np.int64),
        dropped=dropped,
        tokenizer=tok,
    )


def _require_positions(res: AnswerSet, required: Sequence[str | int]) -> AnswerSet:
    """Drop (and list in `dropped`) the rows that lack one of the `required` positions, each under the first
    position it lacks."""
    pos = normalize_positions(required)
    has = position_valid(pos, res.prompt_len, res.seq_len, res.span)  # [N, P], one pass (not one per row)
    dropped = res.dropped
    ok = np.ones(len(res), dtype=bool)
    for j, p in enumerate(pos):
        for r in np.nonzero(ok & ~has[:, j])[0]:
            dropped.append(
                dict(
                    index=int(res.index[r]),
                    question=res.questions[r],
                    answer=res.answers[r],
                    exact_answer=res.exact[r],
                    reason=f"no token at position {p!r}",
                )
            )
        ok &= has[:, j]
    out = res.subset(ok)
    out.dropped = dropped
    return out


def _reduce(run: Run) -> AnswerSet:
    st, lm = run.inputs["state"], run.lm
    n = len(st["questions"])
    gen: list[list[int]] = [[] for _ in range(n)]
    lps: list[np.ndarray] = [np.zeros(0) for _ in range(n)]
    for item, (g, lp) in zip(run.items, run.results, strict=True):
        for i, gi, li in zip(item.rows, g, lp, strict=True):
            gen[i], lps[i] = gi, li
    extractor = run.inputs["extractor"]
    res = _label_rows(lm, st, gen, lps, extractor)
    if run.inputs["required_positions"] is not None:
        res = _require_positions(res, run.inputs["required_positions"])
    dropped = res.dropped
    res.meta = dict(
        model=lm.display_name,
        model_path=lm.name,
        n_total=n,
        n_kept=len(res),
        n_dropped=len(dropped),
        n_correct=int(res.labels.sum()),
        max_new_tokens=run.options["max_new_tokens"],
        chat_template=st["chat"],
        extractor=getattr(extractor, "__name__", repr(extractor)) if extractor else "first line",
        prompts=st["texts"] if st["chat"] else None,
        executor=run.config.executor,
    )
    if dropped:
        reasons: dict[str, int] = {}
        for d in dropped:
            reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
        res.meta["dropped_reasons"] = reasons
        warnings.warn(f"hw.answer: {len(dropped)} of {n} rows kept out ({reasons}); see answers.dropped", stacklevel=4)
    return res


ANSWER = Analysis(
    name="answer",
    options=(
        Option("max_new_tokens", 24, kind=int, doc="the longest answer, in tokens"),
        Option(
            "batch_size",
            None,
            kind=int,
            nullable=True,
            doc="prompts per generate call (None: as many as fit hw._limits.AUTO_BATCH_BYTES, at most 256)",
        ),
    ),
    items=_items,
    per_item=generate_batch,
    reduce=_reduce,
)


def answer(
    lm: Any,
    questions: Sequence[str] | Sequence[dict],
    golds: Sequence[str | Sequence[str]] | None = None,
    max_new_tokens: int = 24,
    extractor: Extractor | None = None,
    *,
    batch_size: int | None = None,
    chat_template: bool | None = None,
    required_positions: Sequence[str | int] | None = None,
    config: Config | dict[str, Any] | None = None,
    **execution: Any,
) -> AnswerSet:
    """Greedy answers, labels and exact-answer spans for `questions` (see the module docstring).

    questions: prompts (str), or dicts with "question" and "gold" (e.g. `hw.demo_questions()`; then golds may be
    omitted). golds: one per question, a str or a list of aliases. extractor(question, answer) -> exact answer for
    wrong answers (a substring of the answer; None / "" = no answer); default: the answer's first line.
    chat_template: None = use it when the tokenizer has one. required_positions: also drop (and count) rows that
    lack one of these positions (e.g. hw.PAPER_POSITIONS: a one-token answer has no "second_answer").
    batch_size: prompts per `generate` call; None sizes it from the model (all 256 at once for the demo model, a
    few for a 70B one: see `hw._limits.rows_per_forward`). The answers do not depend on it.
    Execution: `hw.config(...)` or `config=` (executor="ray": batches generated on model replicas).
    """
    inputs: dict[str, Any] = dict(
        questions=questions,
        golds=golds,
        extractor=extractor,
        chat_template=chat_template,
        required_positions=required_positions,
        state={},
    )
    return run_stage(
        ANSWER,
        lm,
        inputs,
        {"max_new_tokens": max_new_tokens, "batch_size": batch_size},
        legacy_config(config, execution, "answer"),
    )
