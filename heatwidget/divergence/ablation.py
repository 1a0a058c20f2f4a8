"""`hw.ablation_kl`: KL(clean ‖ intervened) of the next-token distribution, by layer and generated token.

Definition (DESIGN §3): greedy-generate T tokens (clean); for each selected layer l, one teacher-forced forward
over prompt + clean tokens with layer l intervened at every position; value[l, t] = KL(p_clean ‖ p_int) at the
position predicting generated token t. Speed: one clean generation with a KV cache that also caches every block's
input, then all layers as one batched pass in which row l resumes at block l+1 (see `_engine`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._concurrency import locks_model
from .._lm import LM
from .._progress import check_cancelled, progress
from .._validate import finite_number, optional_budget, positive_int
from ..matrix import Detail, HeatMatrix, suggests_log_scale
from . import _common as C
from ._engine import (
    Clean,
    Edit,
    Generation,
    RowSpec,
    block_evaluations,
    eos_ids,
    generate_clean,
    keep_logits_arg,
    next_forward,
    rows_per_chunk,
    run_rows,
)
from ._stats import kl_div, log_probs, rank_of
from ._stats import top_k as topk_of
from .lens import logit_lens

__all__ = ["ablation_kl", "Steer", "ProjectOut", "INTERVENTIONS", "per_position_kl", "resolve_intervention",
           "spec_hooks"]

INTERVENTIONS = ("skip", "zero_attn", "zero_mlp", "mean", "none")


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
            return RowSpec(out_layer=layer, out_fn=self.fn(layer, clean, prompt_len))
        a = lm.anatomy
        mod = a.attn_module(layer, "zero_attn") if self.kind == "zero_attn" else a.mlp_module(layer, "zero_mlp")
        return RowSpec(block_edits={layer: [Edit((self.kind, layer), lambda rows, m=mod: hooks.zero(m, rows=rows))]})


def _as_tensor(x: Any, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().float()
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf")
    return t


def _per_layer(v: torch.Tensor, lm: LM, what: str) -> Callable[[int], torch.Tensor]:
    d = lm.anatomy.embed.weight.shape[1]
    if v.ndim == 1 and v.shape[0] == d:
        return lambda layer: v
    if v.ndim == 2 and v.shape == (lm.n_layers, d):
        return lambda layer: v[layer]
    raise ValueError(f"{what} must have shape [{d}] or [{lm.n_layers}, {d}] (hidden size {d}), "
                     f"got {list(v.shape)}")


def resolve_intervention(lm: LM, intervention: Any) -> _Intervention:
    """Turn the user's `intervention` into an _Intervention (errors name the accepted forms)."""
    if isinstance(intervention, str):
        name = intervention
        if name == "skip":
            return _Intervention("skip", "output", lambda l, c, p: (lambda h, x: x))
        if name == "none":  # a no-op: every cell must be 0 (a check of the whole pipeline)
            return _Intervention("none", "output", lambda l, c, p: (lambda h, x: h))
        if name == "mean":
            def mean_fn(layer: int, clean: Clean, plen: int) -> Callable:
                mu = clean.out(layer)[0, :plen].mean(0)  # mean block output over the prompt's positions
                return lambda h, x: mu.to(h.device, h.dtype).expand_as(h)

            return _Intervention("mean", "output", mean_fn)
        if name in ("zero_attn", "zero_mlp"):
            if name == "zero_mlp" and any(m is b for m, b in zip(lm.anatomy.mlp, lm.anatomy.layers, strict=False)):
                raise ValueError(f"zero_mlp: this {lm.anatomy.family} model has no separate MLP module "
                                 "(its MLP linears sit in the block); use 'skip' or 'zero_attn'")
            return _Intervention(name, name)
        raise ValueError(f"unknown intervention {name!r}: use one of {list(INTERVENTIONS)}, hw.Steer(vector, "
                         "alpha), hw.ProjectOut(direction), a tensor (added), or fn(h_out, h_in) -> h_out")
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
    raise TypeError(f"intervention must be a name, hw.Steer, hw.ProjectOut, a tensor or a callable, "
                    f"got {type(intervention).__name__}")


