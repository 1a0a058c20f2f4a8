"""The family sweep: every decoder-only text model type transformers can build, tiny and random, through every
heatwidget analysis.

For each model type in transformers' MODEL_FOR_CAUSAL_LM_MAPPING_NAMES this builds a tiny random-weight model from
the type's own config (hidden 64, 3 layers, small vocab; `OVERRIDES` where a config needs more), saves it with a
local word-level tokenizer (no download), loads it with `hw.load` and runs ablation_kl (skip, mean), knockout_js,
logit_lens, answer + collect + probe_auc, weight_change (against a perturbed copy) and module_stats, plus one drill
of every matrix. Types that are not decoder-only text models (encoder, encoder-decoder halves, multimodal, audio)
are listed as excluded, with the reason.

    python scripts/model_sweep.py                       # print the table
    python scripts/model_sweep.py --family bloom llama  # a few families, with tracebacks
    python scripts/model_sweep.py --write docs/models.md

tests/test_families.py imports this module and checks docs/models.md is current for the installed transformers.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's heatwidget; tiny_models (the local tokenizer)

from tiny_models import tiny_tokenizer  # noqa: E402

# Config keys set for every tiny model where the config has them (constructor kwargs, so derived fields such as
# layer_types follow num_hidden_layers).
TINY: dict[str, object] = dict(
    vocab_size=64,
    hidden_size=64,
    num_hidden_layers=3,
    num_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    ffn_dim=128,
    head_dim=16,
    max_position_embeddings=256,
    # mixture of experts
    num_experts=4,
    num_local_experts=4,
    n_routed_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    n_shared_experts=1,
    shared_expert_intermediate_size=64,
    first_k_dense_replace=1,
    n_group=1,
    topk_group=1,
    # multi-head latent attention
    kv_lora_rank=16,
    q_lora_rank=32,
    qk_rope_head_dim=8,
    qk_nope_head_dim=8,
    qk_head_dim=16,
    v_head_dim=16,
    zero_expert_num=2,
    expert_ffn_hidden_size=32,
    moe_topk=2,
    unpadded_vocab_size=64,
    # state-space / recurrent
    rotary_dim=8,  # GPT-J / CodeGen rotate a fixed number of dims, which must fit in a 16-wide head
    full_attention_interval=2,
    attn_layer_period=2,
    attn_layer_offset=1,  # hybrids: softmax attention in 3 layers
    # state-space / linear-attention mixers of hybrids (the defaults are 100x the tiny width, and slow on CPU)
    mamba_n_heads=8,
    mamba_d_head=16,
    mamba_d_state=8,
    mamba_chunk_size=16,
    mamba_d_ssm=128,
    mamba_num_heads=8,
    mamba_head_dim=16,
    ssm_state_size=8,
    n_groups=1,
    chunk_size=16,
    linear_key_head_dim=16,
    linear_value_head_dim=16,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_head_dim=16,
    linear_num_heads=4,
    vocab_size_per_layer_input=64,
    hidden_size_per_layer_input=16,  # Gemma 3n/4 per-layer embeddings
    use_mamba_kernels=False,  # transformers 4.x Jamba/Zamba: the CUDA kernels are not installed on CPU
    state_size=8,
    expand=2,
    conv_kernel=4,
    time_step_rank=8,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# Per-family extra config keys, where TINY alone does not give a buildable or faithful tiny model.
OVERRIDES: dict[str, dict[str, object]] = {
    "mpt": dict(d_model=64, n_heads=4, n_layers=3, expansion_ratio=2, max_seq_len=256, attn_config=dict(alibi=True)),
    "gpt2": dict(n_embd=64, n_layer=3, n_head=4, n_positions=256),
    "gpt_neo": dict(attention_types=[[["global", "local", "global"], 1]]),
    "mamba2": dict(num_heads=8, n_groups=1),  # num_heads * head_dim must be expand * hidden_size
    "zaya": dict(num_experts_per_tok=1),
    "zamba": dict(num_hidden_layers=4, attn_layer_offset=0),  # two hybrid layers share one block (tied)
    "zamba2": dict(num_hidden_layers=4, layers_block_type=["mamba", "hybrid", "mamba", "hybrid"]),
    "gemma3n_text": dict(num_kv_shared_layers=0),
    "mega": dict(is_decoder=True, bidirectional=False),  # transformers 4.x: MEGA as its causal LM
    # hybrids: keep a softmax-attention layer among the 3 (the defaults put one every 4th-8th layer)
    "bamba": dict(attn_layer_indices=[1]),
    "granitemoehybrid": dict(layer_types=["mamba", "attention", "mamba"]),
    "lfm2_moe": dict(layer_types=["conv", "full_attention", "conv"]),
    "kimi_linear": dict(layer_types=["linear_attention", "full_attention", "linear_attention"]),
    "xlstm": dict(num_heads=4, qk_dim_factor=1.0),
    "qwen4_exp_text": dict(
        layer_types=["linear_attention", "indexed_attention", "linear_attention"],
        indexer_n_heads=2,
        indexer_kv_heads=1,
        indexer_head_dim=16,
        indexer_budget=8,
        indexer_compress_ratio=2,
    ),
    "qwen3_next": dict(layer_types=["linear_attention", "full_attention", "linear_attention"]),
    "qwen3_5_text": dict(layer_types=["linear_attention", "full_attention", "linear_attention"]),
    "qwen3_5_moe_text": dict(layer_types=["linear_attention", "full_attention", "linear_attention"]),
    "bailing_hybrid": dict(layer_types=["linear_attention", "full_attention", "linear_attention"]),
}

# Failures inside transformers itself that heatwidget cannot route around, by (model type, major version).
UPSTREAM: dict[tuple[str, str], str] = {}

# What an architecture does not have, declared per family from the architecture itself (not read from heatwidget's
# anatomy, which could be wrong): an analysis that needs the part is "n/a" for the family when heatwidget refuses
# it with its own clear error (NEEDS). Any other failure, or such a refusal for a family not listed here, is "no".
LACKS: dict[str, tuple[str, ...]] = {
    "mamba": ("attention", "projections"),  # one state-space mixer per block (in_proj/out_proj), no MLP
    "mamba2": ("attention", "projections"),
    "falcon_mamba": ("attention", "projections"),
    "rwkv": ("attention",),  # time mixing (a linear recurrence) and channel mixing (its MLP)
    "xlstm": ("attention",),  # mLSTM cells and a gated MLP
}

# analysis -> (the part it needs, the exception types heatwidget refuses with, the phrase naming the missing part)
NEEDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "knockout_js": ("attention", ("AnatomyError",), "has no softmax attention in any layer"),
    "weight_change": ("projections", ("ValueError",), "no attention or MLP projections found"),
    "module_stats": ("projections", ("ValueError",), "no attention or MLP projections found"),
}

PROMPT = "the capital of Velmora is"
SUBJECT = "Velmora"
_PLACES = ("Velmora", "Ostrand", "Kelvar", "Brisa", "Tamor", "north", "south", "east")
QUESTIONS = [f"Q : {q} {w} ? A :" for q in ("what is the capital of", "which language is spoken in") for w in _PLACES]
GOLDS = [_PLACES[(i + 1) % len(_PLACES)] for i in range(len(QUESTIONS))]

# What runs per family, in the table's column order.
ANALYSES: tuple[str, ...] = (
    "load",
    "ablation_kl skip",
    "ablation_kl mean",
    "knockout_js",
    "logit_lens",
    "answer+collect",
    "probe_auc",
    "weight_change",
    "module_stats",
)


@dataclass
class Result:
    family: str
    status: dict[str, str] = field(default_factory=dict)  # analysis -> "ok", "n/a: <error>" or the error
    seconds: float = 0.0
    tracebacks: dict[str, str] = field(default_factory=dict)

    @property
    def all_ok(self) -> bool:
        """All nine analyses ran."""
        return all(self.status.get(a) == "ok" for a in ANALYSES)

    @property
    def all_it_has(self) -> bool:
        """Every analysis the architecture has parts for ran; the others were refused with the clear error."""
        return all(self.status.get(a) == "ok" or is_na(self.status.get(a)) for a in ANALYSES)


def is_na(status: str | None) -> bool:
    return status is not None and status.startswith("n/a: ")


def not_applicable(family: str, analysis: str, status: str) -> bool:
    """Whether a failed analysis is the specified refusal: the family lacks the part the analysis needs (LACKS) and
    heatwidget raised its own error type, naming the family and the missing part."""
    if analysis not in NEEDS or status == "ok":
        return False
    part, types, phrase = NEEDS[analysis]
    kind, _, message = status.partition(": ")
    return (
        part in LACKS.get(family, ())
        and kind in types
        and phrase in message
        and re.search(rf"\b{re.escape(family)}\b", message) is not None
    )


# ---- which model types are decoder-only text models ----------------------------------------------------------


def causal_lm_types() -> list[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def exclusion(model_type: str) -> str | None:
    """Why `model_type` is not a decoder-only text model (None when it is one)."""
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        cfg = CONFIG_MAPPING[model_type]()
    except Exception as e:  # noqa: BLE001 - any failure to build the default config is the reason
        return f"its default config cannot be built ({type(e).__name__}: {_first_line(e)})"
    cls = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]
    if getattr(cfg, "is_encoder_decoder", False) or model_type in _ENC_DEC_DECODERS:
        return f"the decoder half of an encoder-decoder model ({cls})"
    if model_type in _ENCODERS or "LMHead" in cls and "GPT" not in cls and model_type not in ("ctrl", "xlm"):
        return f"an encoder architecture run as a decoder ({cls})"
    if model_type == "blt":
        return f"a byte-level hierarchical model (patcher, local encoder/decoder and a global transformer) ({cls})"
    subs = sorted(getattr(cfg, "sub_configs", None) or {})
    if any(re.search(r"text|vision|audio|image|speech|vq", k) for k in subs):  # not mpt's attn_config etc.
        return f"multimodal, or a wrapper around a text model: its config holds sub-configs {subs} ({cls})"
    return None


# Encoder-only architectures whose *ForCausalLM / *LMHeadModel is the encoder with is_decoder=True, and decoders
# of encoder-decoder models (their configs do not all say is_encoder_decoder).
_ENCODERS = {
    "bert",
    "bert-generation",
    "big_bird",
    "camembert",
    "data2vec-text",
    "electra",
    "ernie",
    "megatron-bert",
    "rembert",
    "roberta",
    "roberta-prelayernorm",
    "roc_bert",
    "roformer",
    "xlm-roberta",
    "xlm-roberta-xl",
    "xmod",
    "xlnet",
    "xlm",
    "reformer",
}
_ENC_DEC_DECODERS = {
    "bart",
    "bigbird_pegasus",
    "blenderbot",
    "blenderbot-small",
    "marian",
    "mbart",
    "mvp",
    "pegasus",
    "plbart",
    "prophetnet",
    "trocr",
    "whisper",
    "musicgen",
    "musicgen_melody",
    "moshi",
    "cpmant",
    "speech_to_text_2",
}


# ---- building a tiny model ----------------------------------------------------------------------------------


def tiny_config(model_type: str):
    """The type's config with the TINY (and OVERRIDES) keys it has."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    default = cls()
    keys = set(default.to_dict()) | set(getattr(cls, "attribute_map", {}) or {})
    kw = {k: v for k, v in TINY.items() if k in keys}
    if "kv_lora_rank" in keys:  # multi-head latent attention: rotary head_dim = qk_rope_head_dim, per-head k/v
        kw["head_dim"] = TINY["qk_rope_head_dim"]
        kw["num_key_value_heads"] = kw.get("num_attention_heads", 4)
    kw.update(OVERRIDES.get(model_type, {}))
    return cls(**kw)


