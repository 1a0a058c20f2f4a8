"""Clean runs, and many intervened runs as one batched pass that resumes from the clean activations.

Every divergence analysis is "one clean run, then N intervened runs that differ from it from some layer on".
An intervened run is described once (`RowSpec`: which block output to replace, which hooks to apply while which
block runs) and executed by one of two engines over a batch of such rows:

- **resume** (the fast path): row r only needs the blocks from its first changed layer s_r upwards; below s_r its
  activations equal the clean ones, which the clean run cached. Rows are sorted by s_r and run as a "staircase":
  at block j the batch holds every row with s_r ≤ j, each row joining with its clean input of block s_r. The blocks
  are called with the exact arguments the model itself passes them (`_block_calls.trace_calls` / `record_calls`),
  and only the selected positions go through the final norm and unembedding. All L single-layer interventions
  cost Σ(L − s_r) block evaluations, about L/2 clean forwards, instead of L.
- **batched** (the generic fallback): every row is a full forward of the model with per-row hooks, batched.

The resume engine checks itself once per clean run (block 0 re-run from the cache must reproduce the clean
activations, and the norm+unembedding must reproduce the model's logits); if not, the batched engine is used and
the reason is recorded.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _block_calls, hooks
from .._concurrency import locks_model
from .._limits import stop_token_ids
from .._lm import LM
from ._stats import log_probs

__all__ = [
    "Clean",
    "Edit",
    "RowSpec",
    "unembed",
    "run_rows",
    "generate_clean",
    "forward_clean",
    "rows_per_chunk",
    "next_forward",
    "keep_logits_arg",
    "block_evaluations",
    "recorded_inputs",
    "weight_of",
]

EditFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@dataclass
class Clean:
    """Everything cached from the clean run over the sequence `ids` [1, S]."""

    ids: torch.Tensor
    inputs: list[torch.Tensor]  # input hidden state of block l, [1, S, d]
    final: torch.Tensor  # output of the last block, [1, S, d]
    calls: list[_block_calls.BlockCall] | None = None  # how the model calls each block on the full sequence
    resume_ok: bool = False
    resume_note: str = ""

    @property
    def n_layers(self) -> int:
        return len(self.inputs)

    def out(self, layer: int) -> torch.Tensor:
        """Clean output of block `layer` (= input of the next block)."""
        return self.inputs[layer + 1] if layer + 1 < self.n_layers else self.final


@dataclass(frozen=True)
class Edit:
    """A hook applied while one block runs (e.g. zero its attention); rows sharing `key` share one hook."""

    key: tuple
    make: Callable[[Any], contextlib.AbstractContextManager]  # rows selection -> hook context manager


@dataclass
class RowSpec:
    """One intervened run: replace block `out_layer`'s output by out_fn(h_out, h_in) (all positions, or as
    out_fn decides), and apply `block_edits[j]` while block j runs."""

    out_layer: int | None = None
    out_fn: EditFn | None = None
    block_edits: dict[int, list[Edit]] = field(default_factory=dict)

    def output_fn(self) -> EditFn:
        """out_fn, for a row that edits a block output (out_layer set)."""
        assert self.out_fn is not None, "a RowSpec with out_layer needs out_fn"
        return self.out_fn

    def start(self, n_layers: int) -> int:
        """The first block whose output differs from the clean run (n_layers: none does)."""
        s = [j for j, e in self.block_edits.items() if e]
        if self.out_layer is not None:
            s.append(self.out_layer + 1)
        return min(s) if s else n_layers


# ---- unembedding: final norm + unembedding matrix (+ the model's logit post-processing) ---------------------


def unembed(lm: LM, h: torch.Tensor) -> torch.Tensor:
    """Logits from a residual-stream state, as the model computes them after its last block."""
    a = lm.anatomy
    if a.final_norm is not None:
        h = a.final_norm(h.to(_device_of(a.final_norm, h)))
    logits = a.unembed(h.to(_device_of(a.unembed, h)))
    cfg = lm.config
    cap = getattr(cfg, "final_logit_softcapping", None)  # Gemma 2/3
    if cap:
        logits = torch.tanh(logits / cap) * cap
    scale = getattr(cfg, "logit_scale", None)  # Cohere
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    div = getattr(cfg, "logits_scaling", None)  # Granite
    if isinstance(div, (int, float)) and div != 1:
        logits = logits / div
    return logits


def _device_of(module: torch.nn.Module, like: torch.Tensor) -> torch.device:
    from .._offload import execution_device

    # execution_device: an offloaded (device_map) module's weights sit on "meta" but it computes on a real device
    return execution_device(module) if next(module.parameters(), None) is not None else like.device


def _tolerance(dtype: torch.dtype) -> float:
    # Cached (generation) and full-sequence kernels differ by rounding only: ~1e-6 relative in float32.
    return 1e-3 if dtype == torch.float32 else 5e-2


def _close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> tuple[bool, float]:
    a, b = a.float(), b.float().to(a.device)
    err = float((a - b).abs().max())
    return err <= _tolerance(dtype) * (1.0 + float(b.abs().max())), err


def _check_resume(lm: LM, clean: Clean, logp: torch.Tensor, positions: torch.Tensor) -> None:
    """Block 0 re-run from the cache must give the clean activations, and unembed() the model's log-probabilities
    `logp` [len(positions), V] at `positions`."""
    if clean.calls is None:
        return
    dt = lm.dtype
    with torch.inference_mode():
        got = _block_calls.run_block(lm.anatomy.layers[0], clean.calls[0], clean.inputs[0])
        ok, err = _close(got, clean.out(0), dt)
        if not ok:
            clean.resume_note = f"re-running block 0 from recorded arguments differs from the clean run by {err:.3g}"
            return
        lg = log_probs(unembed(lm, clean.final[:, positions.to(clean.final.device)]))
        ok, err = _close(lg[0], logp, dt)
        if not ok:
            clean.resume_note = f"final norm + unembedding differ from the model's logits by {err:.3g}"
            return
    clean.resume_ok = True
    clean.resume_note = "verified: block 0 and the head reproduce the clean run"


# ---- clean runs --------------------------------------------------------------------------------------------


def keep_logits_arg(model: Any, n: int) -> dict[str, int]:
    """Ask for logits at the last n positions only, where the model supports it (the unembedding is costly)."""
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" in params:
        return {"logits_to_keep": n}
    if "num_logits_to_keep" in params:
        return {"num_logits_to_keep": n}
    return {}


# Where a forward takes (and its output returns) the cache to continue from: `cache` in the transformers 5.x
# releases that renamed it (`past_key_values` is deprecated there), `past_key_values` before, `cache_params`
# for state-space models in 4.x, `state` for RWKV.
_CACHE_NAMES = ("cache", "past_key_values", "cache_params", "state")


@functools.cache
def _cache_arg(model_cls: Any) -> str | None:
    """The keyword this model class's forward takes its cache under (detected once per class; None: no cache)."""
    params = inspect.signature(model_cls.forward).parameters
    return next((name for name in _CACHE_NAMES if name in params), None)


