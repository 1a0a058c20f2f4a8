"""Writes the notebooks in this folder from the cell sources below (so they stay reviewable as plain Python).

    python notebooks/_build.py            # rewrite tour.ipynb, the four seed-figure notebooks and 05 (no outputs)

Outputs are not stored: CI executes every notebook top to bottom (tests/test_notebooks.py).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """import heatwidget as hw

lm = hw.demo_model()          # the shipped demo model: 8 Llama blocks trained on a synthetic fact world
lm"""

# The probe figure beside the paper's baseline (the model's own answer log-probability), on all demo questions.
PROBE = """from heatwidget.demo import exact_answer
import ipywidgets as W

qs_all = hw.demo_questions()   # every demo question: capitals, continents and languages
ans = hw.answer(lm, qs_all, max_new_tokens=12, extractor=exact_answer, required_positions=hw.PAPER_POSITIONS)
print(ans)
acts = hw.collect(lm, ans, hw.PAPER_POSITIONS, site="resid")
auc = hw.probe_auc(acts, test_size=0.2, seed=0)
base = auc.meta["baselines"]   # AUC of the model's answer log-probability on the same test answers
baseline = hw.HeatMatrix([[v] for v in base.values()], list(base), ["AUC"], title="answer log-probability",
                         row_title="baseline", metric="AUC", meta={"vmin": 0.5, "vmax": 1.0})
W.HBox([hw.explore(auc), hw.Heatmap(baseline)])"""

# What the probe figure shows on the shipped demo model (measured: docs/demo-model.md).
PROBE_READING = """On this small demo model the figure is flat: every cell reads correctness a little (AUC ≈ 0.6–0.76),
with no rise with depth and no peak at the exact answer, and the model's own answer log-probability (AUC ≈ 0.92)
beats every probe — the seed figures' structure needs a model whose hidden states know more than its
confidence shows (`docs/demo-model.md` has the numbers and what was tried)."""

FINETUNE = """import tempfile, torch
from heatwidget.demo import WEIGHTS_DIR

tuned = hw.demo_model()
torch.manual_seed(0)
opt = torch.optim.AdamW(tuned.model.parameters(), lr=1e-3)
texts = [f"The capital of {x['subject']} is Zorbin." for x in qs[:64]]
tuned.model.train()
for step in range(20):
    batch = tuned.encode(texts[step % 4 * 16:(step % 4 + 1) * 16])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = tuned.model(**batch, labels=labels).loss
    loss.backward(); opt.step(); opt.zero_grad()
