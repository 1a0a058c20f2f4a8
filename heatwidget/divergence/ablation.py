"""`hw.ablation_kl`: KL(clean ‖ intervened) of the next-token distribution, by layer and generated token.

Definition: greedy-generate T tokens (clean); for each selected layer l, one teacher-forced forward
over prompt + clean tokens with layer l intervened at every position; value[l, t] = KL(p_clean ‖ p_int) at the
position predicting generated token t. Speed: one clean generation with a KV cache that also caches every block's
input, then all layers as one batched pass in which row l resumes at block l+1 (see `_engine`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._concurrency import locks_model
from .._limits import context_length, stop_token_ids
from .._lm import LM
from .._validate import finite_number, optional_budget, positive_int
from ..analysis import Analysis, Config, Option, Run, Table, current_config, legacy_config, provenance, run_analysis
from ..matrix import Detail, HeatMatrix, suggests_log_scale
from . import _common as common
from ._engine import (
    Clean,
    Edit,
    Generation,
    RowSpec,
    block_evaluations,
    forward_clean,
    generate_clean,
    keep_logits_arg,
    next_forward,
    rows_per_chunk,
    run_rows,
    weight_of,
)
from ._stats import kl_div, log_probs, rank_of
from ._stats import top_k as topk_of
from .lens import logit_lens

__all__ = [
    "ablation_kl",
    "ablate_prompt",
    "AblationResult",
    "ABLATION",
    "Steer",
    "ProjectOut",
    "INTERVENTIONS",
    "MODES",
    "per_position_kl",
    "resolve_intervention",
    "spec_hooks",
]

INTERVENTIONS = ("skip", "zero_attn", "zero_mlp", "mean", "none")
MODES = ("teacher_forced", "free_running")


@dataclass(frozen=True)
class Steer:
    """Add alpha·vector to a block's output at every position (steering). `vector` is [d] (the same for every
    layer) or [n_layers, d] (one per layer, as in per-layer steering vectors; row l uses vector[l])."""

    vector: Any
    alpha: float = 1.0


@dataclass(frozen=True)
class ProjectOut:
    """Remove the component along `direction` ([d] or [n_layers, d]) from a block's output at every position."""

    direction: Any


@dataclass
class _Intervention:
    """A resolved `intervention` argument: how to intervene on layer l, as a RowSpec."""

    label: str
    kind: str  # "output" (edit the block output) | "zero_attn" | "zero_mlp"
    fn: Callable[[int, Clean, int], Callable] | None = None  # (layer, clean, prompt_len) -> out_fn(h_out, h_in)

    def spec(self, lm: LM, layer: int, clean: Clean, prompt_len: int) -> RowSpec:
        if self.kind == "output":
            assert self.fn is not None
            return RowSpec(out_layer=layer, out_fn=self.fn(layer, clean, prompt_len))
        a = lm.anatomy
        mod = a.attn_module(layer, "zero_attn") if self.kind == "zero_attn" else a.mlp_module(layer, "zero_mlp")
        return RowSpec(block_edits={layer: [Edit((self.kind, layer), functools.partial(_zero_rows, mod))]})


def _zero_rows(module: torch.nn.Module, rows: Any) -> contextlib.AbstractContextManager:
    return hooks.zero(module, rows=rows)


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    return t


def _per_layer(v: torch.Tensor, lm: LM, what: str) -> Callable[[int], torch.Tensor]:
    d = int(weight_of(lm.anatomy.embed).shape[1])
    if v.ndim == 1 and v.shape[0] == d:
        return lambda layer: v
    if v.ndim == 2 and v.shape == (lm.n_layers, d):
        return lambda layer: v[layer]
    raise ValueError(f"{what} must have shape [{d}] or [{lm.n_layers}, {d}] (hidden size {d}), got {list(v.shape)}")


