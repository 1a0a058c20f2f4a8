"""`hw.knockout_js`: Jensen–Shannon divergence by layer for Subj. / Attn. / Last. (Cheang et al. 2025, Fig. 2).

P = clean next-token distribution at the last prompt position. For each layer l: Subj. corrupts block l's output at
the subject's token positions; Attn. blocks attention from every subject position to the last position (all heads)
in layers max(0, l−w//2) … min(L−1, l+w//2); Last. corrupts block l's output at the last position. Q = resulting
distribution, JS(P, Q) in nats; cells are means over prompts. All 3·L variants of a prompt run as one batched pass
resuming from the clean activations (Subj./Last. rows start at block l+1, Attn. rows at the window's first block).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._lm import LM
from .._offload import live_param
from .._validate import finite_number, optional_budget, positive_int, text_list
from ..analysis import Analysis, Config, Option, Run, Table, current_config, legacy_config, run_analysis
from ..matrix import Detail, HeatMatrix, suggests_log_scale
from . import _common as common
from ._engine import Clean, Edit, RowSpec, block_evaluations, forward_clean, run_rows
from ._stats import js_div, log_probs
from ._stats import top_k as topk_of
from .lens import logit_lens

__all__ = [
    "knockout_js",
    "knockout_prompt",
    "KnockoutItem",
    "KnockoutResult",
    "KNOCKOUT",
    "subject_positions",
    "corruption_noise",
    "window_layers",
    "KNOCKOUT_ROWS",
    "SITES",
    "CORRUPTIONS",
    "NOISE_REFS",
]

KNOCKOUT_ROWS = ("Subj.", "Attn.", "Last.")  # the matrix's rows: where the knockout acts
SITES = KNOCKOUT_ROWS  # the name these rows had before (activation collection has its own SITES)
CORRUPTIONS = ("noise", "zero", "mean")
NOISE_REFS = ("embedding", "residual")  # what the noise std is a multiple of


def subject_positions(lm: LM, prompt: str, subject: str, ids: torch.Tensor | None = None) -> list[int]:
    """Token positions overlapping the first occurrence of `subject` in `prompt` (by the tokenizer's character
    offsets; special tokens, which cover no characters, never count). Raises if the subject is absent."""
    if not isinstance(subject, str) or not subject.strip():
        raise ValueError(f"subject must be a non-empty str, got {subject!r}")
    start = prompt.find(subject)
    if start < 0:
        raise ValueError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    end = start + len(subject)
    spans = _char_spans(lm, prompt, ids)
    pos = [i for i, (a, b) in enumerate(spans) if b > a and a < end and b > start]
    if not pos:
        raise ValueError(f"subject {subject!r} covers no token of prompt {prompt!r}")
    return pos


def _char_spans(lm: LM, prompt: str, ids: torch.Tensor | None) -> list[tuple[int, int]]:
    tok = lm.tokenizer
    want = None if ids is None else ids[0].tolist()
    try:
        enc = tok(prompt, return_offsets_mapping=True)
        if want is None or list(enc["input_ids"]) == want:
            return [(int(o[0]), int(o[1])) for o in enc["offset_mapping"]]
    except (NotImplementedError, ValueError, TypeError):
        pass  # slow (Python) tokenizers have no offsets: fall back to decoding prefixes below
    ids_l = want if want is not None else tok(prompt)["input_ids"]
    spans, prev = [], 0
    for k in range(1, len(ids_l) + 1):
        n = len(tok.decode(ids_l[:k], skip_special_tokens=True))
        spans.append((prev, n))
        prev = n
    return spans


def corruption_noise(seed: int, prompt_index: int, site: int, layer: int, n: int, d: int) -> torch.Tensor:
    """The N(0, 1) noise [n, d] for one (prompt, site, layer) cell, from its own seed: results do not depend on
    the order, batching or device of the runs, and a reference loop can draw the very same noise."""
    key = np.random.SeedSequence([int(seed), int(prompt_index), int(site), int(layer)]).generate_state(1)[0]
    g = torch.Generator().manual_seed(int(key))
    return torch.randn(n, d, generator=g)


def _corrupt_fn(
    kind: str, positions: list[int], seq_len: int, clean: Clean, layer: int, noise: torch.Tensor | None, scale: float
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """out_fn(h_out, h_in) corrupting block `layer`'s output at `positions` only."""
    mask = torch.zeros(seq_len, dtype=torch.bool)
    mask[positions] = True
    if kind == "noise":
        assert noise is not None
        full = torch.zeros(seq_len, noise.shape[1])
        full[positions] = noise * scale

        def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
            return h + full.to(h.device, h.dtype)

        return fn
    if kind == "zero":
        return lambda h, x: h.masked_fill(mask.to(h.device)[:, None], 0)
    mu = clean.out(layer)[0].mean(0)  # mean block output over the prompt's positions

    def mean_fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        return torch.where(mask.to(h.device)[:, None], mu.to(h.device, h.dtype), h)

    return mean_fn


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """Layers max(0, l − w//2) … min(L − 1, l + w//2) (Geva et al. 2023's knockout window)."""
    half = window // 2
    return list(range(max(0, layer - half), min(n_layers - 1, layer + half) + 1))


