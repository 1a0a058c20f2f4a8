"""The analysis contract: what an analysis declares, and the one driver that runs every analysis.

An analysis is a module-level `Analysis` value that declares

- `name` and its `options` (`Option`: default, choices taken from the analysis's own constants, or a numeric
  type with a range) — validated here, recorded in the matrix's meta, and turned into controls by the explorer;
- `items(lm, **inputs, **options)`: the inputs split into items (one prompt, one example), checked before any
  model time is spent;
- `per_item(lm, item, **options)`: the science for one item — a public, module-level function returning a
  picklable result (numpy, not torch), so the same function runs locally or on a Ray worker;
- `reduce(run) -> Table`: the matrix (values, labels, titles, metric, extra meta) from all items' results;
- `drill(run, matrix, row, col) -> Detail`: the story behind one cell.

`run_analysis` (the driver) does the rest for everyone: option validation, the per-item loop with progress and
cancellation (`_progress`), the executor (local, or Ray actors holding model replicas via `scale.map_shards`),
the per-model lock, and the `HeatMatrix` with meta (analysis, options, option specs, model, versions, executor,
seconds), drill-down and `recompute(**changes)`. Execution settings are not analysis parameters: they come from
`config(...)` (a context manager) or a per-call `config=` override.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import inspect
import math
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._concurrency import model_lock
from ._progress import check_cancelled, progress
from .matrix import Detail, HeatMatrix

__all__ = [
    "Option",
    "Analysis",
    "Table",
    "Run",
    "Config",
    "config",
    "current_config",
    "run_analysis",
    "run_stage",
    "legacy_config",
    "provenance",
    "EXECUTORS",
    "declared",
]

EXECUTORS = ("local", "ray")


# ---- options -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One option of an analysis. `choices`: the allowed values (categorical); else `kind` (int / float / str /
    bool / "layers") with an inclusive range [`min`, `max`] for numbers; `nullable`: None is allowed too.
    `open`: the choices are the named values, but other forms are accepted too (e.g. an intervention given as a
    steering vector or a function); such an option is checked by the analysis's `items`, not here."""

    name: str
    default: Any
    choices: tuple[Any, ...] | None = None
    kind: Any = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False
    doc: str = ""
    open: bool = False

    @property
    def type_name(self) -> str:
        k = self.kind if self.kind is not None else type(self.default)
        return k if isinstance(k, str) else k.__name__

    def check(self, value: Any) -> Any:
        """The value, normalised (numpy ints → int, layer lists → list of int), or a ValueError naming it."""
        if value is None and (self.nullable or self.default is None):
            return None
        if self.open:
            return value
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
            return value
        kind = self.type_name
        if kind == "layers":
            return _check_layers(self.name, value)
        if kind in ("int", "float"):
            return self._check_number(value, int if kind == "int" else float)
        if kind == "bool" and not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{self.name} must be True or False, got {value!r}")
        if kind == "str" and not isinstance(value, str):
            raise ValueError(f"{self.name} must be a str, got {type(value).__name__}")
        return value

    def _check_number(self, value: Any, kind: type) -> Any:
        ok = isinstance(value, (int, np.integer)) if kind is int else isinstance(value, (int, float, np.number))
        if isinstance(value, bool) or not ok or (kind is float and not math.isfinite(float(value))):
            raise ValueError(f"{self.name} must be {'an int' if kind is int else 'a finite number'}, got {value!r}")
        v = kind(value)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise ValueError(f"{self.name} must be in [{self.min}, {self.max}], got {value!r}")
        return v

    def spec(self) -> dict[str, Any]:
        """What a user interface needs to offer this option (JSON-friendly; stored in meta["option_specs"])."""
        out: dict[str, Any] = {
            "kind": "choice" if self.choices is not None else self.type_name,
            "default": self.default,
            "nullable": self.nullable,
            "doc": self.doc,
        }
        if self.choices is not None:
            out["choices"] = list(self.choices)
        if self.open:
            out["open"] = True
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        return out


def _check_layers(name: str, value: Any) -> list[int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [int(value)]
    if not isinstance(value, (list, tuple, range, np.ndarray)):
        raise ValueError(f"{name} must be None, an int or a list of ints, got {type(value).__name__}")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name}[{i}] is {v!r}, not an int")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name} is empty: give at least one layer (or None for all)")
    return out


