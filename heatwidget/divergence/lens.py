"""`hw.logit_lens`: each layer's residual stream read out through the final norm and unembedding.

value[l, i] = KL(final ‖ lens_l) at position i (nats), where lens_l = softmax(unembed(final_norm(out_l))) and
out_l is block l's output; or, with metric="prob", the lens probability of the final top-1 token. One forward
(block outputs captured), then the unembedding is applied layer by layer on the device, chunked to the memory
budget. Both metrics are computed at once, so switching the metric only re-reduces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._limits import context_length
from .._lm import LM
from .._validate import optional_budget, positive_int, token_ids
from ..analysis import Analysis, Config, Option, Run, Table, current_config, legacy_config, run_analysis
from ..matrix import Detail, HeatMatrix, suggests_log_scale
from . import _common as common
from ._engine import unembed, weight_of
from ._stats import kl_div, log_probs, rank_of
from ._stats import top_k as topk_of

__all__ = ["logit_lens", "lens_prompt", "LensResult", "LENS", "LENS_METRICS"]

LENS_METRICS = ("kl", "prob")


@dataclass
class LensResult:
    """One prompt's lens (numpy only: it travels back from Ray workers)."""

    layers: list[int]
    ids: list[int]
    kl: np.ndarray  # [R, S] KL(final ‖ lens)
    prob: np.ndarray  # [R, S] lens probability of the final top-1 token
    final_top1: list[int]
    final_ids: np.ndarray  # [S, k] the model's own top-k
    final_p: np.ndarray
    lens_ids: np.ndarray  # [R, S, k]
    lens_p: np.ndarray
    lens_at_final: np.ndarray  # lens probability of the final top-k  [R, S, k]
    final_at_lens: np.ndarray  # final probability of the lens top-k  [R, S, k]
    rank: np.ndarray  # rank of the final top-1 under the lens  [R, S]


def _ids(lm: LM, prompt: Any) -> list[int]:
    """A str is tokenized (special tokens added); a sequence/tensor of ids is used as given (ints in the
    vocabulary: a float, a negative or an out-of-range id is an error, never truncated or wrapped)."""
    if isinstance(prompt, str):
        return lm.encode(prompt)["input_ids"][0].tolist()
    if prompt is None or not hasattr(prompt, "__len__"):
        raise TypeError(f"prompt must be a str or a sequence of token ids, got {type(prompt).__name__}")
    ids = token_ids(prompt, int(weight_of(lm.anatomy.embed).shape[0]))
    limit = context_length(lm.config)
    if limit is not None and len(ids) > limit:
        raise ValueError(f"prompt is {len(ids)} tokens long but the model's context is {limit} tokens")
    return ids