def build_tiny(model_type: str, path: Path, seed: int = 0) -> Path:
    """Save a seeded random-weight tiny model of `model_type` with the local tokenizer to `path`."""
    from transformers import AutoModelForCausalLM

    cfg = tiny_config(model_type)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    _no_special_predictions(model)
    _save(model, path)
    tiny_tokenizer(size=int(TINY["vocab_size"])).save_pretrained(path)
    return path


def _save(model, path: Path) -> None:
    """save_pretrained; transformers 4.x Zamba2 shares its attention block between layers without declaring the
    tie, which safetensors refuses: such a model is saved as a torch pickle (what transformers suggests)."""
    try:
        model.save_pretrained(path)
    except RuntimeError as e:
        if "shared tensors" not in str(e):
            raise
        model.save_pretrained(path, safe_serialization=False)


def _no_special_predictions(model) -> None:
    """Zero the unembedding rows of the special tokens (pad, bos, eos, unk: ids 0-3), so a random model's greedy
    answers are words rather than an immediate EOS (hw.answer drops empty answers)."""
    out = model.get_output_embeddings()
    if out is None or getattr(out, "weight", None) is None:
        return
    with torch.no_grad():
        out.weight[:4] = 0
        if getattr(out, "bias", None) is not None:
            out.bias[:4] = out.bias.min() - 1


