"""Where weight statistics read their tensors: a live model or a checkpoint directory (streamed one stored tensor
at a time, see `_checkpoint.py`), each seen as "the stored tensor behind this Part"; and the checks that two of
them can be compared tensor by tensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checkpoint import Checkpoint, checkpoint_anatomy, map_part_keys
from .._lm import LM
from .._offload import live_param
from ..anatomy import MODULES, Anatomy, Part, find_anatomy

__all__ = [
    "WeightMismatchError",
    "Source",
    "source",
    "check_compatible",
    "check_present",
    "require_parts",
    "tensor_groups",
]


class WeightMismatchError(ValueError):
    """Two models cannot be compared tensor by tensor; `tensor` is the first stored tensor that differs."""

    def __init__(self, message: str, tensor: str) -> None:
        super().__init__(message)
        self.tensor = tensor


@dataclass
class Source:
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


def source(x: Any, role: str) -> Source:
    """LM, transformers model or checkpoint directory -> Source (no weights are read here)."""
    if isinstance(x, LM):
        return Source(role, x.name or _model_label(x.model), x.anatomy, x.config, lm=x)
    if isinstance(x, nn.Module):
        return Source(role, _model_label(x), find_anatomy(x), getattr(x, "config", None))
    if isinstance(x, (str, Path)):
        ckpt = Checkpoint(x)  # first: a wrong path should say so, not complain about config.json
        anatomy, cfg = checkpoint_anatomy(x)
        names = [p.param_name for _, _, p in anatomy.iter_parts()]
        keymap = map_part_keys(anatomy, names, ckpt.keys())
        return Source(role, str(x), anatomy, cfg, ckpt=ckpt, keymap=keymap)
    raise TypeError(f"{role} must be an hw.LM, a transformers model or a checkpoint directory, not {type(x).__name__}")


def _local(src: Source, part: Part) -> str:
    """The parameter name below the layer index ("self_attn.q_proj.weight"), equal across wrappers/prefixes."""
    head = f"{src.anatomy.layers_path}."
    rest = part.param_name[len(head) :] if part.param_name.startswith(head) else part.param_name
    return rest.split(".", 1)[1] if "." in rest else rest


def check_present(src: Source, part: Part, layer: int, name: str) -> None:
    if not src.has(part):
        raise WeightMismatchError(
            f"{part.param_name} ({name} of layer {layer}) is missing from {src.where()} ({src.role}): "
            f"its config.json describes {src.n_layers} layers with this tensor, but no shard holds it "
            f"(looked for key {src.key(part)!r})",
            tensor=part.param_name,
        )


def check_compatible(a: Source, b: Source) -> list[str]:
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
                why = (
                    f"{lack.role} has {lack.n_layers} layers, {have.role} has {have.n_layers}"
                    if layer >= lack.n_layers
                    else f"{lack.role} ({lack.anatomy.family}) has no {name} projection in layer {layer}"
                )
                raise WeightMismatchError(
                    f"a and b differ first at {part.param_name} ({name} of layer {layer}): {have.role} has it, "
                    f"{lack.role} does not ({why})",
                    tensor=part.param_name,
                )
            check_present(a, pa, layer, name)
            check_present(b, pb, layer, name)
            la, lb = _local(a, pa), _local(b, pb)
            sa, sb = a.shape(pa), b.shape(pb)
            if la != lb or pa.transposed != pb.transposed or pa.split != pb.split:
                raise WeightMismatchError(
                    f"a and b differ first at {name} of layer {layer}: a ({fam_a}) stores it in {pa.param_name} "
                    f"{list(sa)}, b ({fam_b}) in {pb.param_name} {list(sb)}; these are different architectures",
                    tensor=pa.param_name,
                )
            if sa != sb:
                raise WeightMismatchError(
                    f"a and b differ first at {pa.param_name} ({name} of layer {layer}): shape {list(sa)} in a, "
                    f"{list(sb)} in b",
                    tensor=pa.param_name,
                )
    if fam_a != fam_b:
        notes.append(
            f"a is a {fam_a} model and b a {fam_b} model; their projections line up by name and shape, "
            f"so they are compared"
        )
    return notes


def require_parts(src: Source) -> None:
    if not any(src.anatomy.parts):
        found = "; ".join(src.anatomy.notes) or "none of the known projection names matched"
        raise ValueError(
            f"no attention or MLP projections found in {src.label!r} ({src.anatomy.family}), so there "
            f"is nothing to compare module by module: {found}"
        )


def tensor_groups(a: Source, b: Source, layer: int) -> dict[tuple[str, str], list[str]]:
    """Module names of one layer grouped by the stored tensor pair that holds them (fused tensors read once)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for name in MODULES:
        pa, pb = a.part(layer, name), b.part(layer, name)
        if pa is not None and pb is not None:
            groups.setdefault((pa.param_name, pb.param_name), []).append(name)
    return groups