def cache_of(model: Any, out: Any) -> Any:
    """The cache a forward of `model` returned in `out`, or None where it returns none (e.g. GPT-1)."""
    name = _cache_arg(model.__class__)
    return getattr(out, name, None) if name else None


def next_step_args(model: Any, out: Any) -> dict[str, Any]:
    """Arguments that continue a cached forward from its output `out`: the cache under the name the installed
    transformers expects for this model, and use_cache=True."""
    cache, name = cache_of(model, out), _cache_arg(model.__class__)
    if cache is None or name is None:
        raise ValueError(f"{type(model).__name__} returned no cache to continue from")
    return {name: cache, "use_cache": True}


@dataclass
class Generation:
    clean: Clean
    prompt_len: int
    tokens: list[int]  # generated token ids (Gen0.., EOS included when hit)
    logp: torch.Tensor  # [n_gen, V] clean log-probabilities predicting Gen t (on the device)
    eos_at: int | None  # index of the EOS token among the generated ones, if generation stopped early


@locks_model
def generate_clean(lm: LM, prompt_ids: torch.Tensor, max_new_tokens: int, *, trace: bool = True) -> Generation:
    """Greedy generation with a KV cache, caching every block's input at every position along the way.

    The activations of the prompt step and of each cached step concatenate to those of one forward over the
    whole sequence fed (prompt + all generated tokens but the last), which is what the intervened runs re-use.
    Where some steps ran full forwards (no usable cache, see `next_forward`), the activations come from one
    forward over the sequence fed instead.
    """
    layers = lm.anatomy.layers
    with (
        torch.inference_mode(),
        hooks.capture_all(list(layers), what="input") as ins,
        hooks.capture_all([layers[-1]], what="output") as outs,
    ):
        toks, logps, eos_at = _greedy(lm, prompt_ids, max_new_tokens, cached=True)
    fed = _fed(prompt_ids, toks)
    if sum(o.shape[1] for o in outs[0]) != fed.shape[1]:
        # Some steps ran full forwards (no usable cache): take the activations from one forward over `fed`.
        with (
            torch.inference_mode(),
            hooks.capture_all(list(layers), what="input") as ins,
            hooks.capture_all([layers[-1]], what="output") as outs,
        ):
            lm.model(input_ids=fed, use_cache=False)
    _check_stream(lm, ins[0][0])
    clean = Clean(ids=fed, inputs=[torch.cat(ins[i], 1) for i in range(len(layers))], final=torch.cat(outs[0], 1))
    if clean.final.shape[1] != fed.shape[1] or any(x.shape[1] != fed.shape[1] for x in clean.inputs):
        raise ValueError(
            f"{lm.anatomy.family}: the decoder blocks do not run once per token (looped or shared "
            "layers), so per-layer interventions are not defined for this model"
        )
    if trace:
        _trace(lm, clean, outs.tuple_output.get(0, False))
        targets = torch.arange(prompt_ids.shape[1] - 1, fed.shape[1], device=fed.device)
        if clean.calls is not None:
            _check_resume(lm, clean, torch.stack(logps), targets)
    return Generation(clean, int(prompt_ids.shape[1]), toks, torch.stack(logps), eos_at)


