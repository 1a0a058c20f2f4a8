"""What a click on a probe-AUC cell shows: the ROC curve, probe scores by label, the examples the probe is surest
about (with the probed token marked in plain text, ⟦like this⟧), and re-runs of that cell at the other sites."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..analysis import Run
from ..matrix import Chart, Detail, HeatMatrix, Series
from ._logreg import roc_auc, roc_curve
from .positions import normalize_positions

__all__ = ["probe_drill", "marked_text", "TOP_K"]

TOP_K = 5
_CONTEXT_CHARS = 240  # prompt text kept before the probed token (few-shot prompts can be long)


def marked_text(tokenizer: Any, ids: list[int], t: int, left: str = "⟦", right: str = "⟧") -> tuple[str, str]:
    """(the sequence as text with token t wrapped in ⟦ ⟧, token t's text). Decodes prefixes rather than single
    tokens, so tokenizers that drop a word's leading space in isolation (SentencePiece) still read naturally."""
    before = tokenizer.decode(ids[:t])
    upto = tokenizer.decode(ids[: t + 1])
    whole = tokenizer.decode(ids)
    tok = upto[len(before) :] if upto.startswith(before) else tokenizer.decode([ids[t]])
    after = whole[len(upto) :] if whole.startswith(upto) else tokenizer.decode(ids[t + 1 :])
    if len(before) > _CONTEXT_CHARS:
        before = "…" + before[-_CONTEXT_CHARS:]
    return f"{before}{left}{tok}{right}{after}", tok


def _hist(scores: np.ndarray, y: np.ndarray, bins: int = 20) -> Chart:
    edges = np.histogram_bin_edges(scores, bins=bins)
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    series = [
        Series(name, centres, np.histogram(scores[y == v], bins=edges)[0].astype(float).tolist())
        for name, v in (("correct", 1), ("wrong", 0))
    ]
    return Chart(
        "Probe scores on the test split, by label", "hist", series, x_title="probe score (logit)", y_title="examples"
    )


def _examples(acts: Any, rows: np.ndarray, scores: np.ndarray, y: np.ndarray, pos_index: int) -> Any:
    import pandas as pd

    ans = acts.answers
    recs = []
    for i, s in zip(rows, scores, strict=True):
        t = int(acts.token_index[i, pos_index])
        text, tok = marked_text(ans.tokenizer, ans.ids[i], t)
        recs.append(
            {
                "score": float(s),
                "p_correct": float(1 / (1 + np.exp(-s))),
                "label": "correct" if y[i] else "wrong",
                "question": ans.questions[i],
                "answer": ans.answers[i],
                "exact_answer": ans.exact[i],
                "probed_token": tok,
                "token_index": t,
                "text": text,
                "example": int(ans.index[i]),
            }
        )
    return pd.DataFrame(recs)


def _rerun(acts: Any, meta: dict, layer_rows: list[int], position: str | int, site: str) -> Callable[[], HeatMatrix]:
    def run() -> HeatMatrix:
        from .collect import collect
        from .probe import probe_auc

        a2 = collect(acts.lm, acts.answers, positions=[position], layers=layer_rows, site=site)
        return probe_auc(
            a2, test_size=meta["test_size"], seed=meta["seed"], C=meta["C"], min_per_class=1
        )  # the same examples and split as the clicked matrix

    return run


def _roc(m: HeatMatrix, acts: Any, y: np.ndarray, r: int, c: int, det: Detail) -> tuple[float, np.ndarray]:
    """The ROC chart (with the answer log-prob baseline when there are answers) and the scores histogram."""
    meta = m.meta
    test = np.asarray(meta["test_idx"])
    scores = np.asarray(meta["test_scores"])[r, c].astype(np.float64)
    yt = y[test]
    auc = float(roc_auc(scores, yt)[0])
    fpr, tpr, _ = roc_curve(scores, yt)
    series = [Series(f"probe (AUC {auc:.3f})", fpr.tolist(), tpr.tolist())]
    base = meta.get("baselines") or {}
    if acts is not None and acts.answers is not None and "logprob_mean" in base:
        lp = acts.answers.logprob_scores()["logprob_mean"][test]
        bf, bt, _ = roc_curve(lp, yt)
        series.append(Series(f"answer log-prob (AUC {base['logprob_mean']:.3f})", bf.tolist(), bt.tolist()))
    series.append(Series("chance", [0.0, 1.0], [0.0, 1.0]))
    det.charts.append(
        Chart(
            "ROC on the test split (positive = correct)",
            "line",
            series,
            x_title="false positive rate",
            y_title="true positive rate",
        )
    )
    det.charts.append(_hist(scores, yt))
    return auc, scores


def _summary(m: HeatMatrix, y: np.ndarray, r: int, c: int, auc: float, scores: np.ndarray, det: Detail) -> None:
    meta = m.meta
    test = np.asarray(meta["test_idx"])
    yt = y[test]
    base = meta.get("baselines") or {}
    n_it = int(np.asarray(meta["n_iter"])[r, c])
    lines = [
        f"held-out ROC AUC {auc:.3f} on {len(test)} test examples ({int(yt.sum())} correct, "
        f"{int(len(yt) - yt.sum())} wrong); trained on {meta['n_train']}.",
        f"probe: L2 logistic regression, C={meta['C']}, {n_it} iterations of {meta['solver']['method']}"
        + ("" if bool(np.asarray(meta["converged"])[r, c]) else " (not converged)")
        + ".",
    ]
    lines += [f"baseline {k}: AUC {v:.3f}" for k, v in base.items()]
    det.texts["summary"] = "\n".join(lines)
    det.meta.update(
        auc=auc,
        baselines=dict(base),
        n_iter=n_it,
        test_idx=test,
        scores=scores,
        coef=np.asarray(meta["coef"])[r, c],
        intercept=float(np.asarray(meta["intercept"])[r, c]),
    )


def _surest_examples(acts: Any, test: np.ndarray, scores: np.ndarray, y: np.ndarray, c: int, det: Detail) -> None:
    order = np.argsort(-scores, kind="stable")
    k = min(TOP_K, len(order))
    top = _examples(acts, test[order[:k]], scores[order[:k]], y, c)
    low = _examples(acts, test[order[::-1][:k]], scores[order[::-1][:k]], y, c)
    det.tables["scored most likely correct"] = top
    det.tables["scored most likely wrong"] = low
    for name, df in (("surest correct", top), ("surest wrong", low)):
        if len(df):
            row = df.iloc[0]
            det.texts[f"example {name} (p={row.p_correct:.2f}, really {row.label})"] = row.text


def probe_drill(run: Run, acts: Any, y: np.ndarray, m: HeatMatrix, r: int, c: int) -> Detail:
    """What a click on cell (r, c) of a probe_auc matrix shows (acts None for plain arrays: no examples, no
    re-runs). The re-runs cover the other sites probe_auc declares (its `site` option's choices)."""
    det = m.cell(r, c)
    auc, scores = _roc(m, acts, y, r, c, det)
    _summary(m, y, r, c, auc, scores, det)
    if acts is None or acts.answers is None:
        return det
    _surest_examples(acts, np.asarray(m.meta["test_idx"]), scores, y, c, det)
    if acts.lm is not None:
        position = normalize_positions([acts.positions[c]])[0]
        for site in run.analysis.option("site").choices or ():
            if site != acts.site:
                det.reruns[f"site={site}: every layer at token {m.cols[c]}"] = _rerun(
                    acts, m.meta, list(acts.layers), position, site
                )
    return det
