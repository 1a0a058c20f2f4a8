"""Where things live inside a Hugging Face causal LM: the one place that knows architectures.

An `Anatomy` names the decoder blocks, each block's attention and MLP, their q/k/v/o and up/down/gate projections,
the final norm and the unembedding, by the model's own module paths (as nnsight does). Known layouts are matched
by name (Llama/Mistral/Qwen2/Gemma/Phi-3, GPT-2, GPT-NeoX); anything else is found by structural search. Fused
projections (GPT-2 `c_attn`, GPT-NeoX `query_key_value`, Phi-3 `qkv_proj`/`gate_up_proj`) are described by a
`Split`, so every analysis can read "attn.q of layer 3" as a plain [out, in] matrix whatever the family.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from ._validate import is_bool

__all__ = ["Anatomy", "AnatomyError", "Part", "Split", "MODULES", "find_anatomy"]

# The module columns of every module × layer matrix, in the papers' order.
MODULES: tuple[str, ...] = ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down", "mlp.gate")


class AnatomyError(LookupError):
    """The model's layout could not be understood; the message names what was not found."""


@dataclass(frozen=True)
class Split:
    """How one logical projection sits inside a fused weight.

    kind "rows": output features [start, stop) of an nn.Linear-convention weight [out, in].
    kind "heads": GPT-NeoX's per-head interleaving: output viewed as [n_heads, n_parts, head_dim], take `part`.
    """

    kind: str  # "rows" | "heads"
    start: int = 0
    stop: int = 0
    n_heads: int = 0
    n_parts: int = 3
    part: int = 0

    def out_index(self, out_features: int) -> torch.Tensor:
        """The output-feature indices (into the fused weight's out dimension) that belong to this projection."""
        if self.kind == "rows":
            return torch.arange(self.start, self.stop)
        head_dim = out_features // (self.n_heads * self.n_parts)
        idx = torch.arange(out_features).view(self.n_heads, self.n_parts, head_dim)
        return idx[:, self.part, :].reshape(-1)


