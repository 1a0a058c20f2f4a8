"""What a click on a weight_change / module_stats cell shows: the element histogram and singular spectra of the
clicked projection (W and ΔW, or W and ∂L/∂W), per-row change, per-head values for attention projections, and per
expert values for a mixture-of-experts layer. Only the clicked layer's tensors are read again (streamed again from
checkpoint directories)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..analysis import Run
from ..anatomy import MODULES, Part
from ..matrix import Chart, Detail, HeatMatrix, Series
from .gradients import lm_loss_grads
from .sources import Source
from .stats import change_value, effective_rank, pair_stats, single_value

__all__ = ["change_drill", "stats_drill", "expert_detail", "HEAD_COLS"]

HEAD_COLS = ("q", "k", "v", "o")


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


def _per_head(
    layer: int,
    config: Any,
    mats: Mapping[str, tuple[torch.Tensor, ...]],
    cell: Callable[..., float],
    stat_label: str,
    metric: str,
) -> tuple[HeatMatrix | None, str]:
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
    child = HeatMatrix(
        values,
        [str(h) for h in range(n_heads)],
        list(HEAD_COLS),
        title=f"Layer {layer}: per-head {stat_label}",
        row_title="Head",
        col_title="Projection",
        metric=metric,
        meta=dict(head_dim=head_dim, n_heads=n_heads, n_kv_heads=n_kv, kv_head_of_row=kv_of),
    )
    gqa = (
        f"; k/v: the KV head each query head reads ({n_heads // n_kv} query heads per KV head)"
        if n_kv != n_heads
        else ""
    )
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
            series.append(
                Series(f"{name} (eff. rank {effective_rank(s):.1f})", list(range(1, s.size + 1)), (s / s[0]).tolist())
            )
    return Chart(title, "line", series, x_title="index i", y_title="σ_i / σ_1")


def expert_detail(
    det: Detail, layer: int, name: str, values: Sequence[float], metric: str, shape: Sequence[int]
) -> Detail:
    """The drill of an MoE cell: the statistic of each expert's matrix, as a chart and a 1 × experts matrix."""
    n = len(values)
    det.charts.append(
        Chart(
            f"Per expert, layer {layer} {name}",
            "bar",
            [Series(metric, list(range(n)), [float(v) for v in values])],
            x_title="expert",
            y_title=metric,
        )
    )
    det.children["experts"] = HeatMatrix(
        np.asarray([values], dtype=float),
        [f"{layer} {name}"],
        [str(e) for e in range(n)],
        title=f"{metric} per expert, layer {layer} {name}",
        row_title="Module",
        col_title="Expert",
        metric=metric,
    )
    det.texts["module"] = (
        f"{name} of layer {layer}: {shape[0]} experts of [out, in] = {list(shape[1:])}; the cell "
        "is over all experts stacked, the chart shows each"
    )
    det.meta["per_expert"] = np.asarray(values, dtype=float)
    return det


# ---- weight_change -------------------------------------------------------------------------------------------------


