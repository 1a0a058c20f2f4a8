"""Make the README's pictures in docs/img/ from the shipped demo model, with heatwidget's own renderers.

    python scripts/make_images.py                          # every picture (a few minutes on 2 busy cores)
    python scripts/make_images.py --small --out /tmp/img   # smoke run: few questions and prompts

Each seed figure is computed on the demo model, drawn by `Heatmap(matrix).to_svg()` (the static SVG a notebook shows
where no widget manager runs) and rasterised to PNG by Chromium. The explorer picture is a real page: a notebook
that opens `hw.explore` on the KL figure and clicks a cell is executed and exported with heatwidget's offline HTML
export, opened in Chromium and photographed with its drill-down. `readings.json` holds one line per figure, computed
from the numbers drawn (the README quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("HEATWIDGET_CHROMIUM", "/usr/bin/chromium")
FIGURES = ("kl", "js", "probe", "weights")
WIDTH = 560  # px of each static figure (the README shows them at this size)


def _page_html(svgs: list[str], captions: list[str] | None = None) -> str:
    """The SVGs side by side on a white page (captions under each, when given)."""
    cells = []
    for i, svg in enumerate(svgs):
        cap = f"<figcaption>{captions[i]}</figcaption>" if captions else ""
        cells.append(f'<figure style="margin:0 12px 0 0">{svg}{cap}</figure>')
    return (
        "<!doctype html><html><head><meta charset='utf-8'><style>body{margin:0;background:#fff;"
        "font:12px sans-serif}#fig{display:inline-flex;align-items:flex-start;padding:6px}"
        "figcaption{color:#555;max-width:300px}</style></head>"
        f"<body><div id='fig'>{''.join(cells)}</div></body></html>"
    )


def rasterise(browser: Any, svgs: list[str], out: Path, captions: list[str] | None = None) -> Path:
    """PNG of one or more static SVGs (side by side), as Chromium draws them."""
    page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
    try:
        page.set_content(_page_html(svgs, captions))
        page.locator("#fig").screenshot(path=str(out))
    finally:
        page.close()
    return out


def kl_figure(lm: Any, qs: list[dict]) -> tuple[Any, str]:
    import heatwidget as hw

    q = next(x for x in qs if x["attribute"] == "capital" and x["mult"] == max(y["mult"] for y in qs))
    m = hw.ablation_kl(lm, q["question"], max_new_tokens=5)
    first = m.values[:, 0]
    rest = np.delete(first, int(np.argmax(first)))
    reading = (
        f"Skipping layer {m.rows[int(np.argmax(first))]} moves the first answer token's distribution by "
        f"{first.max():.1f} nats, every other layer by {rest.min():.2f}–{rest.max():.2f}: the log colour "
        "scale the analysis suggests shows both."
    )
    return m, reading


def js_figure(lm: Any, qs: list[dict], n: int) -> tuple[Any, str]:
    import heatwidget as hw

    top = max(x["mult"] for x in qs)
    facts = [x for x in qs if x["attribute"] == "capital" and x["mult"] >= top / 2][:n]
    m = hw.knockout_js(lm, [x["prompt"] for x in facts], [x["subject"] for x in facts], noise_ref="residual")
    peak = {r: m.cols[int(np.argmax(m.values[i]))] for i, r in enumerate(m.rows)}
    reading = (
        f"Corrupting the subject matters most at layer {peak['Subj.']}, blocking its attention to the last "
        f"token at layer {peak['Attn.']}, corrupting the last token at layer {peak['Last.']} "
        f"({len(facts)} cloze prompts of well-known facts)."
    )
    return m, reading


def probe_figure(lm: Any, qs: list[dict]) -> tuple[Any, Any, str]:
    import heatwidget as hw
    from heatwidget.demo.evaluate import probe_figure as compute

    _ans, auc, f = compute(lm, qs)
    auc.title = "Probe AUC per layer and token (resid)"  # not the model's path on this machine
    base = auc.meta["baselines"]
    names = list(base)
    baseline = hw.HeatMatrix(
        np.array([[base[k]] for k in names], dtype=np.float32),
        names,
        ["AUC"],
        title="log-probability",
        row_title="baseline",
        col_title="",
        metric="AUC",
        meta={"vmin": 0.5, "vmax": 1.0, "colormap": "blues"},
    )
    layer, col = f["best_cell"]
    reading = (
        f"{f['n_answers']} answers, {f['accuracy']:.0%} correct: AUC peaks at {f['best_auc']:.2f} "
        f"(layer {layer}, {col}), rises with depth by {f['depth_rise']:+.2f}, and in the later layers the "
        f"question and exact-answer columns lead the last tokens by {f['answer_over_tail']:+.2f}; the "
        f"model's mean answer log-probability scores {base.get('logprob_mean', float('nan')):.2f}."
    )
    return auc, baseline, reading


def weights_figure(lm: Any, qs: list[dict], workdir: Path) -> tuple[Any, str]:
    """The demo model against a copy fine-tuned for 20 steps on new 'facts' (as notebook 04 does)."""
    import torch

    import heatwidget as hw
    from heatwidget.demo import WEIGHTS_DIR

    tuned = hw.demo_model()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(tuned.model.parameters(), lr=1e-3)
    texts = [f"The capital of {x['subject']} is Zorbin." for x in qs if x["attribute"] == "capital"][:64]
    tuned.model.train()
    for step in range(20):
        batch = tuned.encode(texts[step % 4 * 16 : (step % 4 + 1) * 16])
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        tuned.model(**batch, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    tuned.model.save_pretrained(workdir / "tuned")
    m = hw.weight_change(WEIGHTS_DIR, workdir / "tuned", stat="relative")
    r, c = np.unravel_index(int(np.nanargmax(m.values)), m.shape)
    reading = (
        f"Twenty fine-tuning steps on new capitals change {m.cols[c]} at layer {m.rows[r]} most "
        f"({m.values[r, c]:.2%} of its norm); the figure shows which modules and layers moved."
    )
    return m, reading


EXPLORER_CELLS = [
    """\