def _checked_callable(user: Callable, name: str, layer: int) -> Callable:
    """The user's fn(h_out, h_in), with its result checked: a tensor that broadcasts to h_out's shape, all finite.
    Without this a wrong shape surfaces as a torch broadcasting error deep in the engine, and NaN as an all-NaN
    matrix."""
    def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        out = user(h, x)
        what = f"intervention {name!r} (a callable fn(h_out, h_in)) at layer {layer}"
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{what} returned a value of type {type(out).__name__}; it must return a torch tensor "
                            f"of the block output's shape {list(h.shape)}")
        try:
            ok = torch.broadcast_shapes(out.shape, h.shape) == h.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"{what} returned shape {list(out.shape)} for a block output of shape "
                             f"{list(h.shape)} [batch, positions, hidden]: return a tensor of that shape")
        if not bool(torch.isfinite(out).all()):
            raise ValueError(f"{what} returned NaN or inf values")
        return out

    return fn


def spec_hooks(lm: LM, spec: RowSpec, rows: Any) -> list:
    """The same intervention as hooks on the full model (for generation and whole-sequence re-runs)."""
    ctx = []
    if spec.out_layer is not None:
        ctx.append(hooks.edit_output(lm.anatomy.layers[spec.out_layer], spec.out_fn, rows=rows, needs_input=True))
    for edits in spec.block_edits.values():
        ctx += [e.make(rows) for e in edits]
    return ctx


# ---- one prompt --------------------------------------------------------------------------------------------

@dataclass
class _Run:
    """One prompt's results and the top-k data its drill-downs show (numpy, small)."""

    prompt: str
    prompt_ids: torch.Tensor  # [1, P]
    gen: Generation
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
    own_tokens: list[list[int]] | None = None  # free-running: each row's own generated tokens
    cache: dict = field(default_factory=dict)


def _encode(lm: LM, prompt: str, max_new_tokens: int) -> torch.Tensor:
    ids = lm.encode(prompt)["input_ids"]
    limit = C.context_limit(lm)
    need = ids.shape[1] + max_new_tokens - 1
    if limit is not None and need > limit:
        raise ValueError(f"prompt ({ids.shape[1]} tokens) + max_new_tokens ({max_new_tokens}) needs {need} "
                         f"positions but the model's context is {limit}; shorten the prompt or generate fewer")
    return ids


def _run_prompt(lm: LM, prompt: str, layers: list[int], iv: _Intervention, T: int, mode: str, top_k_n: int,
                resume: bool | None, budget_mb: float | None) -> _Run:
    ids = _encode(lm, prompt, T)
    gen = generate_clean(lm, ids, T, probe=(mode == "teacher_forced" and resume is not False))
    P, n_gen, R = ids.shape[1], len(gen.tokens), len(layers)
    specs = [iv.spec(lm, layer, gen.clean, P) for layer in layers]
    clean_lp = gen.logp  # [Tg, V]
    toks = torch.tensor(gen.tokens, device=clean_lp.device)
    c_ids, c_p = topk_of(clean_lp, top_k_n)
    k = c_ids.shape[-1]
    out = {name: np.full(shape, np.nan, dtype=np.float32) for name, shape in
           [("kl", (R, n_gen)), ("ip", (R, n_gen, k)), ("iac", (R, n_gen, k)), ("cai", (R, n_gen, k)),
            ("rank", (R, n_gen)), ("ptok", (R, n_gen))]}
    out["ii"] = np.zeros((R, n_gen, k), dtype=np.int64)

    def reduce(rows: list[int], logp: torch.Tensor) -> None:
        n = logp.shape[0]
        ref = clean_lp[None].to(logp.device)
        i_ids, i_p = topk_of(logp, k)
        cols = {
            "kl": kl_div(ref, logp),
            "ii": i_ids, "ip": i_p,
            "iac": logp.gather(-1, c_ids[None].expand(n, -1, -1).to(logp.device)).exp(),
            "cai": ref.expand(n, -1, -1).gather(-1, i_ids).exp(),
            "rank": rank_of(logp, toks[None].expand(n, -1).to(logp.device)).float(),
            "ptok": logp.gather(-1, toks[None, :, None].expand(n, -1, 1).to(logp.device))[..., 0].exp(),
        }
        idx = np.asarray(rows)
        for name, v in cols.items():
            out[name][idx] = v.cpu().numpy()

    own = None
    if mode == "teacher_forced":
        positions = torch.arange(P - 1, P - 1 + n_gen, device=ids.device)
        engine = run_rows(lm, gen.clean, specs, positions, reduce, resume=resume, budget_mb=budget_mb)
        blocks = block_evaluations(specs, lm.n_layers, engine)
    else:
        own = _free_running(lm, gen, specs, reduce, budget_mb)
        engine, blocks = "free-running (batched generation)", R * lm.n_layers * n_gen
    values = np.full((R, T), np.nan, dtype=np.float32)
    values[:, :n_gen] = out["kl"]
    if own is not None:  # a row that emitted EOS has no distribution after it
        stop = eos_ids(lm)
        for r, tk in enumerate(own):
            hit = [t for t, x in enumerate(tk) if x in stop]
            if hit:
                values[r, hit[0] + 1:] = np.nan
    return _Run(prompt, ids, gen, values, c_ids.cpu().numpy(), c_p.cpu().numpy(), out["ii"], out["ip"], out["iac"],
                out["cai"], out["rank"], out["ptok"], engine, blocks, own)


