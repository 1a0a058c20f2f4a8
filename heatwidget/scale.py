"""Dataset-scale analyses on Ray: items are sharded across actors that each hold a model replica.

Analyses on the contract (`heatwidget.analysis`) run here under `hw.config(executor="ray")`: the driver calls
`map_shards(lm, apply_per_item, ...)`, so only the analysis's public per-item function (`ablate_prompt`,
`knockout_prompt`, `trace`, `collect_rows`, ...) and its items cross to the workers. Each actor loads the model
once, from the path / hub id and the `hw.load` arguments the driver's `LM` recorded (`lm.name`,
`lm.load_kwargs`), and runs the very same per-item code the local path runs, so results are equal to the local
ones. Results stream back as shards finish (`ray.wait`) and
are reduced in item order.

Fault tolerance is Ray's own: actors restart once (`max_restarts=1`) and the call they were running is retried
once on the restarted actor (`max_task_retries=1`). A shard whose worker dies twice fails the whole run with
`ShardFailedError`; a partial matrix is never returned.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EXECUTORS",
    "ShardFailedError",
    "check_executor",
    "map_shards",
    "require_ray",
    "replica_spec",
    "shutdown_workers",
]

EXECUTORS = (None, "local", "ray")
INSTALL_HINT = 'pip install "heatwidget[ray]"'

# Replicas stay loaded between calls (a model load costs seconds to minutes): key -> actors. Keyed by the Ray
# session too, so a ray.shutdown()/ray.init() never hands back actors of a dead cluster.
_pools: dict[tuple, list[Any]] = {}

# Tests set this to fn(actors, n_done) to kill a worker mid-run; never set in normal use.
_test_hook: Callable[[list[Any], int], None] | None = None


class ShardFailedError(RuntimeError):
    """A Ray worker died while computing a shard, also on its retry: the run is aborted, nothing partial returned."""


def require_ray() -> Any:
    """`import ray`, or an ImportError that says how to get it."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            f'executor="ray" needs Ray, which is not installed: {INSTALL_HINT} (or pip install "ray>=2.9")'
        ) from None
    return ray


def check_executor(executor: str | None) -> bool:
    """Validate `executor`; True when the work goes to Ray (checked before any model time is spent)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be None, 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        require_ray()
        return True
    return False


@dataclass(frozen=True)
class ReplicaSpec:
    """What a worker needs to rebuild the driver's model: `hw.load(name, **kwargs)`."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    num_gpus: float = 0.0


def replica_spec(lm: Any) -> ReplicaSpec:
    """The load recipe of `lm`, or a clear error for models that were not loaded from a path or hub id."""
    kwargs = dict(getattr(lm, "load_kwargs", None) or {})
    if not kwargs or not getattr(lm, "name", ""):
        raise ValueError(
            "executor='ray' rebuilds the model on every worker from the path or hub id it was loaded "
            "from, but this LM was not made by hw.load (LM.wrap?): load it with hw.load(path_or_id, "
            "...) or save it with model.save_pretrained(dir) and hw.load(dir)"
        )
    dev = str(kwargs.get("device") or "cpu")
    # One GPU per replica when the driver's model is on one GPU; a device_map'd model stays on the worker's GPUs
    # (give each actor a whole node then: see docs/scale.md).
    gpus = 1.0 if dev.startswith("cuda") and kwargs.get("device_map") is None else 0.0
    return ReplicaSpec(str(lm.name), kwargs, gpus)


class _Worker:
    """A Ray actor holding one model replica (made with ray.remote(...) in `map_shards`)."""

    def __init__(self, spec: ReplicaSpec, threads: int) -> None:
        import torch

        from ._lm import load

        torch.set_num_threads(threads)  # replicas share the node's cores: no oversubscription
        kwargs = dict(spec.kwargs)
        if kwargs.get("offload_folder"):  # replicas on one node must not write each other's offload files
            kwargs["offload_folder"] = os.path.join(str(kwargs["offload_folder"]), f"replica-{os.getpid()}")
        self.lm = load(spec.name, **kwargs)

    def run(self, fn: Callable[..., Any], shard: int, args: tuple, kwargs: dict) -> tuple[int, Any]:
        return shard, fn(self.lm, *args, **kwargs)


