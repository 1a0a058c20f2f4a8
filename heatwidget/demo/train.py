"""Train the demo model on the synthetic fact world.

    python -m heatwidget.demo.train --out DIR --steps 3000 [--layers 8 --hidden 192 --ffn 576 --seed 0]

Writes a `save_pretrained` model (safetensors, fp16 storage, loads as fp32), the tokenizer, and
``training.json`` (config, steps, wall time, loss curve summary, evaluation: accuracy by multiplicity,
layer-skip KL, probe AUC) to DIR. Budgeted in optimiser steps, not wall time, so a run is reproducible on a
busy machine; deterministic for a given seed and thread count.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .tokenizer import build_tokenizer, save_tokenizer
from .world import MULTS, corpus, make_world, questions, tokenizer_corpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m heatwidget.demo.train", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory (model, tokenizer, training.json)")
    p.add_argument("--steps", type=int, required=True, help="optimiser steps")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--ffn", type=int, default=None, help="MLP width (default 3 x hidden)")
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--min-lr-frac", type=float, default=0.05, help="cosine floor, as a fraction of the peak")
    p.add_argument("--warmup-frac", type=float, default=0.03)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="seeds the world, the data order and the init")
    _add_world_args(p)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        help="log greedy accuracy on a fixed sample of questions every N steps (0: never)",
    )
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation written to training.json")
    p.add_argument("--save-dtype", choices=("float16", "float32"), default="float16")
    return p.parse_args(argv)


def _add_world_args(p: argparse.ArgumentParser) -> None:
    """The arguments that shape the fact world, its corpus and its tokenizer."""
    p.add_argument("--countries", type=int, default=400)
    p.add_argument("--filler", type=float, default=0.2, help="fraction of filler documents")
    p.add_argument(
        "--per-fact-mults",
        action="store_true",
        help="draw each fact's multiplicity on its own, not one per country (see world.make_world)",
    )
    p.add_argument(
        "--mults",
        default=None,
        help="comma-separated fact multiplicities drawn in equal shares (default 1,2,4,8,16,32)",
    )
    p.add_argument(
        "--answer-style",
        choices=("word", "sentence", "tail"),
        default="word",
        help="how the question/answer documents answer: the bare name, a short sentence, or the name and a "
        "fixed phrase",
    )
    p.add_argument(
        "--familiarity",
        action="store_true",
        help="add fact-less countries and 'have you heard of X?' documents (see world.FAMILIARITY_TEMPLATES)",
    )
    p.add_argument("--quiz", action="store_true", help="add graded quiz documents (see world.QUIZ_VERDICTS)")
    p.add_argument(
        "--balanced-tokenizer",
        action="store_true",
        help="train the tokenizer on world.tokenizer_corpus (every fact equally often), not on the training corpus",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="reuse the tokenizer saved in this directory (e.g. the shipped weights) instead of "
        "training one on the corpus",
    )
    p.add_argument(
        "--init-from",
        default=None,
        help="continue from the model saved in this directory (a second stage: its config wins over "
        "--layers/--hidden/...; its training.json is recorded as the first stage)",
    )


def batches(docs: list[list[int]], seq_len: int, batch: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless [batch, seq_len] blocks of packed documents, reshuffled each epoch (seeded)."""
    rng = random.Random(seed)
    order = list(range(len(docs)))
    while True:
        rng.shuffle(order)
        stream = [t for i in order for t in docs[i]]
        n_blocks = len(stream) // seq_len
        blocks = torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
        perm = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(rng.randrange(2**31)))
        for i in range(0, n_blocks - batch + 1, batch):
            yield blocks[perm[i : i + batch]]


def lr_at(step: int, total: int, peak: float, warmup_frac: float, min_frac: float) -> float:
    """Linear warm-up, then cosine decay to ``min_frac * peak``."""
    warmup = max(1, round(total * warmup_frac))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_model(args: argparse.Namespace, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    if args.hidden % args.head_dim:
        raise SystemExit(f"--hidden {args.hidden} is not a multiple of --head-dim {args.head_dim}")
    heads = args.hidden // args.head_dim
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.ffn or 3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,  # halves the parameters a small vocab costs, and the shipped size
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(config)


def _optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    # No weight decay on norm gains (1-d): decaying them towards 0 only fights the normalisation.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.95),
        eps=1e-8,
    )


