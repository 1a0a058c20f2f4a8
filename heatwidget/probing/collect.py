"""`hw.collect`: activations [N, L, P, d] at named token positions, for probing (Orgad et al. 2024).

One batched forward per chunk of rows (right padding, so every row keeps the positions and position ids it has
alone, and causal attention never sees the pads); hooks gather each row's own positions inside the forward, so only
[B, P, d] per layer leaves it; the forward stops after the last layer asked for (no unembedding). The result is a
plain array in memory, or an np.memmap on disk when it is larger than `memory_budget` (10,000 answers × 32 layers
× 15 positions × 4096 floats = 79 GB streams to disk chunk by chunk; RAM holds one chunk).
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import hooks
from .._concurrency import locks_model
from .._progress import progress
from .._validate import positive_int
from .answers import AnswerSet
from .positions import PAPER_POSITIONS, normalize_positions, position_label

__all__ = ["Activations", "collect", "SITES", "parse_bytes"]

SITES: dict[str, str] = {
    "resid": "decoder block output (the residual stream after layer l)",
    "mlp": "MLP output (its write to the residual stream)",
    "mlp_in": "input to the MLP's down-projection (the paper's README heatmap)",
    "attn": "output of the attention o-projection",
}
DEFAULT_BUDGET = 2 * 1024**3


@dataclass
class Activations:
    """Activations at selected token positions: `values` [N, L, P, d] (np.ndarray or np.memmap), `labels` [N].

    layers[j] is the model layer of axis-1 index j; positions[k] the position of axis-2 index k; token_index
    [N, P] the absolute token each value was read at (into answers.ids[n]). `answers` and `lm` stay attached so
    probe drill-downs can show the examples and re-run at another site.
    """

    values: np.ndarray
    labels: np.ndarray
    layers: list[int]
    positions: list[str | int]
    site: str
    token_index: np.ndarray
    answers: AnswerSet | None = None
    lm: Any = field(default=None, repr=False)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def on_disk(self) -> bool:
        return isinstance(self.values, np.memmap)

    @property
    def path(self) -> Path | None:
        return Path(self.values.filename) if isinstance(self.values, np.memmap) else None

    @property
    def position_labels(self) -> list[str]:
        return [position_label(p) for p in self.positions]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __repr__(self) -> str:
        n, L, P, d = self.shape
        where = f"on disk at {self.path}" if self.on_disk else "in memory"
        return (f"Activations(site={self.site!r}, N={n} ({int(np.sum(self.labels))} correct), layers={L}, "
                f"positions={P}, d={d}, {self.values.dtype}, {self.values.nbytes / 1e6:.1f} MB {where})")

    def cell(self, layer: int, position: str | int) -> np.ndarray:
        """Features [N, d] (float32) of one (model layer, position) cell."""
        j = self.layers.index(layer) if layer in self.layers else None
        if j is None:
            raise KeyError(f"layer {layer} was not collected; layers are {self.layers}")
        p = normalize_positions([position])[0]
        if p not in self.positions:
            raise KeyError(f"position {position!r} was not collected; positions are {self.positions}")
        return np.asarray(self.values[:, j, self.positions.index(p)], dtype=np.float32)


def parse_bytes(x: int | float | str) -> int:
    """2e9, 2_000_000_000, "2GB", "1.5 GiB", "500MB" -> bytes."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        if x < 0:
            raise ValueError(f"memory_budget must be >= 0, got {x}")
        return int(x)
    if isinstance(x, str):
        s = x.strip().lower().replace(" ", "")
        units = {"kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4, "kb": 1e3, "mb": 1e6, "gb": 1e9,
                 "tb": 1e12, "k": 1024, "m": 1024**2, "g": 1024**3, "b": 1}
        for u, f in units.items():
            if s.endswith(u):
                try:
                    return int(float(s[: -len(u)]) * f)
                except ValueError:
                    break
        try:
            return int(float(s))
        except ValueError:
            pass
    raise ValueError(f"cannot read {x!r} as a size; use bytes (int) or a string like '2GB'")


def _site_modules(lm: Any, layers: list[int], site: str) -> tuple[dict[int, torch.nn.Module], str]:
    an = lm.anatomy
    if site == "resid":
        return {i: an.layers[i] for i in layers}, "output"
    if site == "mlp":
        return {i: an.mlp_module(i, "collect(site='mlp')") for i in layers}, "output"
    if site in ("mlp_in", "attn"):
        part = "mlp.down" if site == "mlp_in" else "attn.o"
        mods = {}
        for i in layers:
            p = an.parts[i].get(part)
            if p is None:
                raise ValueError(f"site {site!r} needs the {part} projection, which this {an.family} model's "
                                 f"layer {i} does not have (found: {sorted(an.parts[i])})")
            mods[i] = p.module
        return mods, ("input" if site == "mlp_in" else "output")
    raise ValueError(f"unknown site {site!r}; use one of {list(SITES)}")


