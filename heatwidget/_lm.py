"""`hw.load(...) -> LM`: a Hugging Face causal LM, its tokenizer and its anatomy, loaded with `from_pretrained`."""

from __future__ import annotations

import contextlib
import pickle
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ._limits import context_length
from ._validate import text_list
from .anatomy import Anatomy, find_anatomy

__all__ = ["LM", "load", "ModelLoadError", "display_name"]


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message says why in one sentence."""


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@dataclass
class LM:
    """A causal LM ready for analysis. `model` and `tokenizer` are the transformers objects, untouched except
    that a tokenizer without a pad token gets one (recorded in `notes`)."""

    model: Any
    tokenizer: Any
    anatomy: Anatomy
    name: str = ""
    notes: list[str] = field(default_factory=list)
    # How `hw.load` was called (besides the path in `name`): enough for a Ray worker to build an identical replica.
    # Empty for `LM.wrap(...)` models, which have no path to reload from.
    load_kwargs: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any = None, name: str | None = None) -> LM:
        """Wrap an already loaded transformers model (and tokenizer) without reloading it."""
        notes: list[str] = []
        if tokenizer is not None:
            _ensure_pad_token(tokenizer, notes)
        model.eval()
        _give_generate(model)
        _fresh_recurrent_state(model)
        nm = name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
        return cls(model=model, tokenizer=tokenizer, anatomy=find_anatomy(model), name=str(nm), notes=notes)

    # ---- facts -------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where inputs go: the device of the input embedding (the first layer's, under a device_map).

        An embedding offloaded by accelerate has its weight on "meta"; inputs then go to its execution device."""
        from ._offload import execution_device

        return execution_device(self.anatomy.embed)

    @property
    def dtype(self) -> torch.dtype:
        w = self.anatomy.embed.weight
        assert isinstance(w, torch.Tensor)  # an embedding's weight (on "meta" when offloaded)
        return w.dtype

    @property
    def n_layers(self) -> int:
        return self.anatomy.n_layers

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def display_name(self) -> str:
        """How titles and the widget name this model: its hub id, its directory's name, or "demo model" for the
        shipped one; never a machine path (that stays in `name`, and in results' meta["model_path"])."""
        return display_name(self.name)

    def __repr__(self) -> str:
        return f"LM({self.name!r}, {self.anatomy.summary()}, device={self.device}, dtype={self.dtype})"

    # ---- tokenisation --------------------------------------------------------------------------------------
    def encode(self, texts: str | Sequence[str], *, padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Tokenize with the tokenizer's defaults (special tokens added), padded on `padding_side`, on the device.

        Raises a clear error for empty prompts (an empty string has nothing to predict from).
        """
        if self.tokenizer is None:
            raise ValueError("this LM has no tokenizer: pass one to LM.wrap(model, tokenizer)")
        # A single str is "the prompt" (never "prompt 0"); a list's errors name the item.
        batch = text_list(texts, "prompt")[0]
        # Per call, not by setting tokenizer.padding_side: the tokenizer is shared with other threads (the user's).
        enc = self.tokenizer(batch, return_tensors="pt", padding=True, padding_side=padding_side)
        limit = context_length(self.config)
        n = enc["input_ids"].shape[1]
        if limit is not None and n > limit:
            raise ValueError(f"prompt is {n} tokens long but the model's context is {limit} tokens")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def token_strings(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Each token id decoded on its own (for labels and tooltips; user data, never HTML)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return [self.tokenizer.decode([int(i)]) for i in ids]


def _give_generate(model: Any) -> None:
    """transformers 4.50+ models that define prepare_inputs_for_generation without inheriting GenerationMixin
    (OpenLLaMA, deprecated) have no generate(); transformers' auto classes add the mixin only to remote code. Give
    this instance a subclass that has it, as they do. Such a model's cache code predates transformers' Cache
    objects (it fails on both a Cache and a tuple), so its generate runs without a cache: slower, same tokens."""
    if hasattr(model, "generate") or not hasattr(model, "prepare_inputs_for_generation"):
        return
    from transformers import GenerationConfig, GenerationMixin

    cls = type(model)

    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        return GenerationMixin.generate(self, *args, **{**kwargs, "use_cache": False})

    model.__class__ = type(cls.__name__, (cls, GenerationMixin), {"__module__": cls.__module__, "generate": generate})
    if getattr(model, "generation_config", None) is None:
        model.generation_config = GenerationConfig.from_model_config(model.config)


def _fresh_recurrent_state(model: Any) -> None:
    """transformers 4.x RecurrentGemma keeps each recurrent block's last state on the module and reuses it in the
    next forward, even one with another batch size (a shape error inside the model). Its values cannot matter
    there: position 0 resets the recurrence. So a call whose rows all start at position 0 drops the stale state."""
    for m in model.modules():
        if not hasattr(getattr(m, "rg_lru", None), "recurrent_states"):
            continue

        def pre(mod: Any, args: tuple, kwargs: dict) -> None:
            pos = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
            if isinstance(pos, torch.Tensor) and pos.ndim == 2 and bool((pos[:, 0] == 0).all()):
                mod.rg_lru.recurrent_states = None

        m.register_forward_pre_hook(pre, with_kwargs=True)


def display_name(name_or_path: str | Path) -> str:
    """A model's name for people (see `LM.display_name`): a local directory by its own name ("demo model" for the
    shipped one), anything else (a hub id, a class name) as it is."""
    from .demo import WEIGHTS_DIR

    text = str(name_or_path)
    local = Path(text).expanduser()
    if not text or not local.exists():
        return text
    local = local.resolve()
    return "demo model" if local == WEIGHTS_DIR.resolve() else local.name


def _ensure_pad_token(tokenizer: Any, notes: list[str]) -> None:
    """Batched analyses need a pad token; many causal LM tokenizers ship without one."""
    if getattr(tokenizer, "pad_token_id", None) is not None:
        return
    for name in ("eos_token", "unk_token", "bos_token"):
        tok = getattr(tokenizer, name, None)
        if tok is not None:
            tokenizer.pad_token = tok
            notes.append(f"tokenizer had no pad token; using its {name} {tok!r} for padding (masked out)")
            return
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    notes.append("tokenizer had no pad/eos/unk/bos token; added '<pad>' (never fed to the model unmasked)")


class _DeviceError(ModelLoadError, ValueError):
    """A device that does not exist here (also a ValueError, as device errors always were)."""


# device_map values accelerate plans itself; anything else names a device.
_DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def _check_device(device: str | int | torch.device | None, what: str = "device") -> torch.device | None:
    """The torch device `device` names, or one sentence on why it cannot be used here (`what` names the argument)."""
    if device is None:
        return None
    shown = repr(str(device) if isinstance(device, torch.device) else device)
    try:
        dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, TypeError, ValueError):
        raise _DeviceError(
            f"{what}={shown} is not a device torch knows: use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise _DeviceError(
            f"{what}={shown} was asked for, but this torch sees no CUDA GPU "
            f"(torch.cuda.is_available() is False, torch {torch.__version__}); use device='cpu'"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise _DeviceError(f"{what}={shown} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise _DeviceError(f"{what}={shown} was asked for, but MPS is not available here; use device='cpu'")
    backend = getattr(torch, dev.type, None)  # torch.xpu, torch.npu, ... where this torch has the backend
    is_available = getattr(backend, "is_available", None)
    available = callable(is_available) and bool(is_available())
    if dev.type not in ("cpu", "cuda", "mps", "meta") and not available:
        raise _DeviceError(
            f"{what}={shown} was asked for, but this torch has no {dev.type} device; use 'cpu' or 'cuda'"
        )
    return dev


def _check_device_map(device_map: Any) -> None:
    """Every device a device_map names must exist here (accelerate's own message is a stack of internals)."""
    if isinstance(device_map, str) and device_map in _DEVICE_MAP_STRATEGIES:
        return
    if isinstance(device_map, (str, int, torch.device)):
        _check_device(device_map, "device_map")
        return
    if not isinstance(device_map, dict):
        raise _DeviceError(
            f"device_map must be one of {list(_DEVICE_MAP_STRATEGIES)}, a device or a dict of "
            f"module name -> device, not a {type(device_map).__name__}"
        )
    for module, where in device_map.items():
        if where != "disk":
            _check_device(where, f"device_map[{module!r}]")


def _resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | None, device_map: Any) -> Any:
    if dtype is None:
        # Analyses reduce in float32; on the CPU there is no reason to compute in anything else. On accelerators
        # keep the checkpoint's own dtype ("auto") so a 7B model still fits.
        on_cpu = device_map is None and (device is None or device.type == "cpu")
        return torch.float32 if on_cpu else "auto"
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or 'auto' or a torch.dtype")