@dataclass
class Part:
    """One logical projection (e.g. attn.q of layer 3): the module that holds its weight and how to read it."""

    name: str  # one of MODULES
    path: str  # the module's path in model.named_modules(), e.g. "model.layers.3.self_attn.q_proj"
    module: nn.Module
    transposed: bool = False  # GPT-2's Conv1D stores weight as [in, out]
    split: Split | None = None

    @property
    def param_name(self) -> str:
        return f"{self.path}.weight"

    def weight(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The projection's weight as an nn.Linear-convention [out, in] matrix (a view where possible).

        Pass `w` (the raw stored tensor, e.g. streamed from a checkpoint) to read it instead of the live module.
        """
        w = self.module.weight if w is None else w
        if self.transposed:
            w = w.t()
        if self.split is not None:
            if self.split.kind == "rows":
                w = w[self.split.start : self.split.stop]
            else:
                w = w[self.split.out_index(w.shape[0]).to(w.device)]
        return w


@dataclass
class Anatomy:
    """The parts of one model, found once at load time."""

    family: str
    layers: nn.ModuleList
    layers_path: str
    attn: list[nn.Module]
    mlp: list[nn.Module]
    parts: list[dict[str, Part]]  # per layer: module name (MODULES) -> Part; a family's missing modules are absent
    final_norm: nn.Module | None
    unembed: nn.Module
    embed: nn.Module
    attn_paths: list[str] = field(default_factory=list)
    mlp_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def part(self, layer: int, name: str) -> Part | None:
        """The Part for (layer, module name) or None when this family has no such module (e.g. GPT-2 mlp.gate)."""
        if name not in MODULES:
            raise KeyError(f"unknown module {name!r}; modules are {list(MODULES)}")
        return self.parts[self.layer_index(layer)].get(name)

    def layer_index(self, layer: int) -> int:
        """Validate a layer index (negative counts from the end) and return it as 0..L-1."""
        if is_bool(layer):  # operator.index(True) is 1: a bool is refused, never read as layer 0 or 1
            raise TypeError(f"layer must be an int, got a bool ({layer})")
        if not isinstance(layer, int):
            try:
                layer = operator.index(layer)  # numpy / torch integers; a float is refused, never truncated
            except TypeError:
                raise TypeError(f"layer must be an int, got {layer!r} ({type(layer).__name__})") from None
        n = self.n_layers
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} is out of range: this model has {n} layers (0..{n - 1})")
        return layer % n

    def resolve_layers(self, layers: int | list[int] | range | None) -> list[int]:
        """None → all layers; otherwise validated indices in the order given (duplicates refused)."""
        if layers is None:
            return list(range(self.n_layers))
        if isinstance(layers, int):
            layers = [layers]
        out = [self.layer_index(i) for i in layers]
        if not out:
            raise ValueError("layers is empty: give at least one layer index, or None for all")
        if len(set(out)) != len(out):
            raise ValueError(f"layers {list(layers)} contain duplicates")
        return out

    def iter_parts(self) -> Iterator[tuple[int, str, Part]]:
        for i, d in enumerate(self.parts):
            for name in MODULES:
                if name in d:
                    yield i, name, d[name]

    def summary(self) -> str:
        found = sorted({n for d in self.parts for n in d}, key=MODULES.index)
        return (f"{self.family}: {self.n_layers} layers at {self.layers_path}; modules {found}; "
                f"final norm {'yes' if self.final_norm is not None else 'no'}")


# ---- finding the parts ---------------------------------------------------------------------------------------

def _get(root: nn.Module, path: str) -> nn.Module | None:
    mod: nn.Module | None = root
    for name in path.split("."):
        if mod is None or not hasattr(mod, name):
            return None
        mod = getattr(mod, name)
    return mod if isinstance(mod, nn.Module) else None


def _path_of(model: nn.Module, target: nn.Module) -> str:
    for name, mod in model.named_modules():
        if mod is target:
            return name
    raise AnatomyError("internal: module not found in model")


def _find_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the longest ModuleList of identical block classes (length = num_hidden_layers if known)."""
    for path in ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "transformer.layers",
                 "transformer.blocks", "model.language_model.layers", "language_model.model.layers"):
        mod = _get(model, path)
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            return path, mod
    want = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best: tuple[str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            if want is not None and len(mod) != want:
                continue
            if best is None or len(mod) > len(best[1]):
                best = (name, mod)
    if best is None:
        raise AnatomyError(
            "could not find the decoder layers: no ModuleList of identical blocks"
            + (f" with {want} entries (config.num_hidden_layers)" if want else "")
        )
    return best


_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention", "mixer")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "ff", "mlp_block")
_LINEAR_NAMES = {
    "attn.q": ("q_proj", "query", "wq", "q"),
    "attn.k": ("k_proj", "key", "wk", "k"),
    "attn.v": ("v_proj", "value", "wv", "v"),
    "attn.o": ("o_proj", "out_proj", "dense", "c_proj", "wo", "proj"),
    "mlp.up": ("up_proj", "c_fc", "dense_h_to_4h", "fc1", "fc_in"),
    "mlp.down": ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out"),
    "mlp.gate": ("gate_proj",),
}


def _child(block: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for n in names:
        m = getattr(block, n, None)
        if isinstance(m, nn.Module):
            return n, m
    return None


def _has_weight(m: nn.Module) -> bool:
    return isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.ndim == 2


def _layer_parts(model: nn.Module, attn: nn.Module, mlp: nn.Module, attn_path: str, mlp_path: str,
                 family: str, config) -> dict[str, Part]:
    parts: dict[str, Part] = {}

    def add(name: str, owner: nn.Module, owner_path: str, attr: str, **kw) -> None:
        m = getattr(owner, attr, None)
        if isinstance(m, nn.Module) and _has_weight(m):
            parts[name] = Part(name, f"{owner_path}.{attr}", m, **kw)

    if family == "gpt2":
        d = attn.c_attn.weight.shape[1] // 3
        for i, n in enumerate(("attn.q", "attn.k", "attn.v")):
            add(n, attn, attn_path, "c_attn", transposed=True, split=Split("rows", i * d, (i + 1) * d))
        add("attn.o", attn, attn_path, "c_proj", transposed=True)
        add("mlp.up", mlp, mlp_path, "c_fc", transposed=True)
        add("mlp.down", mlp, mlp_path, "c_proj", transposed=True)
        return parts
    if family == "gpt_neox":
        n_heads = config.num_attention_heads
        for i, n in enumerate(("attn.q", "attn.k", "attn.v")):
            add(n, attn, attn_path, "query_key_value", split=Split("heads", n_heads=n_heads, n_parts=3, part=i))
        add("attn.o", attn, attn_path, "dense")
        add("mlp.up", mlp, mlp_path, "dense_h_to_4h")
        add("mlp.down", mlp, mlp_path, "dense_4h_to_h")
        return parts
    if hasattr(attn, "qkv_proj"):  # Phi-3: q | k | v stacked by output rows
        head_dim = getattr(attn, "head_dim", config.hidden_size // config.num_attention_heads)
        nq = config.num_attention_heads * head_dim
        nkv = getattr(config, "num_key_value_heads", config.num_attention_heads) * head_dim
        bounds = {"attn.q": (0, nq), "attn.k": (nq, nq + nkv), "attn.v": (nq + nkv, nq + 2 * nkv)}
        for n, (a, b) in bounds.items():
            add(n, attn, attn_path, "qkv_proj", split=Split("rows", a, b))
    if hasattr(mlp, "gate_up_proj"):  # Phi-3: gate first, then up (chunk(2) in the model's forward)
        inter = mlp.gate_up_proj.weight.shape[0] // 2
        add("mlp.gate", mlp, mlp_path, "gate_up_proj", split=Split("rows", 0, inter))
        add("mlp.up", mlp, mlp_path, "gate_up_proj", split=Split("rows", inter, 2 * inter))
    for name, candidates in _LINEAR_NAMES.items():
        if name in parts:
            continue
        owner, owner_path = (attn, attn_path) if name.startswith("attn.") else (mlp, mlp_path)
        for attr in candidates:
            m = getattr(owner, attr, None)
            if isinstance(m, nn.Module) and _has_weight(m):
                add(name, owner, owner_path, attr)
                break
    return parts


def _family(model: nn.Module) -> str:
    mt = getattr(getattr(model, "config", None), "model_type", "") or ""
    return mt or type(model).__name__


def _final_norm(model: nn.Module, layers_path: str) -> nn.Module | None:
    for path in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.decoder.final_layer_norm",
                 "transformer.norm_f", "model.final_layernorm", "model.language_model.norm"):
        m = _get(model, path)
        if m is not None:
            return m
    # Structural search: a norm-like module that is a sibling of the layers list, after it.
    parent_path = layers_path.rsplit(".", 1)[0] if "." in layers_path else ""
    parent = _get(model, parent_path) if parent_path else model
    if parent is not None:
        after = False
        for name, m in parent.named_children():
            if m is _get(model, layers_path):
                after = True
                continue
            if after and ("norm" in type(m).__name__.lower() or "norm" in name.lower() or name.startswith("ln")):
                return m
    return None


def find_anatomy(model: nn.Module) -> Anatomy:
    """Find layers, attention/MLP projections, final norm and (un)embeddings; AnatomyError names what is missing."""
    missing: list[str] = []
    layers_path, layers = _find_layers(model)
    family = _family(model)
    config = getattr(model, "config", None)

    attn_list, mlp_list, attn_paths, mlp_paths, parts = [], [], [], [], []
    for i, block in enumerate(layers):
        a = _child(block, _ATTN_NAMES)
        m = _child(block, _MLP_NAMES)
        if m is None and any(isinstance(getattr(block, n, None), nn.Module) for n in _LINEAR_NAMES["mlp.up"]):
            m = ("", block)  # OPT-style: the MLP's linears sit directly in the block
        if a is None:
            missing.append(f"attention module of layer {i} (looked for {', '.join(_ATTN_NAMES)})")
        if m is None:
            missing.append(f"MLP module of layer {i} (looked for {', '.join(_MLP_NAMES)})")
        if a is None or m is None:
            break
        ap = f"{layers_path}.{i}.{a[0]}"
        mp = f"{layers_path}.{i}.{m[0]}" if m[0] else f"{layers_path}.{i}"
        attn_list.append(a[1])
        mlp_list.append(m[1])
        attn_paths.append(ap)
        mlp_paths.append(mp)
        parts.append(_layer_parts(model, a[1], m[1], ap, mp, family, config))

    unembed = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if unembed is None:
        missing.append("unembedding (get_output_embeddings() returned None)")
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embed is None:
        missing.append("input embedding (get_input_embeddings() returned None)")
    final_norm = _final_norm(model, layers_path)
    notes = []
    if final_norm is None:
        notes.append("no final norm found: the logit lens applies the unembedding directly")
    if parts:
        # Projections are needed only by module-level analyses (weight_change): record, don't refuse to load.
        for needed in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"):
            if needed not in parts[0]:
                where = attn_paths[0] if needed.startswith("attn") else mlp_paths[0]
                notes.append(f"no {needed} projection found in {where}: module statistics show it as n/a")
    if missing:
        raise AnatomyError(
            f"heatwidget does not understand this {type(model).__name__} layout; not found: " + "; ".join(missing)
        )
    return Anatomy(family=family, layers=layers, layers_path=layers_path, attn=attn_list, mlp=mlp_list,
                   parts=parts, final_norm=final_norm, unembed=unembed, embed=embed,
                   attn_paths=attn_paths, mlp_paths=mlp_paths, notes=notes)
