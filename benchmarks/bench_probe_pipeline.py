"""The probe pipeline end to end, `hw.answer` → `hw.collect` → `hw.probe_auc`, against the way the LLMsKnow code does
it, on the demo model, the same questions, in one run.

    python benchmarks/bench_probe_pipeline.py                    # all demo questions, PAPER_POSITIONS, resid
    python benchmarks/bench_probe_pipeline.py --quick            # the first 200 questions
    python benchmarks/bench_probe_pipeline.py --questions 300 --site mlp_in --json --threads 1
    python benchmarks/bench_probe_pipeline.py --questions 60 --layers 1      # the smoke test's size

heatwidget: hw.answer(questions, required_positions=PAPER_POSITIONS) (batched greedy generation), hw.collect(answers,
            site=) (batched forwards, hooks gather the positions), hw.probe_auc(acts) (all cells as one batched fit).
reference:  one question at a time, as LLMsKnow does: model.generate (greedy, same max_new_tokens), label = a gold alias
            is a case-insensitive substring of the answer, exact answer = that alias (else the answer's first line:
            LLMsKnow asks an LLM, which the demo has not), its tokens = the smallest window whose decoding contains it;
            then one forward per question with output_hidden_states=True (resid; the last block's output by a hook,
            since Hugging Face's last hidden state is after the final norm) or a forward hook on the down-projection
            (mlp_in, LLMsKnow's TraceDict); then one sklearn LogisticRegression per (layer, position) on
            train_test_split(test_size=0.2, random_state=0): with its defaults (what LLMsKnow runs, timed as the
            reference) and to convergence (newton-cholesky, tol=1e-8: the optimum the AUCs are checked against).
Checks: the same questions kept and the same label for every one of them, and max |ΔAUC| vs converged sklearn
≤ 0.01. Reports each stage's time and ratio (reference / heatwidget) and the end-to-end ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_NEW_TOKENS = 24  # hw.answer's default


def run_heatwidget(lm, questions: list[dict], site: str, n_layers: int) -> tuple[dict[str, float], object, object]:
    import heatwidget as hw

    t: dict[str, float] = {}
    with hw.config(progress=False):  # bars would interleave with the report
        t0 = time.perf_counter()
        ans = hw.answer(lm, questions, max_new_tokens=MAX_NEW_TOKENS, required_positions=hw.PAPER_POSITIONS)
        t["answer"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        acts = hw.collect(lm, ans, hw.PAPER_POSITIONS, layers=list(range(n_layers)), site=site)
        t["collect"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = hw.probe_auc(acts)
        t["probe"] = time.perf_counter() - t0
    return t, ans, m


# ---- the reference: one question at a time -----------------------------------------------------------------------


def _label_and_exact(text: str, aliases: list[str]) -> tuple[int, str]:
    """LLMsKnow's rule: correct iff an alias is a case-insensitive substring; exact = the earliest (then longest)
    matching alias, else the answer's first non-empty line."""
    low = text.lower()
    hits = [
        (low.find(a.strip().lower()), -len(a.strip()), a.strip())
        for a in aliases
        if a.strip() and a.strip().lower() in low
    ]
    if hits:
        return 1, min(hits)[2]
    return 0, next((line.strip() for line in text.splitlines() if line.strip()), "")


def _smallest_window(decode, ids: list[int], start: int, target: str) -> tuple[int, int] | None:
    """LLMsKnow's token location: shrink the window from the right, then from the left, while it still decodes to a
    text containing the exact answer."""
    t = target.lower()
    n = len(ids)
    if not t or start >= n or t not in decode(ids[start:]).lower():
        return None
    hi = n - 1
    while hi > start and t in decode(ids[start:hi]).lower():
        hi -= 1
    lo = start
    while lo < hi and t in decode(ids[lo + 1 : hi + 1]).lower():
        lo += 1
    return lo, hi


def _positions(prompt_len: int, n: int, span: tuple[int, int]) -> list[int] | None:
    """PAPER_POSITIONS as token indices, or None when the row lacks one (as hw.answer's required_positions)."""
    s0, s1 = span
    idx = [
        prompt_len - 1,
        prompt_len,
        prompt_len + 1,
        s0 - 1,
        s0,
        s1,
        min(n - 1, s1 + 1),
        *[n + k for k in range(-8, 0)],
    ]
    return idx if all(0 <= i < n for i in idx) else None


