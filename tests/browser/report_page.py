"""Reading an exported report: which explorers it holds and which of their cells have precomputed detail views.

The page's saved widget state says it (each explorer heatmap's `detail_cells`: int32 flat indices, base64 in the
state), so tests click cells they know are precomputed, and ones they know are not, without guessing.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STATE = re.compile(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>', re.S)
VIEW = re.compile(r'<script type="application/vnd.jupyter.widget-view\+json">(.*?)</script>', re.S)


@dataclass
class ExplorerInfo:
    rows: list[str]
    cols: list[str]
    precomputed: list[tuple[int, int]]  # in stack order

    @property
    def missing(self) -> list[tuple[int, int]]:
        have = set(self.precomputed)
        return [(r, c) for r in range(len(self.rows)) for c in range(len(self.cols)) if (r, c) not in have]


def _state(text: str) -> dict[str, Any]:
    return json.loads(STATE.search(text).group(1))["state"]


def _displayed_explorers(state: dict, ids: list[str]) -> list[dict]:
    """The explorer models among the displayed models and inside their containers (e.g. an HBox beside a
    baseline heatmap), in page order."""
    out = []
    for model_id in ids:
        model = state.get(model_id)
        if model is None:
            continue
        if "heatwidget-explorer" in model["state"].get("_dom_classes", []):
            out.append(model)
            continue
        children = model["state"].get("children") or []
        out += _displayed_explorers(state, [c.removeprefix("IPY_MODEL_") for c in children if isinstance(c, str)])
    return out


def explorers(path: Path) -> list[ExplorerInfo]:
    """The explorers displayed in the page, in page order."""
    text = path.read_text(encoding="utf-8")
    state = _state(text)
    out = []
    for model in _displayed_explorers(state, [json.loads(m.group(1))["model_id"] for m in VIEW.finditer(text)]):
        children = [state[c.removeprefix("IPY_MODEL_")] for c in model["state"]["children"]]
        hm = next(c for c in children if "detail_index" in c["state"])
        st = hm["state"]
        cells = np.zeros(0, dtype="<i4")
        for buf in hm.get("buffers", []):
            if buf["path"] == ["detail_cells"]:
                cells = np.frombuffer(base64.b64decode(buf["data"]), dtype="<i4")
        ncols = len(st["col_labels"])
        out.append(ExplorerInfo(st["row_labels"], st["col_labels"], [(int(f) // ncols, int(f) % ncols) for f in cells]))
    return out


def chart_drawn(detail: Any) -> bool:
    """Some bqplot mark in the shown detail view has visible size (bars with height, a line with a path)."""
    return detail.evaluate("""(el) => {
      const bars = Array.from(el.querySelectorAll('.bqplot rect.bar'))
        .filter(r => parseFloat(r.getAttribute('height')) > 1);
      const lines = Array.from(el.querySelectorAll('.bqplot path.line'))
        .filter(p => (p.getAttribute('d') || '').length > 20);
      const svg = el.querySelector('.bqplot svg');
      const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
      return box.width > 100 && box.height > 100 && bars.length + lines.length > 0;
    }""")
