"""Module × layer statistics of model weights (seed 004): how much each attention/MLP projection changed between
two checkpoints (`weight_change`), or its norm / gradient norm in one model (`module_stats`).

Rows are the decoder layers, columns the seven projections of `MODULES` (attn.q/k/v/o, mlp.up/down/gate); a module
the family lacks (GPT-2 and GPT-NeoX have no gate) is NaN, "n/a" in the widget. Everything about where a projection
lives (GPT-2's fused, transposed `c_attn`, NeoX's per-head interleaved `query_key_value`, Phi-3's `qkv_proj`) comes
from the anatomy: this module only ever sees [out, in] matrices.

Checkpoint directories are streamed (see `_checkpoint.py`): one stored tensor of each side is read, reduced in
float32 and dropped before the next is read, so two 14B checkpoints never sit in memory together; a fused tensor is
read once for all the projections it holds.
"""

from __future__ import annotations

import ctypes
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import hooks
from ._checkpoint import Checkpoint, CheckpointError, checkpoint_anatomy, map_part_keys
from ._concurrency import locks_model
from ._lm import LM, display_name
from ._offload import live_param
from ._progress import progress
from ._validate import text_list as _text_list
from .anatomy import MODULES, Anatomy, Part, find_anatomy
from .matrix import Chart, Detail, HeatMatrix, Series, suggests_log_scale

__all__ = ["weight_change", "module_stats", "WeightMismatchError", "CheckpointError", "CHANGE_STATS",
           "MODULE_STATS", "effective_rank"]

CHANGE_STATS: dict[str, str] = {
    "relative": "‖W_b − W_a‖_F / ‖W_a‖_F",
    "density": "fraction of |W_b − W_a| > eps",
    "absolute": "‖W_b − W_a‖_F",
}
MODULE_STATS: dict[str, str] = {
    "norm": "‖W‖_F",
    "rms": "‖W‖_F / √numel",
    "grad": "‖∂L/∂W‖_F",
    "grad_relative": "‖∂L/∂W‖_F / ‖W‖_F",
}
SEED_TITLE = "Attention and MLP component analysis"
HEAD_COLS = ("q", "k", "v", "o")


class WeightMismatchError(ValueError):
    """Two models cannot be compared tensor by tensor; `tensor` is the first stored tensor that differs."""

    def __init__(self, message: str, tensor: str) -> None:
        super().__init__(message)
        self.tensor = tensor


# ---- sources: a live model or a checkpoint directory, seen as "the stored tensor behind this Part" -------------

@dataclass
class _Source:
    role: str  # "a", "b" or "model": used in messages
    label: str
    anatomy: Anatomy
    config: Any
    ckpt: Checkpoint | None = None
    keymap: dict[str, str] = field(default_factory=dict)
    lm: LM | None = None

    @property
    def streamed(self) -> bool:
        return self.ckpt is not None

    @property
    def n_layers(self) -> int:
        return self.anatomy.n_layers

    def part(self, layer: int, name: str) -> Part | None:
        return self.anatomy.parts[layer].get(name) if layer < self.n_layers else None

    def has(self, part: Part) -> bool:
        return self.ckpt is None or part.param_name in self.keymap

    def key(self, part: Part) -> str:
        return self.keymap.get(part.param_name, part.param_name) if self.ckpt is not None else part.param_name

    def shape(self, part: Part) -> tuple[int, ...]:
        if self.ckpt is None:
            return tuple(part.stored().shape)
        return self.ckpt.shape(self.keymap[part.param_name])

    def raw(self, part: Part, device: torch.device | None = None) -> torch.Tensor:
        """The stored tensor (fused/transposed as stored) in float32; live weights are used in place if possible."""
        if self.ckpt is None:
            # live_param: a device_map-offloaded module's weight is "meta"; its values sit in accelerate's map
            t = (live_param(part.module, part.param) if isinstance(part.module, nn.Module) else part.stored()).detach()
            t = t.to(device=device or t.device, dtype=torch.float32)
        else:
            t = self.ckpt.get(self.keymap[part.param_name], dtype=torch.float32, device=device or "cpu")
        return t

    def where(self) -> str:
        return f"checkpoint {self.ckpt.path}" if self.ckpt is not None else f"the live model {self.label!r}"


def _model_label(model: nn.Module) -> str:
    cfg = getattr(model, "config", None)
    return str(getattr(cfg, "_name_or_path", "") or type(model).__name__)


def _source(x: Any, role: str) -> _Source:
    """LM, transformers model or checkpoint directory -> _Source (no weights are read here)."""
    if isinstance(x, LM):
        return _Source(role, x.name or _model_label(x.model), x.anatomy, x.config, lm=x)
    if isinstance(x, nn.Module):
        return _Source(role, _model_label(x), find_anatomy(x), getattr(x, "config", None))
    if isinstance(x, (str, Path)):
        ckpt = Checkpoint(x)  # first: a wrong path should say so, not complain about config.json
        anatomy, cfg = checkpoint_anatomy(x)
        names = [p.param_name for _, _, p in anatomy.iter_parts()]
        keymap = map_part_keys(anatomy, names, ckpt.keys())
        return _Source(role, str(x), anatomy, cfg, ckpt=ckpt, keymap=keymap)
    raise TypeError(f"{role} must be an hw.LM, a transformers model or a checkpoint directory, "
                    f"not {type(x).__name__}")