def _short(err: BaseException) -> str:
    msg = str(err).strip().splitlines()
    return msg[0][:300] if msg else type(err).__name__


def _resolve_source(name_or_path: str | Path) -> tuple[str, bool]:
    """(what to hand from_pretrained, whether it is a local directory); wrong local paths are refused here."""
    src = str(name_or_path)
    if not src.strip():
        raise ValueError("name_or_path is empty: give a Hugging Face model id or a local directory")
    local = Path(src).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ModelLoadError(f"{src!r} is a file; give the directory that holds config.json and the weights")
        if not (local / "config.json").exists():
            raise ModelLoadError(f"{src!r} has no config.json: it is not a saved transformers model directory")
        return str(local), True
    if src.startswith(("/", "./", "../", "~")) or src.count("/") > 1:
        raise ModelLoadError(f"no such model directory: {src!r}")
    return src, False


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Keep transformers' log lines and its own progress bars ("Loading weights", "Loading checkpoint shards") out
    of the user's cell while we load, and put back the user's settings afterwards: what matters reaches the user
    as our errors and `lm.notes`. Hub downloads keep their bar (unless the user turned those off): they can take
    minutes."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars_on = hf_logging.is_progress_bar_enabled()
    hub_bars_off = hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # transformers' switch also turns off the hub's bars: put those back
    if not hub_bars_off:
        hub_utils.enable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars_on:
            hf_logging.enable_progress_bar()
        if hub_bars_off:
            hub_utils.disable_progress_bars()


