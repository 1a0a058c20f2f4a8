"""Read a saved Hugging Face checkpoint one tensor at a time, without loading the model.

`Checkpoint(dir)` understands a single `model.safetensors`, a sharded checkpoint with `model.safetensors.index.json`,
and (without an index) any set of `*.safetensors` files in the directory. Shapes and dtypes come from the file
headers alone. `Checkpoint.get(key)` opens the shard, reads one tensor and closes the shard again: safetensors memory-
maps the whole file, and every page a read touches stays resident (and counted in the process RSS) for as long as
the mapping is open, so keeping a 5 GB shard open while walking its tensors would grow RSS to the shard's size.
Re-opening per tensor costs a header parse (microseconds to milliseconds) and keeps the footprint to the tensors
actually alive.

`checkpoint_anatomy(dir)` builds the model skeleton on the meta device (no memory, no weights) to find its `Anatomy`,
and `map_part_keys` maps the anatomy's parameter names to the checkpoint's keys, which can differ by a prefix
(a base `LlamaModel` saves `layers.0...`, the causal LM that reads it names them `model.layers.0...`; old GPT-2
checkpoints save `h.0...` for `transformer.h.0...`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .anatomy import Anatomy, find_anatomy

__all__ = ["Checkpoint", "CheckpointError", "checkpoint_anatomy", "map_part_keys"]

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class CheckpointError(OSError):
    """A checkpoint directory cannot be read (missing, no safetensors, broken index); the message says which file."""


class Checkpoint:
    """The tensors of a saved checkpoint directory, read lazily and one at a time."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self._safe_open = safe_open
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise CheckpointError(f"no such checkpoint directory: {str(path)!r}")
        if not self.path.is_dir():
            raise CheckpointError(
                f"{str(path)!r} is a file; give the directory that holds config.json and the *.safetensors weights"
            )
        self.weight_map: dict[str, Path] = {}  # key -> shard file
        index = self.path / INDEX_NAME
        if index.exists():
            try:
                wm = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError, TypeError) as e:
                raise CheckpointError(
                    f"{index} is not a valid safetensors index (no readable weight_map): {e}"
                ) from None
            missing_shards = sorted({f for f in wm.values() if not (self.path / f).exists()})
            if missing_shards:
                first = next(k for k, f in wm.items() if f == missing_shards[0])
                raise CheckpointError(
                    f"shard {missing_shards[0]!r} named in {index.name} (holding {first!r}, among "
                    f"others) is missing from {self.path}"
                )
            self.weight_map = {k: self.path / f for k, f in wm.items()}
        else:
            files = (
                [self.path / SINGLE_NAME]
                if (self.path / SINGLE_NAME).exists()
                else sorted(p for p in self.path.glob("*.safetensors") if not p.name.startswith("adapter_"))
            )
            if not files:
                found = sorted(p.name for p in self.path.iterdir())
                if any(n.startswith("adapter_") for n in found):
                    hint = "it looks like a PEFT adapter: merge it into its base model and save that"
                elif any(n.endswith((".bin", ".pt", ".pth")) for n in found):
                    hint = (
                        "it holds pickled torch weights, which cannot be streamed: load it with hw.load(dir) "
                        "and pass the LM, or re-save it with save_pretrained (safetensors is the default)"
                    )
                else:
                    hint = f"it holds {found[:8]}"
                raise CheckpointError(f"no *.safetensors weights in {self.path}: {hint}")
            for f in files:
                for k in self._keys_of(f):
                    self.weight_map.setdefault(k, f)
        self._headers: dict[str, tuple[tuple[int, ...], str]] = {}
        self.stacks = expert_stacks(self.weight_map)

    def __repr__(self) -> str:
        n_files = len(set(self.weight_map.values()))
        return f"Checkpoint({str(self.path)!r}, {len(self.weight_map)} tensors in {n_files} file(s))"

    @property
    def sharded(self) -> bool:
        return (self.path / INDEX_NAME).exists()

    def keys(self) -> list[str]:
        """The stored keys, and the fused expert tensors the per-expert keys make up (see `expert_stacks`)."""
        return [*self.weight_map, *self.stacks]

    def __contains__(self, key: str) -> bool:
        return key in self.weight_map or key in self.stacks

    def _open(self, file: Path):
        try:
            return self._safe_open(str(file), framework="pt", device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError for truncated/corrupt files
            raise CheckpointError(f"cannot read {file}: {e}") from None

    def _keys_of(self, file: Path) -> list[str]:
        with self._open(file) as f:
            return list(f.keys())

    def info(self, key: str) -> tuple[tuple[int, ...], str]:
        """(shape, dtype name) of one tensor, from the file header only (no data read)."""
        if key in self.stacks:  # [experts, rows of the parts together, in]
            rows = self.stacks[key]
            shapes = [self.info(k) for k in rows[0]]
            return (len(rows), sum(sh[0][0] for sh in shapes), *shapes[0][0][1:]), shapes[0][1]
        if key not in self._headers:
            file = self._file(key)
            # One pass per shard: headers are small, and a check of every layer asks for most keys of a shard.
            with self._open(file) as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    self._headers[k] = (tuple(sl.get_shape()), str(sl.get_dtype()))
            if key not in self._headers:
                raise CheckpointError(f"{key!r} is listed for {file.name} but that file does not hold it")
        return self._headers[key]

    def shape(self, key: str) -> tuple[int, ...]:
        return self.info(key)[0]

    def _file(self, key: str) -> Path:
        try:
            return self.weight_map[key]
        except KeyError:
            raise KeyError(f"{key!r} is not in checkpoint {self.path}") from None

    def get(
        self, key: str, dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Read one tensor (as `dtype`, on `device`); the shard is closed again before returning."""
        if key in self.stacks:
            return torch.stack([torch.cat([self.get(k, dtype, device) for k in ks]) for ks in self.stacks[key]])
        file = self._file(key)
        with self._open(file) as f:
            try:
                t = f.get_tensor(key)
            except Exception as e:
                raise CheckpointError(f"cannot read tensor {key!r} from {file}: {e}") from None
        # The tensor may still view the file mapping (safetensors maps lazily): converting or moving it makes a
        # private copy, after which the mapping is released with the last reference.
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        if torch.device(device) != t.device:
            t = t.to(device)
        return t


# transformers 5 keeps routed experts fused ([experts, out, in]) in the model but saves many families in their
# original layout, one expert at a time: <moe>.experts.<e>.<proj>.weight. Fused name -> the per-expert parts it
# stacks, gate rows before up rows (the fused gate_up_proj's order).
_EXPERT_KEY = re.compile(r"^(?P<base>.+\.experts)\.(?P<e>\d+)\.(?P<proj>\w+)\.weight$")
_FUSED = {
    "gate_up_proj": (("gate_proj", "up_proj"), ("w1", "w3")),
    "gate_proj": (("gate_proj",), ("w1",)),
    "up_proj": (("up_proj",), ("w3",)),
    "down_proj": (("down_proj",), ("w2",)),
}


def expert_stacks(keys: Iterable[str]) -> dict[str, list[list[str]]]:
    """Fused expert tensors a checkpoint saved one expert at a time: "<moe>.experts.gate_up_proj" (and the
    anatomy's "<moe>.experts.*.<proj>.weight" of a model that lists its experts) -> per expert (0..E-1) the stored
    keys whose rows it stacks. Only complete sets (every expert has every part) count."""
    found: dict[str, dict[int, set[str]]] = {}
    for k in keys:
        m = _EXPERT_KEY.match(k)
        if m:
            found.setdefault(m["base"], {}).setdefault(int(m["e"]), set()).add(m["proj"])
    stacks: dict[str, list[list[str]]] = {}
    for base, experts in found.items():
        if sorted(experts) != list(range(len(experts))):
            continue
        for fused, spellings in _FUSED.items():
            names = next((ns for ns in spellings if all(set(ns) <= experts[e] for e in experts)), None)
            if names is not None:
                stacks[f"{base}.{fused}"] = [[f"{base}.{e}.{n}.weight" for n in names] for e in sorted(experts)]
        for proj in set.intersection(*experts.values()):  # a list of expert MLPs (transformers 4.x): "experts.*"
            stacks[f"{base}.*.{proj}.weight"] = [[f"{base}.{e}.{proj}.weight"] for e in sorted(experts)]
    return stacks


def read_config(path: str | Path) -> Any:
    """The transformers config of a checkpoint directory (CheckpointError if there is none)."""
    from transformers import AutoConfig

    p = Path(path).expanduser()
    if not (p / "config.json").exists():
        raise CheckpointError(f"{str(path)!r} has no config.json: it is not a saved transformers model directory")
    try:
        return AutoConfig.from_pretrained(str(p))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the config of {str(path)!r}: {str(e).splitlines()[0][:300]}") from None


def checkpoint_anatomy(path: str | Path, config: Any = None) -> tuple[Anatomy, Any]:
    """The Anatomy of a checkpoint directory's model, built on the meta device (no weights are read or allocated)."""
    from transformers import AutoModel, AutoModelForCausalLM

    cfg = read_config(path) if config is None else config
    errors = []
    for auto in (AutoModelForCausalLM, AutoModel):
        try:
            with torch.device("meta"):
                model = auto.from_config(cfg)
            return find_anatomy(model), cfg
        except (ValueError, KeyError, LookupError) as e:
            errors.append(str(e).splitlines()[0][:200])
    raise CheckpointError(
        f"transformers cannot build the model of {str(path)!r} to find its layers: " + "; ".join(errors)
    )


def map_part_keys(anatomy: Anatomy, names: Iterable[str], keys: Iterable[str]) -> dict[str, str]:
    """Map model parameter names (of parts inside the decoder layers) to checkpoint keys.

    Checkpoints and live models agree on everything from the layers container down ("layers.3.self_attn..."), but
    not always on the prefix before it. Each key ending in the container's tail ("layers.<i>.<rest>") votes for
    its prefix; the most common prefix wins, so one odd key cannot derail the mapping. Names whose key is absent
    are left out of the result (the caller reports the first one).
    """
    names = list(names)
    keyset = set(keys)
    lp = anatomy.layers_path
    tail_start = lp.rsplit(".", 1)[0] + "." if "." in lp else ""
    votes: Counter[str] = Counter()
    tails: dict[str, str] = {}
    for n in names:
        tail = n[len(tail_start) :] if tail_start and n.startswith(tail_start) else n
        tails[n] = tail
        if n in keyset:
            votes[n[: len(n) - len(tail)]] += 1
    if not votes:
        suffixes = set(tails.values())
        for k in keyset:
            # Only keys that end in a complete dotted tail count ("xlayers.0..." is not "layers.0...").
            for i in [0] + [j + 1 for j, ch in enumerate(k) if ch == "."]:
                if k[i:] in suffixes:
                    votes[k[:i]] += 1
                    break
    prefix = votes.most_common(1)[0][0] if votes else tail_start
    out: dict[str, str] = {}
    for n in names:
        for cand in (prefix + tails[n], n, *(prefix + t for t in _moe_renamed(tails[n]))):
            if cand in keyset:
                out[n] = cand
                break
    return out


# What the MoE block is called: transformers 5 renamed some (Mixtral's block_sparse_moe is now mlp), and their
# checkpoints keep the original name.
_MOE_BLOCKS = ("mlp", "block_sparse_moe", "feed_forward", "moe")


def _moe_renamed(tail: str) -> list[str]:
    """`tail` with its MoE block renamed to each other usual name ("layers.0.mlp.experts.down_proj" ->
    "layers.0.block_sparse_moe.experts.down_proj", ...); [] for a name outside an experts block."""
    parts = tail.split(".")
    if "experts" not in parts:
        return []
    i = parts.index("experts") - 1
    # GraniteMoE saves its fused experts under JetMoE's names: input_linear (gate | up rows), output_linear
    stored = {"gate_up_proj": "input_linear.weight", "down_proj": "output_linear.weight"}.get(parts[-1])
    jet = [".".join([*parts[: i + 1], stored])] if stored and parts[-2] == "experts" else []
    if i < 0 or parts[i] not in _MOE_BLOCKS:
        return jet
    return [".".join([*parts[:i], alt, *parts[i + 1 :]]) for alt in _MOE_BLOCKS if alt != parts[i]] + jet