def _local(src: _Source, part: Part) -> str:
    """The parameter name below the layer index ("self_attn.q_proj.weight"), equal across wrappers/prefixes."""
    head = f"{src.anatomy.layers_path}."
    rest = part.param_name[len(head):] if part.param_name.startswith(head) else part.param_name
    return rest.split(".", 1)[1] if "." in rest else rest


def _check_present(src: _Source, part: Part, layer: int, name: str) -> None:
    if not src.has(part):
        raise WeightMismatchError(
            f"{part.param_name} ({name} of layer {layer}) is missing from {src.where()} ({src.role}): "
            f"its config.json describes {src.n_layers} layers with this tensor, but no shard holds it "
            f"(looked for key {src.key(part)!r})", tensor=part.param_name)


def _check_compatible(a: _Source, b: _Source) -> list[str]:
    """Raise WeightMismatchError naming the first stored tensor (layer by layer, in MODULES order) that differs in
    presence, name or shape; return notes for differences that do not matter to the comparison."""
    notes: list[str] = []
    fam_a, fam_b = a.anatomy.family, b.anatomy.family
    for layer in range(max(a.n_layers, b.n_layers)):
        for name in MODULES:
            pa, pb = a.part(layer, name), b.part(layer, name)
            if pa is None and pb is None:
                continue
            if pa is None or pb is None:
                have, lack, part = (a, b, pa) if pb is None else (b, a, pb)
                assert part is not None
                why = (f"{lack.role} has {lack.n_layers} layers, {have.role} has {have.n_layers}"
                       if layer >= lack.n_layers else
                       f"{lack.role} ({lack.anatomy.family}) has no {name} projection in layer {layer}")
                raise WeightMismatchError(
                    f"a and b differ first at {part.param_name} ({name} of layer {layer}): {have.role} has it, "
                    f"{lack.role} does not ({why})", tensor=part.param_name)
            _check_present(a, pa, layer, name)
            _check_present(b, pb, layer, name)
            la, lb = _local(a, pa), _local(b, pb)
            sa, sb = a.shape(pa), b.shape(pb)
            if la != lb or pa.transposed != pb.transposed or pa.split != pb.split:
                raise WeightMismatchError(
                    f"a and b differ first at {name} of layer {layer}: a ({fam_a}) stores it in {pa.param_name} "
                    f"{list(sa)}, b ({fam_b}) in {pb.param_name} {list(sb)}; these are different architectures",
                    tensor=pa.param_name)
            if sa != sb:
                raise WeightMismatchError(
                    f"a and b differ first at {pa.param_name} ({name} of layer {layer}): shape {list(sa)} in a, "
                    f"{list(sb)} in b", tensor=pa.param_name)
    if fam_a != fam_b:
        notes.append(f"a is a {fam_a} model and b a {fam_b} model; their projections line up by name and shape, "
                     f"so they are compared")
    return notes


def _require_parts(src: _Source) -> None:
    if not any(src.anatomy.parts):
        found = "; ".join(src.anatomy.notes) or "none of the known projection names matched"
        raise ValueError(f"no attention or MLP projections found in {src.label!r} ({src.anatomy.family}), so there "
                         f"is nothing to compare module by module: {found}")