def _chunk_readout(
    lm: LM, h: torch.Tensor, final: torch.Tensor, f_ids: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """Both metrics and the top-k data of the lens for a chunk of layers' residuals h [n, S, d]."""
    lp = log_probs(unembed(lm, h))
    n = lp.shape[0]
    ref = final[None].to(lp.device)
    top1 = final.argmax(-1).to(lp.device)
    ii, ip = topk_of(lp, k)
    return {
        "kl": kl_div(ref, lp),
        "prob": lp.gather(-1, top1[None, :, None].expand(n, -1, 1))[..., 0].exp(),
        "lens_ids": ii,
        "lens_p": ip,
        "lens_at_final": lp.gather(-1, f_ids[None].expand(n, -1, -1).to(lp.device)).exp(),
        "final_at_lens": ref.expand(n, -1, -1).gather(-1, ii).exp(),
        "rank": rank_of(lp, top1[None].expand(n, -1)),
    }


def lens_prompt(lm: LM, ids: list[int], *, layers: Sequence[int] | None = None, top_k: int = 10) -> LensResult:
    """The logit lens of one prompt (token ids), both metrics: the per-item step of `logit_lens`."""
    sel = common.selected_layers(lm, layers)
    x = torch.tensor([ids], dtype=torch.long, device=lm.device)
    blocks = lm.anatomy.layers
    with torch.inference_mode(), hooks.capture({i: blocks[i] for i in sel}) as res:
        final = log_probs(lm.model(input_ids=x, use_cache=False).logits[0])  # [S, V]
    S, V = final.shape
    f_ids, f_p = topk_of(final, top_k)
    k = f_ids.shape[-1]
    out = {
        name: np.zeros((len(sel), S) + ((k,) if name.startswith(("lens", "final")) else ()), dtype)
        for name, dtype in (
            ("kl", np.float32),
            ("prob", np.float32),
            ("lens_ids", np.int64),
            ("lens_p", np.float32),
            ("lens_at_final", np.float32),
            ("final_at_lens", np.float32),
            ("rank", np.int64),
        )
    }
    budget = (current_config().memory_budget_mb or 512.0) * 2**20
    per = max(1, int(budget // (S * V * 4 * 3)))  # layers per chunk: logits, log-probs and a temporary
    with torch.inference_mode():
        for a in range(0, len(sel), per):
            chunk = list(range(a, min(a + per, len(sel))))
            got = _chunk_readout(lm, torch.cat([res[sel[i]] for i in chunk], 0), final, f_ids, k)
            for name, v in got.items():
                out[name][np.asarray(chunk)] = v.cpu().numpy()
    return LensResult(
        sel,
        list(ids),
        out["kl"],
        out["prob"],
        final.argmax(-1).tolist(),
        f_ids.cpu().numpy(),
        f_p.cpu().numpy(),
        out["lens_ids"],
        out["lens_p"],
        out["lens_at_final"],
        out["final_at_lens"],
        out["rank"],
    )


# ---- the contract: items, reduce, drill --------------------------------------------------------------------------


def _items(lm: LM, prompt: Any, **options: Any) -> list[list[int]]:
    ids = _ids(lm, prompt)
    lm.anatomy.require_single_stream("logit_lens")
    common.selected_layers(lm, options.get("layers"))
    return [ids]


def _reduce(run: Run) -> Table:
    r: LensResult = run.results[0]
    lm, metric = run.lm, run.options["metric"]
    values = r.kl if metric == "kl" else r.prob
    label = "KL(final ‖ lens), nats" if metric == "kl" else "lens probability of the final top-1 token"
    meta = {
        "options": {**run.options, "layers": r.layers},
        "token_ids": r.ids,
        "tokens": common.token_labels(lm, r.ids),
        "final_top1": common.token_labels(lm, r.final_top1),
        "seed": None,
        "log": metric == "kl" and suggests_log_scale(values),
        "definition": "lens_l = softmax(unembed(final_norm(output of block l))); the last layer's lens is "
        "the model's own output (KL 0)",
    }
    return Table(
        values,
        [str(i) for i in r.layers],
        common.token_labels(lm, r.ids),
        title=f"Logit lens ({'KL' if metric == 'kl' else 'p(top-1)'})",
        row_title="layer",
        col_title="token",
        metric=label,
        meta=meta,
    )


def _drill(run: Run, m: HeatMatrix, row: int, c: int) -> Detail:
    r: LensResult = run.results[0]
    lm, layer = run.lm, r.layers[row]
    toks = common.token_labels(lm, r.ids)
    d = m.cell(row, c)
    chart, table = common.topk_chart(
        lm,
        f"Layer {layer} lens vs final at position {c} ({toks[c]!r})",
        r.final_ids[c],
        r.final_p[c],
        r.lens_ids[row, c],
        r.lens_p[row, c],
        r.final_at_lens[row, c],
        r.lens_at_final[row, c],
        names=("final", f"lens layer {layer}"),
    )
    d.charts.append(chart)
    d.tables["top-k"] = table
    d.texts["context"] = lm.tokenizer.decode(r.ids[: c + 1])
    d.texts["final top-1"] = lm.token_strings([int(r.final_ids[c, 0])])[0]
    d.texts["lens top-1"] = lm.token_strings([int(r.lens_ids[row, c, 0])])[0]
    d.texts["rank of the final top-1 under the lens"] = str(int(r.rank[row, c]))
    if c + 1 < len(r.ids):
        d.texts["actual next token"] = toks[c + 1]
    d.meta.update(layer=layer, position=c, rank=int(r.rank[row, c]))
    return d


LENS = Analysis(
    name="logit_lens",
    options=(
        Option("layers", None, kind="layers", nullable=True, doc="layers (rows) to read out; None: all"),
        Option(
            "metric",
            "kl",
            choices=LENS_METRICS,
            doc="KL(final ‖ lens), or the lens probability of the final top-1 token",
        ),
        Option("top_k", 10, kind=int, min=1, doc="tokens kept per cell for the drill-down"),
    ),
    items=_items,
    per_item=lens_prompt,
    reduce=_reduce,
    drill=_drill,
)


def logit_lens(
    lm: LM,
    prompt: str | Sequence[int] | torch.Tensor,
    layers: Sequence[int] | None = None,
    metric: str = "kl",
    *,
    top_k: int = 10,
    config: Config | dict[str, Any] | None = None,
    memory_budget_mb: float | None = None,
) -> HeatMatrix:
    """Logit lens: rows = layers, cols = prompt tokens; KL(final ‖ lens) in nats, or metric="prob": the lens
    probability of the model's final top-1 token at that position. `prompt` is a str or a list/tensor of ids.
    `config`: execution settings for this call (e.g. memory_budget_mb), over those of `with hw.config(...)`;
    the `memory_budget_mb` keyword is its older spelling (still accepted)."""
    optional_budget(memory_budget_mb, "memory_budget_mb")
    cfg = legacy_config(config, common.given(memory_budget_mb=memory_budget_mb), "logit_lens")
    sel = None if layers is None else common.selected_layers(lm, layers)
    return run_analysis(
        LENS, lm, {"prompt": prompt}, {"layers": sel, "metric": metric, "top_k": positive_int(top_k, "top_k")}, cfg
    )