@dataclass(frozen=True)
class KnockoutItem:
    """One prompt of a knockout: its index in the user's list (it seeds the noise, so a prompt gets the same noise
    wherever it runs), the subject, and σ of the input embeddings (measured once, on the driver)."""

    index: int
    prompt: str
    subject: str
    sigma_emb: float


@dataclass
class KnockoutResult:
    """One prompt's JS per (site, layer) and the top-k data its drill-down shows (numpy only)."""

    prompt: str
    subject: str
    ids: list[int]
    subj: list[int]
    js: np.ndarray  # [3, R]
    p_ids: np.ndarray  # [k] clean top-k
    p_p: np.ndarray
    q_ids: np.ndarray  # [3, R, k]
    q_p: np.ndarray
    q_at_p: np.ndarray  # Q(clean top-k)  [3, R, k]
    p_at_q: np.ndarray  # P(Q's top-k)   [3, R, k]
    engine: str
    blocks: int


def _knockout_edges(
    module: torch.nn.Module, queries: list[int], keys: list[int], rows: Any
) -> contextlib.AbstractContextManager:
    return hooks.block_attention([module], queries=queries, keys=keys, rows=rows)


def _specs(
    lm: LM,
    clean: Clean,
    i: int,
    subj: list[int],
    sel: list[int],
    corruption: str,
    window: int,
    seed: int,
    scale: float | None,
    noise_scale: float,
) -> list[RowSpec]:
    """Rows in site order Subj., Attn., Last.; `scale` = noise std, or None: noise_scale × std of the clean
    output of the corrupted layer (noise_ref="residual")."""
    S, d = int(clean.ids.shape[1]), int(clean.inputs[0].shape[-1])
    L = lm.n_layers
    specs: list[RowSpec] = []
    for site, positions in ((0, subj), (2, [S - 1])):
        for layer in sel:
            noise = corruption_noise(seed, i, site, layer, len(positions), d) if corruption == "noise" else None
            std = scale if scale is not None else noise_scale * float(clean.out(layer).float().std())
            specs.append(
                RowSpec(out_layer=layer, out_fn=_corrupt_fn(corruption, positions, S, clean, layer, noise, std))
            )
    attn_rows = []
    attn = lm.anatomy.attn  # None in layers without softmax attention (hybrids): nothing to knock out there
    for layer in sel:
        edits = {
            j: [Edit(("attn", j), functools.partial(_knockout_edges, module, [S - 1], subj))]
            for j in window_layers(layer, window, L)
            if (module := attn[j]) is not None
        }
        attn_rows.append(RowSpec(block_edits=edits))
    n = len(sel)
    return specs[:n] + attn_rows + specs[n:]  # site order Subj., Attn., Last.