def _free_running(lm: LM, gen: Generation, specs: list[RowSpec], reduce: Callable, budget_mb: float | None
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


# ---- the public analysis --------------------------------------------------------------------------------------

@locks_model
def ablation_kl(lm: LM, prompt: str | Sequence[str], max_new_tokens: int = 5, layers: Sequence[int] | None = None,
                intervention: Any = "skip", mode: str = "teacher_forced", *, top_k: int = 10,
                resume: bool | None = None, memory_budget_mb: float | None = None,
                progress_bar: bool | None = None, executor: str | None = None, ray_address: str | None = None,
                num_workers: int = 2) -> HeatMatrix:
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
    forwards); True/False force one engine. memory_budget_mb bounds one batched pass (default 1 GiB on CPU).
    executor: None/"local", or "ray": prompts are sharded across `num_workers` Ray actors holding model replicas
    (heatwidget.scale; `ray_address` picks the cluster); equal results.
    """
    from ..scale import check_executor

    use_ray = check_executor(executor)
    lm.anatomy.require_single_stream("ablation_kl")
    t0 = time.perf_counter()
    T = C.check_max_new_tokens(max_new_tokens)
    prompts, single = C.as_prompt_list(prompt)
    if mode not in ("teacher_forced", "free_running"):
        raise ValueError(f"mode must be 'teacher_forced' or 'free_running', got {mode!r}")
    top_k = positive_int(top_k, "top_k")
    optional_budget(memory_budget_mb, "memory_budget_mb")
    sel = lm.anatomy.resolve_layers(None if layers is None else list(layers) if not isinstance(layers, int)
                                    else layers)
    iv = resolve_intervention(lm, intervention)
    C.check_each(prompts, single, lambda p: _encode(lm, p, T))  # a bad prompt fails before any model time
    runs: list[_Run] = []
    quiet = progress_bar is False or (progress_bar is None and len(prompts) <= 2)
    if use_ray:
        from ..scale import ablation_runs

        runs = ablation_runs(lm, prompts, sel, intervention, (T, mode, top_k, resume, memory_budget_mb),
                             ray_address, num_workers)
    for p in progress(prompts if not use_ray else [], desc="ablation_kl", disable=quiet):
        check_cancelled()
        runs.append(_run_prompt(lm, p, sel, iv, T, mode, top_k, resume, memory_budget_mb))
    per_prompt = np.stack([r.values for r in runs])  # [N, R, T]
    values = C.nanmean(per_prompt, 0)
    kwargs = dict(prompt=prompt, max_new_tokens=T, layers=layers, intervention=intervention, mode=mode, top_k=top_k,
                  resume=resume, memory_budget_mb=memory_budget_mb, progress_bar=progress_bar)
    m = HeatMatrix(values, [str(i) for i in sel], [f"Gen{t}" for t in range(T)],
                   title=f"KL divergence by layer and generated token ({iv.label}"
                         f"{', free-running' if mode == 'free_running' else ''})",
                   row_title="layer", col_title="generated token", metric="KL(clean ‖ intervened), nats",
                   meta=_meta(lm, runs, sel, iv, T, mode, per_prompt, kwargs, time.perf_counter() - t0, single),
                   drill=lambda mm, r, c: _drill(lm, runs, sel, iv, mode, mm, r, c))
    m.meta["log"] = suggests_log_scale(m.values)  # skipping layer 0 costs nats, the others hundredths
    return m.with_recompute(lambda **o: ablation_kl(lm, **{**kwargs, **o}))


def _meta(lm: LM, runs: list[_Run], sel: list[int], iv: _Intervention, T: int, mode: str, per_prompt: np.ndarray,
          kwargs: dict, seconds: float, single: bool) -> dict:
    eos = [r.gen.eos_at for r in runs]
    notes = []
    if any(e is not None and e < T - 1 for e in eos):
        notes.append("greedy generation emitted EOS before max_new_tokens for some prompts: the cells after the "
                     "EOS token are NaN (meta['eos'] has the EOS index per prompt, None = no EOS)")
    if mode == "free_running":
        notes.append("free-running: each intervened run generated its own tokens; cell t compares the clean and "
                     "the intervened distribution at their own step t (cells after an intervened EOS are NaN)")
    clean_fw = sum(r.gen.clean.ids.shape[1] for r in runs) * lm.n_layers
    opts = {"prompt": runs[0].prompt if single else [r.prompt for r in runs], "max_new_tokens": T,
            "layers": sel, "intervention": iv.label, "mode": mode, "top_k": kwargs["top_k"],
            "resume": kwargs["resume"]}
    return {
        **C.provenance(lm), "analysis": "ablation_kl", "options": opts, "seed": None,
        "decoding": "greedy (do_sample=False), temperature 1, nats",
        "prompts": [r.prompt for r in runs],
        "prompt_tokens": [C.token_labels(lm, r.prompt_ids[0].tolist()) for r in runs],
        "generated_tokens": [C.token_labels(lm, r.gen.tokens) for r in runs],
        "generated_ids": [list(r.gen.tokens) for r in runs],
        "eos": eos, "notes": notes, "per_prompt": per_prompt,
        "engine": sorted({r.engine for r in runs}),
        "engine_note": sorted({r.gen.clean.resume_note for r in runs if r.gen.clean.resume_note}),
        "block_evaluations": int(sum(r.blocks for r in runs)),
        "clean_forward_equivalents": float(sum(r.blocks * r.gen.clean.ids.shape[1] for r in runs)) / clean_fw,
        "seconds": seconds,
    }


# ---- drill-down ------------------------------------------------------------------------------------------------

def _pick_prompt(runs: list[_Run], r: int, c: int) -> int:
    """The prompt shown in detail: the only one, or the one with the largest value in this cell."""
    if len(runs) == 1:
        return 0
    v = np.array([x.values[r, c] for x in runs], dtype=np.float64)
    return int(np.nanargmax(v)) if np.isfinite(v).any() else 0


def _continuation(lm: LM, run: _Run, spec: RowSpec, n: int) -> list[int]:
    """The intervened model's own greedy continuation (KV cache), for the drill-down text."""
    toks: list[int] = []
    stop = eos_ids(lm)
    with torch.inference_mode(), hooks.stack(*spec_hooks(lm, spec, None)):
        out = lm.model(input_ids=run.prompt_ids, use_cache=True, **keep_logits_arg(lm.model, 1))
        for t in range(n):
            tok = int(out.logits[0, -1].argmax())
            toks.append(tok)
            if tok in stop or t == n - 1:
                break
            fed = torch.cat([run.prompt_ids, torch.tensor([toks], device=run.prompt_ids.device)], 1)
            out = next_forward(lm, out, fed)
    return toks