def run_reference(lm, questions: list[dict], site: str, n_layers: int) -> tuple[dict[str, float], dict]:
    import torch

    model, tok = lm.model, lm.tokenizer
    stops = {int(tok.eos_token_id)} if tok.eos_token_id is not None else set()
    gc = getattr(model, "generation_config", None)
    if gc is not None and gc.eos_token_id is not None:
        stops |= {gc.eos_token_id} if isinstance(gc.eos_token_id, int) else set(gc.eos_token_id)

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=True)

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    rows = []  # (question index, label, full ids, token indices)
    for qi, q in enumerate(questions):
        prompt = tok(q["question"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(
                input_ids=prompt,
                attention_mask=torch.ones_like(prompt),
                do_sample=False,
                num_beams=1,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=tok.pad_token_id,
                eos_token_id=sorted(stops) or None,
            )
        gen = out[0, prompt.shape[1] :].tolist()
        gen = gen[: next((k + 1 for k, x in enumerate(gen) if x in stops), len(gen))]  # up to the first EOS
        aliases = q["gold"] if isinstance(q["gold"], list) else [q["gold"]]
        label, exact = _label_and_exact(decode(gen), aliases)
        ids = prompt[0].tolist() + gen
        span = _smallest_window(decode, ids, prompt.shape[1], exact)
        pos = _positions(prompt.shape[1], len(ids), span) if span else None
        if pos is not None:
            rows.append((qi, label, ids, pos))
    t["answer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    layers = list(lm.anatomy.layers)
    hooked = {
        "resid": {len(layers) - 1: layers[-1]},
        "mlp_in": {i: lm.anatomy.parts[i]["mlp.down"].module for i in range(len(layers))},
    }[site]
    feats = []
    traced: dict[int, torch.Tensor] = {}

    def trace(i: int, args: tuple, out: object) -> None:  # LLMsKnow's TraceDict: the module's input or output
        traced[i] = args[0] if site == "mlp_in" else (out[0] if isinstance(out, tuple) else out)

    handles = [m.register_forward_hook(lambda _m, a, o, i=i: trace(i, a, o)) for i, m in hooked.items()]
    try:
        for _qi, _label, ids, pos in rows:
            with torch.no_grad():
                hs = model(input_ids=torch.tensor([ids]), output_hidden_states=site == "resid").hidden_states
            per_layer = [traced[i] if i in traced else hs[i + 1] for i in range(n_layers)]
            feats.append(torch.stack([h[0, pos] for h in per_layer]).float().numpy())  # [L, P, d]
    finally:
        for h in handles:
            h.remove()
    t["collect"] = time.perf_counter() - t0
    return t, dict(index=np.array([r[0] for r in rows]), labels=np.array([r[1] for r in rows]), X=np.stack(feats))


def sklearn_aucs(X: np.ndarray, y: np.ndarray, **kw: object) -> tuple[np.ndarray, float]:
    """One LogisticRegression per (layer, position) on train_test_split(test_size=0.2, random_state=0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    tr, te = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0)
    _n, L, P, _d = X.shape
    aucs = np.empty((L, P))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning at its default max_iter=100
        for i in range(L):
            for j in range(P):
                clf = LogisticRegression(random_state=0, **kw).fit(X[tr, i, j], y[tr])
                aucs[i, j] = roc_auc_score(y[te], clf.decision_function(X[te, i, j]))
    return aucs, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=None, help="the first N demo questions (default: all)")
    ap.add_argument("--quick", action="store_true", help="the first 200 questions")
    ap.add_argument("--site", default="resid", choices=["resid", "mlp_in"])
    ap.add_argument("--layers", type=int, default=None, help="probe the first K layers only (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch and BLAS threads (default: torch's setting)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    import heatwidget as hw

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    qs = hw.demo_questions()[: args.questions or (200 if args.quick else None)]
    lm = hw.demo_model()
    with threadpool_limits(limits=threads), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n_layers = args.layers or len(lm.anatomy.layers)
        t_hw, ans, m = run_heatwidget(lm, qs, args.site, n_layers)
        t_ref, ref = run_reference(lm, qs, args.site, n_layers)
        _, t_ref["probe"] = sklearn_aucs(ref["X"], ref["labels"])  # LLMsKnow's: sklearn's defaults
        converged, t_conv = sklearn_aucs(ref["X"], ref["labels"], solver="newton-cholesky", tol=1e-8, max_iter=1000)

    same_rows = bool(np.array_equal(ans.index, ref["index"]))
    same_labels = same_rows and bool(np.array_equal(ans.labels, ref["labels"]))
    dauc = float(np.abs(m.values - converged).max()) if same_rows else float("nan")
    total_hw, total_ref = sum(t_hw.values()), sum(t_ref.values())
    out = dict(
        n_questions=len(qs),
        n_kept=len(ans),
        n_correct=int(ans.labels.sum()),
        site=args.site,
        shape=list(ref["X"].shape),
        threads=threads,
        heatwidget_seconds={k: round(v, 3) for k, v in t_hw.items()},
        reference_seconds={k: round(v, 3) for k, v in t_ref.items()},
        ratio={k: round(t_ref[k] / t_hw[k], 2) for k in t_hw},
        end_to_end_ratio=round(total_ref / total_hw, 2),
        sklearn_converged_seconds=round(t_conv, 3),
        same_rows=same_rows,
        same_labels=same_labels,
        max_abs_dauc_vs_converged_sklearn=dauc,
    )
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"demo model, {len(qs)} questions ({len(ans)} kept, {out['n_correct']} correct), site {args.site}, "
        f"{len(hw.PAPER_POSITIONS)} positions, {threads} thread(s)"
    )
    print(f"{'stage':10s} {'heatwidget':>11s} {'reference':>11s} {'ratio':>7s}")
    for k in t_hw:
        print(f"{k:10s} {t_hw[k]:10.2f}s {t_ref[k]:10.2f}s {t_ref[k] / t_hw[k]:6.2f}×")
    print(f"{'total':10s} {total_hw:10.2f}s {total_ref:10.2f}s {total_ref / total_hw:6.2f}×")
    print(f"same questions kept: {same_rows}; same label for every question: {same_labels}")
    print(f"max |ΔAUC| vs sklearn to convergence (newton-cholesky, {t_conv:.2f} s): {dauc:.4f}")


if __name__ == "__main__":
    main()