def _check_stream(lm: LM, h: torch.Tensor | None) -> None:
    """The analyses edit one residual stream [batch, seq, d]; refuse models that carry several in parallel."""
    if h is not None and h.ndim != 3:
        raise ValueError(
            f"{lm.anatomy.family}: the decoder blocks pass a hidden state of shape {tuple(h.shape)}, "
            "not [batch, seq, d] (several residual streams, e.g. hyper-connections), which "
            "heatwidget's layer interventions do not support"
        )


def _fed(prompt_ids: torch.Tensor, toks: list[int]) -> torch.Tensor:
    """The sequence a generation feeds the model: the prompt and every generated token but the last."""
    return torch.cat([prompt_ids, torch.tensor([toks[:-1]], dtype=prompt_ids.dtype, device=prompt_ids.device)], 1)


def next_forward(lm: LM, out: Any, seq: torch.Tensor) -> Any:
    """The next forward of a greedy generation whose previous forward returned `out`; seq [n, S] is every token
    fed so far, the newest last. Continues on the KV cache where the model gives one it can continue from,
    else runs a full forward over seq (GPT-1 and RWKV return no cache; some linear-attention hybrids return one
    they cannot continue from)."""
    try:
        return lm.model(input_ids=seq[:, -1:], **next_step_args(lm.model, out))
    except (ValueError, TypeError, RuntimeError, AttributeError):  # no cache, or one it cannot continue from
        pass
    return lm.model(input_ids=seq, use_cache=False, **keep_logits_arg(lm.model, 1))


def _greedy(
    lm: LM, prompt_ids: torch.Tensor, max_new_tokens: int, *, cached: bool
) -> tuple[list[int], list[torch.Tensor], int | None]:
    """Greedy tokens, their clean log-probabilities and the EOS index (KV cache where possible with `cached`)."""
    model, eos = lm.model, stop_token_ids(lm.model, lm.tokenizer)
    toks: list[int] = []
    logps: list[torch.Tensor] = []
    with torch.inference_mode():
        out = model(input_ids=prompt_ids, use_cache=cached, **keep_logits_arg(model, 1))
        for t in range(max_new_tokens):
            lp = log_probs(out.logits[0, -1])
            toks.append(int(lp.argmax()))
            logps.append(lp)
            if toks[-1] in eos:
                return toks, logps, t
            if t == max_new_tokens - 1:
                break
            seq = _fed(prompt_ids, toks + [0])
            out = (
                next_forward(lm, out, seq)
                if cached
                else model(input_ids=seq, use_cache=False, **keep_logits_arg(model, 1))
            )
    return toks, logps, None


def _trace(lm: LM, clean: Clean, returns_tuple: bool) -> None:
    """Record how the model calls each block on the clean sequence (`trace_calls`), for the resume engine."""
    stop = lm.anatomy.final_norm if lm.anatomy.final_norm is not None else lm.anatomy.unembed
    try:
        clean.calls = _block_calls.trace_calls(
            list(lm.anatomy.layers),
            lambda: lm.model(input_ids=clean.ids, use_cache=False),
            stop,
            returns_tuple=returns_tuple,
        )
    except Exception as e:  # any layout the trace cannot follow: the batched engine still works
        clean.calls = None
        clean.resume_note = f"could not record the blocks' arguments ({type(e).__name__}: {str(e)[:200]})"


