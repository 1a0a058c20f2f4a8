"""hw.patching vs a naive loop on a GPT-2-small-shaped random model (12 layers, d=768, vocab 50257, 20 tokens).

    python benchmarks/bench_patching.py [--threads 1] [--site resid] [--layers 12] [--tokens 20]

Prints the time of `hw.patching` (all layers × all tokens, noise on a two-token subject), of a naive loop (one
hooked forward of the model per (layer, token): embedding noise + the clean activation put back, reading the last
position's distribution), their ratio, the same against a naive loop that asks the model for the last position's
logits only (`logits_to_keep=1`, the naive loop's best case), the largest |Δ| between the results, and the work
done in token×block evaluations against the naive loop's. `hw.patching` is timed five times, interleaved with the
naive loop's layers, and the median is reported: on a shared machine both sides then see the same load.
Targets (issue 16): ratio ≥ 5× (goal 10×). One torch thread by default (the claim is a ratio, same threads both
sides). `--layers 2 --tokens 8` is a quick check that the script runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import heatwidget as hw  # noqa: E402
from heatwidget.divergence.knockout import corruption_noise, subject_positions  # noqa: E402
from heatwidget.divergence.patching import patch_window  # noqa: E402

WORDS = "the capital of Velmora Ostrand is a city in the north of the island ? Q : what is the".split()
SUBJECT = "Velmora Ostrand"


def build(tmp: Path, n_layers: int) -> hw.LM:
    """GPT-2-small shape (d=768, 12 heads, vocab 50257), random weights, saved and loaded like any model."""
    import transformers
    from tiny_models import tiny_tokenizer

    cfg = transformers.GPT2Config(
        n_layer=n_layers, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257, bos_token_id=1, eos_token_id=2
    )
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(tmp)
    tiny_tokenizer().save_pretrained(tmp)
    return hw.load(tmp)


def make_prompt(n_tokens: int) -> str:
    """n_tokens tokens with the BOS the tokenizer adds (the subject stays in)."""
    return " ".join(WORDS[: n_tokens - 1])


def naive(lm: hw.LM, prompt: str, site: str, window: int, keep_last: bool, between=None) -> tuple[np.ndarray, float]:
    """The obvious loop: per (layer, token) one forward with the noise hook and the restore hook. Returns
    (prob [L, T], seconds); `between()` runs after each layer, outside the timed segments."""
    mods = {"resid": list(lm.anatomy.layers), "mlp": list(lm.anatomy.mlp), "attn": list(lm.anatomy.attn)}[site]
    ids = lm.encode(prompt)["input_ids"]
    n, n_layers = ids.shape[1], lm.n_layers
    kw = {"logits_to_keep": 1} if keep_last else {}
    pos = subject_positions(lm, prompt, SUBJECT)
    noise = torch.zeros(n, 768)
    noise[pos] = corruption_noise(0, 0, 0, 0, len(pos), 768) * 3.0 * float(lm.anatomy.embed.weight.detach().std())
    spent = 0.0
    with torch.inference_mode():
        t0 = time.perf_counter()
        with hw.hooks.capture(mods) as clean:
            answer = int(lm.model(input_ids=ids, **kw).logits[0, -1].argmax())
        out = np.zeros((n_layers, n), np.float32)
        for layer in range(n_layers):
            for t in range(n):
                js = [layer] if site == "resid" else patch_window(layer, window, n_layers)
                edits = [hw.hooks.replace(mods[j], clean[j][:, t], positions=t) for j in js]
                noisy = hw.hooks.add(lm.anatomy.embed, noise)
                with hw.hooks.stack(noisy, *edits):
                    logits = lm.model(input_ids=ids, **kw).logits[0, -1]
                out[layer, t] = float(torch.softmax(logits.float(), -1)[answer])
            spent += time.perf_counter() - t0
            if between is not None:
                between()
            t0 = time.perf_counter()
    return out, spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--site", default="resid", choices=["resid", "mlp", "attn"])
    ap.add_argument("--window", type=int, default=1)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lm = build(Path(tmp), args.layers)
        prompt = make_prompt(args.tokens)
        n = int(lm.encode(prompt)["input_ids"].shape[1])
        run = lambda: hw.patching(lm, prompt, subject=SUBJECT, site=args.site, window=args.window)  # noqa: E731
        m = run()  # warm-up
        times: list[float] = []

        def sample() -> None:
            if len(times) < 5:
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)

        ref, t_naive = naive(
            lm, prompt, args.site, args.window, keep_last=False, between=lambda: sample() if len(times) < 5 else None
        )
        ref_last, t_last = naive(lm, prompt, args.site, args.window, keep_last=True)
        while len(times) < 5:
            sample()
        fast = float(np.median(times))
        delta = float(max(np.abs(m.values - ref).max(), np.abs(m.values - ref_last).max()))
        work = m.meta["work"]
        print(
            f"model: GPT-2 shape, {lm.n_layers} layers, d=768, vocab 50257; prompt {n} tokens; site {args.site}; "
            f"{args.threads} thread(s); engine {m.meta['engine']}"
        )
        print(f"hw.patching           {fast * 1e3:9.1f} ms (median of {len(times)})")
        print(f"naive loop            {t_naive * 1e3:9.1f} ms  ratio {t_naive / fast:5.1f}x")
        print(f"naive, last logits    {t_last * 1e3:9.1f} ms  ratio {t_last / fast:5.1f}x")
        ours, theirs = work["token_block_evaluations"], work["naive_token_block_evaluations"]
        print(f"token×block evaluations {ours} vs naive {theirs} ({theirs / max(1, ours):.1f}x fewer)")
        print(f"max |Δ| vs naive: {delta:.2e}")
        ok = t_naive / fast >= 5 and delta <= 1e-5
        print(
            f"SUMMARY ratio {t_naive / fast:.1f}x (best-case naive {t_last / fast:.1f}x), |Δ| {delta:.1e}: "
            f"{'meets' if ok else 'MISSES'} ≥5× and ≤1e-5"
        )


if __name__ == "__main__":
    main()
