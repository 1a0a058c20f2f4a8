"""∂L/∂W of every projection for `module_stats(stat="grad" | "grad_relative")`, L the mean next-token
cross-entropy over texts, computed without touching the model (no .grad fields, no requires_grad flags)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from .. import hooks
from .._concurrency import locks_model
from .._lm import LM
from .._progress import check_cancelled
from .._validate import text_list
from ..anatomy import ExpertStack, Part

__all__ = ["lm_loss_grads", "as_lm", "expert_leaves", "gradient_texts"]


def _weight_grad(part: Part, x: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """∂L/∂W of a linear map y = x·Wᵀ (+ b) from its input x and ∂L/∂y, in W's stored layout, float32."""
    x2, g2 = x.reshape(-1, x.shape[-1]).float(), gy.reshape(-1, gy.shape[-1]).float().to(x.device)
    g = x2.T @ g2 if part.transposed else g2.T @ x2  # GPT-2's Conv1D stores [in, out]
    w = cast(torch.Tensor, part.module.weight)
    if tuple(g.shape) != tuple(w.shape):
        raise ValueError(
            f"{part.param_name}: gradient statistics need a linear projection, but this module maps "
            f"{x.shape[-1]} -> {gy.shape[-1]} features with a weight of shape {list(w.shape)}"
        )
    return g


@locks_model
@torch.inference_mode(False)  # the driver runs per-item steps in inference mode; this one needs autograd
def lm_loss_grads(lm: LM, texts: Sequence[str], parts: Sequence[Part], batch_size: int) -> dict[str, torch.Tensor]:
    """∂L/∂(stored weight) for the parts' stored tensors (keyed by param_name), L = mean next-token cross-entropy
    over every non-pad token of `texts` (one loss over all texts, accumulated over batches in float32).

    The model is left untouched, for other threads too: no `.grad` fields, no requires_grad flags. Each
    projection's input x and output y are recorded by hooks acting only in this analysis, autograd gives ∂L/∂y,
    and ∂L/∂W = Σ_tokens ∂L/∂y ⊗ x. The embedding's output is made a leaf that requires grad, so the graph exists
    even when the model's weights are frozen. Routed MoE experts (one token sees a few of them) are no single
    linear map: autograd differentiates their stored parameters directly, which needs them trainable
    (`expert_leaves` says so otherwise).
    """
    model = lm.model
    modules: dict[str, Part] = {}
    experts: dict[str, list[torch.Tensor]] = {}
    for p in parts:
        if p.experts:
            experts.setdefault(p.param_name, expert_leaves(p))
        else:
            modules.setdefault(p.param_name, p)
    # Count predicted tokens first so every batch's loss is scaled to the same global mean.
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    encoded = [lm.encode(batch, padding_side="right") for batch in batches]
    total = sum(int(e["attention_mask"][:, 1:].sum()) for e in encoded)
    if total == 0:
        raise ValueError("the texts give no next-token targets: each needs at least two tokens")
    mods = {name: p.module for name, p in modules.items()}
    grads: dict[str, torch.Tensor] = {}
    for enc in encoded:
        check_cancelled()  # inside the driver's per-layer loop: a cancel stops between batches too
        with (
            torch.enable_grad(),
            hooks.edit_output(lm.anatomy.embed, lambda h, _x: h.detach().requires_grad_()),
            hooks.capture(mods, what="input") as xs,
            hooks.capture(mods, detach=False) as ys,
        ):
            # Right padding keeps real tokens at positions 0..n-1, exactly as if each text ran alone.
            logits = model(**enc, use_cache=False).logits[:, :-1].float()
            targets = enc["input_ids"][:, 1:]
            valid = enc["attention_mask"][:, 1:].to(logits.dtype)
            nll = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            )
            loss = (nll * valid.reshape(-1)).sum() / total
            leaves = [t for ts in experts.values() for t in ts]
            (*gys,) = torch.autograd.grad(loss, [ys[name] for name in mods] + leaves, allow_unused=True)
        _add_expert_grads(grads, experts, gys[len(mods) :])
        for (name, part), gy in zip(modules.items(), gys[: len(mods)], strict=True):
            g = (
                torch.zeros_like(part.module.weight, dtype=torch.float32)
                if gy is None
                else _weight_grad(part, xs[name], gy)
            )
            grads[name] = grads[name] + g if name in grads else g
        del logits, nll, loss, gys, xs, ys
    return grads


def expert_leaves(part: Part) -> list[torch.Tensor]:
    """The trainable tensors an MoE part's stored experts are made of: the fused [experts, out, in] parameter, or
    each listed expert's weight (transformers 4.x); a ValueError naming the part when they are frozen."""
    m = part.module
    leaves = m.leaves() if isinstance(m, ExpertStack) else [getattr(m, part.param)]
    if not all(isinstance(t, torch.Tensor) and t.requires_grad for t in leaves):
        raise ValueError(
            f"gradient statistics of routed experts differentiate their stored weights, and {part.param_name} "
            "is frozen (requires_grad=False): unfreeze the experts or use stat='norm' or 'rms'"
        )
    return leaves


def _add_expert_grads(grads: dict[str, torch.Tensor], experts: dict[str, list[torch.Tensor]], gs: Sequence) -> None:
    """Accumulate ∂L/∂(stored experts) in the stored layout ([experts, …], stacked when listed per expert)."""
    i = 0
    for name, leaves in experts.items():
        parts = [
            torch.zeros_like(t, dtype=torch.float32) if g is None else g.float()
            for t, g in zip(leaves, gs[i : i + len(leaves)], strict=True)
        ]
        i += len(leaves)
        g = parts[0] if parts[0].ndim == 3 else torch.stack(parts)  # fused [experts, …], or one leaf per expert
        grads[name] = grads[name] + g if name in grads else g


def as_lm(x: Any) -> LM:
    if isinstance(x, LM):
        return x
    if isinstance(x, (str, Path)):
        from .._lm import load

        return load(x)
    raise TypeError(
        "gradient statistics run the model on texts: pass an hw.LM (hw.load(...) or "
        "hw.LM.wrap(model, tokenizer)) or a checkpoint directory, not a bare model without tokenizer"
    )


def gradient_texts(texts: str | Sequence[str] | None) -> list[str]:
    if texts is None:
        raise ValueError("gradient statistics need texts: module_stats(lm, stat='grad', texts=[...])")
    return text_list(texts, "text")[0]