def resolve_intervention(lm: LM, intervention: Any) -> _Intervention:
    """Turn the user's `intervention` into an _Intervention (errors name the accepted forms)."""
    if isinstance(intervention, str):
        name = intervention
        if name == "skip":
            return _Intervention("skip", "output", lambda l, c, p: lambda h, x: x)
        if name == "none":  # a no-op: every cell must be 0 (a check of the whole pipeline)
            return _Intervention("none", "output", lambda l, c, p: lambda h, x: h)
        if name == "mean":

            def mean_fn(layer: int, clean: Clean, plen: int) -> Callable:
                mu = clean.out(layer)[0, :plen].mean(0)  # mean block output over the prompt's positions
                return lambda h, x: mu.to(h.device, h.dtype).expand_as(h)

            return _Intervention("mean", "output", mean_fn)
        if name in ("zero_attn", "zero_mlp"):
            if name == "zero_mlp" and any(m is b for m, b in zip(lm.anatomy.mlp, lm.anatomy.layers, strict=False)):
                raise ValueError(
                    f"zero_mlp: this {lm.anatomy.family} model has no separate MLP module "
                    "(its MLP linears sit in the block); use 'skip' or 'zero_attn'"
                )
            return _Intervention(name, name)
        raise ValueError(
            f"unknown intervention {name!r}: use one of {list(INTERVENTIONS)}, hw.Steer(vector, "
            "alpha), hw.ProjectOut(direction), a tensor (added), or fn(h_out, h_in) -> h_out"
        )
    if isinstance(intervention, ProjectOut):
        dirs = _per_layer(_as_tensor(intervention.direction, "direction"), lm, "direction")

        def proj_fn(layer: int, clean: Clean, plen: int) -> Callable:
            u = dirs(layer)
            if float(u.norm()) == 0.0:
                raise ValueError(f"ProjectOut direction for layer {layer} is the zero vector")
            u = u / u.norm()

            def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
                uu = u.to(h.device, h.dtype)
                return h - (h @ uu)[..., None] * uu

            return fn

        return _Intervention("project_out", "output", proj_fn)
    if isinstance(intervention, (Steer, torch.Tensor, np.ndarray)):
        st = intervention if isinstance(intervention, Steer) else Steer(intervention)
        vecs = _per_layer(_as_tensor(st.vector, "steering vector"), lm, "steering vector")
        alpha = finite_number(st.alpha, "Steer alpha")

        def add_fn(layer: int, clean: Clean, plen: int) -> Callable:
            v = alpha * vecs(layer)
            return lambda h, x: h + v.to(h.device, h.dtype)

        return _Intervention(f"add(alpha={alpha:g})", "output", add_fn)
    if callable(intervention):
        name = getattr(intervention, "__name__", "custom")
        return _Intervention(name, "output", lambda l, c, p: _checked_callable(intervention, name, l))
    raise TypeError(
        f"intervention must be a name, hw.Steer, hw.ProjectOut, a tensor or a callable, "
        f"got {type(intervention).__name__}"
    )


def _checked_callable(user: Callable, name: str, layer: int) -> Callable:
    """The user's fn(h_out, h_in), with its result checked: a tensor that broadcasts to h_out's shape, all finite.
    Without this a wrong shape surfaces as a torch broadcasting error deep in the engine, and NaN as an all-NaN
    matrix."""

    def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        out = user(h, x)
        what = f"intervention {name!r} (a callable fn(h_out, h_in)) at layer {layer}"
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"{what} returned a value of type {type(out).__name__}; it must return a torch tensor "
                f"of the block output's shape {list(h.shape)}"
            )
        try:
            ok = torch.broadcast_shapes(out.shape, h.shape) == h.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"{what} returned shape {list(out.shape)} for a block output of shape "
                f"{list(h.shape)} [batch, positions, hidden]: return a tensor of that shape"
            )
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"{what} returned NaN or inf values")
        return out

    return fn