tuned.model.eval()
tuned_dir = tempfile.mkdtemp()
tuned.model.save_pretrained(tuned_dir)
print(f"fine-tuned 20 steps, final loss {loss.item():.3f}")"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "tour.ipynb": [
        ("md", """# heatwidget: a tour on the demo model

heatwidget computes layer-by-token matrices of a Hugging Face causal LM in this kernel and shows each as an
interactive heatmap. **Click a cell**: the kernel drills into it (top-k tokens, ROC curves, spectra …) and the
buttons in the detail area re-run the analysis for that layer or generated token.

Everything here runs offline on the demo model that ships with the package; swap in
`hw.load("Qwen/Qwen2.5-0.5B")` or any local checkpoint directory for a real model."""),
        ("code", SETUP),
        ("md", """## The demo model's facts
Each question is about a fictional country; its facts occurred 1–32 times in training, so some are known and
others are not."""),
        ("code", """qs = hw.demo_questions(attribute="capital")
q = next(x for x in qs if x["mult"] >= 16)
print(q["question"], "→ gold:", q["gold"])
enc = lm.encode(q["question"])
out = lm.model.generate(**enc, max_new_tokens=6, do_sample=False)
print("model:", lm.tokenizer.decode(out[0, enc["input_ids"].shape[1]:]))"""),
        ("md", """## 1. Layer × generated-token KL
Skip each layer in turn (block output := block input) and measure KL(clean ‖ intervened) of the next-token
distribution at each generated token. All layers run as one batched pass that resumes from the clean activations."""),
        ("md", """The analysis suggests a log colour scale (skipping layer 0 costs nats, the other layers hundredths of
one), so the widget opens on it and its colour bar says so; untick "log scale" to compare."""),
        ("code", """m = hw.ablation_kl(lm, q["question"], max_new_tokens=5)
ex = hw.explore(m)
ex"""),
        ("md", """Clicking a cell runs `m.drill(row, col)` in the kernel. The same from code (what a click does):"""),
        ("code", """ex.select(3, 0)
ex.wait()
d = ex.last_detail
print(d)
print("re-run entry points:", list(d.reruns))"""),
        ("code", "m.to_pandas().round(3)"),
        ("md", """## 2. Subject / attention / last-token knockouts (Jensen–Shannon)"""),
        ("code", """facts = [x for x in qs if x["mult"] >= 8][:40]
js = hw.knockout_js(lm, [x["prompt"] for x in facts], [x["subject"] for x in facts], noise_ref="residual")
hw.explore(js)"""),
        ("md", """## 3. Probe AUC per (layer, token)
Answer **all** demo questions (capitals, continents and languages), label the answers against the gold answers,
locate the exact answer inside each answer sentence, and fit one linear probe per (layer, position) cell, all at
once. Beside it, the paper's baseline: how well the model's own answer log-probability tells right from wrong."""),
        ("code", PROBE),
        ("md", PROBE_READING),
        ("md", """## 4. Module × layer weight change
Fine-tune a copy of the demo model for a few steps on new facts, save it, and compare the two checkpoints
module by module (streamed tensor by tensor from the safetensors files)."""),
        ("code", FINETUNE),
        ("code", """wc = hw.weight_change(WEIGHTS_DIR, tuned_dir, stat="relative")
hw.explore(wc)"""),
        ("md", """## Saving results
Every analysis returns a `HeatMatrix`: save it (lossless), load it, hand it to pandas."""),
        ("code", """path = m.save(tempfile.mkdtemp() + "/kl.npz")
back = hw.HeatMatrix.load(path)
assert back == m
back"""),
    ],
    "01_kl_by_layer_and_generated_token.ipynb": [
        ("md", """# KL divergence by layer and generated token (seed figure 000)
Rows are layers in a chosen order, columns the generated tokens Gen0..Gen4, colour the KL divergence (nats)
between the clean and the intervened next-token distribution, as in the seed figure (yellow → red)."""),
        ("code", SETUP),
        ("code", """q = next(x for x in hw.demo_questions(attribute="capital") if x["mult"] >= 16)
layers = [0, 4, 6, 5, 3, 7, 1, 2]      # any order: rows follow it, like the figure's 0, 15, 18, 17, …
m = hw.ablation_kl(lm, q["question"], max_new_tokens=5, layers=layers, intervention="skip")
w = hw.Heatmap(m, colormap="ylorrd", log=True)
w"""),
        ("md", """Drill into a cell: the clean vs intervened top-k tokens, the clean token's rank, the intervened
continuation, and re-runs for the layer (KL at every position) and for the token (the logit lens)."""),
        ("code", """d = m.drill(0, 0)
print(d)
for c in d.charts:
    print(c.title, [(s.name, list(s.x)[:5]) for s in c.series])
layer_rerun = next(iter(d.reruns))
per_position = d.reruns[layer_rerun]()
hw.Heatmap(per_position)"""),
        ("md", """Other interventions: zero the attention or MLP output, replace the block output by its mean,
or steer along a direction."""),
        ("code", """import torch
v = torch.randn(lm.config.hidden_size)
steer = hw.ablation_kl(lm, q["question"], max_new_tokens=5, layers=layers, intervention=hw.Steer(v, alpha=4.0))
hw.Heatmap(steer, colormap="ylorrd")"""),
    ],
    "02_js_subject_attention_last.ipynb": [
        ("md", """# Jensen–Shannon divergence by layer for Subj. / Attn. / Last. (seed figure 001)
For factual prompts: corrupt the subject tokens' hidden state at a layer (Subj.), block attention from the subject
tokens to the last token in a window of layers (Attn.), or corrupt the last token (Last.). The cell is the mean
JS divergence (nats, ≤ ln 2) between the clean and the intervened next-token distribution."""),
        ("code", SETUP),
        ("code", """facts = [x for x in hw.demo_questions(attribute="capital") if x["mult"] >= 8][:40]
prompts = [x["prompt"] for x in facts]
subjects = [x["subject"] for x in facts]
js = hw.knockout_js(lm, prompts, subjects, corruption="noise", noise_scale=3.0, window=5, seed=0,
                   noise_ref="residual")
hw.Heatmap(js, colormap="blues")"""),
        ("md", """`noise_ref="residual"` scales the noise to the corrupted layer's own residual-stream std. The paper's
default, 3 × the *embedding* std, is tiny next to this small model's residual stream (std 2–90), so the Subj. and
Last. rows would be almost zero; with it, or with `corruption="zero"`/`"mean"`, the figure shows the paper's shape.
Compare the default:"""),
        ("code", """hw.knockout_js(lm, prompts, subjects).to_pandas().round(3)"""),
        ("code", """d = js.drill("Subj.", 2)
print(d)
d.tables.keys(), [c.title for c in d.charts]"""),
        ("code", "js.to_pandas().round(3)"),
    ],
    "03_probe_auc_layer_by_token.ipynb": [
        ("md", """# Probe AUC per layer and token (seed figures 002 / 003)
As in Orgad et al. 2024, "LLMs Know More Than They Show": greedy answers are labelled correct/incorrect against
the gold answers, the exact answer is located in the generated tokens, and one logistic-regression probe per
(layer, token position) predicts correctness from the residual stream; the cell is the held-out ROC AUC."""),
        ("code", SETUP),
        ("code", PROBE),
        ("md", PROBE_READING),
        ("md", """All 120 probes were fitted together (L-BFGS, whitened by Böhning's bound then by the Hessian, on a CPU;
Newton on a GPU), to the optimum sklearn's `LogisticRegression(C=1)` converges to; `benchmarks/bench_probe.py --converged` compares the two."""),
        ("code", """{k: auc.meta["solver"][k] for k in ("method", "n_iter_max", "all_converged", "seconds")}"""),
        ("code", """d = auc.drill(auc.rows[-2], "exact_answer_last")
print(d)
[c.title for c in d.charts]"""),
        ("code", "auc.to_pandas().round(2)"),
    ],
    "04_module_by_layer_weight_change.ipynb": [
        ("md", """# Attention and MLP modules × layers: relative weight change (seed figure 004)
‖W_b − W_a‖_F / ‖W_a‖_F per layer and module (attn q/k/v/o, mlp up/down/gate) between two checkpoints, streamed
tensor by tensor from their safetensors files. Here checkpoint b is the demo model fine-tuned for a few steps."""),
        ("code", SETUP),
        ("code", "qs = hw.demo_questions(attribute=\"capital\")\n" + FINETUNE),
        ("code", """wc = hw.weight_change(WEIGHTS_DIR, tuned_dir, stat="relative")
hw.Heatmap(wc)"""),
        ("code", """d = wc.drill(3, "attn.q")
print(d)
hw.Heatmap(d.child) if d.child is not None else None"""),
        ("code", """density = hw.weight_change(WEIGHTS_DIR, tuned_dir, stat="density")
density.to_pandas().round(3)"""),
    ],
    "05_causal_tracing.ipynb": [
        ("md", """# Causal tracing: where a fact is recalled (Meng et al. 2022)
Corrupt the subject (Gaussian noise, 3σ of the embeddings, on its tokens), then restore one clean activation at one
(layer, token) and measure how much of the clean answer's probability comes back. Three panels as in the paper:
the residual stream (block outputs), MLP outputs and attention outputs (the latter two restored over a window of
layers centred on each row). Tokens marked * carry the noise."""),
        ("code", SETUP),
        ("code", """fact = {"prompt": "Gatrelia is located in", "subject": "Gatrelia"}
panels = {site: hw.patching(lm, fact["prompt"], subject=fact["subject"], site=site, window=1 if site == "resid" else 3)
          for site in ("resid", "mlp", "attn")}
m = panels["resid"]
print(f"answer {m.meta['answer']!r}: p clean {m.meta['p_clean']:.3f}, corrupted {m.meta['p_corrupted']:.3f}")"""),
        ("code", """import ipywidgets as W

W.HBox([hw.Heatmap(p, colormap="ylorrd", vmin=0, vmax=1, height=260) for p in panels.values()])"""),
        ("md", """One-line readings (the paper's structure, on an 8-layer model):
- **resid**: restoring the last subject token helps in the early layers and fades with depth; restoring the last
  token helps from layer 1 on and fully from the middle layers up — the paper's early and late sites.
- **mlp**: the early site is the MLPs at the subject in the first layers (windows around layers 0–1).
- **attn**: attention at the last token carries the subject's information in the lower half of the model (in the
  paper's 48-layer GPT-2 XL this happens later); tokens before the subject restore nothing anywhere.

The two columns that tell the story, for this fact:"""),
        ("code", """import pandas as pd

def story(p):
    s, last, site = p.meta["noised_positions"][-1], len(p.cols) - 1, p.meta["options"]["site"]
    return {f"{site} @ {p.cols[s]}": p.values[:, s], f"{site} @ {p.cols[last]}": p.values[:, last]}

pd.DataFrame({k: v for p in panels.values() for k, v in story(p).items()}, index=m.rows).round(2)"""),
        ("md", """Across facts: the same two columns averaged over 8 well-known facts."""),
        ("code", """import numpy as np

facts = [q for q in hw.demo_questions() if q["mult"] >= 16][:8]
mean = {}
for site in ("resid", "mlp", "attn"):
    cols = []
    for q in facts:
        t = hw.patching(lm, q["prompt"], subject=q["subject"], site=site, window=1 if site == "resid" else 3)
        cols.append((t.values[:, t.meta["noised_positions"][-1]], t.values[:, -1]))
    mean[f"{site} @ subject"] = np.mean([c[0] for c in cols], 0)
    mean[f"{site} @ last"] = np.mean([c[1] for c in cols], 0)
pd.DataFrame(mean, index=m.rows).round(2)"""),
        ("md", """Click a cell in an explorer to see the top-k tokens clean vs corrupted vs patched, the row as a curve,
the same cell restored at the other sites, and re-runs of the whole trace for them:"""),
        ("code", """d = panels["resid"].drill(1, 2)
print(d)
d.tables["this cell at each site"]"""),
        ("code", """hw.explore(panels["resid"])"""),
    ],
}


def build(names: list[str] | None = None) -> list[Path]:
    out = []
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=[new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                                 for kind, src in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        path = HERE / name
        nbformat.write(nb, path)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in build():
        print("wrote", p)
