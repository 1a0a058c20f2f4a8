"""`hw.knockout_js`: Jensen–Shannon divergence by layer for Subj. / Attn. / Last. (Cheang et al. 2025, Fig. 2).

P = clean next-token distribution at the last prompt position. For each layer l: Subj. corrupts block l's output at
the subject's token positions; Attn. blocks attention from every subject position to the last position (all heads)
in layers max(0, l−w//2) … min(L−1, l+w//2); Last. corrupts block l's output at the last position. Q = resulting
distribution, JS(P, Q) in nats; cells are means over prompts. All 3·L variants of a prompt run as one batched pass
resuming from the clean activations (Subj./Last. rows start at block l+1, Attn. rows at the window's first block).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import hooks
from .._concurrency import locks_model
from .._lm import LM
from .._offload import live_param
from .._progress import check_cancelled, progress
from .._validate import finite_number, optional_budget, positive_int, text_list
from ..matrix import Detail, HeatMatrix, suggests_log_scale
from . import _common as C
from ._engine import Clean, Edit, RowSpec, block_evaluations, forward_clean, run_rows
from ._stats import js_div, log_probs
from ._stats import top_k as topk_of
from .lens import logit_lens

__all__ = ["knockout_js", "subject_positions", "corruption_noise", "SITES", "CORRUPTIONS"]

SITES = ("Subj.", "Attn.", "Last.")
CORRUPTIONS = ("noise", "zero", "mean")


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
            return [tuple(map(int, o)) for o in enc["offset_mapping"]]
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


def _corrupt_fn(kind: str, positions: list[int], seq_len: int, clean: Clean, layer: int, noise: torch.Tensor | None,
                scale: float) -> Callable:
    """out_fn(h_out, h_in) corrupting block `layer`'s output at `positions` only."""
    mask = torch.zeros(seq_len, dtype=torch.bool)
    mask[positions] = True
    if kind == "noise":
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


@dataclass
class _Prompt:
    prompt: str
    subject: str
    ids: torch.Tensor
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


def _specs(lm: LM, clean: Clean, i: int, subj: list[int], sel: list[int], corruption: str, window: int, seed: int,
           scale: float | None, noise_scale: float) -> list[RowSpec]:
    """Rows in site order Subj., Attn., Last.; `scale` = noise std, or None: noise_scale × std of the clean
    output of the corrupted layer (noise_ref="residual")."""
    S, d = int(clean.ids.shape[1]), int(clean.inputs[0].shape[-1])
    L = lm.n_layers
    specs: list[RowSpec] = []
    for site, positions in ((0, subj), (2, [S - 1])):
        for layer in sel:
            noise = corruption_noise(seed, i, site, layer, len(positions), d) if corruption == "noise" else None
            std = scale if scale is not None else noise_scale * float(clean.out(layer).float().std())
            specs.append(RowSpec(out_layer=layer, out_fn=_corrupt_fn(corruption, positions, S, clean, layer,
                                                                     noise, std)))
    attn_rows = []
    attn = lm.anatomy.attn  # None in layers without softmax attention (hybrids): nothing to knock out there
    for layer in sel:
        edits = {j: [Edit(("attn", j), lambda rows, j=j: hooks.block_attention([attn[j]], queries=[S - 1],
                                                                               keys=subj, rows=rows))]
                 for j in window_layers(layer, window, L) if attn[j] is not None}
        attn_rows.append(RowSpec(block_edits=edits))
    n = len(sel)
    return specs[:n] + attn_rows + specs[n:]  # site order Subj., Attn., Last.


def _run_prompt(lm: LM, i: int, prompt: str, subject: str, sel: list[int], corruption: str, window: int, seed: int,
                scale: float | None, noise_scale: float, k: int, resume: bool | None, budget_mb: float | None
                ) -> _Prompt:
    ids = lm.encode(prompt)["input_ids"]
    subj = subject_positions(lm, prompt, subject, ids)
    clean, logits = forward_clean(lm, ids, keep_last=1)
    P = log_probs(logits[-1])
    specs = _specs(lm, clean, i, subj, sel, corruption, window, seed, scale, noise_scale)
    R = len(sel)
    p_ids, p_p = topk_of(P, k)
    kk = p_ids.shape[-1]
    res = {"js": np.zeros(3 * R, np.float32), "qi": np.zeros((3 * R, kk), np.int64),
           "qp": np.zeros((3 * R, kk), np.float32), "qap": np.zeros((3 * R, kk), np.float32),
           "paq": np.zeros((3 * R, kk), np.float32)}

    def reduce(rows: list[int], logq: torch.Tensor) -> None:
        q = logq[:, 0]  # [n, V] at the last position
        ref = P[None].to(q.device)
        qi, qp = topk_of(q, kk)
        vals = {"js": js_div(ref, q), "qi": qi, "qp": qp, "qap": q.gather(-1, p_ids[None].expand(len(rows), -1)
                                                                          .to(q.device)).exp(),
                "paq": ref.expand(len(rows), -1).gather(-1, qi).exp()}
        idx = np.asarray(rows)
        for name, v in vals.items():
            res[name][idx] = v.cpu().numpy()

    S = ids.shape[1]
    engine = run_rows(lm, clean, specs, torch.tensor([S - 1], device=ids.device), reduce, resume=resume,
                      budget_mb=budget_mb)
    shape = (3, R)
    return _Prompt(prompt, subject, ids, subj, res["js"].reshape(shape), p_ids.cpu().numpy(), p_p.cpu().numpy(),
                   res["qi"].reshape(*shape, kk), res["qp"].reshape(*shape, kk), res["qap"].reshape(*shape, kk),
                   res["paq"].reshape(*shape, kk), engine, block_evaluations(specs, lm.n_layers, engine))