import heatwidget as hw
lm = hw.demo_model()
qs = hw.demo_questions(attribute="capital")
q = next(x for x in qs if x["mult"] == max(y["mult"] for y in qs))
m = hw.ablation_kl(lm, q["question"], max_new_tokens=5)
ex = hw.explore(m)
ex""",
    """\
ex.select({row}, 0)
ex.wait()""",
]


def explorer_picture(browser: Any, out: Path, workdir: Path, row: int = 3) -> Path:
    """Export a notebook that explores the KL figure and clicks a cell; photograph the page."""
    import nbformat

    from heatwidget.export import export_notebook

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c.format(row=row)) for c in EXPLORER_CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = workdir / "explore.ipynb"
    nbformat.write(nb, path)
    # The kernel must import this checkout's heatwidget, whatever is installed.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    html = export_notebook(path, workdir / "explore.html", execute=True, timeout=600)
    page = browser.new_page(viewport={"width": 1100, "height": 1000}, device_scale_factor=1)
    try:
        page.goto(html.as_uri())
        page.wait_for_function("document.querySelector('.heatwidget')?.dataset.paints >= 1", timeout=60_000)
        page.wait_for_function("document.querySelectorAll('.heatwidget-detail .bqplot').length >= 1", timeout=60_000)
        page.wait_for_timeout(1500)  # bqplot animates its first draw
        box = page.locator(".heatwidget-explorer").first.bounding_box()
        # The heatmap, the buttons, the chart and the top of the tables: the rest of the detail is long.
        page.screenshot(
            path=str(out),
            full_page=True,
            clip={"x": box["x"], "y": box["y"], "width": box["width"], "height": min(box["height"], 1040)},
        )
    finally:
        page.close()
    return out


def make_images(out: Path, small: bool = False, explorer: bool = True) -> dict[str, Any]:
    """Write the pictures and readings.json to `out`; return {name: {"file", "reading"}}."""
    import torch
    from playwright.sync_api import sync_playwright

    import heatwidget as hw
    from heatwidget.widget import Heatmap

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    lm = hw.demo_model()
    qs = hw.demo_questions()
    probe_qs = qs[::6] if small else qs  # the small run keeps every attribute and multiplicity
    done: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for name in FIGURES:
                t0 = time.perf_counter()
                if name == "kl":
                    m, reading = kl_figure(lm, qs)
                    svgs = [Heatmap(m, colormap="ylorrd").to_svg(WIDTH)]
                elif name == "js":
                    m, reading = js_figure(lm, qs, 8 if small else 40)
                    svgs = [Heatmap(m).to_svg(WIDTH)]
                elif name == "probe":
                    m, base, reading = probe_figure(lm, probe_qs)
                    svgs = [Heatmap(m).to_svg(WIDTH), Heatmap(base).to_svg(300)]
                else:
                    m, reading = weights_figure(lm, qs, Path(tmp))
                    svgs = [Heatmap(m).to_svg(WIDTH)]
                file = rasterise(browser, svgs, out / f"{name}.png")
                done[name] = {"file": file.name, "reading": reading}
                print(f"{file}: {file.stat().st_size / 1e3:.0f} kB, {time.perf_counter() - t0:.0f} s", flush=True)
            if explorer:
                file = explorer_picture(browser, out / "explorer.png", Path(tmp))
                done["explorer"] = {
                    "file": file.name,
                    "reading": "hw.explore on the KL figure after a click on "
                    "layer 3 × Gen0: the kernel's drill-down beside the heatmap.",
                }
                print(f"{file}: {file.stat().st_size / 1e3:.0f} kB", flush=True)
        finally:
            browser.close()
    (out / "readings.json").write_text(json.dumps(done, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    ap.add_argument("--small", action="store_true", help="smoke run: a sixth of the questions, 8 prompts")
    ap.add_argument("--no-explorer", action="store_true", help="skip the exported-notebook screenshot")
    args = ap.parse_args(argv)
    for name, item in make_images(args.out, small=args.small, explorer=not args.no_explorer).items():
        print(f"{name}: {item['reading']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
