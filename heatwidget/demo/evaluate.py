"""Evaluate a demo-model directory: greedy accuracy by multiplicity, layer-skip KL, correctness-probe AUC.

    python -m heatwidget.demo.evaluate DIR [--write] [--figure]

Self-contained (plain transformers + hooks of its own, scikit-learn for the probes) so it checks the
shipped weights independently of the analyses in heatwidget proper. ``--figure`` adds the probe figure as the
tour computes it (``hw.answer`` → ``hw.collect`` → ``hw.probe_auc`` on every demo question) and checks it
against the shape of the paper's probe figure (``FIGURE_TARGETS``). ``--write`` stores the result in DIR/training.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .world import make_world, questions


def _layers(model: Any) -> torch.nn.ModuleList:
    return model.model.layers  # the demo model is a LlamaForCausalLM


def _length_groups(ids: Sequence[Sequence[int]], chunk: int) -> Iterator[list[int]]:
    """Indices grouped by token length, in chunks: batches need no padding, so no position-id subtleties."""
    by_len: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(ids):
        by_len[len(x)].append(i)
    for n in sorted(by_len):
        idx = by_len[n]
        for s in range(0, len(idx), chunk):
            yield idx[s : s + chunk]


def _block_output(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@contextmanager
def skip_layer(model: torch.nn.Module, layer: int) -> Iterator[None]:
    """Block ``layer`` passes its input through unchanged (output := input)."""

    def hook(_mod: torch.nn.Module, args: tuple, kwargs: dict, out: Any) -> Any:
        h = args[0] if args else kwargs["hidden_states"]
        return (h,) + tuple(out[1:]) if isinstance(out, tuple) else h

    handle = _layers(model)[layer].register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def greedy_answers(
    model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int = 12, chunk: int = 128
) -> list[str]:
    """Greedy continuations (special tokens dropped, cut at the first newline)."""
    ids = tokenizer(list(prompts))["input_ids"]
    answers = [""] * len(ids)
    for idx in _length_groups(ids, chunk):
        x = torch.tensor([ids[i] for i in idx])
        gen = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        for i, row in zip(idx, gen[:, x.shape[1] :], strict=True):
            answers[i] = tokenizer.decode(row, skip_special_tokens=True).split("\n")[0].strip()
    return answers


def is_correct(answer: str, gold: str | Sequence[str]) -> bool:
    """The label: any gold alias is a case-insensitive substring of the answer."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    return any(g.lower() in answer.lower() for g in golds)


