"""`hw.patching`: activation patching / causal tracing (Meng et al. 2022, "Locating and Editing Factual
Associations in GPT", the causal-tracing figures), written against the analysis contract (`heatwidget.analysis`).

Rows = layers, cols = the clean prompt's tokens. Cell (l, t), metric "prob": the probability of the clean
prompt's greedy next token (the answer) at the last position, when the corrupted input runs with one clean
activation restored at position t —

- site "resid": the output of block l;
- site "mlp" / "attn": the output of that module in the `window` layers centred on l, l − w//2 … l + ⌈w/2⌉ − 1
  (the paper's convention, exactly w layers away from the ends; clipped there).

The corrupted input is `corrupted` (a prompt with the clean prompt's token count) or, when None, the clean prompt
with Gaussian noise N(0, ν²) added to the subject's token embeddings: ν = noise_scale × σ, σ the std of the
input-embedding matrix (noise_ref="embedding", the paper's 3σ) or of this prompt's clean embedding output, the
hidden state entering block 0 (noise_ref="residual"); seeded like `knockout_js`'s noise.

Metric "logit_diff": logit(answer) − logit(rival) at the last position, where the rival is the corrupted run's
most likely token other than the answer (with a counterfactual `corrupted` prompt: usually its own answer).
It is a difference of log-probabilities too (the softmax normaliser cancels), so it does not saturate at 1.

Speed: a restore at position t changes nothing before t, at any layer. The cells are run as batched rows that
resume from the corrupted run: block l + 1 upwards for "resid" (the window's first block for mlp/attn), and only
positions t … T−1, attending to the corrupted run's cached keys/values before t (`_suffix`). A restore whose
clean value equals the corrupted one (positions before the first corrupted token) is the corrupted run itself.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._lm import LM
from .._offload import live_param
from ..analysis import Analysis, Config, Option, Run, Table, current_config, run_analysis
from ..anatomy import AnatomyError
from ..matrix import Chart, Detail, HeatMatrix, Series
from . import _common as common
from ._engine import Edit, EditFn, RowSpec, forward_clean, keep_logits_arg, run_rows
from ._stats import log_probs
from ._suffix import SuffixBase, base_forward, prepare, suffix_clean
from .knockout import NOISE_REFS, corruption_noise, subject_positions

__all__ = [
    "patching",
    "trace",
    "PatchItem",
    "Trace",
    "PATCHING",
    "PATCH_SITES",
    "PATCH_METRICS",
    "NOISE_REFS",
    "patch_window",
]

PATCH_SITES = ("resid", "mlp", "attn")
PATCH_METRICS = ("prob", "logit_diff")


@dataclass(frozen=True)
class PatchItem:
    """One causal trace's inputs: the clean prompt and either a corrupted prompt or the subject to noise."""

    clean: str
    corrupted: str | None = None
    subject: str | None = None


@dataclass
class Trace:
    """One prompt's causal trace (numpy only: it travels back from Ray workers)."""

    layers: list[int]
    ids: list[int]
    tokens: list[str]
    noised: list[int]  # positions that carry noise ([] for a corrupted prompt)
    answer: int
    rival: int
    prob: np.ndarray  # [R, T]
    logit_diff: np.ndarray  # [R, T]
    p_clean: float
    p_corrupted: float
    logit_diff_clean: float
    logit_diff_corrupted: float
    noise_std: float | None
    engine: str
    engine_note: str
    work: dict[str, int] = field(default_factory=dict)