def spec_hooks(lm: LM, spec: RowSpec, rows: Any) -> list:
    """The same intervention as hooks on the full model (for generation and whole-sequence re-runs)."""
    ctx: list[contextlib.AbstractContextManager] = []
    if spec.out_layer is not None:
        ctx.append(hooks.edit_output(lm.anatomy.layers[spec.out_layer], spec.output_fn(), rows=rows, needs_input=True))
    for edits in spec.block_edits.values():
        ctx += [e.make(rows) for e in edits]
    return ctx


# ---- one prompt --------------------------------------------------------------------------------------------


@dataclass
class AblationResult:
    """One prompt's KL per (layer, generated token) and the top-k data its drill-downs show (numpy only: it
    travels back from Ray workers; the clean activations stay where they were computed)."""

    prompt: str
    prompt_ids: list[int]
    tokens: list[int]  # the clean generation (Gen0.., EOS included when hit)
    eos_at: int | None
    values: np.ndarray  # [R, T] (NaN after EOS)
    clean_top_ids: np.ndarray  # [Tg, k]
    clean_top_p: np.ndarray
    int_top_ids: np.ndarray  # [R, Tg, k]
    int_top_p: np.ndarray
    int_at_clean: np.ndarray  # P_int(clean top-k)  [R, Tg, k]
    clean_at_int: np.ndarray  # P_clean(intervened top-k)  [R, Tg, k]
    rank: np.ndarray  # rank of the clean token under the intervention [R, Tg]
    p_tok: np.ndarray  # P_int(clean token) [R, Tg]
    engine: str = ""
    blocks: int = 0
    fed_len: int = 0  # tokens of the clean teacher-forced sequence (prompt + generated but the last)
    resume_note: str = ""
    own_tokens: list[list[int]] | None = None  # free-running: each row's own generated tokens
    cache: dict = field(default_factory=dict, repr=False)  # the drill-down's (driver-side) recomputations

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    def ids(self, n_generated: int | None = None) -> torch.Tensor:
        """The prompt and the first `n_generated` clean tokens (all by default), as ids [1, S] on the CPU."""
        toks = self.tokens if n_generated is None else self.tokens[:n_generated]
        return torch.tensor([self.prompt_ids + list(toks)], dtype=torch.long)

    def clean(self, lm: LM) -> Clean:
        """The clean activations over the teacher-forced sequence (recomputed once, on this process's model)."""
        if "clean" not in self.cache:
            fed = self.ids(len(self.tokens) - 1).to(lm.device)
            self.cache["clean"] = forward_clean(lm, fed)[0]
        return self.cache["clean"]


def _encode(lm: LM, prompt: str, max_new_tokens: int) -> torch.Tensor:
    ids = lm.encode(prompt)["input_ids"]
    limit = context_length(lm.config)
    need = ids.shape[1] + max_new_tokens - 1
    if limit is not None and need > limit:
        raise ValueError(
            f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) needs {need} "
            f"positions but the model's context is {limit}; shorten the prompt or generate fewer"
        )
    return ids


class _Collector:
    """Per-row KL and top-k data from the engine's log-probabilities at the generated positions."""

    def __init__(self, clean_lp: torch.Tensor, tokens: list[int], top_k: int, n_rows: int) -> None:
        self.clean_lp = clean_lp  # [Tg, V]
        self.toks = torch.tensor(tokens, device=clean_lp.device)
        self.c_ids, self.c_p = topk_of(clean_lp, top_k)
        self.k = k = int(self.c_ids.shape[-1])
        n_gen = len(tokens)
        self.out = {
            name: np.full(shape, np.nan, dtype=np.float32)
            for name, shape in [
                ("kl", (n_rows, n_gen)),
                ("ip", (n_rows, n_gen, k)),
                ("iac", (n_rows, n_gen, k)),
                ("cai", (n_rows, n_gen, k)),
                ("rank", (n_rows, n_gen)),
                ("ptok", (n_rows, n_gen)),
            ]
        }
        self.out["ii"] = np.zeros((n_rows, n_gen, k), dtype=np.int64)

    def __call__(self, rows: list[int], logp: torch.Tensor) -> None:
        n, dev = logp.shape[0], logp.device
        ref = self.clean_lp[None].to(dev)
        i_ids, i_p = topk_of(logp, self.k)
        cols = {
            "kl": kl_div(ref, logp),
            "ii": i_ids,
            "ip": i_p,
            "iac": logp.gather(-1, self.c_ids[None].expand(n, -1, -1).to(dev)).exp(),
            "cai": ref.expand(n, -1, -1).gather(-1, i_ids).exp(),
            "rank": rank_of(logp, self.toks[None].expand(n, -1).to(dev)).float(),
            "ptok": logp.gather(-1, self.toks[None, :, None].expand(n, -1, 1).to(dev))[..., 0].exp(),
        }
        idx = np.asarray(rows)
        for name, v in cols.items():
            self.out[name][idx] = v.cpu().numpy()