# ---- what the checkpoint is --------------------------------------------------------------------------------------


def _remote_code_error(name: str) -> ModelLoadError:
    return ModelLoadError(
        f"{name!r} needs modelling code shipped with the checkpoint (its config.json's auto_map), "
        "which heatwidget does not run on its own: passing trust_remote_code=True is your call, "
        "after reading that code"
    )


# from_pretrained arguments that choose which files are read (the config must come from the same place)
_HUB_KWARGS = ("revision", "token", "cache_dir", "subfolder", "force_download", "proxies")


def _load_config(src: str, name: str, where: str, hub_kwargs: dict[str, Any], trust_remote_code: bool) -> Any:
    """The checkpoint's config, or one sentence on why transformers cannot read it."""
    import transformers
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code, **hub_kwargs)
    except OSError as e:
        raise ModelLoadError(f"could not load model {name!r} from {where}: {_short(e)}") from None
    except (ValueError, KeyError) as e:
        if "trust_remote_code" in str(e):
            raise _remote_code_error(name) from None
        found = re.search(r"model type `([^`]*)`", str(e))
        if found:
            raise ModelLoadError(
                f"transformers {transformers.__version__} does not know model_type "
                f"{found.group(1)!r} (the config of {name!r}): a newer transformers may "
                "(pip install -U transformers)"
            ) from None
        raise ModelLoadError(f"transformers cannot read the config of {name!r}: {_short(e)}") from None