def _groups(a: _Source, b: _Source, layer: int) -> dict[tuple[str, str], list[str]]:
    """Module names of one layer grouped by the stored tensor pair that holds them (fused tensors read once)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in MODULES:
        pa, pb = a.part(layer, name), b.part(layer, name)
        if pa is not None and pb is not None:
            groups.setdefault((pa.param_name, pb.param_name), []).append(name)
    return groups


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; absent on macOS/Windows/musl
    except (AttributeError, OSError):
        return None


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS. glibc keeps freed multi-MB blocks (each ΔW) in its heap for reuse;
    with tensors of varying sizes they fragment, and the process RSS grows to several tensor pairs although only
    one is alive. Trimming after each pair keeps streaming at about one pair (milliseconds per call)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


# ---- statistics ---------------------------------------------------------------------------------------------------

_CHUNK_ELEMENTS = 1 << 20  # 4 MB of float32 per ΔW block


def _pair_stats(wa: torch.Tensor, wb: torch.Tensor, eps: float) -> tuple[float, float, float, int, int]:
    """(‖W_a‖, ‖W_b‖, ‖ΔW‖, #|ΔW| > eps, numel) of two float32 matrices.

    ΔW is formed in row blocks of about 4 MB, never whole, so the reduction adds a few MB to the pair being
    compared rather than another tensor's worth. Each block is reduced in float32; the block sums of squares
    are added in float64.
    """
    rows = wa.shape[0] if wa.ndim > 1 else 1
    wa2, wb2 = wa.reshape(rows, -1), wb.reshape(rows, -1)
    step = max(1, _CHUNK_ELEMENTS // max(1, wa2.shape[1]))
    sa = sb = sd = 0.0
    changed = 0
    for i in range(0, rows, step):
        a, b = wa2[i:i + step], wb2[i:i + step]
        d = b - a
        sa += float(torch.linalg.vector_norm(a)) ** 2
        sb += float(torch.linalg.vector_norm(b)) ** 2
        sd += float(torch.linalg.vector_norm(d)) ** 2
        changed += int(torch.count_nonzero(d.abs_() > eps))
    return math.sqrt(sa), math.sqrt(sb), math.sqrt(sd), changed, wa.numel()


def _nonfinite_note(src: _Source, part: Part, layer: int, name: str, w: torch.Tensor, of: str = "") -> str:
    """Name a weight whose statistics are not finite (tensor, layer, module) for meta["notes"] and the widget."""
    nan, inf = int(torch.isnan(w).sum()), int(torch.isinf(w).sum())
    found = [f"{k:,} {what}" for k, what in ((nan, "NaN"), (inf, "±inf")) if k]
    what = f"{' and '.join(found)} value{'s' if nan + inf > 1 else ''}" if found else "values too large for float32"
    return f"{src.role}: layer {layer} {name}{of} ({src.key(part)} in {src.where()}) has {what}: shown as n/a"


def _nonfinite_notes(sides: list[tuple[_Source, Part, torch.Tensor, float]], layer: int, name: str) -> list[str]:
    """Notes for a cell whose norms are not finite: each side (source, part, weight, its norm) that is to blame,
    or the difference itself when only ‖ΔW‖ overflowed."""
    notes = [_nonfinite_note(src, part, layer, name, w) for src, part, w, norm in sides if not math.isfinite(norm)]
    return notes or [f"layer {layer} {name}: ‖W_b − W_a‖ overflows float32 ({sides[0][0].key(sides[0][1])}): "
                     "shown as n/a"]


def _stat_notes(src: _Source, part: Part, layer: int, name: str, w: torch.Tensor, g: torch.Tensor | None,
                v: float) -> list[str]:
    """module_stats: why a cell is not finite (a NaN/inf weight or gradient, named), if it is not a plain 0/0."""
    if not bool(torch.isfinite(w).all()):
        return [_nonfinite_note(src, part, layer, name, w)]
    if g is not None and not bool(torch.isfinite(g).all()):
        return [_nonfinite_note(src, part, layer, name, g, of=" gradient")]
    return [] if v != v else [_nonfinite_note(src, part, layer, name, w)]


def _change_value(stat: str, na: float, nd: float, changed: int, numel: int) -> float:
    if stat == "relative":
        return nd / na if na > 0 else (0.0 if nd == 0 else math.nan)
    if stat == "density":
        return changed / numel if numel else math.nan
    return nd


def _check_stat(stat: str, allowed: dict[str, str]) -> str:
    if not isinstance(stat, str) or stat not in allowed:
        raise ValueError(f"unknown stat {stat!r}; use one of {list(allowed)}")
    return stat


def effective_rank(s: torch.Tensor | np.ndarray) -> float:
    """Effective rank of a spectrum (Roy & Vetterli 2007): exp of the entropy of σ_i / Σσ; 0 for a zero matrix."""
    s = np.asarray(s, dtype=np.float64)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def _rows_cols(n_layers: int) -> tuple[list[str], list[str]]:
    return [str(i) for i in range(n_layers)], list(MODULES)


def weight_change(a: Any, b: Any, stat: str = "relative", *, eps: float = 1e-5,
                  device: str | torch.device | None = None) -> HeatMatrix:
    """How much each projection changed from `a` to `b`: a layers × MODULES HeatMatrix (the seed 004 figure).

    a, b: an `hw.LM`, a transformers model, or a checkpoint directory (single `model.safetensors` or sharded with
    `model.safetensors.index.json`), in any combination. Directories are streamed one stored tensor at a time.
    stat: "relative" ‖W_b − W_a‖_F / ‖W_a‖_F, "density" mean(|W_b − W_a| > eps), or "absolute" ‖W_b − W_a‖_F.
    Differences are taken in float32 whatever the stored dtype. device: where streamed tensors are reduced
    (default: the live model's device if one side is live, else the CPU).
    Raises WeightMismatchError naming the first stored tensor that differs (layer count, architecture, shape, or a
    tensor missing from a checkpoint).
    """
    stat = _check_stat(stat, CHANGE_STATS)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    t0 = time.perf_counter()
    sa, sb = _source(a, "a"), _source(b, "b")
    notes = _check_compatible(sa, sb)
    _require_parts(sa)
    dev = torch.device(device) if device is not None else None
    n_layers = sa.n_layers
    shape = (n_layers, len(MODULES))
    norm_a, norm_b, norm_d = np.full(shape, np.nan), np.full(shape, np.nan), np.full(shape, np.nan)
    changed, numel = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    nonfinite = np.zeros(shape, bool)  # a NaN/inf weight on either side: the cell is n/a, with a note naming it
    largest_pair = 0
    with torch.no_grad():
        for layer in progress(range(n_layers), desc="weight_change"):
            for names in _groups(sa, sb, layer).values():
                pa0, pb0 = sa.part(layer, names[0]), sb.part(layer, names[0])
                assert pa0 is not None and pb0 is not None
                ra = sa.raw(pa0, dev)
                rb = sb.raw(pb0, ra.device)
                largest_pair = max(largest_pair, ra.nbytes + rb.nbytes)
                for name in names:
                    pa, pb = sa.part(layer, name), sb.part(layer, name)
                    assert pa is not None and pb is not None
                    j = MODULES.index(name)
                    na, nb, nd, ch, n = _pair_stats(pa.weight(ra), pb.weight(rb), eps)
                    norm_a[layer, j], norm_b[layer, j], norm_d[layer, j] = na, nb, nd
                    if not math.isfinite(na + nb + nd):  # rare: count the bad values only then
                        nonfinite[layer, j] = True
                        notes += _nonfinite_notes([(sa, pa, pa.weight(ra), na), (sb, pb, pb.weight(rb), nb)],
                                                  layer, name)
                    changed[layer, j], numel[layer, j] = ch, n
                del ra, rb  # before the next read: this is what keeps peak memory at one pair
                _release_freed_memory()
    values = np.full(shape, np.nan)
    present = (numel > 0) & ~nonfinite
    for i, j in zip(*np.nonzero(present), strict=True):
        values[i, j] = _change_value(stat, norm_a[i, j], norm_d[i, j], int(changed[i, j]), int(numel[i, j]))
    if stat == "relative" and np.any(present & (norm_a == 0) & (norm_d > 0)):
        notes.append("some W_a are all zero while W_b is not: their relative change is undefined (NaN)")
    absent = [m for j, m in enumerate(MODULES) if not (numel[:, j] > 0).any()]
    if absent:
        notes.append(f"{sa.anatomy.family} has no {', '.join(absent)}: shown as n/a")
    rows, cols = _rows_cols(n_layers)
    metric = CHANGE_STATS[stat].replace("eps", f"{eps:g}")
    meta = dict(analysis="weight_change", stat=stat, eps=float(eps), a=display_name(sa.label),
                b=display_name(sb.label), a_path=sa.label, b_path=sb.label,
                family=sa.anatomy.family, streamed={"a": sa.streamed, "b": sb.streamed},
                norm_a=norm_a, norm_b=norm_b, norm_diff=norm_d, changed=changed, numel=numel,
                largest_pair_bytes=int(largest_pair), seconds=round(time.perf_counter() - t0, 3), notes=notes)
    meta.update(moe_meta(sa.anatomy))
    meta["options"] = {"stat": stat, "eps": float(eps)}  # what the explorer offers to change and re-run
    drill = _ChangeDrill(sa, sb, stat, float(eps), dev)
    m = HeatMatrix(values, rows, cols, title=f"{SEED_TITLE}: {stat} weight change", row_title="Layer",
                   col_title="Module", metric=metric, meta=meta, drill=drill)
    m.meta["log"] = suggests_log_scale(m.values)
    return m.with_recompute(lambda **o: weight_change(a, b, **{"stat": stat, "eps": eps, "device": device, **o}))


# ---- one model: weight norms and gradient norms -----------------------------------------------------------------

def _weight_grad(part: Part, x: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """∂L/∂W of a linear map y = x·Wᵀ (+ b) from its input x and ∂L/∂y, in W's stored layout, float32."""
    x2, g2 = x.reshape(-1, x.shape[-1]).float(), gy.reshape(-1, gy.shape[-1]).float().to(x.device)
    g = x2.T @ g2 if part.transposed else g2.T @ x2  # GPT-2's Conv1D stores [in, out]
    w = part.module.weight
    if tuple(g.shape) != tuple(w.shape):
        raise ValueError(f"{part.param_name}: gradient statistics need a linear projection, but this module maps "
                         f"{x.shape[-1]} -> {gy.shape[-1]} features with a weight of shape {list(w.shape)}")
    return g


@locks_model
def _lm_loss_grads(lm: LM, texts: Sequence[str], parts: Sequence[Part], batch_size: int) -> dict[str, torch.Tensor]:
    """∂L/∂(stored weight) for the parts' stored tensors (keyed by param_name), L = mean next-token cross-entropy
    over every non-pad token of `texts` (one loss over all texts, accumulated over batches in float32).

    The model is left untouched, for other threads too: no `.grad` fields, no requires_grad flags. Each
    projection's input x and output y are recorded by hooks acting only in this analysis, autograd gives ∂L/∂y,
    and ∂L/∂W = Σ_tokens ∂L/∂y ⊗ x. The embedding's output is made a leaf that requires grad, so the graph exists
    even when the model's weights are frozen.
    """
    model = lm.model
    modules: dict[str, Part] = {}
    for p in parts:
        modules.setdefault(p.param_name, p)
    # Count predicted tokens first so every batch's loss is scaled to the same global mean.
    batches = [list(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    encoded = [lm.encode(batch, padding_side="right") for batch in batches]
    total = sum(int(e["attention_mask"][:, 1:].sum()) for e in encoded)
    if total == 0:
        raise ValueError("the texts give no next-token targets: each needs at least two tokens")
    mods = {name: p.module for name, p in modules.items()}
    grads: dict[str, torch.Tensor] = {}
    for enc in progress(encoded, desc="gradients"):
        with torch.enable_grad(), hooks.edit_output(lm.anatomy.embed, lambda h, _x: h.detach().requires_grad_()), \
                hooks.capture(mods, what="input") as xs, hooks.capture(mods, detach=False) as ys:
            # Right padding keeps real tokens at positions 0..n-1, exactly as if each text ran alone.
            logits = model(**enc, use_cache=False).logits[:, :-1].float()
            targets = enc["input_ids"][:, 1:]
            valid = enc["attention_mask"][:, 1:].to(logits.dtype)
            nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                                    reduction="none")
            loss = (nll * valid.reshape(-1)).sum() / total
            gys = torch.autograd.grad(loss, [ys[name] for name in mods], allow_unused=True)
        for (name, part), gy in zip(modules.items(), gys, strict=True):
            g = torch.zeros_like(part.module.weight, dtype=torch.float32) if gy is None else \
                _weight_grad(part, xs[name], gy)
            grads[name] = grads[name] + g if name in grads else g
        del logits, nll, loss, gys, xs, ys
    return grads


def _single_value(stat: str, w: torch.Tensor, g: torch.Tensor | None) -> float:
    if stat == "norm":
        return float(torch.linalg.vector_norm(w))
    if stat == "rms":
        return float(torch.linalg.vector_norm(w)) / math.sqrt(w.numel())
    assert g is not None
    ng = float(torch.linalg.vector_norm(g))
    if stat == "grad":
        return ng
    nw = float(torch.linalg.vector_norm(w))
    return ng / nw if nw > 0 else math.nan


def _as_lm(x: Any) -> LM:
    if isinstance(x, LM):
        return x
    if isinstance(x, (str, Path)):
        from ._lm import load

        return load(x)
    raise TypeError("gradient statistics run the model on texts: pass an hw.LM (hw.load(...) or "
                    "hw.LM.wrap(model, tokenizer)) or a checkpoint directory, not a bare model without tokenizer")


def _texts(texts: str | Sequence[str] | None) -> list[str]:
    if texts is None:
        raise ValueError("gradient statistics need texts: module_stats(lm, stat='grad', texts=[...])")
    return _text_list(texts, "text")[0]


@locks_model
def module_stats(lm: Any, stat: str = "norm", texts: str | Sequence[str] | None = None, *, batch_size: int = 8
                 ) -> HeatMatrix:
    """One model's projections in the same layers × MODULES grid as `weight_change`.

    stat: "norm" ‖W‖_F, "rms" ‖W‖_F/√numel (size-normalised, so GQA's small k/v compare with q), "grad"
    ‖∂L/∂W‖_F and "grad_relative" ‖∂L/∂W‖_F / ‖W‖_F, where L is the mean next-token cross-entropy (nats) over all
    non-pad tokens of `texts` (one loss; batches of `batch_size` texts are accumulated). lm: an `hw.LM`, a
    transformers model (weight stats only) or a checkpoint directory (weight stats are streamed; gradient stats
    load it with `hw.load`).
    """
    stat = _check_stat(stat, MODULE_STATS)
    t0 = time.perf_counter()
    grad = stat.startswith("grad")
    text_list = _texts(texts) if grad else None
    if grad and not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    src = _source(_as_lm(lm) if grad else lm, "model")
    _require_parts(src)
    for layer, name, part in src.anatomy.iter_parts():
        _check_present(src, part, layer, name)
    grads: dict[str, torch.Tensor] = {}
    if grad:
        assert src.lm is not None and text_list is not None
        moe = next((p for _, _, p in src.anatomy.iter_parts() if p.experts), None)
        if moe is not None:  # the gradient hooks read one linear map's input and output; experts are routed
            raise ValueError(f"module_stats(stat={stat!r}) needs linear projections, and this {src.anatomy.family} "
                             f"model's {moe.name} ({moe.param_name}) stacks {moe.experts} routed experts: gradient "
                             "statistics of mixture-of-experts layers are not computed; use stat='norm' or 'rms'")
        grads = _lm_loss_grads(src.lm, text_list, [p for _, _, p in src.anatomy.iter_parts()], batch_size)
    n_layers = src.n_layers
    values = np.full((n_layers, len(MODULES)), np.nan)
    notes: list[str] = []
    with torch.no_grad():
        for layer in progress(range(n_layers), desc="module_stats"):
            by_tensor: dict[str, list[str]] = {}
            for name, part in src.anatomy.parts[layer].items():
                if name in MODULES:  # the MoE router ("mlp.router") is no column
                    by_tensor.setdefault(part.param_name, []).append(name)
            for names in by_tensor.values():
                raw = src.raw(src.anatomy.parts[layer][names[0]])
                for name in names:
                    part = src.anatomy.parts[layer][name]
                    g = part.weight(grads[part.param_name]) if grad else None
                    v = _single_value(stat, part.weight(raw), g)
                    if not math.isfinite(v):  # n/a; say why unless it is grad_relative's 0/0 of an all-zero W
                        notes += _stat_notes(src, part, layer, name, part.weight(raw), g, v)
                        v = math.nan
                    values[layer, MODULES.index(name)] = v
                del raw
                _release_freed_memory()
    rows, cols = _rows_cols(n_layers)
    title = f"{SEED_TITLE}: {'gradient norms' if grad else 'weight norms'}"
    meta = dict(analysis="module_stats", stat=stat, model=display_name(src.label), model_path=src.label,
                family=src.anatomy.family, streamed=src.streamed, seconds=round(time.perf_counter() - t0, 3),
                notes=notes, **moe_meta(src.anatomy))
    if grad:
        meta.update(texts=text_list, loss="mean next-token cross-entropy over non-pad tokens (nats)")
    drill = _StatsDrill(src, stat, text_list, batch_size)
    return HeatMatrix(values, rows, cols, title=title, row_title="Layer", col_title="Module",
                      metric=MODULE_STATS[stat], meta=meta, drill=drill)


# ---- drill-down ---------------------------------------------------------------------------------------------------

def _n_heads(config: Any) -> int | None:
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in ("num_attention_heads", "n_head", "num_heads"):
        try:
            v = getattr(cfg, attr, None)
        except Exception:  # noqa: BLE001 - per-layer head counts (heterogeneous configs) raise on global access
            continue
        if isinstance(v, int) and v > 0:
            return v
    return None


def _head_blocks(name: str, w: torch.Tensor, head_dim: int) -> list[torch.Tensor]:
    """A projection's per-head blocks: output rows for q/k/v, input columns for o (the heads it reads)."""
    if name == "attn.o":
        return list(w.split(head_dim, dim=1))
    return list(w.split(head_dim, dim=0))


def _per_head(layer: int, config: Any, mats: dict[str, tuple[torch.Tensor, ...]],
              cell: Callable[..., float], stat_label: str, metric: str) -> tuple[HeatMatrix | None, str]:
    """A heads × {q,k,v,o} child matrix; rows are query heads and k/v show the KV head each query head reads
    (grouped-query attention shares one KV head among n_heads / n_kv_heads query heads)."""
    n_heads = _n_heads(config)
    if n_heads is None or "attn.q" not in mats:
        return None, "per-head norms: the config gives no head count"
    q_out = mats["attn.q"][0].shape[0]
    if q_out % n_heads:
        return None, f"per-head norms: q has {q_out} outputs, not a multiple of {n_heads} heads"
    head_dim = q_out // n_heads
    values = np.full((n_heads, len(HEAD_COLS)), np.nan)
    n_kv = n_heads
    for j, col in enumerate(HEAD_COLS):
        name = f"attn.{col}"
        if name not in mats:
            continue
        blocks = [_head_blocks(name, m, head_dim) for m in mats[name]]
        n = len(blocks[0])
        if name in ("attn.k", "attn.v"):
            n_kv = n
        if n == 0 or n_heads % n:
            continue
        group = n_heads // n
        for h in range(n_heads):
            values[h, j] = cell(*(bl[h // group] for bl in blocks))
    kv_of = [h // (n_heads // n_kv) for h in range(n_heads)] if n_kv and n_heads % n_kv == 0 else []
    child = HeatMatrix(values, [str(h) for h in range(n_heads)], list(HEAD_COLS),
                       title=f"Layer {layer}: per-head {stat_label}", row_title="Head", col_title="Projection",
                       metric=metric, meta=dict(head_dim=head_dim, n_heads=n_heads, n_kv_heads=n_kv,
                                                kv_head_of_row=kv_of))
    gqa = f"; k/v: the KV head each query head reads ({n_heads // n_kv} query heads per KV head)" if n_kv != n_heads \
        else ""
    return child, f"{n_heads} heads of dim {head_dim}{gqa}"


def _spectrum(w: torch.Tensor) -> np.ndarray:
    return torch.linalg.svdvals(w.float()).cpu().numpy().astype(np.float64)


def _log_hist(x: torch.Tensor, bins: int = 40) -> tuple[np.ndarray, np.ndarray] | None:
    x = x[torch.isfinite(x)]
    if x.numel() == 0:
        return None
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        hi = lo + 1e-6
    counts = torch.histc(x.float(), bins=bins, min=lo, max=hi).cpu().numpy()
    edges = np.linspace(lo, hi, bins + 1)
    return edges, counts


def _hist_chart(title: str, x: torch.Tensor, x_title: str, name: str) -> tuple[Chart | None, np.ndarray | None]:
    h = _log_hist(x)
    if h is None:
        return None, None
    edges, counts = h
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    return Chart(title, "hist", [Series(name, centres, counts.tolist())], x_title=x_title, y_title="elements"), edges


def _spectra_chart(title: str, spectra: dict[str, np.ndarray]) -> Chart:
    """Singular values normalised by the largest, so the shapes of W's and ΔW's spectra compare on one axis."""
    series = []
    for name, s in spectra.items():
        if s.size and s[0] > 0:
            series.append(Series(f"{name} (eff. rank {effective_rank(s):.1f})", list(range(1, s.size + 1)),
                                 (s / s[0]).tolist()))
    return Chart(title, "line", series, x_title="index i", y_title="σ_i / σ_1")


def moe_meta(anatomy: Anatomy) -> dict[str, Any]:
    """How a mixture-of-experts model's mlp.* cells are computed (empty for a dense model)."""
    if not anatomy.n_experts:
        return {}
    return {"experts": anatomy.n_experts,
            "experts_note": "mlp.up/mlp.down/mlp.gate of an MoE layer are over all its experts: the Frobenius norm "
                            "of the stacked [experts, out, in] tensor (density: over all its elements); the drill "
                            "shows each expert. The router (mlp.router) is not a column."}


def expert_detail(det: Detail, layer: int, name: str, values: Sequence[float], metric: str,
                  shape: Sequence[int]) -> Detail:
    """The drill of an MoE cell: the statistic of each expert's matrix, as a chart and a 1 × experts matrix."""
    n = len(values)
    det.charts.append(Chart(f"Per expert, layer {layer} {name}", "bar",
                            [Series(metric, list(range(n)), [float(v) for v in values])],
                            x_title="expert", y_title=metric))
    det.children["experts"] = HeatMatrix(np.asarray([values], dtype=float), [f"{layer} {name}"],
                                         [str(e) for e in range(n)], title=f"{metric} per expert, layer {layer} "
                                         f"{name}", row_title="Module", col_title="Expert", metric=metric)
    det.texts["module"] = (f"{name} of layer {layer}: {shape[0]} experts of [out, in] = {list(shape[1:])}; the cell "
                           "is over all experts stacked, the chart shows each")
    det.meta["per_expert"] = np.asarray(values, dtype=float)
    return det


@dataclass
class _ChangeDrill:
    """Drill for weight_change: re-reads only the tensors of the clicked layer (streamed again from directories)."""

    a: _Source
    b: _Source
    stat: str
    eps: float
    device: torch.device | None

    def _pair(self, layer: int, name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        pa, pb = self.a.part(layer, name), self.b.part(layer, name)
        if pa is None or pb is None:
            return None
        ra = self.a.raw(pa, self.device)
        return pa.weight(ra), pb.weight(self.b.raw(pb, ra.device))

    def __call__(self, m: HeatMatrix, r: int, c: int) -> Detail:
        layer, name = r, MODULES[c]
        det = m.cell(r, c)
        pair = self._pair(layer, name)
        if pair is None:
            det.texts["n/a"] = f"{self.a.anatomy.family} models have no {name} projection"
            return det
        if pair[0].ndim == 3:  # stacked MoE experts
            stat, eps = self.stat, self.eps
            vals = []
            for a, b in zip(*pair, strict=True):
                na, _nb, nd, ch, n = _pair_stats(a, b, eps)
                vals.append(_change_value(stat, na, nd, ch, n))
            return expert_detail(det, layer, name, vals, f"{stat} change", pair[0].shape)
        with torch.no_grad():
            wa, wb = pair
            na, nb, nd, ch, n = _pair_stats(wa, wb, self.eps)
            d = wb - wa
            ad = d.abs()
            nz = (wa != 0) & (ad > 0)
            rel = torch.log10(ad[nz] / wa.abs()[nz])
            hist, edges = _hist_chart(f"Element-wise relative change, layer {layer} {name}", rel,
                                      "log10 |ΔW_ij| / |W_a,ij|", "elements")
            if hist is not None:
                det.charts.append(hist)
            s_a, s_d = _spectrum(wa), _spectrum(d)
            det.charts.append(_spectra_chart(f"Singular values, layer {layer} {name}", {"W_a": s_a, "ΔW": s_d}))
            row_a = torch.linalg.vector_norm(wa, dim=1)
            row_d = torch.linalg.vector_norm(d, dim=1)
            row_rel = torch.where(row_a > 0, row_d / row_a.clamp_min(1e-30), torch.nan).cpu().numpy()
            det.charts.append(Chart(f"Per output row ‖ΔW_i‖ / ‖W_a,i‖, layer {layer} {name}", "line",
                                    [Series("relative change", list(range(row_rel.size)), row_rel.tolist())],
                                    x_title="output row", y_title="relative change"))
            erank_a, erank_d = effective_rank(s_a), effective_rank(s_d)
            det.texts.update({
                "module": f"{name} of layer {layer}: [out, in] = {list(wa.shape)}, stored as "
                          f"{self.a.part(layer, name).param_name}",  # type: ignore[union-attr]
                "change": f"‖W_a‖ = {na:.6g}, ‖W_b‖ = {nb:.6g}, ‖ΔW‖ = {nd:.6g}, relative = "
                          f"{(nd / na if na else math.nan):.6g}, density (|ΔW| > {self.eps:g}) = {ch / n:.6g}",
                "elements": f"{int(nz.sum())} of {n} elements changed and nonzero in W_a (histogram); "
                            f"{int((ad == 0).sum())} unchanged",
                "spectra": f"effective rank (exp entropy of σ/Σσ): W_a {erank_a:.2f}, ΔW {erank_d:.2f}; "
                           f"σ_1: W_a {s_a[0]:.6g}, ΔW {s_d[0]:.6g}",
            })
            det.meta.update(effective_rank_a=erank_a, effective_rank_delta=erank_d, singular_values_a=s_a,
                            singular_values_delta=s_d, hist_edges=edges, row_relative_change=row_rel)
            if name.startswith("attn."):
                mats = {}
                for nm in ("attn.q", "attn.k", "attn.v", "attn.o"):
                    p = self._pair(layer, nm)
                    if p is not None:
                        mats[nm] = p
                stat, eps = self.stat, self.eps

                def cell(xa: torch.Tensor, xb: torch.Tensor) -> float:
                    s = _pair_stats(xa, xb, eps)
                    return _change_value(stat, s[0], s[2], s[3], s[4])

                child, text = _per_head(layer, self.a.config, mats, cell, f"{stat} change",
                                        m.metric)
                if child is not None:
                    det.children["heads"] = child
                det.texts["heads"] = text
        return det


@dataclass
class _StatsDrill:
    """Drill for module_stats: spectrum and element histogram of W (or of ∂L/∂W), per-head values for attention."""

    src: _Source
    stat: str
    texts: list[str] | None
    batch_size: int

    def __call__(self, m: HeatMatrix, r: int, c: int) -> Detail:
        layer, name = r, MODULES[c]
        det = m.cell(r, c)
        part = self.src.part(layer, name)
        if part is None:
            det.texts["n/a"] = f"{self.src.anatomy.family} models have no {name} projection"
            return det
        grad = self.stat.startswith("grad")
        attn = [self.src.part(layer, f"attn.{x}") for x in HEAD_COLS] if name.startswith("attn.") else []
        needed = [p for p in [part, *attn] if p is not None]
        grads: dict[str, torch.Tensor] = {}
        if grad:
            assert self.src.lm is not None and self.texts is not None
            grads = _lm_loss_grads(self.src.lm, self.texts, needed, self.batch_size)
        with torch.no_grad():
            def mats_of(p: Part) -> tuple[torch.Tensor, ...]:
                w = p.weight(self.src.raw(p))
                return (w, p.weight(grads[p.param_name])) if grad else (w,)

            w, *g = mats_of(part)
            shown = g[0] if grad else w
            if w.ndim == 3:  # stacked MoE experts
                vals = [_single_value(self.stat, w[e], g[0][e] if grad else None) for e in range(w.shape[0])]
                return expert_detail(det, layer, name, vals, self.stat, w.shape)
            what = "∂L/∂W" if grad else "W"
            ax = shown.abs()
            hist, edges = _hist_chart(f"|{what}| elements, layer {layer} {name}", torch.log10(ax[ax > 0]),
                                      f"log10 |{what}_ij|", "elements")
            if hist is not None:
                det.charts.append(hist)
            s = _spectrum(shown)
            det.charts.append(_spectra_chart(f"Singular values of {what}, layer {layer} {name}", {what: s}))
            det.texts["module"] = f"{name} of layer {layer}: [out, in] = {list(w.shape)}, stored as {part.param_name}"
            det.texts["spectrum"] = f"effective rank of {what}: {effective_rank(s):.2f}; σ_1 = {s[0]:.6g}"
            det.meta.update(singular_values=s, effective_rank=effective_rank(s), hist_edges=edges)
            if attn:
                mats = {p.name: mats_of(p) for p in attn if p is not None}
                stat = self.stat

                def cell(wh: torch.Tensor, gh: torch.Tensor | None = None) -> float:
                    return _single_value(stat, wh, gh)

                child, text = _per_head(layer, self.src.config, mats, cell, stat, m.metric)
                if child is not None:
                    det.children["heads"] = child
                det.texts["heads"] = text
        return det