def perturbed_copy(src: Path, dst: Path, seed: int = 1) -> Path:
    """The same model with every 2-D weight nudged (for weight_change)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.add_(0.01 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    _save(model, dst)
    tiny_tokenizer(size=int(TINY["vocab_size"])).save_pretrained(dst)
    return dst


# ---- running everything -----------------------------------------------------------------------------------


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0][:300] if s else ""


def _drill(m) -> None:
    """One drill of the matrix (its first finite cell, else 0, 0)."""
    import numpy as np

    v = np.asarray(m.values, dtype=float)
    ok = np.argwhere(np.isfinite(v))
    r, c = (int(ok[0][0]), int(ok[0][1])) if len(ok) else (0, 0)
    m.drill(r, c)


def _steps(lm, src: Path, other: Path) -> dict:
    import numpy as np

    import heatwidget as hw

    state: dict = {}

    def collect_step():
        ans = hw.answer(lm, QUESTIONS, GOLDS, max_new_tokens=2)
        state["acts"] = hw.collect(lm, ans, positions=["last_q", -1], layers=None, site="resid")
        return None

    def probe_step():
        # Synthetic labels (a random model answers nothing right): the point is that the probe runs.
        X = np.asarray(state["acts"].values)
        y = np.arange(X.shape[0]) % 2
        return hw.probe_auc(X, y, min_per_class=1, test_size=0.5)

    return {
        "ablation_kl skip": lambda: hw.ablation_kl(lm, PROMPT, max_new_tokens=2, intervention="skip"),
        "ablation_kl mean": lambda: hw.ablation_kl(lm, PROMPT, max_new_tokens=2, intervention="mean"),
        "knockout_js": lambda: hw.knockout_js(lm, PROMPT, SUBJECT, window=1),
        "logit_lens": lambda: hw.logit_lens(lm, PROMPT),
        "answer+collect": collect_step,
        "probe_auc": probe_step,
        # live vs live: transformers 5 saves MoE experts and renamed keys in the original checkpoint layout, which
        # weight_change's streaming reader does not map for every family (see the weight_change column notes)
        "weight_change": lambda: hw.weight_change(lm, hw.load(other)),
        "module_stats": lambda: hw.module_stats(lm),
    }


def run_family(model_type: str, workdir: Path) -> Result:
    """Build, load and analyse one family; every step's outcome (and traceback) in the Result."""
    import heatwidget as hw

    res = Result(model_type)
    t0 = time.perf_counter()
    src, other = workdir / model_type, workdir / f"{model_type}-perturbed"
    try:
        build_tiny(model_type, src)
        perturbed_copy(src, other)
    except Exception as e:  # noqa: BLE001 - reported in the table
        res.status["build"] = f"{type(e).__name__}: {_first_line(e)}"
        res.tracebacks["build"] = traceback.format_exc()
        res.seconds = time.perf_counter() - t0
        return res
    lm = _attempt(res, "load", lambda: hw.load(src))
    if lm is not None:
        _keep_word_tokenizer(lm)
    if lm is not None:
        for name, fn in _steps(lm, src, other).items():
            if name == "probe_auc" and res.status.get("answer+collect") != "ok":
                res.status[name] = "not run: answer+collect failed"
                continue
            m = _attempt(res, name, fn)
            if m is not None and res.status[name] == "ok":
                _attempt(res, name, lambda m=m: _drill(m), drill=True)
    res.seconds = time.perf_counter() - t0
    for k, v in res.status.items():  # the table must not depend on where the temporary directory was
        v = v.replace(f"{workdir}/", "").replace(str(workdir), "")
        res.status[k] = f"n/a: {v}" if not_applicable(model_type, k, v) else v
    return res