# ---- execution settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """How analyses run (never what they compute): executor "local" or "ray", Ray `workers` (model replicas),
    `ray_address` (None: the running or a new local Ray; "auto" / "ray://host:10001": a cluster),
    `threads_per_worker`, `progress` (None: a bar for loops of more than two items) and `memory_budget_mb` for
    the batched passes (None: 1 GiB on CPU, 30% of free memory on a GPU)."""

    executor: str = "local"
    workers: int = 2
    ray_address: str | None = None
    threads_per_worker: int = 1
    progress: bool | None = None
    memory_budget_mb: float | None = None

    def __post_init__(self) -> None:
        if self.executor is None:  # what executor=None always meant, before hw.config
            object.__setattr__(self, "executor", "local")
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {list(EXECUTORS)}, got {self.executor!r}")
        for name in ("workers", "threads_per_worker"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.memory_budget_mb is not None and not (
            isinstance(self.memory_budget_mb, (int, float)) and self.memory_budget_mb > 0
        ):
            raise ValueError(f"memory_budget_mb must be None or a positive number, got {self.memory_budget_mb!r}")


_config: contextvars.ContextVar[Config | None] = contextvars.ContextVar("heatwidget_config", default=None)
_DEFAULTS = Config()


def current_config() -> Config:
    """The execution settings in effect here (the innermost `with config(...)`, else the defaults)."""
    return _config.get() or _DEFAULTS


class config:  # noqa: N801 - used as `with hw.config(executor="ray", workers=4):`
    """Execution settings for the analyses run inside the block (nested blocks override single fields)."""

    def __init__(self, **settings: Any) -> None:
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(Config)})
        if unknown:
            raise TypeError(
                f"unknown execution setting(s) {unknown}; known: {[f.name for f in dataclasses.fields(Config)]}"
            )
        self.settings = settings
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Config:
        cfg = dataclasses.replace(current_config(), **self.settings)
        self._token = _config.set(cfg)
        return cfg

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None
        _config.reset(self._token)


@contextlib.contextmanager
def _active(cfg: Config):
    """Make `cfg` the settings in effect (what `per_item`, `reduce` and `drill` read with current_config())."""
    token = _config.set(cfg)
    try:
        yield cfg
    finally:
        _config.reset(token)


def resolve_config(override: Config | Mapping[str, Any] | None) -> Config:
    """The settings for one call: the context's, with a per-call `config=` override on top."""
    base = current_config()
    if override is None:
        return base
    if isinstance(override, Config):
        return override
    if isinstance(override, Mapping):
        with config(**override) as cfg:
            return cfg
    raise TypeError(f"config must be None, a heatwidget Config or a dict of settings, got {type(override).__name__}")


# The execution keywords analyses took before hw.config, and the Config field each one sets.
_LEGACY_KEYWORDS = {
    "executor": "executor",
    "num_workers": "workers",
    "ray_address": "ray_address",
    "progress_bar": "progress",
    "memory_budget_mb": "memory_budget_mb",
}


def legacy_config(
    config: Config | Mapping[str, Any] | None, old: Mapping[str, Any], where: str
) -> Config | Mapping[str, Any] | None:
    """`config` with the older execution keywords (`executor=`, `num_workers=`, `ray_address=`, `progress_bar=`,
    `memory_budget_mb=`) applied on top, so calls written before hw.config keep working; any other keyword is a
    TypeError naming `where`. executor=None meant "local"."""
    unknown = sorted(set(old) - set(_LEGACY_KEYWORDS))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {unknown}")
    if not old:
        return config
    settings = {_LEGACY_KEYWORDS[k]: v for k, v in old.items()}  # Config reads executor=None as "local"
    base = dataclasses.asdict(resolve_config(config))
    return Config(**{**base, **settings})


# ---- the declaration -------------------------------------------------------------------------------------------


@dataclass
class Table:
    """What `reduce` returns: the matrix and its labels, plus analysis-specific meta."""

    values: Any
    rows: Sequence[Any]
    cols: Sequence[Any]
    title: str = ""
    row_title: str = ""
    col_title: str = ""
    metric: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    """One run of an analysis, as `reduce` and `drill` see it."""

    analysis: Analysis
    lm: Any
    inputs: dict[str, Any]
    options: dict[str, Any]
    items: list[Any]
    results: list[Any]
    config: Config


