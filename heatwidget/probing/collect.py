"""`hw.collect`: activations [N, L, P, d] at named token positions, for probing (Orgad et al. 2024).

A pipeline stage on the analysis contract (`heatwidget.analysis.run_stage`): the item is one chunk of rows
(`RowChunk`), `collect_rows` the public per-item function (it runs on Ray workers too), and each chunk's result is
written into the store as it arrives.

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

from .._block_calls import capture_at, halt_after
from .._limits import rows_per_forward
from .._validate import positive_int
from ..analysis import Analysis, Config, Option, Run, legacy_config, run_stage
from .answers import AnswerSet
from .positions import PAPER_POSITIONS, normalize_positions, position_label

__all__ = ["Activations", "collect", "collect_rows", "RowChunk", "COLLECT", "COLLECT_SITES", "SITES", "parse_bytes"]

# What `site` names in collect (and probe_auc): where in a layer the activations are read. (knockout_js's SITES
# are its rows, a different thing.)
COLLECT_SITES: dict[str, str] = {
    "resid": "decoder block output (the residual stream after layer l)",
    "mlp": "MLP output (its write to the residual stream)",
    "mlp_in": "input to the MLP's down-projection (the paper's README heatmap)",
    "attn": "output of the attention o-projection",
}
SITES = COLLECT_SITES  # the name this had before knockout_js's SITES made it ambiguous
DEFAULT_BUDGET = 2 * 1024**3
STORE_DTYPES = ("float32", "float16")


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
        name = self.values.filename if isinstance(self.values, np.memmap) else None
        return Path(name) if name is not None else None

    @property
    def position_labels(self) -> list[str]:
        return [position_label(p) for p in self.positions]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __repr__(self) -> str:
        n, L, P, d = self.shape
        where = f"on disk at {self.path}" if self.on_disk else "in memory"
        return (
            f"Activations(site={self.site!r}, N={n} ({int(np.sum(self.labels))} correct), layers={L}, "
            f"positions={P}, d={d}, {self.values.dtype}, {self.values.nbytes / 1e6:.1f} MB {where})"
        )

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
        units = {
            "kib": 1024,
            "mib": 1024**2,
            "gib": 1024**3,
            "tib": 1024**4,
            "kb": 1e3,
            "mb": 1e6,
            "gb": 1e9,
            "tb": 1e12,
            "k": 1024,
            "m": 1024**2,
            "g": 1024**3,
            "b": 1,
        }
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
                raise ValueError(
                    f"site {site!r} needs the {part} projection, which this {an.family} model's "
                    f"layer {i} does not have (found: {sorted(an.parts[i])})"
                )
            mods[i] = p.module
        return mods, ("input" if site == "mlp_in" else "output")
    raise ValueError(f"unknown site {site!r}; use one of {list(COLLECT_SITES)}")


def _allocate(
    shape: tuple[int, ...], dtype: np.dtype, budget: int, path: str | Path | None
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
        raise OSError(
            f"activations need {nbytes / 1e9:.1f} GB but {file.parent} has {free / 1e9:.1f} GB free; "
            "pass path= on a larger disk, fewer layers/positions, or dtype='float16'"
        )
    # A .npy memmap (header + raw data): np.load(file, mmap_mode="r") reopens it later without a copy.
    arr = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)
    return arr, tmpdir


@dataclass
class RowChunk:
    """One item of collect: rows of the AnswerSet run as one padded batch (small and picklable: ids, not text)."""

    rows: np.ndarray  # indices into the AnswerSet
    ids: list[list[int]]  # each row's full sequence
    index: np.ndarray  # [b, P] the token read at each position
    pad: int


@dataclass
class RowActivations:
    """`collect_rows`' result: activations [b, L, P, d] (float32) of the chunk's rows."""

    rows: np.ndarray
    values: np.ndarray


def collect_rows(lm: Any, item: RowChunk, *, site: str = "resid", layers: Any = None) -> RowActivations:
    """Activations of one chunk of rows at `site` × `layers`, gathered at the chunk's positions inside one
    right-padded forward (each row keeps its own positions and position ids; causal attention never sees the pads)
    that stops after the last layer asked for."""
    lay = lm.anatomy.resolve_layers(layers)
    mods, what = _site_modules(lm, lay, site)
    width = max(len(s) for s in item.ids)
    ids = torch.full((len(item.ids), width), item.pad, dtype=torch.long)
    mask = torch.zeros((len(item.ids), width), dtype=torch.long)
    for r, s in enumerate(item.ids):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    index = torch.from_numpy(item.index)
    modules = [mods[k] for k in lay]
    with torch.inference_mode(), capture_at(modules, index, what=what) as got, halt_after(mods[max(lay)]):
        lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
    block = torch.stack([got[j] for j in range(len(lay))], dim=1).float()  # [B, L, P, d]
    return RowActivations(item.rows, block.cpu().numpy())


def _items(
    lm: Any,
    answers: Any,
    positions: Any,
    store: _Store,
    *,
    site: str,
    layers: Any,
    batch_size: int | None,
    dtype: Any,
) -> list[RowChunk]:
    """Every check before the first forward; the rows in chunks of similar length (little padding)."""
    lm.anatomy.require_single_stream("collect")
    if not isinstance(answers, AnswerSet):
        raise TypeError(f"answers must be the AnswerSet hw.answer returns, got {type(answers).__name__}")
    if len(answers) == 0:
        raise ValueError("answers is empty (every row was dropped?): nothing to collect")
    if batch_size is None:
        batch_size = rows_per_forward(lm, int(answers.seq_len.max()))
    positive_int(batch_size, "batch_size")
    pos = normalize_positions(positions)
    lay = lm.anatomy.resolve_layers(layers)
    _site_modules(lm, lay, site)  # a site this family lacks fails here, naming the layer
    tok_index = answers.positions(pos)  # [N, P], validated against every row's length
    store.prepare(len(answers), len(lay), len(pos), np.dtype(dtype))
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else 0
    order = np.argsort(-answers.seq_len, kind="stable")
    chunks = [order[i : i + batch_size] for i in range(0, len(answers), batch_size)]
    return [RowChunk(rows, [answers.ids[int(i)] for i in rows], tok_index[rows], pad) for rows in chunks]


@dataclass
class _Store:
    """Where collect writes each chunk as it arrives: RAM up to `budget` bytes, else a .npy memmap."""

    budget: int
    path: str | Path | None
    shape: tuple[int, ...] = ()
    dtype: np.dtype = field(default_factory=lambda: np.dtype("float32"))
    values: np.ndarray | None = None
    tmpdir: str | None = None
    n_bad: int = 0

    def prepare(self, n: int, n_layers: int, n_positions: int, dtype: np.dtype) -> None:
        self.shape, self.dtype, self.values, self.n_bad = (n, n_layers, n_positions), dtype, None, 0

    def write(self, _i: int, res: RowActivations) -> None:
        block = res.values
        self.n_bad += int((~np.isfinite(block)).any(axis=(1, 2, 3)).sum())
        if self.values is None:  # allocated once the first chunk shows the site's width d
            self.values, self.tmpdir = _allocate((*self.shape, block.shape[-1]), self.dtype, self.budget, self.path)
        self.values[res.rows] = block.astype(self.dtype, copy=False)


def _reduce(run: Run) -> Activations:
    store: _Store = run.inputs["store"]
    answers: AnswerSet = run.inputs["answers"]
    lm, site = run.lm, run.options["site"]
    values = store.values
    assert values is not None
    if isinstance(values, np.memmap):
        values.flush()
    n = len(answers)
    if store.n_bad:
        warnings.warn(
            f"hw.collect: {store.n_bad} of {n} rows have NaN/inf activations (a float16 overflow?); "
            "probe_auc will refuse them — load the model in float32 or bfloat16",
            stacklevel=3,
        )
    pos = normalize_positions(run.inputs["positions"])
    acts = Activations(
        values=values,
        labels=answers.labels.copy(),
        layers=lm.anatomy.resolve_layers(run.options["layers"]),
        positions=pos,
        site=site,
        token_index=answers.positions(pos),
        answers=answers,
        lm=lm,
        meta=dict(
            model=lm.display_name,
            model_path=lm.name,
            site=site,
            site_description=COLLECT_SITES[site],
            n_dropped_answers=answers.meta.get("n_dropped", len(answers.dropped)),
            storage="memmap" if store.tmpdir or store.path is not None else "memory",
            executor=run.config.executor,
        ),
    )
    if store.tmpdir is not None:
        weakref.finalize(acts, shutil.rmtree, store.tmpdir, True)  # the temporary file lives as long as the object
    return acts


COLLECT = Analysis(
    name="collect",
    options=(
        Option("site", "resid", choices=tuple(COLLECT_SITES)),
        Option("layers", None, kind="layers", nullable=True),
        Option(
            "batch_size",
            None,
            kind=int,
            nullable=True,
            doc="rows per forward (None: as many as fit hw._limits.AUTO_BATCH_BYTES, at most 256)",
        ),
        Option("dtype", "float32", choices=STORE_DTYPES, doc="storage dtype (computation stays the model's)"),
    ),
    items=_items,
    per_item=collect_rows,
    reduce=_reduce,
)


def collect(
    lm: Any,
    answers: AnswerSet,
    positions: Sequence[str | int] = PAPER_POSITIONS,
    layers: int | Sequence[int] | None = None,
    site: str = "resid",
    *,
    batch_size: int | None = None,
    dtype: str | np.dtype = "float32",
    memory_budget: int | str = DEFAULT_BUDGET,
    path: str | Path | None = None,
    config: Config | dict[str, Any] | None = None,
    **execution: Any,
) -> Activations:
    """Activations of `answers`' full sequences (prompt + answer) at `positions` × `layers` at `site`.

    site: "resid" (block output), "mlp" (MLP output), "mlp_in" (input to the down-projection), "attn" (output of
    the o-projection). dtype: storage dtype ("float32" or "float16"; computation stays in the model's dtype).
    Stored in RAM up to `memory_budget` bytes, else in a .npy memmap in a temporary directory (removed with the
    object) or at `path` (kept; reopen with np.load(path, mmap_mode="r")). batch_size: rows per forward; None sizes
    it from the model (see `hw._limits.rows_per_forward`); the values do not depend on it.
    Execution (`hw.config(executor="ray", workers=4)` or `config=`): under Ray the chunks run on actors that each
    hold a model replica loaded like `lm` (see heatwidget.scale); the values are the same. The older keywords
    executor=, num_workers=, ray_address= still work.
    """
    if site not in COLLECT_SITES:
        raise ValueError(f"unknown site {site!r}; use one of {list(COLLECT_SITES)}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float16):
        raise ValueError(f"dtype must be float32 or float16, got {dtype!r}")
    store = _Store(parse_bytes(memory_budget), path)
    layers = list(layers) if isinstance(layers, range) else layers
    return run_stage(
        COLLECT,
        lm,
        {"answers": answers, "positions": positions, "store": store},
        {"site": site, "layers": layers, "batch_size": batch_size, "dtype": dt.name},
        legacy_config(config, execution, "collect"),
        sink=store.write,
    )
