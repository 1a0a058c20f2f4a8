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
    param: str = "weight"  # the parameter's name in `module` (fused MoE experts: "gate_up_proj", "down_proj")
    experts: int = 0  # > 0: the parameter stacks this many experts' matrices, [experts, out, in]

    @property
    def param_name(self) -> str:
        return f"{self.path}.{self.param}"

    def stored(self) -> torch.Tensor:
        """The live parameter as stored (fused, transposed, stacked as the model keeps it)."""
        return getattr(self.module, self.param)

    def weight(self, w: torch.Tensor | None = None) -> torch.Tensor:
        """The projection's weight as an nn.Linear-convention [out, in] matrix (a view where possible); for
        stacked MoE experts [experts, out, in].

        Pass `w` (the raw stored tensor, e.g. streamed from a checkpoint) to read it instead of the live module.
        """
        w = self.stored() if w is None else w
        if self.transposed:
            w = w.transpose(-1, -2)
        if self.split is not None:
            if self.split.kind == "rows":
                w = w[..., self.split.start : self.split.stop, :]
            else:
                w = w.index_select(-2, self.split.out_index(w.shape[-2]).to(w.device))
        return w


@dataclass
class Anatomy:
    """The parts of one model, found once at load time."""

    family: str
    layers: nn.ModuleList
    layers_path: str
    attn: list[nn.Module | None]  # per layer: the softmax attention module; None where the layer has none
    mlp: list[nn.Module | None]  # per layer: the MLP (or MoE block); None where the layer has none
    parts: list[dict[str, Part]]  # per layer: module name (MODULES, or "mlp.router") -> Part; missing ones absent
    final_norm: nn.Module | None
    unembed: nn.Module
    embed: nn.Module
    attn_paths: list[str] = field(default_factory=list)
    mlp_paths: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    multi_stream: str = ""  # why the blocks carry several residual streams (hyper-connections), else ""
    shared_attention: str = ""  # which layers call one attention block shared between them (Zamba), else ""

    def require_attention(self, what: str) -> None:
        """AnatomyError naming the family when no layer has a softmax attention module of its own (`what`
        blocks attention edges layer by layer)."""
        if self.attention_layers:
            return
        if self.shared_attention:
            raise AnatomyError(
                f"{what} blocks one layer's attention edges, and this {self.family} model has no "
                f"attention module of its own in any layer: {self.shared_attention}, so one layer's "
                "attention cannot be knocked out alone"
            )
        raise AnatomyError(
            f"{what} blocks attention edges, and this {self.family} model has no softmax attention "
            "in any layer (an attention-free model): use ablation_kl"
        )

    def require_single_stream(self, what: str) -> None:
        """AnatomyError naming the family when the blocks pass several residual streams [B, T, n, d]."""
        if self.multi_stream:
            raise AnatomyError(
                f"{what} reads and edits one residual stream [batch, seq, d], and this {self.family} "
                f"model carries several: {self.multi_stream}"
            )

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def part(self, layer: int, name: str) -> Part | None:
        """The Part for (layer, module name) or None when this family has no such module (e.g. GPT-2 mlp.gate).
        Besides MODULES, "mlp.router" names a mixture-of-experts layer's router."""
        if name not in MODULES and name != "mlp.router":
            raise KeyError(f"unknown module {name!r}; modules are {list(MODULES)} and 'mlp.router'")
        return self.parts[self.layer_index(layer)].get(name)

    def attn_module(self, layer: int, what: str) -> nn.Module:
        """Layer `layer`'s attention module; AnatomyError naming the family when the layer has none (`what`
        says which analysis needs it)."""
        m = self.attn[self.layer_index(layer)]
        if m is None:
            raise AnatomyError(
                f"{what} needs the attention module of layer {layer}, and this {self.family} model's "
                f"layer {layer} has no softmax attention ({self._kinds('attention')})"
            )
        if isinstance(m, nn.ModuleList):
            raise AnatomyError(
                f"{what} needs one attention module in layer {layer}, and this {self.family} model's "
                f"layer {layer} runs {len(m)} attention sub-layers ({self.attn_paths[layer]})"
            )
        return m

    def mlp_module(self, layer: int, what: str) -> nn.Module:
        """Layer `layer`'s MLP module; AnatomyError naming the family when the layer has none."""
        m = self.mlp[self.layer_index(layer)]
        if m is None:
            raise AnatomyError(
                f"{what} needs the MLP module of layer {layer}, and this {self.family} model's "
                f"layer {layer} has none ({self._kinds('MLP')})"
            )
        return m

    @property
    def attention_layers(self) -> list[int]:
        """The layers with a softmax attention module (all of them in a plain transformer)."""
        return [i for i, m in enumerate(self.attn) if m is not None]

    def _kinds(self, what: str) -> str:
        n = len(self.attention_layers if what == "attention" else [m for m in self.mlp if m is not None])
        return f"{n} of its {self.n_layers} layers have {'an ' if what == 'MLP' else ''}{what}"

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

    @property
    def n_experts(self) -> int:
        """The most experts any layer's MoE block stacks (0: a dense model)."""
        return max((p.experts for _, _, p in self.iter_parts()), default=0)

    def summary(self) -> str:
        found = sorted({n for d in self.parts for n in d if n in MODULES}, key=MODULES.index)
        extra = ""
        if len(self.attention_layers) < self.n_layers:
            extra += f"; softmax attention in layers {self.attention_layers}"
        if self.n_experts:
            extra += f"; {self.n_experts} experts per MoE layer"
        return (
            f"{self.family}: {self.n_layers} layers at {self.layers_path}; modules {found}; "
            f"final norm {'yes' if self.final_norm is not None else 'no'}{extra}"
        )


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
    for path in (
        "model.layers",
        "transformer.h",
        "gpt_neox.layers",
        "model.decoder.layers",
        "transformer.layers",
        "transformer.blocks",
        "model.language_model.layers",
        "language_model.model.layers",
    ):
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
            f"could not find the decoder layers of this {type(model).__name__}: no ModuleList of identical blocks"
            + (f" with {want} entries (config.num_hidden_layers)" if want else "")
            + _loops_note(model)
        )
    return best


