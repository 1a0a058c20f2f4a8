"""Matrices laid out by both figures: the kernel's SVG (heatwidget/_figure.py) and the widget's canvas (figure.ts).

`python tests/figure_layout_cases.py` writes js/test/figure_layout_cases.json: for each case the inputs the
TypeScript layout needs (labels of the drawn cells, titles, the value statistics its colour range is computed
from, notes) and what the SVG shows (every <text>: content, position, size, anchor, rotation; the colour range).
js/test/figure_parity.test.ts lays the same inputs out with figure.ts and compares; tests/test_figure_layout.py
checks the file is what _figure.py produces now. Both sides measure text the same way here (the kernel's
estimate, 0.6 × font size per character): the parity is about the layout rules, not about fonts.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from heatwidget import _figure  # noqa: E402

FIXTURE = ROOT / "js" / "test" / "figure_layout_cases.json"
SVG = "{http://www.w3.org/2000/svg}"
ANCHOR = {"start": "left", "middle": "center", "end": "right"}
BASELINE = {"hanging": "top", "central": "middle"}


def _cases() -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    nan_cells = rng.random((12, 9)).astype(np.float32)
    nan_cells[[1, 5, 7], [2, 0, 8]] = np.nan
    long_rows = [f"layer {i}: " + "attention.output.dense " * 3 for i in range(6)]
    long_cols = ["tab\there", "new\nline", "ünïcødé ✓ " * 4, "x" * 50, "🙂" * 30, "ok"]
    return [
        dict(
            name="small",
            values=np.arange(12, dtype=np.float32).reshape(3, 4),
            rows=["L0", "L1", "L2"],
            cols=["Gen0", "Gen1", "Gen2", "Gen3"],
            title="KL by layer",
            row_title="layer",
            col_title="generated token",
            metric="KL (nats)",
        ),
        dict(
            name="large, thinned",
            values=rng.random((180, 240)).astype(np.float32),
            rows=[f"L{i}" for i in range(180)],
            cols=[f"tok_{i}" for i in range(240)],
            row_title="layer",
            col_title="token",
            metric="JS",
        ),
        # Row 3 is never labelled: the left margin settles to the labels shown (horizontal column labels).
        dict(
            name="margin settles to the labels shown",
            values=rng.random((250, 8)).astype(np.float32),
            rows=[f"L{i}" if i != 3 else "an unlabelled long name" for i in range(250)],
            cols=[f"c{i}" for i in range(8)],
        ),
        dict(
            name="pooled for the static image",
            values=rng.random((1000, 300)).astype(np.float32),
            rows=[f"layer{i}" for i in range(1000)],
            cols=[str(i) for i in range(300)],
            title="big",
        ),
        dict(
            name="log scale",
            values=(10.0 ** rng.uniform(-4, 1, (8, 20))).astype(np.float32),
            log=True,
            rows=[f"L{i}" for i in range(8)],
            cols=[f"t{i}" for i in range(20)],
            metric="KL",
        ),
        dict(
            name="NaN cells",
            values=nan_cells,
            rows=[f"r{i}" for i in range(12)],
            cols=[f"c{i}" for i in range(9)],
            notes=["2 cells failed"],
        ),
        dict(
            name="long labels",
            values=rng.random((6, 6)).astype(np.float32),
            rows=long_rows,
            cols=long_cols,
            title="T" * 200,
            row_title="a very long row axis title " * 4,
            col_title="c" * 100,
            metric="m" * 70,
        ),
        dict(
            name="negative, diverging",
            values=rng.uniform(-3, 2, (10, 14)).astype(np.float32),
            colormap="rdbu",
            rows=[f"L{i}" for i in range(10)],
            cols=[f"w{i}" for i in range(14)],
            metric="logit diff",
        ),
        dict(
            name="one row, narrow",
            values=rng.random((1, 50)).astype(np.float32),
            rows=["only"],
            cols=[f"token{i}" for i in range(50)],
            width=300,
        ),
        dict(name="constant", values=np.full((4, 4), 2.5, dtype=np.float32), rows=list("abcd"), cols=list("wxyz")),
    ]


def _texts(svg: str) -> list[dict[str, Any]]:
    out = []
    for el in ET.fromstring(svg).iter(f"{SVG}text"):
        rot = re.match(r"rotate\((-?[\d.]+)", el.get("transform", ""))
        out.append(
            {
                "text": el.text or "",
                "x": float(el.get("x", "nan")),
                "y": float(el.get("y", "nan")),
                "size": int(el.get("font-size", "0")),
                "align": ANCHOR[el.get("text-anchor", "")],
                "baseline": BASELINE[el.get("dominant-baseline", "")],
                "angle": float(rot[1]) if rot else 0.0,
            }
        )
    return out


def _stats(values: np.ndarray) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    pos = finite[finite > 0]
    # minPositive null: no positive value (Infinity in the TypeScript stats).
    return {
        "min": float(finite.min()),
        "max": float(finite.max()),
        "minPositive": float(pos.min()) if pos.size else None,
        "finite": int(finite.size),
        "nan": int(values.size - finite.size),
    }


def build() -> dict[str, Any]:
    cases = []
    for c in _cases():
        values, width = c["values"], c.get("width", 640)
        opts = dict(colormap=c.get("colormap", "blues"), log=c.get("log", False))
        kw = {k: c.get(k, "") for k in ("title", "row_title", "col_title", "metric")}
        svg = _figure.figure_svg(values, c["rows"], c["cols"], notes=c.get("notes", ()), width=width, **kw, **opts)
        norm = _figure.color_norm(values, **opts)
        shown, fr, fc, notes = _figure.shown_matrix(values, norm, c.get("notes", ()), 256)

        def raw(labels: list, n: int, step: int) -> list:
            return [labels[i * step] if i * step < len(labels) else str(i * step) for i in range(n)]

        root = ET.fromstring(svg)
        cases.append(
            {
                "name": c["name"],
                "width": width,
                "colormap": opts["colormap"],
                "log": opts["log"],
                "rows": shown.shape[0],
                "cols": shown.shape[1],
                "rowLabels": raw(c["rows"], shown.shape[0], fr),
                "colLabels": raw(c["cols"], shown.shape[1], fc),
                "title": kw["title"],
                "rowTitle": kw["row_title"],
                "colTitle": kw["col_title"],
                "metric": kw["metric"],
                "notes": notes,
                "stats": _stats(values),
                "hasNaN": bool(np.isnan(values).any()),
                "expected": {
                    "width": float(root.get("width", "0")),
                    "height": float(root.get("height", "0")),
                    "norm": {"lo": norm.lo, "hi": norm.hi, "mode": norm.mode},
                    "texts": _texts(svg),
                },
            }
        )
    return {
        "_comment": "written by tests/figure_layout_cases.py from heatwidget/_figure.py; do not edit",
        "cases": cases,
    }


def dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


if __name__ == "__main__":
    FIXTURE.write_text(dumps(build()), encoding="utf-8")
    print(f"wrote {FIXTURE}")