@locks_model
def knockout_js(lm: LM, prompts: str | Sequence[str], subjects: str | Sequence[str],
                layers: Sequence[int] | None = None, corruption: str = "noise", noise_scale: float = 3.0,
                window: int = 5, seed: int = 0, *, noise_ref: str = "embedding", top_k: int = 10,
                resume: bool | None = None,
                memory_budget_mb: float | None = None, progress_bar: bool | None = None,
                executor: str | None = None, ray_address: str | None = None, num_workers: int = 2) -> HeatMatrix:
    """Mean Jensen–Shannon divergence (nats, ≤ ln 2) between the clean and the knocked-out next-token distribution
    at the last prompt position: rows Subj./Attn./Last., cols = layers.

    subjects: one per prompt (or one str for all); each must occur in its prompt (positions by token offsets).
    corruption: "noise" (add N(0, (noise_scale·σ_emb)²), σ_emb = std of the input-embedding matrix; seeded per
    (seed, prompt, site, layer)), "zero", or "mean" (the block's mean output over the prompt's positions).
    noise_ref="residual" scales the noise by the std of the corrupted layer's clean output instead of σ_emb:
    the residual stream often grows 10-100× larger than the embeddings, where σ_emb-sized noise barely registers.
    window: attention-knockout window (layers l − window//2 … l + window//2, clipped). Attention knockout edits
    the attention mask: it needs eager or sdpa attention (load with attn_implementation="eager" otherwise).
    executor: None/"local", or "ray": prompts are sharded across `num_workers` Ray actors holding model replicas
    (heatwidget.scale; `ray_address` picks the cluster); equal results, the noise is seeded per prompt index.
    """
    from ..scale import check_executor

    use_ray = check_executor(executor)
    lm.anatomy.require_single_stream("knockout_js")
    t0 = time.perf_counter()
    plist, single = C.as_prompt_list(prompts)
    slist, one_subject = text_list(subjects, "subject")
    if one_subject:
        slist = slist * len(plist)
    if len(slist) != len(plist):
        raise ValueError(f"{len(plist)} prompts but {len(slist)} subjects: give one subject per prompt")
    if corruption not in CORRUPTIONS:
        raise ValueError(f"corruption must be one of {list(CORRUPTIONS)}, got {corruption!r}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive int (layers around l whose attention is blocked), "
                         f"got {window!r}")
    if noise_ref not in ("embedding", "residual"):
        raise ValueError(f"noise_ref must be 'embedding' or 'residual', got {noise_ref!r}")
    noise_scale = finite_number(noise_scale, "noise_scale", minimum=0.0)
    seed = positive_int(seed, "seed", minimum=0)
    top_k = positive_int(top_k, "top_k")
    optional_budget(memory_budget_mb, "memory_budget_mb")
    sel = lm.anatomy.resolve_layers(None if layers is None else layers)
    lm.anatomy.require_attention("knockout_js's Attn. row")
    # Every bad input fails before any model time is spent, naming its index in the user's list.
    C.check_each(list(zip(plist, slist, strict=True)), single,
                 lambda ps: subject_positions(lm, ps[0], ps[1], lm.encode(ps[0])["input_ids"]))
    sigma = float(live_param(lm.anatomy.embed).detach().float().std())  # live_param: offloaded embeddings too
    scale = float(noise_scale) * sigma if noise_ref == "embedding" else None
    quiet = progress_bar is False or (progress_bar is None and len(plist) <= 2)
    runs: list[_Prompt] = []
    if use_ray:
        from ..scale import knockout_runs

        items = [(i, p, s) for i, (p, s) in enumerate(zip(plist, slist, strict=True))]
        args = (sel, corruption, int(window), seed, scale, float(noise_scale), top_k, resume, memory_budget_mb)
        runs = knockout_runs(lm, items, args, ray_address, num_workers)
    for i, (p, s) in enumerate(progress(list(zip(plist, slist, strict=True)) if not use_ray else [],
                                        desc="knockout_js", disable=quiet)):
        check_cancelled()
        runs.append(_run_prompt(lm, i, p, s, sel, corruption, int(window), seed, scale, float(noise_scale), top_k,
                                resume, memory_budget_mb))
    per_prompt = np.stack([r.js for r in runs])  # [N, 3, R]
    kwargs = dict(prompts=prompts, subjects=subjects, layers=layers, corruption=corruption, noise_scale=noise_scale,
                  window=window, seed=seed, noise_ref=noise_ref, top_k=top_k, resume=resume,
                  memory_budget_mb=memory_budget_mb, progress_bar=progress_bar)
    meta = {**C.provenance(lm), "analysis": "knockout_js",
            "options": {"corruption": corruption, "noise_scale": float(noise_scale), "window": int(window),
                        "seed": int(seed), "noise_ref": noise_ref, "layers": sel},
            "seed": int(seed), "sigma_emb": sigma, "noise_std": scale if corruption == "noise" else None,
            "noise_note": ("noise std = noise_scale × σ_emb" if noise_ref == "embedding" else
                           "noise std = noise_scale × std of the corrupted layer's clean output, per prompt"),
            "prompts": [r.prompt for r in runs], "subjects": [r.subject for r in runs],
            "subject_positions": [r.subj for r in runs],
            "subject_tokens": [C.token_labels(lm, [r.ids[0, j].item() for j in r.subj]) for r in runs],
            "prompt_tokens": [C.token_labels(lm, r.ids[0].tolist()) for r in runs],
            "per_prompt": per_prompt, "engine": sorted({r.engine for r in runs}),
            "block_evaluations": int(sum(r.blocks for r in runs)),
            "attention_windows": {str(layer): window_layers(layer, int(window), lm.n_layers) for layer in sel},
            "definition": "JS = ½KL(P‖M) + ½KL(Q‖M), M = (P+Q)/2, nats (≤ ln 2), at the last prompt position; "
                          "cells are means over prompts",
            "seconds": time.perf_counter() - t0}
    m = HeatMatrix(per_prompt.mean(0), list(SITES), [str(i) for i in sel],
                   title=f"Jensen–Shannon divergence by layer ({corruption} corruption"
                         f"{', ' + str(len(runs)) + ' prompts' if not single else ''})",
                   row_title="site", col_title="layer", metric="JS(clean, knocked out), nats", meta=meta,
                   drill=lambda mm, r, c: _drill(lm, runs, sel, int(window), mm, r, c))
    m.meta["log"] = suggests_log_scale(m.values)
    return m.with_recompute(lambda **o: knockout_js(lm, **{**kwargs, **o}))