def _loops_note(model: nn.Module) -> str:
    """Why the layers are not one stack run once: config fields that loop stacks of blocks (HRM's H_cycles)."""
    fields = getattr(getattr(model, "config", None), "__dict__", {})
    loops = {
        k: v
        for k, v in sorted(fields.items())
        if isinstance(v, int) and not isinstance(v, bool) and v > 1 and ("cycles" in k.lower() or "loops" in k.lower())
    }
    if not loops:
        return ""
    shown = ", ".join(f"{k}={v}" for k, v in loops.items())
    return (
        f"; this {_family(model)} model runs stacks of blocks in loops ({shown}), so there is no single layer "
        "sequence to analyse per layer"
    )


# dotted names reach into wrappers: DBRX's norm_attn_norm, Zamba's shared transformer block of a hybrid layer
_ATTN_NAMES = (
    "self_attn",
    "attn",
    "attention",
    "self_attention",
    "multi_head_attention",
    "mixer",
    "temporal_block",
    "norm_attn_norm.attn",
    "shared_transf.self_attn",
    "shared_transformer.self_attn",
)
_MLP_NAMES = (
    "mlp",
    "feed_forward",
    "ffn",
    "ff",
    "mlp_block",
    "block_sparse_moe",
    "moe",
    "mixer",
    "shared_transf.feed_forward",
    "shared_transformer.feed_forward",
)
# Sequence mixers that are not softmax attention although some are called "...Attention" (linear / delta-rule /
# lightning attention, RWKV's time mixing): attention knockout has no attention mask to edit in them.
_NOT_SOFTMAX = ("linear", "delta", "lightning", "rwkv", "mamba", "retention", "conv", "recurrent", "lstm")
_LINEAR_NAMES = {
    "attn.q": ("q_proj", "query", "wq", "q", "Wq"),
    "attn.k": ("k_proj", "key", "wk", "k", "Wk"),
    "attn.v": ("v_proj", "value", "wv", "v", "Wv"),
    "attn.o": ("o_proj", "out_proj", "dense", "c_proj", "wo", "proj"),
    "mlp.up": ("up_proj", "c_fc", "dense_h_to_4h", "fc1", "fc_in", "w3", "proj_up", "key"),  # key: RWKV
    "mlp.down": ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "fc_out", "w2", "proj_down", "value"),
    "mlp.gate": ("gate_proj", "w1", "proj_up_gate"),
}