def _nan_after_own_eos(lm: LM, values: np.ndarray, own: list[list[int]]) -> None:
    """Free-running: a row that emitted EOS has no distribution after it."""
    stop = stop_token_ids(lm.model, lm.tokenizer)
    for r, tk in enumerate(own):
        hit = [t for t, x in enumerate(tk) if x in stop]
        if hit:
            values[r, hit[0] + 1 :] = np.nan


def ablate_prompt(
    lm: LM,
    prompt: str,
    *,
    max_new_tokens: int = 5,
    layers: Sequence[int] | None = None,
    intervention: Any = "skip",
    mode: str = "teacher_forced",
    top_k: int = 10,
    resume: bool | None = None,
) -> AblationResult:
    """One prompt's KL(clean ‖ intervened) by selected layer and generated token: the per-item step of
    `ablation_kl` (also what a Ray worker runs; the intervention is resolved where it runs, since "mean" uses
    that model's own activations)."""
    T, sel = max_new_tokens, common.selected_layers(lm, layers)
    iv = resolve_intervention(lm, intervention)
    budget = current_config().memory_budget_mb
    ids = _encode(lm, prompt, T)
    gen = generate_clean(lm, ids, T, trace=(mode == "teacher_forced" and resume is not False))
    P, n_gen, R = ids.shape[1], len(gen.tokens), len(sel)
    specs = [iv.spec(lm, layer, gen.clean, P) for layer in sel]
    got = _Collector(gen.logp, gen.tokens, top_k, R)
    own = None
    if mode == "teacher_forced":
        positions = torch.arange(P - 1, P - 1 + n_gen, device=ids.device)
        engine = run_rows(lm, gen.clean, specs, positions, got, resume=resume, budget_mb=budget)
        blocks = block_evaluations(specs, lm.n_layers, engine)
    else:
        own = _free_running(lm, gen, specs, got, budget)
        engine, blocks = "free-running (batched generation)", R * lm.n_layers * n_gen
    values = np.full((R, T), np.nan, dtype=np.float32)
    values[:, :n_gen] = got.out["kl"]
    if own is not None:
        _nan_after_own_eos(lm, values, own)
    o = got.out
    return AblationResult(
        prompt,
        ids[0].tolist(),
        list(gen.tokens),
        gen.eos_at,
        values,
        got.c_ids.cpu().numpy(),
        got.c_p.cpu().numpy(),
        o["ii"],
        o["ip"],
        o["iac"],
        o["cai"],
        o["rank"],
        o["ptok"],
        engine,
        blocks,
        int(gen.clean.ids.shape[1]),
        gen.clean.resume_note,
        own,
    )