def _take_actors(ray: Any, spec: ReplicaSpec, n_actors: int, threads: int) -> tuple[tuple, list[Any]]:
    """(pool key, actors): the replicas a previous clean run left for this model and shape, else new ones."""
    ctx = ray.get_runtime_context()
    key = (ctx.get_node_id(), ctx.get_job_id(), spec.name, repr(sorted(spec.kwargs.items())), n_actors, threads)
    actors = _pools.pop(key, None)
    if actors is None:
        remote = ray.remote(num_cpus=threads, num_gpus=spec.num_gpus, max_restarts=1, max_task_retries=1)(_Worker)
        actors = [remote.remote(spec, threads) for _ in range(n_actors)]
    return key, actors


def _schedule(
    ray: Any, actors: list[Any], fn: Callable[..., Any], shards: Sequence[tuple], common_ref: Any
) -> Iterator[tuple[int, Any]]:
    """One shard in flight per actor; the next goes to whichever actor finishes first."""
    from ray.exceptions import RayActorError, WorkerCrashedError

    todo = list(range(len(shards)))[::-1]
    pending: dict[Any, tuple[int, Any]] = {}  # ref -> (shard, actor)

    def submit(actor: Any) -> None:
        if todo:
            i = todo.pop()
            pending[actor.run.remote(fn, i, tuple(shards[i]), common_ref)] = (i, actor)

    for a in actors:
        submit(a)
    done_n = 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i, actor = pending.pop(ready[0])
        try:
            shard, result = ray.get(ready[0])
        except (RayActorError, WorkerCrashedError) as e:
            raise ShardFailedError(
                f"a Ray worker died computing shard {i + 1} of {len(shards)} (retried once "
                f"on a restarted worker); the run is aborted and no partial result is "
                f"returned: {type(e).__name__}"
            ) from e
        done_n += 1
        yield shard, result
        submit(actor)
        if _test_hook is not None:
            _test_hook(actors, done_n)


def map_shards(
    lm: Any,
    fn: Callable[..., Any],
    shards: Sequence[tuple],
    *,
    common: dict[str, Any] | None = None,
    ray_address: str | None = None,
    num_workers: int = 2,
    threads_per_worker: int = 1,
) -> Iterator[tuple[int, Any]]:
    """Run `fn(replica_lm, *shards[i], **common)` for every shard on `num_workers` Ray actors; yield (i, result)
    as each finishes (any order). Raises ShardFailedError if a shard's worker dies twice.

    ray_address: None = the running Ray instance, or a new local one; "auto" or "ray://host:10001" = a cluster.
    `fn` must be importable on the workers (a module-level function of heatwidget).
    """
    ray = require_ray()
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}")
    spec = replica_spec(lm)
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    common = common or {}
    n_actors = min(num_workers, len(shards))
    if n_actors == 0:
        return
    key, actors = _take_actors(ray, spec, n_actors, threads_per_worker)
    ok = False
    common_ref = ray.put(common)  # stored once in the object store, not once per task
    try:
        yield from _schedule(ray, actors, fn, shards, common_ref)
        ok = _test_hook is None
    finally:
        if ok:  # a clean run: keep the replicas for the next call
            _pools[key] = actors
        else:  # failed, abandoned (generator closed early) or tampered with by a test: never reuse
            for a in actors:
                ray.kill(a, no_restart=True)


def shutdown_workers() -> None:
    """Stop the cached model replicas (ray.shutdown() does too)."""
    ray = require_ray()
    for actors in _pools.values():
        for a in actors:
            ray.kill(a, no_restart=True)
    _pools.clear()


def chunked(items: Sequence[Any], n_shards: int) -> list[list[Any]]:
    """`items` in `n_shards` contiguous runs (order kept; sizes differ by at most one)."""
    n_shards = max(1, min(n_shards, len(items)))
    q, r = divmod(len(items), n_shards)
    out, start = [], 0
    for k in range(n_shards):
        end = start + q + (k < r)
        out.append(list(items[start:end]))
        start = end
    return out