def _keep_word_tokenizer(lm) -> None:
    """transformers 5 loads some model types' saved tokenizers as their own class (e.g. Qwen2Tokenizer), which
    re-splits the word-level vocabulary into nonsense; the sweep then uses the word-level tokenizer itself."""
    tok = tiny_tokenizer(size=int(TINY["vocab_size"]))
    if lm.tokenizer(PROMPT)["input_ids"] != tok(PROMPT)["input_ids"]:
        lm.tokenizer = tok


def _attempt(res: Result, name: str, fn, drill: bool = False):
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            out = fn()
        if not drill:
            res.status[name] = "ok"
        return out
    except Exception as e:  # noqa: BLE001 - reported in the table
        res.status[name] = f"{'drill: ' if drill else ''}{type(e).__name__}: {_first_line(e)}"
        res.tracebacks[name] = traceback.format_exc()
        return None


def sweep(families: list[str] | None = None, verbose: bool = False) -> tuple[list[Result], dict[str, str]]:
    """Run every (or the given) decoder family; returns (results, excluded type -> reason)."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    types = families or causal_lm_types()
    excluded = {t: r for t in types if (r := exclusion(t))}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in types:
            if t in excluded:
                continue
            r = run_family(t, Path(tmp))
            results.append(r)
            if verbose:
                bad = {k: v for k, v in r.status.items() if v != "ok"}
                print(f"{t:28s} {r.seconds:5.1f}s {'OK' if r.all_ok else bad}", flush=True)
    return results, excluded


# ---- the table --------------------------------------------------------------------------------------------


def _cell(s: str | None) -> str:
    if s is None:
        return "—"
    return "ok" if s == "ok" else "n/a" if is_na(s) else "no"


def counts(results: list[Result]) -> tuple[int, int, int]:
    """(families running every analysis their architecture has, buildable families, families running all nine)."""
    runs = [r for r in results if "build" not in r.status]
    return sum(r.all_it_has for r in runs), len(runs), sum(r.all_ok for r in runs)


def render(results: list[Result], excluded: dict[str, str], version: str) -> str:
    """docs/models.md's section for one transformers version."""
    runs = [r for r in results if "build" not in r.status]
    has, n, nine = counts(results)
    lines = [
        f"## transformers {version}",
        "",
        f"{has} of {n} buildable decoder families run every analysis their architecture has "
        f"({100 * has / max(1, n):.0f} %); {nine} run all nine. {len(results) - len(runs)} decoder types could "
        f"not be built tiny; {len(excluded)} model types are not decoder-only text models.",
        "",
        "| family | " + " | ".join(ANALYSES) + " |",
        "|" + "---|" * (len(ANALYSES) + 1),
    ]
    for r in runs:
        lines.append(f"| {r.family} | " + " | ".join(_cell(r.status.get(a)) for a in ANALYSES) + " |")
    lines += ["", "What does not run, and why:", ""]
    for r in runs:
        for a in ANALYSES:
            s = r.status.get(a)
            if s is not None and s != "ok" and not is_na(s):
                lines.append(f"- **{r.family}** {a}: {_md(s)}")
    if lines[-1] == "":
        lines.append("- none")
    lines += [
        f"- **{t}** (known): {why}"
        for (t, major), why in UPSTREAM.items()
        if version.split(".")[0] == major and any(r.family == t and not r.all_it_has for r in runs)
    ]
    lines += ["", "Not applicable (the architecture lacks the part; heatwidget refuses with this error):", ""]
    lines += [
        f"- **{r.family}** {a}: {_md(s.removeprefix('n/a: '))}"
        for r in runs
        for a in ANALYSES
        if is_na(s := r.status.get(a))
    ] or ["- none"]
    lines += ["", "Decoder types that could not be built tiny:", ""]
    lines += [f"- **{r.family}**: {_md(r.status['build'])}" for r in results if "build" in r.status] or ["- none"]
    lines += ["", "Not decoder-only text models (excluded):", ""]
    lines += [f"- **{t}**: {_md(why)}" for t, why in sorted(excluded.items())]
    return "\n".join(lines) + "\n"