class _Collector:
    """Per-row JS and top-k data from the engine's log-probabilities at the last position."""

    def __init__(self, P: torch.Tensor, k: int, n_rows: int) -> None:
        self.P = P
        self.p_ids, self.p_p = topk_of(P, k)
        self.k = kk = int(self.p_ids.shape[-1])
        self.res: dict[str, np.ndarray] = {
            "js": np.zeros(n_rows, np.float32),
            "qi": np.zeros((n_rows, kk), np.int64),
            "qp": np.zeros((n_rows, kk), np.float32),
            "qap": np.zeros((n_rows, kk), np.float32),
            "paq": np.zeros((n_rows, kk), np.float32),
        }

    def __call__(self, rows: list[int], logq: torch.Tensor) -> None:
        q = logq[:, 0]  # [n, V] at the last position
        ref = self.P[None].to(q.device)
        qi, qp = topk_of(q, self.k)
        vals = {
            "js": js_div(ref, q),
            "qi": qi,
            "qp": qp,
            "qap": q.gather(-1, self.p_ids[None].expand(len(rows), -1).to(q.device)).exp(),
            "paq": ref.expand(len(rows), -1).gather(-1, qi).exp(),
        }
        idx = np.asarray(rows)
        for name, v in vals.items():
            self.res[name][idx] = v.cpu().numpy()

    def shaped(self, name: str, n_sel: int) -> np.ndarray:
        v = self.res[name]
        return v.reshape(3, n_sel, *v.shape[1:])


def knockout_prompt(
    lm: LM,
    item: KnockoutItem,
    *,
    layers: Sequence[int] | None = None,
    corruption: str = "noise",
    noise_scale: float = 3.0,
    window: int = 5,
    seed: int = 0,
    noise_ref: str = "embedding",
    top_k: int = 10,
    resume: bool | None = None,
) -> KnockoutResult:
    """One prompt's knockouts, every (site, layer) as rows of one batched pass resuming from the clean run: the
    per-item step of `knockout_js` (also what a Ray worker runs)."""
    sel = common.selected_layers(lm, layers)
    ids = lm.encode(item.prompt)["input_ids"]
    subj = subject_positions(lm, item.prompt, item.subject, ids)
    clean, logits = forward_clean(lm, ids, keep_last=1)
    scale = float(noise_scale) * item.sigma_emb if noise_ref == "embedding" else None
    specs = _specs(lm, clean, item.index, subj, sel, corruption, int(window), seed, scale, float(noise_scale))
    got = _Collector(log_probs(logits[-1]), top_k, 3 * len(sel))
    S = ids.shape[1]
    engine = run_rows(
        lm,
        clean,
        specs,
        torch.tensor([S - 1], device=ids.device),
        got,
        resume=resume,
        budget_mb=current_config().memory_budget_mb,
    )
    R = len(sel)
    return KnockoutResult(
        item.prompt,
        item.subject,
        ids[0].tolist(),
        subj,
        got.shaped("js", R),
        got.p_ids.cpu().numpy(),
        got.p_p.cpu().numpy(),
        got.shaped("qi", R),
        got.shaped("qp", R),
        got.shaped("qap", R),
        got.shaped("paq", R),
        engine,
        block_evaluations(specs, lm.n_layers, engine),
    )


# ---- the contract: items, reduce, drill --------------------------------------------------------------------------


def _items(lm: LM, prompts: str | Sequence[str], subjects: str | Sequence[str], **options: Any) -> list[KnockoutItem]:
    """Every bad input fails before any model time is spent, naming its index in the user's list."""
    lm.anatomy.require_single_stream("knockout_js")
    plist, single = common.as_prompt_list(prompts)
    slist, one_subject = text_list(subjects, "subject")
    if one_subject:
        slist = slist * len(plist)
    if len(slist) != len(plist):
        raise ValueError(f"{len(plist)} prompts but {len(slist)} subjects: give one subject per prompt")
    common.selected_layers(lm, options.get("layers"))
    lm.anatomy.require_attention("knockout_js's Attn. row")
    pairs = list(zip(plist, slist, strict=True))
    common.check_each(pairs, single, lambda ps: subject_positions(lm, ps[0], ps[1], lm.encode(ps[0])["input_ids"]))
    sigma = float(live_param(lm.anatomy.embed).detach().float().std())  # live_param: offloaded embeddings too
    return [KnockoutItem(i, p, s, sigma) for i, (p, s) in enumerate(pairs)]