def _check_causal(config: Any, name: str) -> None:
    """Refuse encoders and encoder-decoders (BERT, T5, ...) before building them: heatwidget's analyses follow a
    decoder's residual stream token by token."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = getattr(config, "model_type", "") or type(config).__name__
    archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures listed"
    remote = "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {})
    what = None
    if getattr(config, "is_encoder_decoder", False):
        what = f"an encoder-decoder model ({kind}: {archs})"
    elif remote:
        return
    elif kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        what = f"a {kind} model, which transformers has no causal-LM class for ({archs})"
    elif kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        what = f"an encoder ({kind}: {archs}; a checkpoint trained as a decoder says is_decoder=true in its config)"
    if what:
        raise ModelLoadError(f"heatwidget needs a causal (decoder) language model; this is {what}: {name!r}")


def _refused_pickle(err: BaseException) -> BaseException | None:
    """The weights-only unpickling refusal behind `err` (transformers 5 raises it, 4.x wraps it in an OSError)."""
    e: BaseException | None = err
    while e is not None:
        if isinstance(e, pickle.UnpicklingError) or "Weights only load failed" in str(e):
            return e
        e = e.__cause__ or e.__context__
    return None


def _pickle_error(name: str, src: str, refusal: BaseException) -> ModelLoadError:
    files = sorted(p.name for p in Path(src).glob("*.bin")) if Path(src).is_dir() else []
    reason = re.search(r"WeightsUnpickler error: ([^\n]*)", str(refusal))
    why = f" ({reason.group(1).strip()[:160]})" if reason else ""
    return ModelLoadError(
        f"{name!r} stores its weights as a pickle ({', '.join(files[:3]) or 'pytorch_model.bin'}) that torch's "
        f"weights-only loader refuses{why}; heatwidget never unpickles code: if you trust the file, convert it "
        "once to safetensors (sd = torch.load(path, weights_only=False); safetensors.torch.save_file(sd, "
        "'model.safetensors', metadata={'format': 'pt'}) in the model directory, then remove the .bin)"
    )


def _load_model(src: str, name: str, where: str, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """from_pretrained with its loading report; transformers' multi-line errors become one sentence."""
    from transformers import AutoModelForCausalLM

    try:
        # with output_loading_info, from_pretrained returns (model, info); its annotation says model only
        loaded: Any = AutoModelForCausalLM.from_pretrained(src, output_loading_info=True, **kwargs)
        return loaded
    except (OSError, pickle.UnpicklingError) as e:
        refusal = _refused_pickle(e)
        if refusal is not None:
            raise _pickle_error(name, src, refusal) from None
        raise ModelLoadError(f"could not load model {name!r} from {where}: {_short(e)}") from None
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise _remote_code_error(name) from None
        if "Unrecognized" in str(e) or "not supported" in str(e) or "model type" in str(e):
            raise ModelLoadError(f"transformers cannot build {name!r} as a causal LM: {_short(e)}") from None
        raise
    except ImportError as e:
        raise ModelLoadError(f"loading {name!r} needs a package that is missing: {_short(e)}") from None


# ---- did every weight load? --------------------------------------------------------------------------------------