@torch.no_grad()
def last_token_states(
    model: Any, tokenizer: Any, prompts: Sequence[str], forward_hook: Callable[[], Any] | None = None, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Residual stream at the last prompt token, [N, L+1, d] (0 = embeddings, l = output of block l-1),
    and the next-token log-probabilities there, [N, V]."""
    ids = tokenizer(list(prompts))["input_ids"]
    layers = _layers(model)
    n_layers, d = len(layers), model.config.hidden_size
    states = np.zeros((len(ids), n_layers + 1, d), dtype=np.float32)
    logp = np.zeros((len(ids), model.config.vocab_size), dtype=np.float32)
    captured: dict[int, torch.Tensor] = {}

    def pre(_mod: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        captured[0] = (args[0] if args else kwargs["hidden_states"])[:, -1].float()

    def post(i: int) -> Callable[..., None]:
        def fn(_mod: torch.nn.Module, _args: tuple, out: Any) -> None:
            captured[i + 1] = _block_output(out)[:, -1].float()

        return fn

    handles = [layers[0].register_forward_pre_hook(pre, with_kwargs=True)]
    handles += [layer.register_forward_hook(post(i)) for i, layer in enumerate(layers)]
    try:
        for idx in _length_groups(ids, chunk):
            x = torch.tensor([ids[i] for i in idx])
            logits = model(input_ids=x).logits[:, -1].float()
            logp[idx] = torch.log_softmax(logits, -1).numpy()
            states[idx] = torch.stack([captured[i] for i in range(n_layers + 1)], 1).numpy()
    finally:
        for h in handles:
            h.remove()
    return states, logp


@torch.no_grad()
def layer_skip_kl(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str]) -> list[float]:
    """Mean KL(p_clean || p_skip) of the next-token distribution at the last prompt token, per skipped
    layer."""
    _, clean = last_token_states(model, tokenizer, prompts)
    kls = []
    for layer in range(len(_layers(model))):
        with skip_layer(model, layer):
            _, skipped = last_token_states(model, tokenizer, prompts)
        kls.append(float((np.exp(clean) * (clean - skipped)).sum(-1).mean()))
    return kls


def probe_aucs(states: np.ndarray, labels: np.ndarray, train: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Held-out ROC AUC of an L2 logistic regression (C=1, as probe_auc's sklearn reference) per layer, plus
    controls."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    test = ~train
    if len(set(labels[train])) < 2 or len(set(labels[test])) < 2:
        return {"auc": [float("nan")] * states.shape[1], "note": "one class only"}

    def fit(x: np.ndarray, y: np.ndarray) -> float:
        if np.ptp(x[train], axis=0).max() == 0:  # constant features (the embedding of the same last token)
            return 0.5
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(x[train], y[train])
        return float(roc_auc_score(y[test], clf.decision_function(x[test])))

    aucs = [fit(states[:, layer], labels) for layer in range(states.shape[1])]
    shuffled = np.random.default_rng(seed).permutation(labels)
    return {
        "auc": aucs,
        "shuffled_last": fit(states[:, -1], shuffled),
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
    }


def evaluate(model: torch.nn.Module, tokenizer: Any, qs: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (questions and cloze prompts), layer-skip KL and probe AUC on the QA set ``qs``.

    The probes need scikit-learn (a dev dependency); without it they are left out, with a note.
    """
    model.eval()
    answers = greedy_answers(model, tokenizer, [q["question"] for q in qs])
    correct = np.array([is_correct(a, q["gold"]) for a, q in zip(answers, qs, strict=True)])
    cloze = greedy_answers(model, tokenizer, [q["prompt"] for q in qs])
    cloze_correct = np.array([is_correct(a, q["gold"]) for a, q in zip(cloze, qs, strict=True)])
    mult = np.array([q["mult"] for q in qs])
    attr = np.array([q["attribute"] for q in qs])
    mults = sorted(set(mult.tolist()))

    result: dict[str, Any] = {
        "n_questions": len(qs),
        "accuracy": float(correct.mean()),
        "accuracy_by_mult": {str(m): round(float(correct[mult == m].mean()), 3) for m in mults},
        "accuracy_by_attribute": {a: round(float(correct[attr == a].mean()), 3) for a in sorted(set(attr))},
        "capital_accuracy_by_mult": {
            str(m): round(float(correct[(mult == m) & (attr == "capital")].mean()), 3) for m in mults
        },
        "cloze_accuracy": float(cloze_correct.mean()),
        # Per-question labels in question order ("1" = correct), compact: a reference for other analyses' tests.
        "correct": "".join("1" if c else "0" for c in correct),
        "examples": [
            {"question": q["question"], "gold": q["gold"], "answer": a, "mult": q["mult"]}
            for q, a in list(zip(qs, answers, strict=True))[:: max(1, len(qs) // 12)]
        ],
    }
    prompts = [q["question"] for q in qs]
    result["skip_kl"] = [round(v, 4) for v in layer_skip_kl(model, tokenizer, prompts)]
    try:
        from sklearn.metrics import roc_auc_score
    except ImportError:
        result["probe_note"] = "scikit-learn is not installed: probes skipped"
        return result
    states, _ = last_token_states(model, tokenizer, prompts)
    train = np.array([q.get("split", "train") == "train" for q in qs])
    probes = probe_aucs(states, correct.astype(int), train)
    result["probe_auc_last_q"] = [round(v, 3) for v in probes["auc"]]
    result["probe_shuffled_labels_last_layer"] = round(probes.get("shuffled_last", float("nan")), 3)
    result["probe_split"] = {"train": probes.get("n_train"), "test": probes.get("n_test")}
    cap = attr == "capital"
    probes_cap = probe_aucs(states[cap], correct[cap].astype(int), train[cap])
    result["probe_auc_last_q_capital"] = [round(v, 3) for v in probes_cap["auc"]]
    test = ~train
    if len(set(correct[test])) == 2:
        # How far fact frequency alone predicts correctness (the probe need not beat it).
        result["mult_baseline_auc"] = round(float(roc_auc_score(correct[test], np.log(mult[test]))), 3)
    return result


# The shape of the probe-AUC figures of Orgad et al. 2024 (AUC per layer × token), as numbers a checkpoint must
# reach: a mix of right and wrong answers, a strong best cell, AUC rising with depth, and the answer columns
# beating the last tokens.
FIGURE_TARGETS: dict[str, tuple[str, float]] = {
    "accuracy_min": ("accuracy", 0.45),
    "accuracy_max": ("accuracy", 0.85),
    "best_auc": ("best_auc", 0.85),
    "depth_rise": ("depth_rise", 0.05),
    "answer_over_tail": ("answer_over_tail", 0.05),
}


def figure_numbers(auc: Any, accuracy: float) -> dict[str, Any]:
    """The probe figure's shape in numbers, from a ``hw.probe_auc`` matrix (rows = layers, PAPER_POSITIONS cols).

    depth_rise: mean AUC over the last half of the layers minus the first half. answer_over_tail: in the last half
    of the layers, mean over ``last_q`` and the ``exact_answer_*`` columns minus the mean over ``-8 … -1``.
    """
    v = np.asarray(auc.values, dtype=np.float64)
    half = v.shape[0] // 2
    cols = [str(c) for c in auc.cols]
    answer_cols = [j for j, c in enumerate(cols) if c == "last_q" or c.startswith("exact_answer_")]
    tail_cols = [j for j, c in enumerate(cols) if c.lstrip("-").isdigit() and int(c) < 0]
    if not answer_cols or not tail_cols:
        raise ValueError(f"the matrix needs last_q/exact_answer_* and -8 … -1 columns, has {cols}")
    late = v[half:]
    out: dict[str, Any] = {
        "accuracy": round(float(accuracy), 3),
        "best_auc": round(float(v.max()), 3),
        "best_cell": [str(auc.rows[int(v.argmax()) // v.shape[1]]), cols[int(v.argmax()) % v.shape[1]]],
        "depth_rise": round(float(v[half:].mean() - v[:half].mean()), 3),
        "answer_over_tail": round(float(late[:, answer_cols].mean() - late[:, tail_cols].mean()), 3),
        "auc_by_layer": [round(float(x), 3) for x in v.mean(axis=1)],
        "auc_by_column_late": {c: round(float(x), 3) for c, x in zip(cols, late.mean(axis=0), strict=True)},
        "baselines": {k: round(float(x), 3) for k, x in auc.meta.get("baselines", {}).items()},
    }
    out["targets_met"] = {
        name: (float(out[key]) >= bound if not name.endswith("_max") else float(out[key]) <= bound)
        for name, (key, bound) in FIGURE_TARGETS.items()
    }
    return out


def probe_figure(
    lm: Any, qs: list[dict[str, Any]], batch_size: int = 64, site: str = "resid", answers: Any = None
) -> tuple[Any, Any, dict[str, Any]]:
    """The tour's probe figure on ``qs``: (answers, AUC matrix, figure_numbers + accuracy by multiplicity).

    ``site`` is ``hw.collect``'s: the tour probes the residual stream; "mlp_in", "mlp" and "attn" ask whether
    another read-out of the same layers carries the signal the residual stream lacks. ``answers``: the result of
    the tour's ``hw.answer`` call on ``qs`` when the caller already has it (it is the same for every site).
    """
    import heatwidget as hw

    from .world import exact_answer

    ans = answers
    if ans is None:
        ans = hw.answer(lm, qs, extractor=exact_answer, required_positions=hw.PAPER_POSITIONS, batch_size=batch_size)
    acts = hw.collect(lm, ans, hw.PAPER_POSITIONS, site=site, batch_size=batch_size)
    auc = hw.probe_auc(acts)
    nums = figure_numbers(auc, float(ans.labels.mean()))
    mult = np.array([qs[i]["mult"] for i in ans.index])
    nums["accuracy_by_mult"] = {str(m): round(float(ans.labels[mult == m].mean()), 3) for m in sorted(set(mult))}
    nums["n_answers"], nums["n_dropped"] = len(ans), int(ans.meta["n_dropped"])
    nums["site"] = site
    return ans, auc, nums


def format_figure(f: dict[str, Any]) -> str:
    met = f["targets_met"]
    return "\n".join(
        [
            f"probe figure ({f.get('site', 'resid')}) on {f['n_answers']} answers ({f['n_dropped']} dropped): "
            f"accuracy {f['accuracy']:.3f} "
            f"[{'ok' if met['accuracy_min'] and met['accuracy_max'] else 'MISS'} .45-.85]",
            "  by mult: " + "  ".join(f"{m}:{v:.2f}" for m, v in f["accuracy_by_mult"].items()),
            f"  best AUC {f['best_auc']:.3f} at {f['best_cell']} [{'ok' if met['best_auc'] else 'MISS'} >= .85]",
            f"  depth rise {f['depth_rise']:+.3f} [{'ok' if met['depth_rise'] else 'MISS'} >= .05]   by layer: "
            + " ".join(f"{x:.2f}" for x in f["auc_by_layer"]),
            f"  answer cols over -8..-1 (late layers) {f['answer_over_tail']:+.3f} "
            f"[{'ok' if met['answer_over_tail'] else 'MISS'} >= .05]",
            "  late-layer column means: " + " ".join(f"{c}:{v:.2f}" for c, v in f["auc_by_column_late"].items()),
            "  baselines: " + " ".join(f"{k}:{v:.3f}" for k, v in f["baselines"].items()),
        ]
    )


def format_report(ev: dict[str, Any]) -> str:
    if "probe_auc_last_q" not in ev:
        ev = {
            **ev,
            "probe_auc_last_q": [],
            "probe_auc_last_q_capital": [],
            "probe_split": None,
            "probe_shuffled_labels_last_layer": float("nan"),
        }
    lines = [
        f"greedy accuracy {ev['accuracy']:.3f} on {ev['n_questions']} questions (cloze {ev['cloze_accuracy']:.3f})",
        "by mult:      " + "  ".join(f"{m}:{v:.2f}" for m, v in ev["accuracy_by_mult"].items()),
        "capital mult: " + "  ".join(f"{m}:{v:.2f}" for m, v in ev["capital_accuracy_by_mult"].items()),
        "by attribute: " + "  ".join(f"{a}:{v:.2f}" for a, v in ev["accuracy_by_attribute"].items()),
        "skip KL (nats) by layer: " + "  ".join(f"{i}:{v:.3f}" for i, v in enumerate(ev["skip_kl"])),
        "probe AUC at last_q (0 = embeddings): "
        + "  ".join(f"{i}:{v:.2f}" for i, v in enumerate(ev["probe_auc_last_q"])),
        "  capital questions only:            "
        + "  ".join(f"{i}:{v:.2f}" for i, v in enumerate(ev["probe_auc_last_q_capital"])),
        f"  shuffled labels (last layer): {ev['probe_shuffled_labels_last_layer']:.2f}"
        f"   mult baseline: {ev.get('mult_baseline_auc', float('nan')):.2f}   split {ev['probe_split']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from ..probing.collect import COLLECT_SITES

    p = argparse.ArgumentParser(prog="python -m heatwidget.demo.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("dir", help="model directory written by heatwidget.demo.train")
    p.add_argument("--write", action="store_true", help="store the result in DIR/training.json")
    p.add_argument(
        "--figure", action="store_true", help="also compute the tour's probe figure and check it against FIGURE_TARGETS"
    )
    p.add_argument(
        "--site",
        default="resid",
        choices=list(COLLECT_SITES),
        help="what --figure probes (hw.collect's site; the tour's is resid)",
    )
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.dir)
    info_path = path / "training.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    world = info.get("corpus", {}).get("world", {"seed": 0, "n_countries": 400})
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    qs = questions(make_world(**world))
    ev = evaluate(model, tokenizer, qs)
    print(format_report(ev))
    if args.figure:
        from .._lm import load

        _ans, _auc, ev["probe_figure"] = probe_figure(load(path), qs, site=args.site)
        print(format_figure(ev["probe_figure"]))
    if args.write:
        info["eval"] = ev
        info_path.write_text(json.dumps(info, indent=1) + "\n")
        print(f"written to {info_path}", file=sys.stderr)
    return ev


if __name__ == "__main__":
    main()