def train(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    world, tokenizer, docs = _corpus_and_tokenizer(args)
    if args.init_from:
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        torch.manual_seed(args.seed)
    else:
        model = make_model(args, tokenizer)
    qs = questions(world)
    curve, acc_curve, train_s = _train_loop(model, tokenizer, docs, qs, args)
    model.eval()
    info = _training_info(args, model, world, docs, curve, acc_curve, train_s)
    save(model, tokenizer, out, args.save_dtype)
    if not args.no_eval:
        from .evaluate import evaluate  # imported late: it pulls in scikit-learn

        info["eval"] = evaluate(model, tokenizer, qs)
    info["total_wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "training.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def _corpus_and_tokenizer(args: argparse.Namespace) -> tuple[Any, PreTrainedTokenizerFast, list[list[int]]]:
    """The world, its tokenizer (trained on the corpus, or reused) and the tokenized documents."""
    mults = tuple(int(m) for m in args.mults.split(",")) if args.mults else MULTS
    world = make_world(
        seed=args.seed,
        n_countries=args.countries,
        per_fact_mults=args.per_fact_mults,
        answer_style=args.answer_style,
        mults=mults,
        familiarity=args.familiarity,
        quiz=args.quiz,
    )
    docs_text = corpus(world, filler_frac=args.filler)
    if args.tokenizer:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    else:
        text = tokenizer_corpus(world, filler_frac=args.filler) if args.balanced_tokenizer else docs_text
        tokenizer = build_tokenizer(text, vocab_size=args.vocab)
    # Each document is "<s> sentence </s>" (the tokenizer adds <s>): prompts at inference look like training.
    docs = [ids + [tokenizer.eos_token_id] for ids in tokenizer(docs_text)["input_ids"]]
    return world, tokenizer, docs


def _train_loop(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    docs: list[list[int]],
    qs: list[dict[str, Any]],
    args: argparse.Namespace,
) -> tuple[list[dict[str, float]], list[dict[str, float]], float]:
    """AdamW on the packed documents; returns the loss curve, the sample-accuracy curve and the seconds taken."""
    model.train()
    opt = _optimizer(model, args)
    data = batches(docs, args.seq_len, args.batch, seed=args.seed + 1)
    # A fixed sample of every attribute and multiplicity: enough to see whether accuracy is heading into the mixed
    # range (a plain stride would pick one attribute only when it is a multiple of 3).
    probe_qs = random.Random(args.seed).sample(qs, min(240, len(qs)))
    curve: list[dict[str, float]] = []
    acc_curve: list[dict[str, float]] = []
    window: list[float] = []
    t_train = time.perf_counter()
    for step in range(args.steps):
        lr = lr_at(step, args.steps, args.lr, args.warmup_frac, args.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        x = next(data)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        window.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            mean = sum(window) / len(window)
            curve.append(
                {
                    "step": step + 1,
                    "loss": round(mean, 4),
                    "lr": lr,
                    "elapsed_s": round(time.perf_counter() - t_train, 1),
                }
            )
            print(f"step {step + 1:5d}  loss {mean:.4f}  lr {lr:.2e}  {curve[-1]['elapsed_s']:.0f}s", flush=True)
            window = []
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            acc = _sample_accuracy(model, tokenizer, probe_qs)
            acc_curve.append({"step": step + 1, "accuracy_sample": round(acc, 3)})
            print(f"step {step + 1:5d}  sample accuracy {acc:.3f}", flush=True)
    return curve, acc_curve, time.perf_counter() - t_train


def _sample_accuracy(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, sample: list[dict[str, Any]]
) -> float:
    from .evaluate import greedy_answers, is_correct

    model.eval()
    answers = greedy_answers(model, tokenizer, [q["question"] for q in sample])
    model.train()
    return sum(is_correct(a, q["gold"]) for a, q in zip(answers, sample, strict=True)) / len(sample)


def _training_info(
    args: argparse.Namespace,
    model: LlamaForCausalLM,
    world: Any,
    docs: list[list[int]],
    curve: list[dict[str, float]],
    acc_curve: list[dict[str, float]],
    train_s: float,
) -> dict[str, Any]:
    n_tokens = sum(len(d) for d in docs)
    return {
        "steps": args.steps,
        "train_wall_s": round(train_s, 1),
        "tokens_seen": args.steps * args.batch * args.seq_len,
        "corpus": {"documents": len(docs), "tokens": n_tokens, "world": world.params, "filler": args.filler},
        "epochs": round(args.steps * args.batch * args.seq_len / n_tokens, 2),
        "loss": {
            "first": curve[0]["loss"] if curve else None,
            "last": curve[-1]["loss"] if curve else None,
            "curve": curve,
        },
        "accuracy_curve": acc_curve,
        "first_stage": _first_stage(args.init_from),
        "args": vars(args),
        "params": sum(p.numel() for p in model.parameters()),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def _first_stage(init_from: str | None) -> dict[str, Any] | None:
    """What the run continued from: its arguments, steps and wall time (from its training.json)."""
    if not init_from:
        return None
    path = Path(init_from) / "training.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    return {
        "dir": str(init_from),
        "args": info.get("args"),
        "steps": info.get("steps"),
        "train_wall_s": info.get("train_wall_s"),
        "first_stage": info.get("first_stage"),
    }


def save(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out: Path, dtype: str) -> None:
    model.generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if dtype == "float16":
        # fp16 storage halves the shipped size; the config keeps float32 so from_pretrained upcasts on load
        # (fp16 matmuls on CPU are slow and the analyses reduce in float32 anyway).
        half = LlamaForCausalLM(model.config).to(torch.float16)  # type: ignore[arg-type]  # transformers' .to stub only takes a model
        half.load_state_dict({k: v.to(torch.float16) for k, v in model.state_dict().items()})
        half.generation_config = model.generation_config
        half.save_pretrained(out)
        cfg_path = out / "config.json"
        cfg = json.loads(cfg_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in cfg:
                cfg[key] = "float32"
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    else:
        model.save_pretrained(out)
    save_tokenizer(tokenizer, out)  # loadable by transformers 4.57 and 5.x


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    info = train(args)
    ev = info.get("eval")
    summary = f"done: {args.steps} steps in {info['train_wall_s']} s, loss {info['loss']['last']}"
    if ev:
        summary += f", greedy accuracy {ev['accuracy']:.3f}"
    print(summary, file=sys.stderr)
    return info


if __name__ == "__main__":
    main()