def _reduce(run: Run) -> Table:
    runs: list[KnockoutResult] = run.results
    o, lm = run.options, run.lm
    sel = common.selected_layers(lm, o["layers"])
    sigma = run.items[0].sigma_emb
    per_prompt = np.stack([r.js for r in runs])  # [N, 3, R]
    single = isinstance(run.inputs["prompts"], str)
    meta = {
        "options": {
            "corruption": o["corruption"],
            "noise_scale": float(o["noise_scale"]),
            "window": int(o["window"]),
            "seed": int(o["seed"]),
            "noise_ref": o["noise_ref"],
            "layers": sel,
            "top_k": o["top_k"],
            "resume": o["resume"],
        },
        "seed": int(o["seed"]),
        "sigma_emb": sigma,
        "noise_std": float(o["noise_scale"]) * sigma
        if o["corruption"] == "noise" and o["noise_ref"] == "embedding"
        else None,
        "noise_note": (
            "noise std = noise_scale × σ_emb"
            if o["noise_ref"] == "embedding"
            else "noise std = noise_scale × std of the corrupted layer's clean output, per prompt"
        ),
        "prompts": [r.prompt for r in runs],
        "subjects": [r.subject for r in runs],
        "subject_positions": [r.subj for r in runs],
        "subject_tokens": [common.token_labels(lm, [r.ids[j] for j in r.subj]) for r in runs],
        "prompt_tokens": [common.token_labels(lm, r.ids) for r in runs],
        "per_prompt": per_prompt,
        "engine": sorted({r.engine for r in runs}),
        "block_evaluations": int(sum(r.blocks for r in runs)),
        "attention_windows": {str(layer): window_layers(layer, int(o["window"]), lm.n_layers) for layer in sel},
        "definition": "JS = ½KL(P‖M) + ½KL(Q‖M), M = (P+Q)/2, nats (≤ ln 2), at the last prompt position; "
        "cells are means over prompts",
    }
    values = per_prompt.mean(0)
    meta["log"] = suggests_log_scale(values)
    return Table(
        values,
        list(KNOCKOUT_ROWS),
        [str(i) for i in sel],
        title=f"Jensen–Shannon divergence by layer ({o['corruption']} corruption"
        f"{', ' + str(len(runs)) + ' prompts' if not single else ''})",
        row_title="site",
        col_title="layer",
        metric="JS(clean, knocked out), nats",
        meta=meta,
    )


def _examples_table(lm: LM, runs: list[KnockoutResult], vals: np.ndarray, r: int, c: int) -> Any:
    import pandas as pd

    order = np.argsort(-vals)
    return pd.DataFrame(
        {
            "prompt": [runs[i].prompt for i in order],
            "subject": [runs[i].subject for i in order],
            "JS": vals[order],
            "clean top-1": [lm.token_strings([int(runs[i].p_ids[0])])[0] for i in order],
            "knocked-out top-1": [lm.token_strings([int(runs[i].q_ids[r, c, 0])])[0] for i in order],
        }
    )


def _drill(run: Run, m: HeatMatrix, r: int, c: int) -> Detail:
    runs: list[KnockoutResult] = run.results
    lm, window = run.lm, int(run.options["window"])
    d = m.cell(r, c)
    layer = common.selected_layers(lm, run.options["layers"])[c]
    vals = np.array([x.js[r, c] for x in runs], dtype=np.float64)
    pi = int(np.argmax(vals))
    one = runs[pi]
    d.texts["intervention"] = {
        0: f"block {layer} output corrupted at the subject tokens",
        1: f"attention last → subject blocked in layers {window_layers(layer, window, lm.n_layers)}",
        2: f"block {layer} output corrupted at the last token",
    }[r]
    chart, table = common.topk_chart(
        lm,
        f"Next token: clean P vs knocked-out Q ({KNOCKOUT_ROWS[r]} layer {layer})",
        one.p_ids,
        one.p_p,
        one.q_ids[r, c],
        one.q_p[r, c],
        one.p_at_q[r, c],
        one.q_at_p[r, c],
        names=("P (clean)", "Q (knocked out)"),
    )
    d.charts.append(chart)
    d.tables["top-k"] = table
    d.texts["prompt"] = one.prompt
    d.texts["subject tokens"] = " | ".join(common.token_labels(lm, [one.ids[j] for j in one.subj]))
    if len(runs) > 1:
        labels = [f"{i}: {x.prompt[:40]}" for i, x in enumerate(runs)]
        ch, _ = common.spread_chart(f"JS per prompt ({KNOCKOUT_ROWS[r]} layer {layer})", labels, vals, "JS")
        d.charts.append(ch)
        d.texts["per-prompt spread"] = (
            f"mean {vals.mean():.4g}, median {np.median(vals):.4g}, min {vals.min():.4g}, "
            f"max {vals.max():.4g} over {len(vals)} prompts; top-k shown for prompt "
            f"{pi} (the largest)"
        )
    d.tables["examples by JS"] = _examples_table(lm, runs, vals, r, c)
    d.meta.update(layer=layer, site=KNOCKOUT_ROWS[r], prompt_index=pi)
    d.reruns[f"logit lens of prompt {pi}"] = lambda: logit_lens(lm, one.ids)
    return d