def recorded_inputs(calls: Sequence[_block_calls.BlockCall]) -> list[torch.Tensor]:
    """The input hidden states that `record_calls` kept with each call."""
    out = []
    for i, c in enumerate(calls):
        if c.hidden is None:
            raise RuntimeError(f"block {i}'s call was recorded without its input (keep_hidden=False)")
        out.append(c.hidden)
    return out


def weight_of(module: torch.nn.Module) -> torch.Tensor:
    """A linear / embedding module's weight matrix (what the sizes of the vocabulary and the stream come from)."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no weight matrix")
    return w


@locks_model
def forward_clean(lm: LM, ids: torch.Tensor, *, keep_last: int | None = None) -> tuple[Clean, torch.Tensor]:
    """One clean forward over ids [1, S], recording each block's input and call; returns (clean, logits)."""
    layers = lm.anatomy.layers
    keep = keep_logits_arg(lm.model, keep_last) if keep_last else {}
    with (
        torch.inference_mode(),
        _block_calls.record_calls(list(layers)) as calls,
        hooks.capture({0: layers[-1]}) as fin,
    ):
        logits = lm.model(input_ids=ids, use_cache=False, **keep).logits[0]
    rec = [calls[i] for i in range(len(layers))]
    _check_stream(lm, rec[0].hidden)
    clean = Clean(ids=ids, inputs=recorded_inputs(rec), final=fin[0], calls=rec)
    for c in rec:
        c.hidden = None  # the calls keep only arguments; activations live in clean.inputs
    n = logits.shape[0]
    _check_resume(lm, clean, log_probs(logits), torch.arange(ids.shape[1] - n, ids.shape[1], device=ids.device))
    return clean, logits


# ---- memory budget -----------------------------------------------------------------------------------------