@dataclass(frozen=True)
class Analysis:
    """An analysis as the driver sees it (see the module docstring)."""

    name: str
    options: tuple[Option, ...]
    items: Callable[..., list[Any]]
    per_item: Callable[..., Any]
    reduce: Callable[[Run], Any]  # a Table; for a pipeline stage (run_stage), the stage's own result
    drill: Callable[[Run, HeatMatrix, int, int], Detail] | None = None
    # Where per_item can run. ("local",): the items reference data of this process (features that may be
    # disk-backed, checkpoint files); under executor="ray" it runs locally and meta["executor"] says "local".
    executors: tuple[str, ...] = EXECUTORS

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    def check_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """All options (defaults filled in), each checked; an unknown name is an error naming it."""
        known = [o.name for o in self.options]
        unknown = [k for k in options if k not in known]
        if unknown:
            raise TypeError(f"{self.name} has no option(s) {unknown}; its options are {known}")
        return {o.name: o.check(options.get(o.name, o.default)) for o in self.options}

    def item_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options `per_item` takes (by its signature): the others only matter to `reduce`."""
        params = inspect.signature(self.per_item).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return dict(options)
        return {k: v for k, v in options.items() if k in params}

    def __post_init__(self) -> None:
        # register the package's own analyses (not a test's or a user's): explorer.option_choices reads them
        if str(getattr(self.per_item, "__module__", "")).startswith("heatwidget."):
            _DECLARED[self.name] = self


_DECLARED: dict[str, Analysis] = {}


def declared() -> dict[str, Analysis]:
    """heatwidget's analyses on the contract, by name (those whose modules have been imported)."""
    return dict(_DECLARED)


# ---- the driver ------------------------------------------------------------------------------------------------