def _listing(keys: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _absent_layers(model: Any, missing: set[str]) -> tuple[str, list[int], int] | None:
    """Numbered blocks none of whose tensors the checkpoint holds (config says 10 layers, weights hold 8):
    (the blocks' path, their indices, how many the model has)."""
    total: dict[tuple[str, int], int] = {}
    lost: dict[tuple[str, int], int] = {}
    for key in model.state_dict():
        m = re.match(r"(.+?)\.(\d+)\.", key)
        if m:
            at = (m.group(1), int(m.group(2)))
            total[at] = total.get(at, 0) + 1
            lost[at] = lost.get(at, 0) + (key in missing)
    gone = [at for at, n in total.items() if lost[at] == n]
    if not gone:
        return None
    path = max({p for p, _ in gone}, key=lambda p: sum(q == p for q, _ in gone))
    return path, sorted(i for p, i in gone if p == path), sum(p == path for p, _ in total)


def _with_shapes(model: Any, src: str, key: str) -> tuple:
    """(key, stored shape, model shape) where both can be read (a local safetensors checkpoint), else (key,)."""
    from ._checkpoint import Checkpoint, CheckpointError

    here = model.state_dict().get(key)
    try:
        ckpt = Checkpoint(src) if Path(src).is_dir() else None
    except CheckpointError:
        ckpt = None
    if here is None or ckpt is None or key not in ckpt:
        return (key,)
    return key, ckpt.shape(key), tuple(here.shape)


def _weight_problems(model: Any, info: dict[str, Any], name: str, src: str) -> str | None:
    """One sentence on every weight that did not load as stored (None when all did). transformers already leaves
    tied weights (an unembedding shared with the embedding) out of the missing ones."""
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(info.get("unexpected_keys") or [])
    # transformers 5 lists (key, stored shape, model shape); 4.x only the key
    mismatched = [m if isinstance(m, tuple) else _with_shapes(model, src, m) for m in info.get("mismatched_keys") or []]
    parts: list[str] = []
    absent = _absent_layers(model, set(missing)) if missing else None
    if absent:
        path, idx, n = absent
        parts.append(
            f"{len(idx)} of its {n} layers have no weights in the checkpoint ({path}."
            f"{{{', '.join(map(str, idx[:8]))}{', …' if len(idx) > 8 else ''}}})"
        )
        missing = [k for k in missing if not any(k.startswith(f"{path}.{i}.") for i in idx)]
    if missing:
        parts.append(f"{len(missing)} tensor(s) the model needs are missing ({_listing(missing)})")
    if mismatched:
        shown = [m[0] + (f" (stored {list(m[1])}, model {list(m[2])})" if len(m) == 3 else "") for m in mismatched]
        parts.append(f"{len(mismatched)} tensor(s) have the wrong shape ({_listing(shown, 2)})")
    if unexpected:
        parts.append(f"{len(unexpected)} stored tensor(s) have no place in the model ({_listing(unexpected)})")
    for msg in info.get("error_msgs") or []:
        parts.append(_short(RuntimeError(msg)))
    if not parts:
        return None
    return (
        f"checkpoint {name!r} does not match the model its config describes: {'; '.join(parts)}; the model "
        "parts concerned would run with random weights"
    )


# ---- hw.load ---------------------------------------------------------------------------------------------------


def _load_tokenizer(src: str, name: str, trust_remote_code: bool, hub_kwargs: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code, **hub_kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"loaded the model but not its tokenizer from {name!r}: {_short(e)}") from None


def _model_kwargs(
    dtype: Any, trust_remote_code: bool, hub_kwargs: dict, model_kwargs: dict, device_map: Any, attn: str | None
) -> dict[str, Any]:
    """`from_pretrained`'s keyword arguments: ours, then the user's extra ones, then the optional placement ones."""
    # mismatched shapes are reported with the other weight problems, not raised mid-load
    kwargs: dict[str, Any] = dict(
        dtype=dtype, trust_remote_code=trust_remote_code, **hub_kwargs, ignore_mismatched_sizes=True
    )
    kwargs.update(model_kwargs)
    kwargs.update({k: v for k, v in (("device_map", device_map), ("attn_implementation", attn)) if v is not None})
    return kwargs


def load(
    name_or_path: str | Path,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    device_map: Any = None,
    *,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool | None = None,
    strict: bool = True,
    **model_kwargs: Any,
) -> LM:
    """Load a causal LM and its tokenizer with `from_pretrained` (a hub id or a local directory) and find its anatomy.

    device: where to put the model ("cpu", "cuda", "cuda:1", …); ignored when `device_map` is given (e.g. "auto",
    which shards a model too large for one device with accelerate). dtype: None = float32 on CPU, the checkpoint's
    own dtype on accelerators. strict: weights missing from the checkpoint (whole layers included), stored tensors
    the model has no place for and tensors of the wrong shape are an error; strict=False loads anyway (those parts
    keep random weights), warns and records it in `lm.notes`. A wrong path, a hub id without network, an
    encoder or encoder-decoder model, or an architecture transformers cannot build raises ModelLoadError with one
    clear sentence.
    """
    if device_map is not None:
        _check_device_map(device_map)
    dev = None if device_map is not None else _check_device(device)
    torch_dtype = _resolve_dtype(dtype, dev, device_map)
    src, is_local = _resolve_source(name_or_path)
    name = str(name_or_path)
    where = "the local directory" if is_local else "the Hugging Face Hub (is there network access?)"
    hub_kwargs: dict[str, Any] = {} if local_files_only is None else {"local_files_only": local_files_only}
    kwargs = _model_kwargs(torch_dtype, trust_remote_code, hub_kwargs, model_kwargs, device_map, attn_implementation)
    # the config the model will be built from: same revision, token, cache and subfolder
    config_from = {**hub_kwargs, **{k: model_kwargs[k] for k in _HUB_KWARGS if k in model_kwargs}}

    t0 = time.perf_counter()
    with _quiet_transformers():
        _check_causal(_load_config(src, name, where, config_from, trust_remote_code), name)
        model, info = _load_model(src, name, where, kwargs)
        problems = _weight_problems(model, info, name, src)
        if problems and strict:
            raise ModelLoadError(f"{problems}: pass strict=False to load it anyway")
        tokenizer = _load_tokenizer(src, name, trust_remote_code, hub_kwargs)
    if device_map is None and dev is not None:
        model.to(dev)
    lm = LM.wrap(model, tokenizer, name=name)
    if problems:
        warnings.warn(problems, stacklevel=2)
        lm.notes.append(problems)
    lm.load_kwargs = dict(
        device=device,
        dtype=dtype,
        device_map=device_map,
        attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code,
        local_files_only=local_files_only,
        strict=strict,
        **model_kwargs,
    )
    lm.notes.append(f"loaded in {time.perf_counter() - t0:.2f} s")
    return lm