def _read_pair(
    a: Source, b: Source, layer: int, name: str, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    pa, pb = a.part(layer, name), b.part(layer, name)
    if pa is None or pb is None:
        return None
    ra = a.raw(pa, device)
    return pa.weight(ra), pb.weight(b.raw(pb, ra.device))


def _change_charts(
    det: Detail, layer: int, name: str, wa: torch.Tensor, d: torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise relative change (histogram), spectra of W_a and ΔW, per-row relative change."""
    ad = d.abs()
    nz = (wa != 0) & (ad > 0)
    hist, edges = _hist_chart(
        f"Element-wise relative change, layer {layer} {name}",
        torch.log10(ad[nz] / wa.abs()[nz]),
        "log10 |ΔW_ij| / |W_a,ij|",
        "elements",
    )
    if hist is not None:
        det.charts.append(hist)
    s_a, s_d = _spectrum(wa), _spectrum(d)
    det.charts.append(_spectra_chart(f"Singular values, layer {layer} {name}", {"W_a": s_a, "ΔW": s_d}))
    row_a = torch.linalg.vector_norm(wa, dim=1)
    row_d = torch.linalg.vector_norm(d, dim=1)
    row_rel = torch.where(row_a > 0, row_d / row_a.clamp_min(1e-30), torch.nan).cpu().numpy()
    det.charts.append(
        Chart(
            f"Per output row ‖ΔW_i‖ / ‖W_a,i‖, layer {layer} {name}",
            "line",
            [Series("relative change", list(range(row_rel.size)), row_rel.tolist())],
            x_title="output row",
            y_title="relative change",
        )
    )
    det.texts["elements"] = (
        f"{int(nz.sum())} of {wa.numel()} elements changed and nonzero in W_a (histogram); "
        f"{int((ad == 0).sum())} unchanged"
    )
    det.meta.update(
        effective_rank_a=effective_rank(s_a),
        effective_rank_delta=effective_rank(s_d),
        singular_values_a=s_a,
        singular_values_delta=s_d,
        hist_edges=edges,
        row_relative_change=row_rel,
    )
    return s_a, s_d


def _change_heads(run: Run, m: HeatMatrix, det: Detail, layer: int) -> None:
    pair = run.items[0].pair
    stat, eps = run.options["stat"], run.options["eps"]
    mats = {}
    for nm in ("attn.q", "attn.k", "attn.v", "attn.o"):
        p = _read_pair(pair.a, pair.b, layer, nm, pair.device)
        if p is not None:
            mats[nm] = p

    def cell(xa: torch.Tensor, xb: torch.Tensor) -> float:
        s = pair_stats(xa, xb, eps)
        return change_value(stat, s[0], s[2], s[3], s[4])

    child, text = _per_head(layer, pair.a.config, mats, cell, f"{stat} change", m.metric)
    if child is not None:
        det.children["heads"] = child
    det.texts["heads"] = text


def change_drill(run: Run, m: HeatMatrix, r: int, c: int) -> Detail:
    """weight_change's drill: re-reads only the tensors of the clicked layer."""
    pair = run.items[0].pair
    stat, eps = run.options["stat"], run.options["eps"]
    layer, name = r, MODULES[c]
    det = m.cell(r, c)
    mats = _read_pair(pair.a, pair.b, layer, name, pair.device)
    if mats is None:
        det.texts["n/a"] = f"{pair.a.anatomy.family} models have no {name} projection"
        return det
    if mats[0].ndim == 3:  # stacked MoE experts
        vals = []
        for a, b in zip(*mats, strict=True):
            na, _nb, nd, ch, n = pair_stats(a, b, eps)
            vals.append(change_value(stat, na, nd, ch, n))
        return expert_detail(det, layer, name, vals, f"{stat} change", mats[0].shape)
    with torch.no_grad():
        wa, wb = mats
        na, nb, nd, ch, n = pair_stats(wa, wb, eps)
        s_a, s_d = _change_charts(det, layer, name, wa, wb - wa)
        part = pair.a.part(layer, name)
        assert part is not None
        det.texts.update(
            {
                "module": f"{name} of layer {layer}: [out, in] = {list(wa.shape)}, stored as {part.param_name}",
                "change": f"‖W_a‖ = {na:.6g}, ‖W_b‖ = {nb:.6g}, ‖ΔW‖ = {nd:.6g}, relative = "
                f"{(nd / na if na else math.nan):.6g}, density (|ΔW| > {eps:g}) = {ch / n:.6g}",
                "elements": det.texts.pop("elements"),
                "spectra": f"effective rank (exp entropy of σ/Σσ): W_a {effective_rank(s_a):.2f}, ΔW "
                f"{effective_rank(s_d):.2f}; σ_1: W_a {s_a[0]:.6g}, ΔW {s_d[0]:.6g}",
            }
        )
        if name.startswith("attn."):
            _change_heads(run, m, det, layer)
    return det


# ---- module_stats --------------------------------------------------------------------------------------------------


def _stats_charts(
    det: Detail, layer: int, name: str, part: Part, w: torch.Tensor, shown: torch.Tensor, what: str
) -> None:
    ax = shown.abs()
    hist, edges = _hist_chart(
        f"|{what}| elements, layer {layer} {name}", torch.log10(ax[ax > 0]), f"log10 |{what}_ij|", "elements"
    )
    if hist is not None:
        det.charts.append(hist)
    s = _spectrum(shown)
    det.charts.append(_spectra_chart(f"Singular values of {what}, layer {layer} {name}", {what: s}))
    det.texts["module"] = f"{name} of layer {layer}: [out, in] = {list(w.shape)}, stored as {part.param_name}"
    det.texts["spectrum"] = f"effective rank of {what}: {effective_rank(s):.2f}; σ_1 = {s[0]:.6g}"
    det.meta.update(singular_values=s, effective_rank=effective_rank(s), hist_edges=edges)


def stats_drill(run: Run, m: HeatMatrix, r: int, c: int) -> Detail:
    """module_stats' drill: spectrum and element histogram of W (or of ∂L/∂W), per-head values for attention."""
    model = run.items[0].model
    src, stat = model.src, run.options["stat"]
    layer, name = r, MODULES[c]
    det = m.cell(r, c)
    part = src.part(layer, name)
    if part is None:
        det.texts["n/a"] = f"{src.anatomy.family} models have no {name} projection"
        return det
    grad = stat.startswith("grad")
    attn = [p for x in HEAD_COLS if (p := src.part(layer, f"attn.{x}")) is not None] if name.startswith("attn.") else []
    grads: dict[str, torch.Tensor] = {}
    if grad:
        assert src.lm is not None and model.texts is not None
        grads = lm_loss_grads(src.lm, model.texts, [part, *attn], run.options["batch_size"])
    with torch.no_grad():

        def mats_of(p: Part) -> tuple[torch.Tensor, ...]:
            w = p.weight(src.raw(p))
            return (w, p.weight(grads[p.param_name])) if grad else (w,)

        w, *g = mats_of(part)
        if w.ndim == 3:  # stacked MoE experts
            vals = [single_value(stat, w[e], g[0][e] if grad else None) for e in range(w.shape[0])]
            return expert_detail(det, layer, name, vals, stat, w.shape)
        _stats_charts(det, layer, name, part, w, g[0] if grad else w, "∂L/∂W" if grad else "W")
        if attn:

            def cell(wh: torch.Tensor, gh: torch.Tensor | None = None) -> float:
                return single_value(stat, wh, gh)

            child, text = _per_head(layer, src.config, {p.name: mats_of(p) for p in attn}, cell, stat, m.metric)
            if child is not None:
                det.children["heads"] = child
            det.texts["heads"] = text
    return det