@locks_model
def _drill(lm: LM, runs: list[_Prompt], sel: list[int], window: int, m: HeatMatrix, r: int, c: int) -> Detail:
    d = m.cell(r, c)
    layer = sel[c]
    vals = np.array([x.js[r, c] for x in runs], dtype=np.float64)
    pi = int(np.argmax(vals))
    run = runs[pi]
    what = {0: f"block {layer} output corrupted at the subject tokens",
            1: f"attention last → subject blocked in layers {window_layers(layer, window, lm.n_layers)}",
            2: f"block {layer} output corrupted at the last token"}[r]
    d.texts["intervention"] = what
    chart, table = C.topk_chart(lm, f"Next token: clean P vs knocked-out Q ({SITES[r]} layer {layer})",
                                run.p_ids, run.p_p, run.q_ids[r, c], run.q_p[r, c], run.p_at_q[r, c],
                                run.q_at_p[r, c], names=("P (clean)", "Q (knocked out)"))
    d.charts.append(chart)
    d.tables["top-k"] = table
    d.texts["prompt"] = run.prompt
    d.texts["subject tokens"] = " | ".join(C.token_labels(lm, [run.ids[0, j].item() for j in run.subj]))
    if len(runs) > 1:
        labels = [f"{i}: {x.prompt[:40]}" for i, x in enumerate(runs)]
        ch, _ = C.spread_chart(f"JS per prompt ({SITES[r]} layer {layer})", labels, vals, "JS")
        d.charts.append(ch)
        d.texts["per-prompt spread"] = (f"mean {vals.mean():.4g}, median {np.median(vals):.4g}, min {vals.min():.4g}, "
                                        f"max {vals.max():.4g} over {len(vals)} prompts; top-k shown for prompt "
                                        f"{pi} (the largest)")
    import pandas as pd

    order = np.argsort(-vals)
    d.tables["examples by JS"] = pd.DataFrame({
        "prompt": [runs[i].prompt for i in order], "subject": [runs[i].subject for i in order],
        "JS": vals[order], "clean top-1": [lm.token_strings([int(runs[i].p_ids[0])])[0] for i in order],
        "knocked-out top-1": [lm.token_strings([int(runs[i].q_ids[r, c, 0])])[0] for i in order]})
    d.meta.update(layer=layer, site=SITES[r], prompt_index=pi)
    d.reruns[f"logit lens of prompt {pi}"] = lambda: logit_lens(lm, run.ids[0])
    return d