@locks_model
def _drill(lm: LM, runs: list[_Run], sel: list[int], iv: _Intervention, mode: str, m: HeatMatrix, r: int,
           c: int) -> Detail:
    d = m.cell(r, c)
    layer, t = sel[r], c
    pi = _pick_prompt(runs, r, c)
    run = runs[pi]
    T = m.values.shape[1]
    d.texts["prompt"] = run.prompt
    d.texts["clean continuation"] = lm.tokenizer.decode(run.gen.tokens)
    spec = iv.spec(lm, layer, run.gen.clean, run.gen.prompt_len)
    if mode == "free_running" and run.own_tokens is not None:
        own = run.own_tokens[r]
    else:
        key = ("cont", r)
        if key not in run.cache:
            run.cache[key] = _continuation(lm, run, spec, T)
        own = run.cache[key]
    d.texts[f"intervened continuation (layer {layer}, {iv.label})"] = lm.tokenizer.decode(own)
    if len(runs) > 1:
        labels = [f"{i}: {x.prompt[:40]}" for i, x in enumerate(runs)]
        vals = np.array([x.values[r, c] for x in runs])
        chart, table = C.spread_chart(f"KL per prompt at layer {layer}, Gen{t}", labels, vals, "KL")
        d.charts.append(chart)
        d.tables["per prompt"] = table
        d.texts["per-prompt spread"] = (f"mean {np.nanmean(vals):.4g}, min {np.nanmin(vals):.4g}, "
                                        f"max {np.nanmax(vals):.4g} over {np.isfinite(vals).sum()} prompts; "
                                        f"detail below for prompt {pi} (the largest)")
    if t < len(run.gen.tokens) and np.isfinite(run.values[r, t]):
        ctok = run.gen.tokens[t]
        chart, table = C.topk_chart(lm, f"Next token at Gen{t}: clean vs layer {layer} {iv.label}",
                                    run.clean_top_ids[t], run.clean_top_p[t], run.int_top_ids[r, t],
                                    run.int_top_p[r, t], run.clean_at_int[r, t], run.int_at_clean[r, t])
        d.charts.insert(0, chart)
        d.tables["top-k"] = table
        d.texts["clean token"] = lm.token_strings([ctok])[0]
        d.texts["rank of the clean token under the intervention"] = (
            f"{int(run.rank[r, t])} (p = {float(run.p_tok[r, t]):.4g}; clean p = {float(run.clean_top_p[t, 0]):.4g})")
        d.meta.update(clean_token_rank=int(run.rank[r, t]), clean_token_p_intervened=float(run.p_tok[r, t]))
    else:
        d.texts["note"] = (f"Gen{t} was not generated for this prompt: greedy generation emitted EOS at "
                           f"Gen{run.gen.eos_at}")
    d.meta.update(layer=layer, gen_index=t, prompt_index=pi, intervention=iv.label, mode=mode)
    d.reruns[f"KL at every position, layer {layer}"] = lambda: per_position_kl(lm, run, layer, iv)
    if t < len(run.gen.tokens):
        ids = torch.cat([run.prompt_ids[0], torch.tensor(run.gen.tokens[:t], dtype=torch.long,
                                                         device=run.prompt_ids.device)])
        d.reruns[f"logit lens at Gen{t}"] = lambda: logit_lens(lm, ids)
    return d


