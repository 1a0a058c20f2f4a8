"""`HeatMatrix.explore()` opens the explorer without matrix.py importing widget code."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import heatwidget as hw
from heatwidget import matrix


def test_matrix_module_imports_no_widget_code() -> None:
    tree = ast.parse(Path(matrix.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    widgetish = {m for m in imported if m and any(w in m for w in ("explorer", "widget", "ipywidgets", "anywidget"))}
    assert widgetish == set(), widgetish


def test_explore_method_builds_the_same_explorer_as_hw_explore() -> None:
    m = hw.HeatMatrix(np.arange(6, dtype=np.float32).reshape(2, 3), title="t")
    ex = m.explore(colormap="viridis")
    assert isinstance(ex, hw.Explorer)
    assert ex.heatmap.colormap == "viridis"
    assert type(hw.explore(m)) is type(ex)