def provenance(lm: Any) -> dict[str, Any]:
    """Model and library versions, for meta (library versions only when no model is attached: probe_auc on
    plain arrays, weight_change of checkpoint directories)."""
    import torch
    import transformers

    from . import __version__

    versions = {
        "heatwidget": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if getattr(lm, "anatomy", None) is None:
        return {"versions": versions}
    # the model by its name for people (never a machine path); the path it was loaded from in model_path
    return {
        "model": lm.display_name,
        "model_path": lm.name,
        "family": lm.anatomy.family,
        "n_layers": lm.n_layers,
        "dtype": str(lm.dtype),
        "device": str(lm.device),
        "versions": versions,
    }


def _lock(lm: Any) -> Any:
    """The model's lock; nothing to lock when the analysis has no model (None, a checkpoint path)."""
    try:
        return model_lock(lm)
    except TypeError:
        return contextlib.nullcontext()


def apply_per_item(
    lm: Any, per_item: Callable[..., Any], items: list[Any], options: dict[str, Any], settings: Config | None = None
) -> list[Any]:
    """`per_item` over a shard of items (what each Ray worker runs, on its model replica, under the driver's
    execution settings)."""
    import torch

    with torch.inference_mode(), _active(settings or current_config()):
        return [per_item(lm, item, **options) for item in items]


Sink = Callable[[int, Any], Any]


def _keep(_i: int, result: Any) -> Any:
    return result


def _run_local(
    analysis: Analysis, lm: Any, items: list[Any], options: dict[str, Any], cfg: Config, sink: Sink = _keep
) -> list[Any]:
    quiet = cfg.progress is False or (cfg.progress is None and len(items) <= 2)
    out = []
    for i, item in enumerate(progress(items, desc=analysis.name, disable=quiet)):
        check_cancelled()
        res = apply_per_item(lm, analysis.per_item, [item], options, cfg)[0]  # the very call a Ray worker makes
        out.append(sink(i, res))
    return out


def _run_ray(
    analysis: Analysis, lm: Any, items: list[Any], options: dict[str, Any], cfg: Config, sink: Sink = _keep
) -> list[Any]:
    from .scale import chunked, map_shards, require_ray

    require_ray()
    groups = chunked(items, cfg.workers * 4)  # a few shards per worker: results stream back, retries stay small
    starts = np.cumsum([0] + [len(g) for g in groups]).tolist()  # item index of each shard's first item
    shards = [(analysis.per_item, g) for g in groups]
    out: list[list[Any] | None] = [None] * len(groups)
    it = map_shards(
        lm,
        apply_per_item,
        shards,
        common={"options": options, "settings": cfg},
        ray_address=cfg.ray_address,
        num_workers=cfg.workers,
        threads_per_worker=cfg.threads_per_worker,
    )
    for i, res in progress(it, total=len(groups), desc=f"{analysis.name} (ray)", disable=cfg.progress is False):
        out[i] = [sink(starts[i] + j, r) for j, r in enumerate(res)]
    if any(r is None for r in out):
        raise RuntimeError(f"{analysis.name}: a Ray shard returned no result; no partial matrix is returned")
    return [r for rs in out for r in rs]  # type: ignore[union-attr]


def _execute(
    analysis: Analysis,
    lm: Any,
    inputs: Mapping[str, Any],
    options: Mapping[str, Any],
    config: Config | Mapping[str, Any] | None,
    results: list[Any] | None,
    sink: Sink = _keep,
) -> Run:
    """Validate, make the items and run `per_item` over them (unless `results` are reused)."""
    cfg = resolve_config(config)
    opts = analysis.check_options(options)
    inputs = dict(inputs)
    with _active(cfg):  # items may size their work by the settings (memory_budget_mb)
        items = analysis.items(lm, **inputs, **opts)
    if cfg.executor not in analysis.executors:
        cfg = dataclasses.replace(cfg, executor="local")  # see Analysis.executors
    if results is None:
        per_opts = analysis.item_options(opts)
        with _lock(lm), _active(cfg):
            run_items = _run_ray if cfg.executor == "ray" else _run_local
            results = run_items(analysis, lm, items, per_opts, cfg, sink)
    return Run(analysis, lm, inputs, opts, items, results, cfg)


def run_analysis(
    analysis: Analysis,
    lm: Any,
    inputs: Mapping[str, Any],
    options: Mapping[str, Any],
    config: Config | Mapping[str, Any] | None = None,
    *,
    _results: list[Any] | None = None,
) -> HeatMatrix:
    """Validate, run `per_item` over the items (locally or on Ray), reduce, and build the HeatMatrix."""
    t0 = time.perf_counter()
    run = _execute(analysis, lm, inputs, options, config, _results)
    with _lock(lm), _active(run.config):
        table = analysis.reduce(run)
    return _matrix(run, table, time.perf_counter() - t0)


def run_stage(
    analysis: Analysis,
    lm: Any,
    inputs: Mapping[str, Any],
    options: Mapping[str, Any],
    config: Config | Mapping[str, Any] | None = None,
    *,
    sink: Sink = _keep,
) -> Any:
    """A pipeline stage (hw.answer, hw.collect): the same validation, per-item loop, progress, cancellation and
    executor as `run_analysis`, but `reduce(run)` returns the stage's own result (data for the next stage), not
    a matrix. `sink(index, result)` receives each item's result as it arrives (in any order under Ray) and
    what it returns is kept in `run.results`, so a stage can stream large results to disk."""
    run = _execute(analysis, lm, inputs, options, config, None, sink)
    with _lock(lm), _active(run.config):
        return analysis.reduce(run)


def _matrix(run: Run, table: Table, seconds: float) -> HeatMatrix:
    a = run.analysis
    meta = {
        **provenance(run.lm),
        "analysis": a.name,
        "options": dict(run.options),
        "option_specs": {o.name: o.spec() for o in a.options},
        "executor": run.config.executor,
        **table.meta,
        "seconds": seconds,
    }
    drill = None
    if a.drill is not None:

        def drill(m: HeatMatrix, r: int, c: int) -> Detail:
            with _lock(run.lm), _active(run.config):
                return a.drill(run, m, r, c)  # type: ignore[misc]

    m = HeatMatrix(
        table.values,
        table.rows,
        table.cols,
        title=table.title,
        row_title=table.row_title,
        col_title=table.col_title,
        metric=table.metric,
        meta=meta,
        drill=drill,
    )
    return m.with_recompute(lambda **changes: _recompute(run, changes))


def _recompute(run: Run, changes: dict[str, Any]) -> HeatMatrix:
    """The same analysis with some inputs or options changed; results are reused when only options that
    `per_item` does not take (e.g. which metric to show) change."""
    a = run.analysis
    known = set(run.inputs) | {o.name for o in a.options}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise TypeError(f"{a.name} cannot recompute with {unknown}: it takes {sorted(known)}")
    inputs = {**run.inputs, **{k: v for k, v in changes.items() if k in run.inputs}}
    options = a.check_options({**run.options, **{k: v for k, v in changes.items() if k not in run.inputs}})
    same_items = all(_same(inputs[k], run.inputs[k]) for k in inputs) and all(
        _same(options[k], run.options[k]) for k in a.item_options(options)
    )
    return run_analysis(a, run.lm, inputs, options, run.config, _results=run.results if same_items else None)


def _same(a: Any, b: Any) -> bool:
    """Equal plain values (a control re-sends unchanged options; arrays or odd types count as changed)."""
    try:
        return type(a) is type(b) and bool(a == b)
    except (TypeError, ValueError):
        return False