def _allocate(shape: tuple[int, ...], dtype: np.dtype, budget: int, path: str | Path | None
              ) -> tuple[np.ndarray, str | None]:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if path is None and nbytes <= budget:
        return np.zeros(shape, dtype=dtype), None
    tmpdir = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="heatwidget-acts-")
        file = Path(tmpdir) / "values.npy"
    else:
        file = Path(path).expanduser()
        if file.suffix != ".npy":
            file.mkdir(parents=True, exist_ok=True)
            file = file / "values.npy"
        file.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(file.parent).free
    if nbytes > free:
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)
        raise OSError(f"activations need {nbytes / 1e9:.1f} GB but {file.parent} has {free / 1e9:.1f} GB free; "
                      "pass path= on a larger disk, fewer layers/positions, or dtype='float16'")
    # A .npy memmap (header + raw data): np.load(file, mmap_mode="r") reopens it later without a copy.
    arr = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
    return arr, tmpdir


@torch.inference_mode()
@locks_model
def collect(lm: Any, answers: AnswerSet, positions: Sequence[str | int] = PAPER_POSITIONS,
            layers: int | Sequence[int] | None = None, site: str = "resid", *, batch_size: int = 16,
            dtype: str | np.dtype = "float32", memory_budget: int | str = DEFAULT_BUDGET,
            path: str | Path | None = None, executor: str | None = None, ray_address: str | None = None,
            num_workers: int = 2) -> Activations:
    """Activations of `answers`' full sequences (prompt + answer) at `positions` × `layers` at `site`.

    site: "resid" (block output), "mlp" (MLP output), "mlp_in" (input to the down-projection), "attn" (output of
    the o-projection). dtype: storage dtype ("float32" or "float16"; computation stays in the model's dtype).
    Stored in RAM up to `memory_budget` bytes, else in a .npy memmap in a temporary directory (removed with the
    object) or at `path` (kept; reopen with np.load(path, mmap_mode="r")).
    executor: None/"local" (this process) or "ray": chunks are sharded across `num_workers` Ray actors, each with
    a model replica loaded like `lm` (see heatwidget.scale; `ray_address` picks the cluster); same values.
    """
    from ..scale import check_executor

    use_ray = check_executor(executor)
    lm.anatomy.require_single_stream("collect")
    if not isinstance(answers, AnswerSet):
        raise TypeError(f"answers must be the AnswerSet hw.answer returns, got {type(answers).__name__}")
    if len(answers) == 0:
        raise ValueError("answers is empty (every row was dropped?): nothing to collect")
    if site not in SITES:
        raise ValueError(f"unknown site {site!r}; use one of {list(SITES)}")
    batch_size = positive_int(batch_size, "batch_size")
    store_dtype = np.dtype(dtype)
    if store_dtype not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    pos = normalize_positions(positions)
    lay = lm.anatomy.resolve_layers(layers if not isinstance(layers, range) else list(layers))
    tok_index = answers.positions(pos)  # [N, P], validated against every row's length
    mods, what = _site_modules(lm, lay, site)
    budget = parse_bytes(memory_budget)
    n = len(answers)
    values: np.ndarray | None = None  # allocated once the first chunk shows the site's width d
    tmpdir: str | None = None
    n_bad = 0

    pad = lm.tokenizer.pad_token_id if lm.tokenizer is not None and lm.tokenizer.pad_token_id is not None else 0
    seq_len = answers.seq_len
    order = np.argsort(-seq_len, kind="stable")  # similar lengths per chunk: little padding
    chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    # Halt after the last module the forward reaches among those captured (the highest layer).
    last = mods[max(lay)]
    keys = list(mods)

    def local_blocks() -> Any:
        for rows in progress(chunks, desc=f"collect {site}"):
            yield rows, one_chunk(rows)

    def one_chunk(rows: np.ndarray) -> torch.Tensor:
        width = int(seq_len[rows].max())
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            s = answers.ids[int(i)]
            ids[r, :len(s)] = torch.tensor(s)
            mask[r, :len(s)] = 1
        index = torch.from_numpy(tok_index[rows])
        with hooks.capture_at(mods, index, what=what) as got, hooks.halt_after(last):
            lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
        return torch.stack([got[k] for k in keys], dim=1).float()  # [B, L, P, d]

    if use_ray:
        from ..scale import collect_blocks

        blocks = collect_blocks(lm, answers, chunks, pos, lay, site, batch_size, ray_address, num_workers)
    else:
        blocks = local_blocks()
    for rows, block in blocks:
        n_bad += int((~torch.isfinite(block)).any(dim=(1, 2, 3)).sum())
        if values is None:
            values, tmpdir = _allocate((n, len(lay), len(pos), block.shape[-1]), store_dtype, budget, path)
        values[rows] = block.cpu().numpy().astype(store_dtype, copy=False)
    assert values is not None
    if isinstance(values, np.memmap):
        values.flush()
    if n_bad:
        warnings.warn(f"hw.collect: {n_bad} of {n} rows have NaN/inf activations (a float16 overflow?); "
                      "probe_auc will refuse them — load the model in float32 or bfloat16", stacklevel=2)

    acts = Activations(values=values, labels=answers.labels.copy(), layers=lay, positions=pos, site=site,
                       token_index=tok_index, answers=answers, lm=lm,
                       meta=dict(model=lm.display_name, model_path=lm.name, site=site, site_description=SITES[site],
                                 n_dropped_answers=answers.meta.get("n_dropped", len(answers.dropped)),
                                 storage="memmap" if tmpdir or path is not None else "memory"))
    if tmpdir is not None:
        weakref.finalize(acts, shutil.rmtree, tmpdir, True)  # the temporary file lives as long as the object
    return acts