@locks_model
def per_position_kl(lm: LM, run: _Run, layer: int, iv: _Intervention) -> HeatMatrix:
    """KL(clean ‖ intervened) at every position of prompt + generated tokens, for one layer (teacher-forced)."""
    ids = torch.cat([run.prompt_ids[0], torch.tensor(run.gen.tokens, dtype=torch.long,
                                                     device=run.prompt_ids.device)])[None]
    spec = iv.spec(lm, layer, run.gen.clean, run.gen.prompt_len)
    with torch.inference_mode(), hooks.stack(*spec_hooks(lm, spec, [1])):
        lp = log_probs(lm.model(input_ids=ids.expand(2, -1), use_cache=False).logits)
    kl = kl_div(lp[0], lp[1])
    c_ids, c_p = topk_of(lp[0], 10)
    i_ids, i_p = topk_of(lp[1], 10)
    data = dict(c_ids=c_ids.cpu().numpy(), c_p=c_p.cpu().numpy(), i_ids=i_ids.cpu().numpy(),
                i_p=i_p.cpu().numpy(), iac=lp[1].gather(-1, c_ids).exp().cpu().numpy(),
                cai=lp[0].gather(-1, i_ids).exp().cpu().numpy())
    toks = C.token_labels(lm, ids[0].tolist())
    P = run.gen.prompt_len

    def drill(m: HeatMatrix, _r: int, c: int) -> Detail:
        d = m.cell(_r, c)
        chart, table = C.topk_chart(lm, f"Next token after position {c} ({toks[c]!r}): clean vs layer {layer}",
                                    data["c_ids"][c], data["c_p"][c], data["i_ids"][c], data["i_p"][c],
                                    data["cai"][c], data["iac"][c])
        d.charts.append(chart)
        d.tables["top-k"] = table
        d.texts["context"] = lm.tokenizer.decode(ids[0, :c + 1].tolist())
        return d

    values = kl[None].cpu().numpy()
    return HeatMatrix(values, [f"layer {layer}"], toks,
                      title=f"KL at every position, layer {layer} ({iv.label}, teacher-forced)",
                      row_title="layer", col_title="position (input token)", metric="KL(clean ‖ intervened), nats",
                      meta={**C.provenance(lm), "analysis": "ablation_kl.per_position", "layer": layer,
                            "intervention": iv.label, "prompt": run.prompt, "prompt_len": P, "tokens": toks,
                            "note": f"positions {P - 1}.. predict the generated tokens",
                            "log": suggests_log_scale(values)}, drill=drill)