KNOCKOUT = Analysis(
    name="knockout_js",
    options=(
        Option("layers", None, kind="layers", nullable=True, doc="layers (columns); None: all"),
        Option("corruption", "noise", choices=CORRUPTIONS, doc="what replaces the corrupted block output"),
        Option("noise_scale", 3.0, kind=float, min=0.0, doc="noise std in units of σ (see noise_ref)"),
        Option("window", 5, kind=int, min=1, doc="Attn.: layers around l whose attention last → subject is blocked"),
        Option("seed", 0, kind=int, min=0, doc="seed of the noise (drawn per prompt, site and layer)"),
        Option(
            "noise_ref",
            "embedding",
            choices=NOISE_REFS,
            doc="σ: std of the input embeddings, or of the corrupted layer's clean output",
        ),
        Option("top_k", 10, kind=int, min=1, doc="tokens kept per cell for the drill-down"),
        Option("resume", None, kind=bool, nullable=True, doc="engine: None = resume when its self-check passes"),
    ),
    items=_items,
    per_item=knockout_prompt,
    reduce=_reduce,
    drill=_drill,
)


def knockout_js(
    lm: LM,
    prompts: str | Sequence[str],
    subjects: str | Sequence[str],
    layers: Sequence[int] | None = None,
    corruption: str = "noise",
    noise_scale: float = 3.0,
    window: int = 5,
    seed: int = 0,
    *,
    noise_ref: str = "embedding",
    top_k: int = 10,
    resume: bool | None = None,
    config: Config | dict[str, Any] | None = None,
    memory_budget_mb: float | None = None,
    progress_bar: bool | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    num_workers: int | None = None,
) -> HeatMatrix:
    """Mean Jensen–Shannon divergence (nats, ≤ ln 2) between the clean and the knocked-out next-token distribution
    at the last prompt position: rows Subj./Attn./Last., cols = layers.

    subjects: one per prompt (or one str for all); each must occur in its prompt (positions by token offsets).
    corruption: "noise" (add N(0, (noise_scale·σ_emb)²), σ_emb = std of the input-embedding matrix; seeded per
    (seed, prompt, site, layer)), "zero", or "mean" (the block's mean output over the prompt's positions).
    noise_ref="residual" scales the noise by the std of the corrupted layer's clean output instead of σ_emb:
    the residual stream often grows 10-100× larger than the embeddings, where σ_emb-sized noise barely registers.
    window: attention-knockout window (layers l − window//2 … l + window//2, clipped). Attention knockout edits
    the attention mask: it needs eager or sdpa attention (load with attn_implementation="eager" otherwise).
    config: execution settings for this call (executor="ray" shards prompts across Ray actors holding model
    replicas, workers, memory_budget_mb, ...), over those of `with hw.config(...)`; equal results. The keywords
    memory_budget_mb, progress_bar, executor, ray_address and num_workers are their older spellings (still accepted).
    """
    optional_budget(memory_budget_mb, "memory_budget_mb")
    old = common.given(
        memory_budget_mb=memory_budget_mb,
        progress_bar=progress_bar,
        executor=executor,
        ray_address=ray_address,
        num_workers=num_workers,
    )
    cfg = legacy_config(config, old, "knockout_js")
    options = {
        "layers": None if layers is None else common.selected_layers(lm, layers),
        "corruption": corruption,
        "noise_scale": finite_number(noise_scale, "noise_scale", minimum=0.0),
        "window": window,
        "seed": positive_int(seed, "seed", minimum=0),
        "noise_ref": noise_ref,
        "top_k": positive_int(top_k, "top_k"),
        "resume": resume,
    }
    return run_analysis(KNOCKOUT, lm, {"prompts": prompts, "subjects": subjects}, options, cfg)