def _free_running(
    lm: LM, gen: Generation, specs: list[RowSpec], reduce: Callable, budget_mb: float | None
) -> list[list[int]]:
    """Each intervened row greedily generates its own tokens (batched, KV cache); logp per step to `reduce`."""
    P, n_gen = gen.prompt_len, len(gen.tokens)
    ids = gen.clean.ids[:, :P]
    per = rows_per_chunk(lm, P + n_gen, n_gen, budget_mb)
    own: list[list[int]] = [[] for _ in specs]
    for k0 in range(0, len(specs), per):
        chunk = list(range(k0, min(k0 + per, len(specs))))
        n = len(chunk)
        ctx = [c for i, r in enumerate(chunk) for c in spec_hooks(lm, specs[r], [i])]
        steps = []
        with torch.inference_mode(), hooks.stack(*ctx):
            out = lm.model(input_ids=ids.expand(n, P), use_cache=True, **keep_logits_arg(lm.model, 1))
            for t in range(n_gen):
                lp = log_probs(out.logits[:, -1])
                steps.append(lp)
                nxt = lp.argmax(-1)
                for r, tok in zip(chunk, nxt.tolist(), strict=True):  # one device sync per step, not per row
                    own[r].append(tok)
                if t < n_gen - 1:
                    seq = torch.cat([ids.expand(n, P), torch.tensor([own[r] for r in chunk], device=ids.device)], 1)
                    out = next_forward(lm, out, seq)
            reduce(chunk, torch.stack(steps, 1))
    return own


# ---- the contract: items, reduce, drill --------------------------------------------------------------------------


def _items(lm: LM, prompt: str | Sequence[str], **options: Any) -> list[str]:
    """Check the inputs before any model time is spent (a bad prompt anywhere in the list fails at once)."""
    lm.anatomy.require_single_stream("ablation_kl")
    prompts, single = common.as_prompt_list(prompt)
    common.selected_layers(lm, options.get("layers"))
    resolve_intervention(lm, options.get("intervention", "skip"))
    T = common.check_max_new_tokens(options.get("max_new_tokens", 5))
    common.check_each(prompts, single, lambda p: _encode(lm, p, T))
    return prompts


def _notes(runs: list[AblationResult], T: int, mode: str) -> list[str]:
    notes = []
    if any(r.eos_at is not None and r.eos_at < T - 1 for r in runs):
        notes.append(
            "greedy generation emitted EOS before max_new_tokens for some prompts: the cells after the "
            "EOS token are NaN (meta['eos'] has the EOS index per prompt, None = no EOS)"
        )
    if mode == "free_running":
        notes.append(
            "free-running: each intervened run generated its own tokens; cell t compares the clean and "
            "the intervened distribution at their own step t (cells after an intervened EOS are NaN)"
        )
    return notes


def _reduce(run: Run) -> Table:
    runs: list[AblationResult] = run.results
    o, lm = run.options, run.lm
    T, mode, sel = o["max_new_tokens"], o["mode"], common.selected_layers(lm, o["layers"])
    label = resolve_intervention(lm, o["intervention"]).label
    per_prompt = np.stack([r.values for r in runs])  # [N, R, T]
    values = common.nanmean(per_prompt, 0)
    single = isinstance(run.inputs["prompt"], str)
    clean_fw = sum(r.fed_len for r in runs) * lm.n_layers
    meta = {
        "options": {
            "prompt": runs[0].prompt if single else [r.prompt for r in runs],
            "max_new_tokens": T,
            "layers": sel,
            "intervention": label,
            "mode": mode,
            "top_k": o["top_k"],
            "resume": o["resume"],
        },
        "seed": None,
        "decoding": "greedy (do_sample=False), temperature 1, nats",
        "prompts": [r.prompt for r in runs],
        "prompt_tokens": [common.token_labels(lm, r.prompt_ids) for r in runs],
        "generated_tokens": [common.token_labels(lm, r.tokens) for r in runs],
        "generated_ids": [list(r.tokens) for r in runs],
        "eos": [r.eos_at for r in runs],
        "notes": _notes(runs, T, mode),
        "per_prompt": per_prompt,
        "engine": sorted({r.engine for r in runs}),
        "engine_note": sorted({r.resume_note for r in runs if r.resume_note}),
        "block_evaluations": int(sum(r.blocks for r in runs)),
        "clean_forward_equivalents": float(sum(r.blocks * r.fed_len for r in runs)) / clean_fw,
        "log": suggests_log_scale(values),  # skipping layer 0 costs nats, the others hundredths
    }
    return Table(
        values,
        [str(i) for i in sel],
        [f"Gen{t}" for t in range(T)],
        title=f"KL divergence by layer and generated token ({label}"
        f"{', free-running' if mode == 'free_running' else ''})",
        row_title="layer",
        col_title="generated token",
        metric="KL(clean ‖ intervened), nats",
        meta=meta,
    )