def _child(block: nn.Module, names: tuple[str, ...], kind: str, prefix: str) -> tuple[str, nn.Module] | None:
    """The block's child of this kind ("attn" or "mlp"): by name, and its class must be one (a Mamba `mixer` is
    neither; Nemotron-H's `mixer` is attention in some layers and an MLP in others). `prefix`: the model's class
    prefix ("KimiLinear"), removed before reading the class name."""
    for n in names:
        m = _get(block, n)  # a dotted name reaches into a wrapper (DBRX: norm_attn_norm.attn)
        if isinstance(m, nn.ModuleList) and len(m) and all(_is_kind(c, kind, prefix) for c in m):
            return n, m  # several sub-layers of this kind in one block (LongCat-Flash runs attention twice)
        if isinstance(m, nn.Module) and _is_kind(m, kind, prefix):
            return n, m
    return None


def _is_kind(m: nn.Module, kind: str, prefix: str = "") -> bool:
    cls = type(m).__name__.removeprefix(prefix).lower()
    if "rwkv" in type(m).__name__.lower():  # RWKV's "attention" is its time-mixing recurrence
        return kind == "mlp" and "feedforward" in cls
    if kind == "attn":
        softmax = "attention" in cls or "attn" in cls or cls.endswith("mla")  # LongcatFlashMLA: latent attention
        return softmax and not any(w in cls for w in _NOT_SOFTMAX)
    if isinstance(m, nn.Sequential):  # CTRL's ffn: Linear, ReLU, Linear
        return True
    return any(w in cls for w in ("mlp", "moe", "feedforward", "ffn", "expert")) and "mamba" not in cls


def _has_weight(m: nn.Module) -> bool:
    w = getattr(m, "weight", None)
    return isinstance(w, torch.Tensor) and w.ndim == 2


def _weight(owner: nn.Module, attr: str) -> torch.Tensor:
    """The weight of `owner`'s child `attr` (one the caller has seen exists)."""
    w = getattr(getattr(owner, attr), "weight", None)
    if not isinstance(w, torch.Tensor):
        raise AnatomyError(f"internal: {type(owner).__name__}.{attr} has no weight tensor")
    return w