def patch_window(layer: int, window: int, n_layers: int) -> list[int]:
    """The `window` layers centred on `layer`: layer − w//2 … layer + ⌈w/2⌉ − 1, clipped to the model."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


# ---- the clean run and the corruption ---------------------------------------------------------------------------


@dataclass
class _Setup:
    ids: torch.Tensor  # clean [1, T]
    base_ids: torch.Tensor  # corrupted [1, T] (the clean ids when the corruption is noise)
    noised: list[int]
    noise: torch.Tensor | None  # [T, d] added to the embedding output, or None
    noise_std: float | None
    clean: dict[str, list[torch.Tensor]]  # site -> per layer [T, d] clean output
    clean_logp: torch.Tensor  # [V] at the last position

    def corruption(self, lm: LM) -> contextlib.AbstractContextManager:
        if self.noise is None:
            return contextlib.nullcontext()
        noise = self.noise
        return hooks.edit_output(lm.anatomy.embed, lambda h, x: h + noise.to(h.device, h.dtype))


def _site_modules(lm: LM, site: str) -> list[torch.nn.Module]:
    """One module per layer whose output is `site`, or an AnatomyError naming the family and the layers that
    have none (attention-free or hybrid layers, attention split into several sub-layers)."""
    a = lm.anatomy
    mods: list[Any] = list(a.layers) if site == "resid" else list(a.mlp) if site == "mlp" else list(a.attn)
    missing = [j for j, m in enumerate(mods) if m is None or isinstance(m, (torch.nn.ModuleList, list, tuple))]
    if missing:
        raise AnatomyError(
            f"patching site={site!r} restores one {site} output per layer, and this {a.family} model's layers "
            f"{missing} have no single {site} module (attention-free, hybrid or split sub-layers): use site='resid'"
        )
    return mods


def _patchable_sites(lm: LM) -> list[str]:
    """The sites this model has at every layer (the clean run records those, for re-runs at other sites)."""
    out = []
    for site in PATCH_SITES:
        try:
            _site_modules(lm, site)
        except AnatomyError:
            continue
        out.append(site)
    return out


def _setup(lm: LM, item: PatchItem, seed: int, noise_ref: str, noise_scale: float) -> _Setup:
    """The clean run (every site's output at every layer and position) and the corruption to apply."""
    ids = lm.encode(item.clean)["input_ids"]
    sites = _patchable_sites(lm)
    mods = {(s, j): m for s in sites for j, m in enumerate(_site_modules(lm, s))}
    with (
        torch.inference_mode(),
        hooks.capture(mods) as acts,
        hooks.capture({0: lm.anatomy.layers[0]}, what="input") as emb,
    ):
        logits = lm.model(input_ids=ids, use_cache=False, **keep_logits_arg(lm.model, 1)).logits[0, -1]
    clean = {s: [acts[(s, j)][0] for j in range(lm.n_layers)] for s in sites}
    if item.corrupted is not None:
        return _Setup(ids, lm.encode(item.corrupted)["input_ids"], [], None, None, clean, log_probs(logits))
    noised = subject_positions(lm, item.clean, str(item.subject), ids)
    d = int(emb[0].shape[-1])
    sigma = (
        float(live_param(lm.anatomy.embed).detach().float().std())
        if noise_ref == "embedding"
        else float(emb[0].float().std())
    )
    noise = torch.zeros(ids.shape[1], d)
    # the draw knockout_js uses for its subject row at layer 0: seeded per (seed, prompt 0, site 0, layer 0)
    noise[noised] = corruption_noise(seed, 0, 0, 0, len(noised), d) * (noise_scale * sigma)
    return _Setup(ids, ids, noised, noise, noise_scale * sigma, clean, log_probs(logits))


# ---- the rows ---------------------------------------------------------------------------------------------------


def _restore_fn(p: int, value: torch.Tensor):
    """out_fn(h, x) that puts `value` [d] at position p of h [B, T', d] (the other positions unchanged)."""

    def fn(h: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        at = (torch.arange(h.shape[1], device=h.device) == p)[None, :, None]
        return torch.where(at, value.to(h.device, h.dtype), h)

    return fn


def _row_spec(
    lm: LM, s: _Setup, base_site: list[torch.Tensor], site: str, window: int, layer: int, t: int, offset: int
) -> RowSpec | None:
    """The row restoring the clean `site` at position t for layer `layer`, in coordinates starting at `offset`;
    None when every restored value equals the corrupted one (the row is the corrupted run itself)."""
    p = t - offset
    if site == "resid":
        value = s.clean["resid"][layer][t]
        if torch.equal(value, base_site[layer][t]):
            return None
        return RowSpec(out_layer=layer, out_fn=_restore_fn(p, value))
    mods = _site_modules(lm, site)
    edits: dict[int, list[Edit]] = {}
    for j in patch_window(layer, window, lm.n_layers):
        value = s.clean[site][j][t]
        if not torch.equal(value, base_site[j][t]):
            fn = _restore_fn(p, value)
            edits[j] = [Edit((site, j, t), functools.partial(_edit_rows, mods[j], fn))]
    return RowSpec(block_edits=edits) if edits else None


def _edit_rows(module: torch.nn.Module, fn: EditFn, rows: Any) -> contextlib.AbstractContextManager:
    return hooks.edit_output(module, fn, rows=rows)


def _present(rows: list[tuple[Any, RowSpec | None]]) -> list[tuple[Any, RowSpec]]:
    """The rows that need running (a None spec is the corrupted run itself)."""
    return [(key, sp) for key, sp in rows if sp is not None]


class _Cells:
    """Collects both metrics per cell from the engine's log-probabilities at the last position."""

    def __init__(self, n_rows: int, n_cols: int, answer: int, rival: int, base_logp: torch.Tensor) -> None:
        self.answer, self.rival = answer, rival
        self.prob = np.full((n_rows, n_cols), float(base_logp[answer].exp()), np.float64)
        self.logit_diff = np.full((n_rows, n_cols), float(base_logp[answer] - base_logp[rival]), np.float64)

    def reducer(self, cells: list[tuple[int, int]]):
        def reduce(rows: list[int], logp: torch.Tensor) -> None:
            lp = logp[:, 0]
            prob = lp[:, self.answer].exp().cpu().numpy()
            diff = (lp[:, self.answer] - lp[:, self.rival]).cpu().numpy()
            for i, r in enumerate(rows):
                self.prob[cells[r]] = prob[i]
                self.logit_diff[cells[r]] = diff[i]

        return reduce


def _run_suffix(
    lm: LM,
    s: _Setup,
    base: SuffixBase,
    base_site: list[torch.Tensor],
    site: str,
    window: int,
    sel: list[int],
    cells: _Cells,
    budget: float | None,
) -> int:
    """Each position t: its rows resume from the corrupted run at their first changed block, on positions t…."""
    from .._progress import check_cancelled

    n = int(s.ids.shape[1])
    work = 0
    for t in range(n):
        check_cancelled()
        rows = _present([(r, _row_spec(lm, s, base_site, site, window, layer, t, t)) for r, layer in enumerate(sel)])
        if not rows:
            continue
        specs = [sp for _, sp in rows]
        work += sum(lm.n_layers - sp.start(lm.n_layers) for sp in specs) * (n - t)
        run_rows(
            lm,
            suffix_clean(lm, base, t),
            specs,
            torch.tensor([n - 1 - t], device=s.ids.device),
            cells.reducer([(r, t) for r, _ in rows]),
            resume=True,
            budget_mb=budget,
        )
    return work


def _run_full(
    lm: LM,
    s: _Setup,
    base_site: list[torch.Tensor],
    site: str,
    window: int,
    sel: list[int],
    cells: _Cells,
    budget: float | None,
) -> tuple[str, int]:
    """Fallback: every row over the whole prompt (resumed at its first block where the model allows)."""
    n = int(s.ids.shape[1])
    with s.corruption(lm):
        full, _ = forward_clean(lm, s.base_ids, keep_last=1)
    rows = _present(
        [
            ((r, t), _row_spec(lm, s, base_site, site, window, layer, t, 0))
            for t in range(n)
            for r, layer in enumerate(sel)
        ]
    )
    if not rows:
        return "none", 0
    specs = [sp for _, sp in rows]
    engine = run_rows(
        lm,
        full,
        specs,
        torch.tensor([n - 1], device=s.ids.device),
        cells.reducer([c for c, _ in rows]),
        budget_mb=budget,
    )
    per_row = [lm.n_layers - sp.start(lm.n_layers) if engine == "resume" else lm.n_layers for sp in specs]
    return engine, sum(per_row) * n


def trace(
    lm: LM,
    item: PatchItem,
    *,
    site: str = "resid",
    window: int = 1,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    noise_ref: str = "embedding",
    noise_scale: float = 3.0,
) -> Trace:
    """One prompt's causal trace: both metrics for every (layer, position) cell (the per-item step of
    `patching`; also runs on Ray workers)."""
    sel = common.selected_layers(lm, layers)
    s = _setup(lm, item, seed, noise_ref, noise_scale)
    with torch.inference_mode(), s.corruption(lm), hooks.capture(_site_modules(lm, site)) as got:
        base, logits = base_forward(lm, s.base_ids)
    base_site = [got[j][0] for j in range(lm.n_layers)]
    base_logp = log_probs(logits)
    answer = int(s.clean_logp.argmax())
    rival = int(
        base_logp.masked_fill(torch.arange(base_logp.shape[0], device=base_logp.device) == answer, -torch.inf).argmax()
    )
    n = int(s.ids.shape[1])
    cells = _Cells(len(sel), n, answer, rival, base_logp)
    budget = current_config().memory_budget_mb
    prepare(lm, base)
    if base.ok:
        engine, work = "suffix", _run_suffix(lm, s, base, base_site, site, window, sel, cells, budget)
    else:
        engine, work = _run_full(lm, s, base_site, site, window, sel, cells, budget)
    ids = s.ids[0].tolist()
    lp = s.clean_logp
    return Trace(
        sel,
        ids,
        common.token_labels(lm, ids),
        s.noised,
        answer,
        rival,
        cells.prob.astype(np.float32),
        cells.logit_diff.astype(np.float32),
        float(lp[answer].exp()),
        float(base_logp[answer].exp()),
        float(lp[answer] - lp[rival]),
        float(base_logp[answer] - base_logp[rival]),
        s.noise_std,
        engine,
        base.note,
        {"token_block_evaluations": int(work), "naive_token_block_evaluations": len(sel) * n * lm.n_layers * n},
    )


# ---- the contract: items, reduce, drill --------------------------------------------------------------------------


def _items(
    lm: LM, clean: str, corrupted: str | None = None, subject: str | None = None, **options: Any
) -> list[PatchItem]:
    """Check the inputs before any model time is spent."""
    if not isinstance(clean, str):
        raise TypeError(f"clean must be a str prompt, got {type(clean).__name__}")
    ids = lm.encode(clean)["input_ids"]
    common.selected_layers(lm, options.get("layers"))
    _site_modules(lm, options.get("site", "resid"))
    if corrupted is not None:
        if not isinstance(corrupted, str):
            raise TypeError(f"corrupted must be a str prompt or None, got {type(corrupted).__name__}")
        n_c, n = int(lm.encode(corrupted)["input_ids"].shape[1]), int(ids.shape[1])
        if n_c != n:
            raise ValueError(
                f"corrupted prompt has {n_c} tokens but the clean prompt has {n}: patching restores "
                f"position by position, so both need the same number of tokens"
            )
    elif subject is None:
        raise ValueError("give subject= (the tokens to noise) or a corrupted prompt")
    if subject is not None:
        subject_positions(lm, clean, subject, ids)
    return [PatchItem(clean, corrupted, subject)]


def _what(site: str, window: int) -> str:
    return "block output" if site == "resid" else f"{site} output (window {window})"


def _reduce(run: Run) -> Table:
    tr: Trace = run.results[0]
    o = run.options
    lm = run.lm
    values = tr.prob if o["metric"] == "prob" else tr.logit_diff
    cols = [f"{tok}*" if i in tr.noised else tok for i, tok in enumerate(tr.tokens)]
    answer, rival = common.token_labels(lm, [tr.answer, tr.rival])
    metric = (
        f"p({answer!r}) at the last position"
        if o["metric"] == "prob"
        else f"logit({answer!r}) − logit({rival!r}) at the last position"
    )
    meta = {
        "p_clean": tr.p_clean,
        "p_corrupted": tr.p_corrupted,
        "logit_diff_clean": tr.logit_diff_clean,
        "logit_diff_corrupted": tr.logit_diff_corrupted,
        "answer": answer,
        "answer_id": tr.answer,
        "rival": rival,
        "rival_id": tr.rival,
        "layers": tr.layers,
        "tokens": tr.tokens,
        "noised_positions": tr.noised,
        "noise_std": tr.noise_std,
        "prob": tr.prob,
        "logit_diff": tr.logit_diff,
        "clean": run.inputs["clean"],
        "corrupted": run.inputs.get("corrupted"),
        "subject": run.inputs.get("subject"),
        "engine": tr.engine,
        "engine_note": tr.engine_note,
        "work": tr.work,
        "window_layers": {str(lay): patch_window(lay, o["window"], lm.n_layers) for lay in tr.layers}
        if o["site"] != "resid"
        else None,
        "definition": _DEFINITION,
    }
    how = "noise on the subject (*)" if tr.noised else "corrupted prompt"
    return Table(
        values,
        [str(lay) for lay in tr.layers],
        cols,
        title=f"Causal trace: clean {_what(o['site'], o['window'])} restored into the run with {how}",
        row_title="layer",
        col_title="restored token",
        metric=metric,
        meta=meta,
    )


_DEFINITION = (
    "cell (l, t): the corrupted input run with the clean activation restored at token t (block l's "
    "output for resid; the module's output in the window layers centred on l for mlp/attn); "
    "prob = p(clean answer) at the last position; logit_diff = logit(clean answer) − logit(rival), "
    "the rival being the corrupted run's most likely other token"
)


def patched_log_probs(
    lm: LM,
    item: PatchItem,
    *,
    site: str,
    layer: int,
    position: int,
    window: int,
    seed: int,
    noise_ref: str,
    noise_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean, corrupted, patched) next-token log-probabilities at the last position for one cell, each from one
    plain forward (the drill-down's view of a cell, independent of the batched engine)."""
    s = _setup(lm, item, seed, noise_ref, noise_scale)
    mods = _site_modules(lm, site)
    layers = [layer] if site == "resid" else patch_window(layer, window, lm.n_layers)
    edits = [hooks.edit_output(mods[j], _restore_fn(position, s.clean[site][j][position])) for j in layers]
    keep = keep_logits_arg(lm.model, 1)
    with torch.inference_mode(), s.corruption(lm):
        corrupted = log_probs(lm.model(input_ids=s.base_ids, use_cache=False, **keep).logits[0, -1])
        with hooks.stack(*edits):
            patched = log_probs(lm.model(input_ids=s.base_ids, use_cache=False, **keep).logits[0, -1])
    return s.clean_logp, corrupted, patched


def _topk_chart(lm: LM, title: str, dists: dict[str, torch.Tensor], k: int = 5) -> Chart:
    """Bars over the union of each distribution's top-k tokens, one series per distribution."""
    ids: list[int] = []
    for lp in dists.values():
        ids += [i for i in lp.topk(k).indices.tolist() if i not in ids]
    labels = common.unique_labels(common.token_labels(lm, ids), ids)
    return Chart(
        title,
        "bar",
        [Series(name, labels, [float(lp[i].exp()) for i in ids]) for name, lp in dists.items()],
        x_title="token",
        y_title="probability",
    )


def _drill(run: Run, m: HeatMatrix, r: int, c: int) -> Detail:
    tr: Trace = run.results[0]
    o, lm, item = run.options, run.lm, run.items[0]
    layer, site = tr.layers[r], o["site"]
    d = m.cell(r, c)
    args = dict(
        layer=layer,
        position=c,
        window=o["window"],
        seed=o["seed"],
        noise_ref=o["noise_ref"],
        noise_scale=o["noise_scale"],
    )
    clean, corrupted, patched = patched_log_probs(lm, item, site=site, **args)
    where = [layer] if site == "resid" else patch_window(layer, o["window"], lm.n_layers)
    d.texts["restored"] = f"clean {site} output of layer(s) {where} at token {c} ({tr.tokens[c]!r})"
    d.texts["answer"] = (
        f"{m.meta['answer']!r}: p clean {tr.p_clean:.4g}, corrupted {tr.p_corrupted:.4g}, "
        f"patched {float(patched[tr.answer].exp()):.4g}"
    )
    d.texts["prompt"] = item.clean
    d.texts["corruption"] = (
        item.corrupted
        if item.corrupted is not None
        else f"N(0, {tr.noise_std:.3g}²) on the embeddings of {[tr.tokens[i] for i in tr.noised]}"
    )
    d.charts.append(
        _topk_chart(
            lm,
            f"Next token: clean vs corrupted vs patched (layer {layer}, token {c})",
            {"clean": clean, "corrupted": corrupted, "patched": patched},
        )
    )
    d.charts.append(
        Chart(
            f"Layer {layer}: {m.metric} by restored token",
            "line",
            [Series(f"{site}, layer {layer}", list(range(len(tr.tokens))), m.values[r].tolist())],
            x_title="restored token position",
            y_title=o["metric"],
        )
    )
    d.charts.append(
        Chart(
            f"Token {c} ({tr.tokens[c]!r}): {m.metric} by layer",
            "line",
            [Series(f"{site}, token {c}", tr.layers, m.values[:, c].tolist())],
            x_title="layer",
            y_title=o["metric"],
        )
    )
    _other_sites(run, m, d, args)
    d.meta.update(layer=layer, position=c, site=site)
    return d


def _other_sites(run: Run, m: HeatMatrix, d: Detail, args: dict[str, Any]) -> None:
    """This cell restored at the other sites (one forward each), and re-runs of the whole trace for them."""
    import pandas as pd

    tr: Trace = run.results[0]
    rows = []
    for other in _patchable_sites(run.lm):  # a hybrid model may have no per-layer mlp/attn module
        _, _, lp = patched_log_probs(run.lm, run.items[0], site=other, **args)
        rows.append(
            {"site": other, "p(answer)": float(lp[tr.answer].exp()), "logit_diff": float(lp[tr.answer] - lp[tr.rival])}
        )
        if other != run.options["site"]:
            d.reruns[f"causal trace of the {other} site"] = functools.partial(m.recompute, site=other)
    d.tables["this cell at each site"] = pd.DataFrame(rows)


PATCHING = Analysis(
    name="patching",
    options=(
        Option("site", "resid", choices=PATCH_SITES, doc="what is restored: block output, MLP or attention output"),
        Option("metric", "prob", choices=PATCH_METRICS, doc="p(clean answer), or logit(answer) − logit(rival)"),
        Option("window", 1, kind=int, min=1, doc="mlp/attn: layers restored together, centred on the row's layer"),
        Option("layers", None, kind="layers", nullable=True, doc="layers (rows) to trace; None: all"),
        Option("seed", 0, kind=int, min=0, doc="seed of the embedding noise"),
        Option(
            "noise_ref",
            "embedding",
            choices=NOISE_REFS,
            doc="σ of the noise: embedding matrix or this prompt's embedding output",
        ),
        Option("noise_scale", 3.0, kind=float, min=0.0, doc="noise std in units of σ (the paper's 3)"),
    ),
    items=_items,
    per_item=trace,
    reduce=_reduce,
    drill=_drill,
)


def patching(
    lm: LM,
    clean: str,
    corrupted: str | None = None,
    *,
    subject: str | None = None,
    site: str = "resid",
    metric: str = "prob",
    window: int = 1,
    layers: Sequence[int] | None = None,
    seed: int = 0,
    noise_ref: str = "embedding",
    noise_scale: float = 3.0,
    config: Config | dict[str, Any] | None = None,
) -> HeatMatrix:
    """Causal trace of `clean` (Meng et al. 2022): rows = layers, cols = the clean prompt's tokens; cell (l, t) is
    p(clean answer) (or the logit difference) when the corrupted input runs with the clean `site` activation
    restored at token t (see the module docstring for the exact definitions). `corrupted`: a prompt with the same
    number of tokens, or None: Gaussian noise on the tokens of `subject`. meta holds p_clean and p_corrupted.
    `config`: execution settings for this call (executor, workers, …), over those of `with hw.config(...)`."""
    return run_analysis(
        PATCHING,
        lm,
        {"clean": clean, "corrupted": corrupted, "subject": subject},
        {
            "site": site,
            "metric": metric,
            "window": window,
            "layers": layers,
            "seed": seed,
            "noise_ref": noise_ref,
            "noise_scale": noise_scale,
        },
        config,
    )