def rows_per_chunk(lm: LM, seq_len: int, n_pos: int, budget_mb: float | None) -> int:
    """How many intervened rows one batched pass may hold: activations (incl. attention scores) + logits."""
    cfg = lm.config
    d = _config_int(cfg, "hidden_size", "n_embd") or int(weight_of(lm.anatomy.embed).shape[1])
    inter = _config_int(cfg, "intermediate_size", "n_inner") or 4 * d
    heads = _config_int(cfg, "num_attention_heads", "n_head") or 1
    vocab = int(weight_of(lm.anatomy.unembed).shape[0])
    elem = torch.finfo(lm.dtype).bits // 8
    per_row = elem * seq_len * (8 * d + 2 * inter) + 4 * heads * seq_len * seq_len * 2 + 4 * n_pos * vocab * 3
    if budget_mb is None:
        budget_mb = 1024.0
        if lm.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(lm.device)
            budget_mb = max(budget_mb, 0.3 * free / 2**20)
    return max(1, int(budget_mb * 2**20 // per_row))


def _config_int(cfg: Any, *names: str) -> int:
    """The first of these config fields that is a positive int (0 if none): an estimate only, so a field a config
    refuses to give globally (per-layer head counts raise on access) counts as absent."""
    for n in names:
        try:
            v = getattr(cfg, n, None)
        except Exception:  # noqa: BLE001 - e.g. transformers' AmbiguousGlobalPerLayerAttributeError
            continue
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return 0


# ---- running many intervened rows ---------------------------------------------------------------------------


def _edit_contexts(specs: Sequence[RowSpec], batch_rows: Sequence[int], layer: int) -> list:
    """The hooks block `layer` needs for the rows in this batch (batch index i runs spec batch_rows[i])."""
    groups: dict[tuple, tuple[Edit, list[int]]] = {}
    for i, r in enumerate(batch_rows):
        for e in specs[r].block_edits.get(layer, []):
            groups.setdefault(e.key, (e, []))[1].append(i)
    return [e.make(rows) for e, rows in groups.values()]


def _run_staircase(
    lm: LM, clean: Clean, specs: Sequence[RowSpec], chunk: Sequence[int], positions: torch.Tensor
) -> torch.Tensor:
    """Resume engine for one chunk of rows; returns logits [n, len(positions), V] in chunk order."""
    layers, n_layers = lm.anatomy.layers, clean.n_layers
    starts = {r: specs[r].start(n_layers) for r in chunk}
    order = sorted(chunk, key=lambda r: starts[r])
    h: torch.Tensor | None = None
    in_batch: list[int] = []
    first = starts[order[0]]
    for j in range(first, n_layers + 1):
        joining = [r for r in order if starts[r] == j]
        if joining:
            inits = [_initial_state(clean, specs[r], j) for r in joining]
            new = torch.cat(inits, 0)
            h = new if h is None else torch.cat([h.to(new.device), new], 0)
            in_batch += joining
        if j == n_layers or h is None:
            continue
        ctx = _edit_contexts(specs, in_batch, j)
        outs = [(i, specs[r]) for i, r in enumerate(in_batch) if specs[r].out_layer == j and starts[r] <= j]
        if outs:  # an output edit on a block this row computes (it also has an earlier block edit)
            ctx += [hooks.edit_output(layers[j], s.output_fn(), rows=[i], needs_input=True) for i, s in outs]
        assert clean.calls is not None  # run_rows uses this engine only with recorded calls
        with hooks.stack(*ctx):
            h = _block_calls.run_block(layers[j], clean.calls[j], h)
    assert h is not None
    logits = unembed(lm, h[:, positions.to(h.device)])
    back = {r: i for i, r in enumerate(in_batch)}
    return logits[torch.tensor([back[r] for r in chunk], device=logits.device)]


def _initial_state(clean: Clean, spec: RowSpec, start: int) -> torch.Tensor:
    """The row's hidden state entering block `start`: clean, with its output edit applied if that is why it starts."""
    if spec.out_layer is not None and spec.out_layer + 1 == start:
        h_out, h_in = clean.out(spec.out_layer), clean.inputs[spec.out_layer]
        return spec.output_fn()(h_out, h_in).to(h_out.dtype).expand_as(h_out)
    return clean.inputs[start] if start < clean.n_layers else clean.final


def _run_batched(
    lm: LM, clean: Clean, specs: Sequence[RowSpec], chunk: Sequence[int], positions: torch.Tensor
) -> torch.Tensor:
    """Fallback engine: full forwards of the model, one row per spec, per-row hooks; logits at `positions`."""
    layers = lm.anatomy.layers
    n, s_len = len(chunk), clean.ids.shape[1]
    ctx = []
    for i, r in enumerate(chunk):
        sp = specs[r]
        if sp.out_layer is not None:
            ctx.append(hooks.edit_output(layers[sp.out_layer], sp.output_fn(), rows=[i], needs_input=True))
    for j in sorted({j for r in chunk for j in specs[r].block_edits}):
        ctx += _edit_contexts(specs, chunk, j)
    keep = keep_logits_arg(lm.model, s_len - int(positions.min()))
    with hooks.stack(*ctx):
        logits = lm.model(input_ids=clean.ids.expand(n, s_len), use_cache=False, **keep).logits
    offset = s_len - logits.shape[1]
    return logits[:, (positions - offset).to(logits.device)]


@locks_model
def run_rows(
    lm: LM,
    clean: Clean,
    specs: Sequence[RowSpec],
    positions: torch.Tensor,
    reduce: Callable[[list[int], torch.Tensor], None],
    *,
    resume: bool | None = None,
    budget_mb: float | None = None,
) -> str:
    """Run every spec's intervened forward, chunked to the memory budget, and hand each chunk's log-probabilities
    [n, len(positions), V] (float32, on the device) to `reduce(row_indices, logp)`. Returns the engine used."""
    use_resume = clean.resume_ok and clean.calls is not None if resume is None else bool(resume)
    if use_resume and clean.calls is None:
        raise RuntimeError(f"resume=True but the blocks cannot be resumed here: {clean.resume_note}")
    n_layers = clean.n_layers
    order = sorted(range(len(specs)), key=lambda r: specs[r].start(n_layers))
    per = rows_per_chunk(lm, int(clean.ids.shape[1]), int(positions.numel()), budget_mb)
    run = _run_staircase if use_resume else _run_batched
    with torch.inference_mode():
        for k in range(0, len(order), per):
            chunk = order[k : k + per]
            reduce(chunk, log_probs(run(lm, clean, specs, chunk, positions)))
    return "resume" if use_resume else "batched"


def block_evaluations(specs: Sequence[RowSpec], n_layers: int, engine: str) -> int:
    """How many (row, block) evaluations the engine performs (a clean forward is n_layers)."""
    if engine == "batched":
        return len(specs) * n_layers
    return sum(n_layers - s.start(n_layers) for s in specs)