def _layer_parts(
    model: nn.Module, attn: nn.Module | None, mlp: nn.Module | None, attn_path: str, mlp_path: str, family: str, config
) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    if attn is None or mlp is None:  # a hybrid layer (Mamba/linear attention mixer, or no MLP): what is there
        if attn is not None:
            parts.update(_generic_parts(attn, attn_path, "attn."))
        if mlp is not None:
            parts.update(_generic_parts(mlp, mlp_path, "mlp."))
            parts.update(moe_parts(mlp, mlp_path, family))
        return parts

    def add(name: str, owner: nn.Module, owner_path: str, attr: str, **kw) -> None:
        m = getattr(owner, attr, None)
        if isinstance(m, nn.Module) and _has_weight(m):
            parts[name] = Part(name, f"{owner_path}.{attr}", m, **kw)

    if family == "gpt2":
        d = int(_weight(attn, "c_attn").shape[1]) // 3
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
    qkv = next((n for n in ("qkv_proj", "Wqkv") if _has_weight(getattr(attn, n, nn.Identity()))), None)
    if qkv is not None:  # Phi-3 qkv_proj, DBRX Wqkv: q | k | v stacked by output rows (k and v alike wide)
        out = int(_weight(attn, qkv).shape[0])
        head_dim = getattr(attn, "head_dim", config.hidden_size // config.num_attention_heads)
        nq = config.num_attention_heads * head_dim
        nkv = (out - nq) // 2
        bounds = {"attn.q": (0, nq), "attn.k": (nq, nq + nkv), "attn.v": (nq + nkv, nq + 2 * nkv)}
        for n, (a, b) in bounds.items():
            add(n, attn, attn_path, qkv, split=Split("rows", a, b))
    if hasattr(mlp, "gate_up_proj"):  # Phi-3: gate first, then up (chunk(2) in the model's forward)
        inter = int(_weight(mlp, "gate_up_proj").shape[0]) // 2
        add("mlp.gate", mlp, mlp_path, "gate_up_proj", split=Split("rows", 0, inter))
        add("mlp.up", mlp, mlp_path, "gate_up_proj", split=Split("rows", inter, 2 * inter))
    for prefix, owner, owner_path in (("attn.", attn, attn_path), ("mlp.", mlp, mlp_path)):
        for name, part in _generic_parts(owner, owner_path, prefix).items():
            parts.setdefault(name, part)
    for name, part in moe_parts(mlp, mlp_path, family).items():
        parts.setdefault(name, part)
    return parts


def _generic_parts(owner: nn.Module, owner_path: str, prefix: str) -> dict[str, Part]:
    """Projections found by their usual names (q_proj, c_fc, w1 ...) directly in `owner`."""
    parts: dict[str, Part] = {}
    for name, candidates in _LINEAR_NAMES.items():
        if not name.startswith(prefix):
            continue
        for attr in candidates:
            m = getattr(owner, attr, None)
            if isinstance(m, nn.Module) and _has_weight(m):
                parts[name] = Part(name, f"{owner_path}.{attr}", m)
                break
    if prefix == "mlp." and isinstance(owner, nn.Sequential):  # CTRL: Linear(d, ff), ReLU, Linear(ff, d)
        lin = [(i, m) for i, m in enumerate(owner) if isinstance(m, nn.Linear)]
        if len(lin) == 2:
            parts["mlp.up"] = Part("mlp.up", f"{owner_path}.{lin[0][0]}", lin[0][1])
            parts["mlp.down"] = Part("mlp.down", f"{owner_path}.{lin[1][0]}", lin[1][1])
    return parts


class TiedUnembedding(nn.Module):
    """The unembedding of a model that has no output module and multiplies by its input embedding's matrix
    (OpenLLaMA with shared_input_output_embedding): logits = h @ embed.weight.T."""

    def __init__(self, embed: nn.Module) -> None:
        super().__init__()
        self.embed = embed

    @property
    def weight(self) -> torch.Tensor:
        w = self.embed.weight
        assert isinstance(w, torch.Tensor)
        return w

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(h, self.weight.to(h.dtype))


# ---- mixture of experts --------------------------------------------------------------------------------------


class ExpertStack:
    """A list of per-expert MLPs (transformers 4.x Mixtral/Qwen-MoE layout) seen as one stacked parameter
    [experts, out, in] (a copy), so an MoE projection reads alike in every layout."""

    def __init__(self, experts: nn.ModuleList, attr: str) -> None:
        self.experts, self.attr = experts, attr

    def leaves(self) -> list[torch.Tensor]:
        """Each expert's own weight [out, in] (the parameters the stacked copy is made of)."""
        return [getattr(e, self.attr).weight for e in self.experts]

    @property
    def weight(self) -> torch.Tensor:
        return torch.stack(self.leaves())


def moe_parts(mlp: nn.Module, mlp_path: str, family: str) -> dict[str, Part]:
    """An MoE block's experts as stacked projections [experts, out, in] (mlp.up / mlp.down / mlp.gate over all
    experts) and its router as "mlp.router" (a router is never mlp.gate). {} for a dense MLP."""
    router = _router(mlp, mlp_path)
    experts = getattr(mlp, "experts", None)
    if isinstance(experts, nn.ModuleList) and len(experts) and isinstance(experts[0], nn.Module):
        parts = _listed_experts(experts, f"{mlp_path}.experts")
    elif isinstance(experts, nn.Module) and any(p.ndim == 3 for p in experts.parameters(recurse=False)):
        parts = _fused_experts(experts, f"{mlp_path}.experts", family)
    else:  # JetMoE: the stacked linears sit in the MoE block itself
        parts = {}
        for attr, names in (("input_linear", ("mlp.gate", "mlp.up")), ("output_linear", ("mlp.down",))):
            m = getattr(mlp, attr, None)
            w = getattr(m, "weight", None)
            if isinstance(m, nn.Module) and isinstance(w, torch.Tensor) and w.ndim == 3:
                parts.update(_expert_parts(m, f"{mlp_path}.{attr}", "weight", names, w, transposed=False))
    if parts and router is not None:
        parts["mlp.router"] = router
    return parts


def _router(mlp: nn.Module, mlp_path: str) -> Part | None:
    for attr in ("router", "gate"):
        m, path = getattr(mlp, attr, None), f"{mlp_path}.{attr}"
        layer = getattr(m, "layer", None)
        if isinstance(layer, nn.Module):  # JetMoE: router.layer holds the weight
            m, path = layer, f"{path}.layer"
        if isinstance(m, nn.Module) and _has_weight(m):
            return Part("mlp.router", path, m)
    return None


def _fused_experts(experts: nn.Module, path: str, family: str) -> dict[str, Part]:
    """transformers 5's fused experts: gate_up_proj [E, 2I, H] (gate rows first; GPT-OSS stores [E, H, 2I] with
    gate and up interleaved) and down_proj [E, H, I] (GPT-OSS [E, I, H])."""
    parts: dict[str, Part] = {}
    t = family == "gpt_oss"
    for attr, names in (
        ("gate_up_proj", ("mlp.gate", "mlp.up")),
        ("up_proj", ("mlp.up",)),
        ("gate_proj", ("mlp.gate",)),
        ("down_proj", ("mlp.down",)),
    ):
        w = getattr(experts, attr, None)
        if isinstance(w, torch.Tensor) and w.ndim == 3:
            for n, p in _expert_parts(experts, f"{path}", attr, names, w, transposed=t).items():
                parts.setdefault(n, p)
    return parts


def _expert_parts(
    owner: nn.Module, path: str, attr: str, names: tuple[str, ...], w: torch.Tensor, transposed: bool
) -> dict[str, Part]:
    n_exp = int(w.shape[0])
    if len(names) == 1:
        return {names[0]: Part(names[0], path, owner, transposed=transposed, param=attr, experts=n_exp)}
    out = int(w.shape[-1] if transposed else w.shape[-2])
    half = out // 2
    splits = (
        [Split("heads", n_heads=half, n_parts=2, part=i) for i in range(2)]
        if transposed
        else [Split("rows", 0, half), Split("rows", half, out)]
    )  # GPT-OSS interleaves gate and up
    return {
        n: Part(n, path, owner, transposed=transposed, split=sp, param=attr, experts=n_exp)
        for n, sp in zip(names, splits, strict=True)
    }


def _listed_experts(experts: nn.ModuleList, path: str) -> dict[str, Part]:
    parts: dict[str, Part] = {}
    # LongCat-Flash appends zero-computation experts (nn.Identity): no matrices, so not in the stack
    real = nn.ModuleList([e for e in experts if not isinstance(e, nn.Identity)])
    if not len(real):
        return parts
    for name, candidates in _LINEAR_NAMES.items():
        if not name.startswith("mlp."):
            continue
        for attr in candidates:
            if all(_has_weight(getattr(e, attr, nn.Identity())) for e in real):
                parts[name] = Part(
                    name,
                    f"{path}.*.{attr}",
                    ExpertStack(real, attr),  # type: ignore[arg-type]
                    experts=len(real),
                )
                break
    return parts


def _family(model: nn.Module) -> str:
    mt = getattr(getattr(model, "config", None), "model_type", "") or ""
    return mt or type(model).__name__


def _final_norm(model: nn.Module, layers_path: str) -> nn.Module | None:
    for path in (
        "model.norm",
        "transformer.ln_f",
        "gpt_neox.final_layer_norm",
        "model.decoder.final_layer_norm",
        "transformer.norm_f",
        "model.final_layernorm",
        "model.language_model.norm",
    ):
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


def _layout_notes(
    family: str, attn: list, mlp: list, attn_paths: list[str], mlp_paths: list[str], parts: list[dict[str, Part]]
) -> list[str]:
    """What the analyses will lack: layers without softmax attention or MLP, projections not found, MoE."""
    notes = []
    no_attn = [i for i, m in enumerate(attn) if m is None]
    no_mlp = [i for i, m in enumerate(mlp) if m is None]
    if no_attn:
        notes.append(
            f"{family}: layers {no_attn} have no softmax attention (state-space / linear-attention "
            "mixers): attention knockout and site='attn' skip or refuse them"
        )
    if no_mlp:
        notes.append(f"{family}: layers {no_mlp} have no MLP: zero_mlp and site='mlp' refuse them")
    # Projections are needed only by module-level analyses (weight_change): record, don't refuse to load.
    # The first layer with attention (with an MLP) speaks for the others.
    first_attn = next((i for i, m in enumerate(attn) if m is not None), None)
    first_mlp = next((i for i, m in enumerate(mlp) if m is not None), None)
    for needed in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.up", "mlp.down"):
        i, paths = (first_attn, attn_paths) if needed.startswith("attn") else (first_mlp, mlp_paths)
        if i is not None and needed not in parts[i]:
            notes.append(f"no {needed} projection found in {paths[i]}: module statistics show it as n/a")
    n_exp = max((p.experts for d in parts for p in d.values()), default=0)
    if n_exp:
        notes.append(
            f"mixture of experts ({n_exp} experts): mlp.up/mlp.down/mlp.gate are the experts' "
            "matrices stacked [experts, out, in] (statistics over all experts); the router is mlp.router"
        )
    return notes


def _called(model: nn.Module, method: str) -> nn.Module | None:
    """model.<method>() when the model has that method and it returns a module (get_output_embeddings ...)."""
    fn = getattr(model, method, None)
    out = fn() if callable(fn) else None
    return out if isinstance(out, nn.Module) else None


# Families whose decoder blocks take and return [seq, batch, d]: every hook would read the wrong axis.
_SEQUENCE_FIRST = {"mega": "MEGA's moving-average gated attention layers, transformers 4.x"}


def _multi_stream(block: nn.Module) -> str:
    """A note when the block mixes several parallel residual streams (hyper-connections, Gemma 3n's AltUp)."""
    for name, child in block.named_children():
        cls = type(child).__name__.lower()
        if any(w in cls for w in ("hyperconnection", "altup")) or "hyper_connection" in name:
            return f"its blocks hold {name} ({type(child).__name__})"
    return ""


def _shared_note(shared: list[int], paths: list[str]) -> str:
    return f"layers {shared} call one shared attention module ({paths[shared[0]]})" if shared else ""


_Blocks = tuple[list[nn.Module | None], list[nn.Module | None], list[str], list[str], list[dict[str, Part]]]


def _find_blocks(model: nn.Module, layers: nn.ModuleList, layers_path: str, family: str, config: object) -> _Blocks:
    """Per block: the softmax attention and MLP modules, their paths and the projections found in them."""
    attn_list: list[nn.Module | None] = []
    mlp_list: list[nn.Module | None] = []
    attn_paths: list[str] = []
    mlp_paths: list[str] = []
    parts: list[dict[str, Part]] = []
    prefix = type(model).__name__.split("For")[0]  # "KimiLinearForCausalLM" -> "KimiLinear"
    for i, block in enumerate(layers):
        a = _child(block, _ATTN_NAMES, "attn", prefix)
        m = _child(block, _MLP_NAMES, "mlp", prefix)
        if m is None and any(isinstance(getattr(block, n, None), nn.Module) for n in _LINEAR_NAMES["mlp.up"]):
            m = ("", block)  # OPT-style: the MLP's linears sit directly in the block
        ap = f"{layers_path}.{i}.{a[0]}" if a is not None else ""
        mp = (f"{layers_path}.{i}.{m[0]}" if m[0] else f"{layers_path}.{i}") if m is not None else ""
        attn_list.append(a[1] if a is not None else None)
        mlp_list.append(m[1] if m is not None else None)
        attn_paths.append(ap)
        mlp_paths.append(mp)
        parts.append(_layer_parts(model, attn_list[-1], mlp_list[-1], ap, mp, family, config))
    return attn_list, mlp_list, attn_paths, mlp_paths, parts


def _unshare(modules: list[nn.Module | None], paths: list[str]) -> list[int]:
    """Layers whose module is one object called by several layers (transformers 4.x Zamba's shared transformer
    block): it is no layer's own module (a hook on it acts in every layer that calls it), so those entries become
    None; their projections stay in the parts (the shared weights are each such layer's weights). transformers 5
    builds one module per layer with tied weights instead, which is kept."""
    seen: dict[int, list[int]] = {}
    for i, m in enumerate(modules):
        if m is not None:
            seen.setdefault(id(m), []).append(i)
    shared = sorted(i for layers in seen.values() if len(layers) > 1 for i in layers)
    for i in shared:
        modules[i] = None
    return shared


def find_anatomy(model: nn.Module) -> Anatomy:
    """Find layers, attention/MLP projections, final norm and (un)embeddings; AnatomyError names what is missing."""
    missing: list[str] = []
    family = _family(model)
    if family in _SEQUENCE_FIRST:
        raise AnatomyError(
            f"heatwidget reads and edits hidden states as [batch, seq, d], and this {family} model's "
            f"blocks pass them as [seq, batch, d] ({_SEQUENCE_FIRST[family]})"
        )
    layers_path, layers = _find_layers(model)
    config = getattr(model, "config", None)

    attn_list, mlp_list, attn_paths, mlp_paths, parts = _find_blocks(model, layers, layers_path, family, config)
    shared = _unshare(attn_list, attn_paths)
    _unshare(mlp_list, mlp_paths)
    embed, unembed = _called(model, "get_input_embeddings"), _called(model, "get_output_embeddings")
    if unembed is None and embed is not None and getattr(config, "shared_input_output_embedding", False):
        unembed = TiedUnembedding(embed)  # OpenLLaMA: the logits are computed with the embedding matrix itself
    if unembed is None:
        missing.append("unembedding (get_output_embeddings() returned None)")
    if embed is None:
        missing.append("input embedding (get_input_embeddings() returned None)")
    final_norm = _final_norm(model, layers_path)
    notes = []
    if final_norm is None:
        notes.append("no final norm found: the logit lens applies the unembedding directly")
    notes += _layout_notes(family, attn_list, mlp_list, attn_paths, mlp_paths, parts)
    streams = _multi_stream(layers[0])
    if missing or embed is None or unembed is None:
        raise AnatomyError(
            f"heatwidget does not understand this {type(model).__name__} layout; not found: " + "; ".join(missing)
        )
    return Anatomy(
        family=family,
        layers=layers,
        layers_path=layers_path,
        attn=attn_list,
        mlp=mlp_list,
        parts=parts,
        final_norm=final_norm,
        unembed=unembed,
        embed=embed,
        attn_paths=attn_paths,
        mlp_paths=mlp_paths,
        notes=notes + ([streams] if streams else []),
        multi_stream=streams,
        shared_attention=_shared_note(shared, attn_paths),
    )
