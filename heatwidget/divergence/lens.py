"""`hw.logit_lens`: each layer's residual stream read out through the final norm and unembedding.

value[l, i] = KL(final ‖ lens_l) at position i (nats), where lens_l = softmax(unembed(final_norm(out_l))) and
out_l is block l's output; or, with metric="prob", the lens probability of the final top-1 token. One forward
(block outputs captured), then the head is applied layer by layer on the device, chunked to the memory budget.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._concurrency import locks_model
from .._lm import LM
from .._validate import optional_budget, positive_int, token_ids
from ..matrix import Detail, HeatMatrix, suggests_log_scale
from . import _common as C
from ._engine import head
from ._stats import kl_div, log_probs, rank_of
from ._stats import top_k as topk_of

__all__ = ["logit_lens"]


def _ids(lm: LM, prompt: Any) -> torch.Tensor:
    """A str is tokenized (special tokens added); a sequence/tensor of ids is used as given (ints in the
    vocabulary: a float, a negative or an out-of-range id is an error, never truncated or wrapped)."""
    if isinstance(prompt, str):
        ids = lm.encode(prompt)["input_ids"]
    else:
        if prompt is None or not hasattr(prompt, "__len__"):
            raise TypeError(f"prompt must be a str or a sequence of token ids, got {type(prompt).__name__}")
        vocab = int(lm.anatomy.embed.weight.shape[0])
        ids = torch.tensor([token_ids(prompt, vocab)], dtype=torch.long, device=lm.device)
        limit = C.context_limit(lm)
        if limit is not None and ids.shape[1] > limit:
            raise ValueError(f"prompt is {ids.shape[1]} tokens long but the model's context is {limit} tokens")
    return ids


@locks_model
def logit_lens(lm: LM, prompt: str | Sequence[int] | torch.Tensor, layers: Sequence[int] | None = None,
               metric: str = "kl", *, top_k: int = 10, memory_budget_mb: float | None = None) -> HeatMatrix:
    """Logit lens: rows = layers, cols = prompt tokens; KL(final ‖ lens) in nats, or metric="prob": the lens
    probability of the model's final top-1 token at that position. `prompt` is a str or a list/tensor of ids."""
    t0 = time.perf_counter()
    if metric not in ("kl", "prob"):
        raise ValueError(f"metric must be 'kl' or 'prob', got {metric!r}")
    top_k = positive_int(top_k, "top_k")
    optional_budget(memory_budget_mb, "memory_budget_mb")
    ids = _ids(lm, prompt)
    lm.anatomy.require_single_stream("logit_lens")
    sel = lm.anatomy.resolve_layers(None if layers is None else layers)
    blocks = lm.anatomy.layers
    with torch.inference_mode(), hooks.capture({i: blocks[i] for i in sel}) as res:
        final = log_probs(lm.model(input_ids=ids, use_cache=False).logits[0])  # [S, V]
    S, V = final.shape
    fin_top = final.argmax(-1)
    f_ids, f_p = topk_of(final, top_k)
    k = f_ids.shape[-1]
    vals = np.zeros((len(sel), S), dtype=np.float32)
    lens_ids = np.zeros((len(sel), S, k), dtype=np.int64)
    lens_p = np.zeros((len(sel), S, k), dtype=np.float32)
    lens_at_final = np.zeros((len(sel), S, k), dtype=np.float32)
    final_at_lens = np.zeros((len(sel), S, k), dtype=np.float32)
    rank = np.zeros((len(sel), S), dtype=np.int64)
    budget = (memory_budget_mb or 512.0) * 2**20
    per = max(1, int(budget // (S * V * 4 * 3)))  # layers per chunk: logits, log-probs and a temporary
    with torch.inference_mode():
        for a in range(0, len(sel), per):
            chunk = list(range(a, min(a + per, len(sel))))
            h = torch.cat([res[sel[i]] for i in chunk], 0)  # [n, S, d]
            lp = log_probs(head(lm, h))
            ref = final[None].to(lp.device)
            if metric == "kl":
                v = kl_div(ref, lp)
            else:
                v = lp.gather(-1, fin_top[None, :, None].expand(len(chunk), -1, 1).to(lp.device))[..., 0].exp()
            ii, ip = topk_of(lp, k)
            idx = np.asarray(chunk)
            vals[idx] = v.cpu().numpy()
            lens_ids[idx], lens_p[idx] = ii.cpu().numpy(), ip.cpu().numpy()
            lens_at_final[idx] = lp.gather(-1, f_ids[None].expand(len(chunk), -1, -1).to(lp.device)).exp().cpu()
            final_at_lens[idx] = ref.expand(len(chunk), -1, -1).gather(-1, ii).exp().cpu().numpy()
            rank[idx] = rank_of(lp, fin_top[None].expand(len(chunk), -1).to(lp.device)).cpu().numpy()
    tok_ids = ids[0].tolist()
    toks = C.token_labels(lm, tok_ids)
    f_ids_np, f_p_np = f_ids.cpu().numpy(), f_p.cpu().numpy()

    def drill(m: HeatMatrix, r: int, c: int) -> Detail:
        d = m.cell(r, c)
        chart, table = C.topk_chart(lm, f"Layer {sel[r]} lens vs final at position {c} ({toks[c]!r})",
                                    f_ids_np[c], f_p_np[c], lens_ids[r, c], lens_p[r, c], final_at_lens[r, c],
                                    lens_at_final[r, c], names=("final", f"lens layer {sel[r]}"))
        d.charts.append(chart)
        d.tables["top-k"] = table
        d.texts["context"] = lm.tokenizer.decode(tok_ids[:c + 1])
        d.texts["final top-1"] = lm.token_strings([int(f_ids_np[c, 0])])[0]
        d.texts["lens top-1"] = lm.token_strings([int(lens_ids[r, c, 0])])[0]
        d.texts["rank of the final top-1 under the lens"] = str(int(rank[r, c]))
        if c + 1 < len(tok_ids):
            d.texts["actual next token"] = toks[c + 1]
        d.meta.update(layer=sel[r], position=c, rank=int(rank[r, c]))
        return d

    label = "KL(final ‖ lens), nats" if metric == "kl" else "lens probability of the final top-1 token"
    meta = {**C.provenance(lm), "analysis": "logit_lens", "options": {"metric": metric, "layers": sel},
            "token_ids": tok_ids, "tokens": toks,
            "final_top1": C.token_labels(lm, fin_top.tolist()), "seed": None,
            "definition": "lens_l = softmax(unembed(final_norm(output of block l))); the last layer's lens is "
                          "the model's own output (KL 0)",
            "seconds": time.perf_counter() - t0}
    m = HeatMatrix(vals, [str(i) for i in sel], toks, title=f"Logit lens ({'KL' if metric == 'kl' else 'p(top-1)'})",
                   row_title="layer", col_title="token", metric=label, meta=meta, drill=drill)
    m.meta["log"] = metric == "kl" and suggests_log_scale(m.values)
    return m.with_recompute(lambda **o: logit_lens(lm, **{**dict(prompt=prompt, layers=layers, metric=metric), **o}))