def _pick_prompt(runs: list[AblationResult], r: int, c: int) -> int:
    """The prompt shown in detail: the only one, or the one with the largest value in this cell."""
    if len(runs) == 1:
        return 0
    v = np.array([x.values[r, c] for x in runs], dtype=np.float64)
    return int(np.nanargmax(v)) if np.isfinite(v).any() else 0


def _continuation(lm: LM, res: AblationResult, spec: RowSpec, n: int) -> list[int]:
    """The intervened model's own greedy continuation (KV cache), for the drill-down text."""
    toks: list[int] = []
    stop = stop_token_ids(lm.model, lm.tokenizer)
    prompt_ids = res.ids(0).to(lm.device)
    with torch.inference_mode(), hooks.stack(*spec_hooks(lm, spec, None)):
        out = lm.model(input_ids=prompt_ids, use_cache=True, **keep_logits_arg(lm.model, 1))
        for t in range(n):
            tok = int(out.logits[0, -1].argmax())
            toks.append(tok)
            if tok in stop or t == n - 1:
                break
            fed = torch.cat([prompt_ids, torch.tensor([toks], device=prompt_ids.device)], 1)
            out = next_forward(lm, out, fed)
    return toks


def _spread(d: Detail, runs: list[AblationResult], r: int, c: int, layer: int, pi: int) -> None:
    labels = [f"{i}: {x.prompt[:40]}" for i, x in enumerate(runs)]
    vals = np.array([x.values[r, c] for x in runs])
    chart, table = common.spread_chart(f"KL per prompt at layer {layer}, Gen{c}", labels, vals, "KL")
    d.charts.append(chart)
    d.tables["per prompt"] = table
    d.texts["per-prompt spread"] = (
        f"mean {np.nanmean(vals):.4g}, min {np.nanmin(vals):.4g}, "
        f"max {np.nanmax(vals):.4g} over {np.isfinite(vals).sum()} prompts; "
        f"detail below for prompt {pi} (the largest)"
    )


def _topk(d: Detail, lm: LM, res: AblationResult, r: int, t: int, layer: int, label: str) -> None:
    chart, table = common.topk_chart(
        lm,
        f"Next token at Gen{t}: clean vs layer {layer} {label}",
        res.clean_top_ids[t],
        res.clean_top_p[t],
        res.int_top_ids[r, t],
        res.int_top_p[r, t],
        res.clean_at_int[r, t],
        res.int_at_clean[r, t],
    )
    d.charts.insert(0, chart)
    d.tables["top-k"] = table
    d.texts["clean token"] = lm.token_strings([res.tokens[t]])[0]
    d.texts["rank of the clean token under the intervention"] = (
        f"{int(res.rank[r, t])} (p = {float(res.p_tok[r, t]):.4g}; clean p = {float(res.clean_top_p[t, 0]):.4g})"
    )
    d.meta.update(clean_token_rank=int(res.rank[r, t]), clean_token_p_intervened=float(res.p_tok[r, t]))