def _md(s: str) -> str:
    s = re.sub(r"\{[^{}]*(\}|$)", "{…}", s)  # printed sets (e.g. of tensor names) have no stable order
    return re.sub(r"\s+", " ", s).replace("|", "\\|")


HEADER = """# Model families

Generated by `python scripts/model_sweep.py --write docs/models.md`; `tests/test_families.py` checks the section of
the installed transformers version is current. Every decoder-only text model type in transformers'
`MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` is built tiny (hidden 64, 3 layers, 64-token vocabulary, random seeded weights),
saved, loaded with `hw.load` and run through every analysis. "ok": the analysis and one drill of its matrix ran.
"n/a": the architecture lacks the part the analysis needs (attention-free models: no softmax attention, and for
pure state-space models no attention or MLP projections; declared per family in the sweep's `LACKS`), and
heatwidget refused with its own error naming the family and the missing part (the sweep checks the error type and
the message). "no": anything else, listed with its error. A family that cannot run an analysis raises one error
naming the family and what is missing.

- Mixture-of-experts layers: `mlp.up`/`mlp.down`/`mlp.gate` cells are over all experts (Frobenius norm of the
  stacked `[experts, out, in]` tensor), the drill shows each expert; the router is `mlp.router`.
- Attention-free models (Mamba, RWKV, xLSTM …) load with a partial anatomy; `knockout_js` (its Attn. row),
  `zero_attn`, `collect(site="attn")` and, where no attention/MLP projection exists, `weight_change`/`module_stats`
  refuse with an `AnatomyError`/`ValueError` naming the family. Hybrids knock out attention in the layers that have
  softmax attention.
- `weight_change` runs here live model vs live model. From a directory it streams the stored tensors by name;
  MoE checkpoints that transformers 5 saves one expert at a time (and GraniteMoE's input/output_linear) are read
  as the model's fused expert tensors. Other renamed keys (e.g. EXAONE's attention, tied Zamba blocks saved once)
  are not mapped: the directory reader raises a `WeightMismatchError` naming the tensor.
  `module_stats(stat="grad")` differentiates routed experts' stored weights with autograd (frozen experts are
  refused by name).
- The tiny models' vocabulary is a word-level tokenizer built locally; transformers 5 re-types it for some model
  types (e.g. Qwen2), so the sweep sets the word-level tokenizer on the loaded model where that happened.

What stays "no", and why it is refused rather than fixed:

- Several residual streams (DeepSeek-V4, HY-V4 and Qwen4-Exp hyper-connections, Gemma 3n AltUp): the blocks pass
  `n` mixed copies of the residual stream and the model collapses them only before the final norm. Skipping a
  block, a logit lens or a probe on "the" residual stream of a layer needs a choice of stream (or of collapse) that
  the analyses do not define yet; an anatomy-level shim would return numbers for a stream nobody reads. The
  analyses that need one stream refuse, naming the family and the stream-mixing module.
- Looped layers (Dory's recurrent section, HRM's H/L cycles): blocks run several times per token, so "layer l"
  is not one computation; the engine detects it and refuses per-layer interventions (HRM's stacks are not one
  layer sequence, so it does not load).
- transformers 4.x Zamba/Zamba2 call one attention module object from every hybrid layer: a hook there acts in
  all of them, so knockout refuses it (transformers 5 builds one module per layer with tied weights: it runs).
- transformers 4.x MEGA passes hidden states sequence-first ([seq, batch, d]); it is refused at load.
"""


