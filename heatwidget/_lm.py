"""`hw.load(...) -> LM`: a Hugging Face causal LM, its tokenizer and its anatomy, loaded with `from_pretrained`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .anatomy import Anatomy, find_anatomy

__all__ = ["LM", "load", "ModelLoadError"]


class ModelLoadError(OSError):
    """A model or tokenizer could not be loaded; the message says why in one sentence."""


_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
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
        return self.anatomy.embed.weight.dtype

    @property
    def n_layers(self) -> int:
        return self.anatomy.n_layers

    @property
    def config(self) -> Any:
        return self.model.config

    def __repr__(self) -> str:
        return f"LM({self.name!r}, {self.anatomy.summary()}, device={self.device}, dtype={self.dtype})"

    # ---- tokenisation --------------------------------------------------------------------------------------
    def encode(self, texts: str | Sequence[str], *, padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Tokenize with the tokenizer's defaults (special tokens added), padded on `padding_side`, on the device.

        Raises a clear error for empty prompts (an empty string has nothing to predict from).
        """
        if self.tokenizer is None:
            raise ValueError("this LM has no tokenizer: pass one to LM.wrap(model, tokenizer)")
        batch = [texts] if isinstance(texts, str) else list(texts)
        if not batch:
            raise ValueError("no prompts given")
        for i, t in enumerate(batch):
            # A single str is "the prompt": calling encode once per prompt of a list must not say "prompt 0".
            which = "the prompt" if isinstance(texts, str) else f"prompt {i}"
            if not isinstance(t, str):
                raise TypeError(f"{which} is a {type(t).__name__}, not a str")
            if not t.strip():
                raise ValueError(f"{which} is empty: give some text to analyse")
        old = self.tokenizer.padding_side
        self.tokenizer.padding_side = padding_side
        try:
            enc = self.tokenizer(batch, return_tensors="pt", padding=True)
        finally:
            self.tokenizer.padding_side = old
        limit = getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None)
        n = enc["input_ids"].shape[1]
        if limit is not None and n > limit:
            raise ValueError(f"prompt is {n} tokens long but the model's context is {limit} tokens")
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def token_strings(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Each token id decoded on its own (for labels and tooltips; user data, never HTML)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return [self.tokenizer.decode([int(i)]) for i in ids]


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


def _check_device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was asked for, but this torch sees no CUDA GPU "
                         f"(torch.cuda.is_available() is False, torch {torch.__version__}); use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device={str(device)!r} was asked for, but MPS is not available here; use device='cpu'")
    return dev


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


def load(
    name_or_path: str | Path,
    device: str | torch.device | None = "cpu",
    dtype: str | torch.dtype | None = None,
    device_map: Any = None,
    *,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    local_files_only: bool | None = None,
    **model_kwargs: Any,
) -> LM:
    """Load a causal LM and its tokenizer with `from_pretrained` (a hub id or a local directory) and find its anatomy.

    device: where to put the model ("cpu", "cuda", "cuda:1", …); ignored when `device_map` is given (e.g. "auto",
    which shards a model too large for one device with accelerate). dtype: None = float32 on CPU, the checkpoint's
    own dtype on accelerators. A wrong path, a hub id without network, or an architecture transformers cannot build
    raises ModelLoadError with one clear sentence.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    dev = None if device_map is not None else _check_device(device)
    torch_dtype = _resolve_dtype(dtype, dev, device_map)
    src = str(name_or_path)
    if not src.strip():
        raise ValueError("name_or_path is empty: give a Hugging Face model id or a local directory")
    local = Path(src).expanduser()
    is_local = local.exists()
    if is_local:
        if not local.is_dir():
            raise ModelLoadError(f"{src!r} is a file; give the directory that holds config.json and the weights")
        if not (local / "config.json").exists():
            raise ModelLoadError(f"{src!r} has no config.json: it is not a saved transformers model directory")
        src = str(local)
    elif src.startswith(("/", "./", "../", "~")) or src.count("/") > 1:
        raise ModelLoadError(f"no such model directory: {src!r}")

    kwargs: dict[str, Any] = dict(dtype=torch_dtype, trust_remote_code=trust_remote_code, **model_kwargs)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only

    t0 = time.perf_counter()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # keep transformers' own warnings out of the user's notebook cell
    try:
        try:
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
        except OSError as e:
            where = "the local directory" if is_local else "the Hugging Face Hub (is there network access?)"
            raise ModelLoadError(f"could not load model {str(name_or_path)!r} from {where}: {_short(e)}") from None
        except ValueError as e:
            if "Unrecognized" in str(e) or "not supported" in str(e) or "model type" in str(e):
                raise ModelLoadError(f"transformers cannot build {str(name_or_path)!r} as a causal LM: "
                                     f"{_short(e)}") from None
            raise
        except ImportError as e:
            msg = f"loading {str(name_or_path)!r} needs a package that is missing: {_short(e)}"
            raise ModelLoadError(msg) from None
        try:
            tokenizer = AutoTokenizer.from_pretrained(src, trust_remote_code=trust_remote_code,
                                                      **({"local_files_only": local_files_only}
                                                         if local_files_only is not None else {}))
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"loaded the model but not its tokenizer from {str(name_or_path)!r}: "
                                 f"{_short(e)}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if device_map is None and dev is not None:
        model.to(dev)
    lm = LM.wrap(model, tokenizer, name=str(name_or_path))
    lm.load_kwargs = dict(device=device, dtype=dtype, device_map=device_map, attn_implementation=attn_implementation,
                          trust_remote_code=trust_remote_code, local_files_only=local_files_only, **model_kwargs)
    lm.notes.append(f"loaded in {time.perf_counter() - t0:.2f} s")
    return lm