def _drill(run: Run, m: HeatMatrix, r: int, t: int) -> Detail:
    runs: list[AblationResult] = run.results
    lm, mode = run.lm, run.options["mode"]
    layer = common.selected_layers(lm, run.options["layers"])[r]
    iv = resolve_intervention(lm, run.options["intervention"])
    d = m.cell(r, t)
    pi = _pick_prompt(runs, r, t)
    res = runs[pi]
    d.texts["prompt"] = res.prompt
    d.texts["clean continuation"] = lm.tokenizer.decode(res.tokens)
    if mode == "free_running" and res.own_tokens is not None:
        own = res.own_tokens[r]
    else:
        if ("cont", r) not in res.cache:
            spec = iv.spec(lm, layer, res.clean(lm), res.prompt_len)
            res.cache[("cont", r)] = _continuation(lm, res, spec, m.values.shape[1])
        own = res.cache[("cont", r)]
    d.texts[f"intervened continuation (layer {layer}, {iv.label})"] = lm.tokenizer.decode(own)
    if len(runs) > 1:
        _spread(d, runs, r, t, layer, pi)
    if t < len(res.tokens) and np.isfinite(res.values[r, t]):
        _topk(d, lm, res, r, t, layer, iv.label)
    else:
        d.texts["note"] = f"Gen{t} was not generated for this prompt: greedy generation emitted EOS at Gen{res.eos_at}"
    d.meta.update(layer=layer, gen_index=t, prompt_index=pi, intervention=iv.label, mode=mode)
    d.reruns[f"KL at every position, layer {layer}"] = lambda: per_position_kl(lm, res, layer, iv)
    if t < len(res.tokens):
        d.reruns[f"logit lens at Gen{t}"] = lambda: logit_lens(lm, res.ids(t)[0].tolist())
    return d


@locks_model
def _topk_pair(clean: torch.Tensor, intervened: torch.Tensor, k: int = 10) -> dict[str, np.ndarray]:
    """Top-k of both log-probability rows [T, V], and each side's probability of the other's top tokens."""
    c_ids, c_p = topk_of(clean, k)
    i_ids, i_p = topk_of(intervened, k)
    out = dict(
        c_ids=c_ids,
        c_p=c_p,
        i_ids=i_ids,
        i_p=i_p,
        iac=intervened.gather(-1, c_ids).exp(),
        cai=clean.gather(-1, i_ids).exp(),
    )
    return {key: v.cpu().numpy() for key, v in out.items()}


def per_position_kl(lm: LM, run: AblationResult, layer: int, iv: Any) -> HeatMatrix:
    """KL(clean ‖ intervened) at every position of prompt + generated tokens, for one layer (teacher-forced).
    `run`: one prompt's result (`ablate_prompt`); `iv`: the intervention (a resolved one or any form
    `ablation_kl` takes)."""
    iv = iv if isinstance(iv, _Intervention) else resolve_intervention(lm, iv)
    ids = run.ids().to(lm.device)
    spec = iv.spec(lm, layer, run.clean(lm), run.prompt_len)
    with torch.inference_mode(), hooks.stack(*spec_hooks(lm, spec, [1])):
        lp = log_probs(lm.model(input_ids=ids.expand(2, -1), use_cache=False).logits)
    kl = kl_div(lp[0], lp[1])
    data = _topk_pair(lp[0], lp[1])
    toks = common.token_labels(lm, ids[0].tolist())
    P = run.prompt_len

    def drill(m: HeatMatrix, _r: int, c: int) -> Detail:
        d = m.cell(_r, c)
        chart, table = common.topk_chart(
            lm,
            f"Next token after position {c} ({toks[c]!r}): clean vs layer {layer}",
            data["c_ids"][c],
            data["c_p"][c],
            data["i_ids"][c],
            data["i_p"][c],
            data["cai"][c],
            data["iac"][c],
        )
        d.charts.append(chart)
        d.tables["top-k"] = table
        d.texts["context"] = lm.tokenizer.decode(ids[0, : c + 1].tolist())
        return d

    values = kl[None].cpu().numpy()
    return HeatMatrix(
        values,
        [f"layer {layer}"],
        toks,
        title=f"KL at every position, layer {layer} ({iv.label}, teacher-forced)",
        row_title="layer",
        col_title="position (input token)",
        metric="KL(clean ‖ intervened), nats",
        meta={
            **provenance(lm),
            "analysis": "ablation_kl.per_position",
            "layer": layer,
            "intervention": iv.label,
            "prompt": run.prompt,
            "prompt_len": P,
            "tokens": toks,
            "note": f"positions {P - 1}.. predict the generated tokens",
            "log": suggests_log_scale(values),
        },
        drill=drill,
    )