def write(path: Path, section: str, version: str) -> None:
    """Replace (or add) the installed version's section of docs/models.md, keeping other versions' sections."""
    text = path.read_text() if path.exists() else HEADER
    sections = _sections(text)
    sections[version] = section
    body = HEADER + "".join("\n" + sections[v] for v in sorted(sections, key=_version_key, reverse=True))
    path.write_text(body)


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"(?m)^(?=## transformers )", text)
    out = {}
    for p in parts[1:]:
        v = p.split("\n", 1)[0].removeprefix("## transformers ").strip()
        out[v] = p.rstrip("\n") + "\n"
    return out


def section_of(path: Path, version: str) -> str | None:
    return _sections(path.read_text()).get(version) if path.exists() else None


def _version_key(v: str) -> tuple:
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.+-]", v))


def main(argv: list[str] | None = None) -> int:
    import transformers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", nargs="*", help="only these model types (prints tracebacks)")
    ap.add_argument("--write", type=Path, help="write the installed version's section into this markdown file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results, excluded = sweep(args.family, verbose=True)
    if args.family:
        for r in results:
            for name, tb in r.tracebacks.items():
                print(f"--- {r.family} {name}\n{tb}")
    section = render(results, excluded, transformers.__version__)
    if args.write:
        write(args.write, section, transformers.__version__)
    else:
        print(section)
    print(f"sweep: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