ABLATION = Analysis(
    name="ablation_kl",
    options=(
        Option("max_new_tokens", 5, kind=int, min=1, doc="generated tokens (columns)"),
        Option("layers", None, kind="layers", nullable=True, doc="layers (rows), in display order; None: all"),
        Option(
            "intervention",
            "skip",
            choices=INTERVENTIONS,
            open=True,
            doc="what replaces layer l's work; also hw.Steer, hw.ProjectOut, a tensor or fn(h_out, h_in)",
        ),
        Option(
            "mode",
            "teacher_forced",
            choices=MODES,
            doc="feed the clean tokens, or let the intervened run generate its own",
        ),
        Option("top_k", 10, kind=int, min=1, doc="tokens kept per cell for the drill-down"),
        Option("resume", None, kind=bool, nullable=True, doc="engine: None = resume when its self-check passes"),
    ),
    items=_items,
    per_item=ablate_prompt,
    reduce=_reduce,
    drill=_drill,
)


def ablation_kl(
    lm: LM,
    prompt: str | Sequence[str],
    max_new_tokens: int = 5,
    layers: Sequence[int] | None = None,
    intervention: Any = "skip",
    mode: str = "teacher_forced",
    *,
    top_k: int = 10,
    resume: bool | None = None,
    config: Config | dict[str, Any] | None = None,
    memory_budget_mb: float | None = None,
    progress_bar: bool | None = None,
    executor: str | None = None,
    ray_address: str | None = None,
    num_workers: int | None = None,
) -> HeatMatrix:
    """KL divergence (nats) between the clean and the intervened next-token distribution, by layer × generated token.

    prompt: a str, or a list of str (cells are the mean over prompts; per-prompt values in meta["per_prompt"]).
    layers: None (all) or indices in any order (rows follow it; negative counts from the end).
    intervention: "skip" (block output := block input), "zero_attn", "zero_mlp", "mean" (block output := its mean
    over the prompt's positions), "none" (a no-op: all zeros, a sanity check), hw.Steer(vector, alpha) / a tensor
    (add alpha·vector), hw.ProjectOut(direction), or fn(h_out, h_in) -> new h_out.
    mode: "teacher_forced" (the clean tokens are fed to every intervened run) or "free_running" (each intervened
    run generates its own tokens; cell t compares step t of the clean and of the intervened generation).
    If greedy generation emits EOS before max_new_tokens, the cells after the EOS token are NaN (meta["eos"]).
    resume: None = resume from the cached clean activations when the self-check passes (else batched full
    forwards); True/False force one engine.
    config: execution settings for this call (executor="ray" shards prompts across Ray actors holding model
    replicas, workers, memory_budget_mb bounding one batched pass, ...), over those of `with hw.config(...)`.
    The keywords memory_budget_mb, progress_bar, executor, ray_address and num_workers are their older
    spellings (still accepted).
    """
    T = common.check_max_new_tokens(max_new_tokens)
    optional_budget(memory_budget_mb, "memory_budget_mb")
    old = common.given(
        memory_budget_mb=memory_budget_mb,
        progress_bar=progress_bar,
        executor=executor,
        ray_address=ray_address,
        num_workers=num_workers,
    )
    cfg = legacy_config(config, old, "ablation_kl")
    options = {
        "max_new_tokens": T,
        "layers": None if layers is None else common.selected_layers(lm, layers),
        "intervention": intervention,
        "mode": mode,
        "top_k": positive_int(top_k, "top_k"),
        "resume": resume,
    }
    return run_analysis(ABLATION, lm, {"prompt": prompt}, options, cfg)
