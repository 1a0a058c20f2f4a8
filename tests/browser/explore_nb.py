"""A small explorer notebook for the JupyterLab and export tests, and what its kernel computes.

The drill-down's text carries `kernel_token(row, col)`, a hash that only the kernel computes when the analysis
runs for that cell: seeing it in the page proves the click reached the kernel and the kernel re-ran the drill for
exactly that (row, col), not that the front end echoed its own labels. The detail also has a bqplot bar chart
(grouped, two series) and a line chart, like the real drill-downs.
"""

from __future__ import annotations

import hashlib

ROWS, COLS = 6, 8

SETUP = f"""\
import hashlib
import numpy as np
import heatwidget as hw
from heatwidget.matrix import Chart, Detail, HeatMatrix, Series

def kernel_token(r, c):
    return hashlib.sha256(f"heatwidget:{{r}}:{{c}}".encode()).hexdigest()[:12]

def drill(m, r, c):
    v = float(m.values[r, c])
    return Detail(r, c, m.rows[r], m.cols[c], v, title=f"{{m.rows[r]}} x {{m.cols[c]}}",
                  charts=[Chart("top tokens", "bar", [Series("clean", ["a", "b", "c"], [0.5, 0.3, 0.2]),
                                                       Series("ablated", ["a", "b", "d"], [0.2, 0.3, 0.4])]),
                          Chart("per position", "line", [Series("KL", list(range(6)), [v * k for k in range(6)])])],
                  texts={{"kernel": f"kernel drill r={{r}} c={{c}} token={{kernel_token(r, c)}}"}},
                  reruns={{f"row {{r}} again": lambda: m}})

m = HeatMatrix(np.arange({ROWS * COLS}, dtype=np.float32).reshape({ROWS}, {COLS}) / 7,
               [f"L{{i}}" for i in range({ROWS})], [f"Gen{{j}}" for j in range({COLS})], title="test map",
               row_title="layer", col_title="generated token", metric="KL (nats)").with_drill(drill)
ex = hw.explore(m)
ex"""

# A click made in the kernel before the notebook is saved, so an exported page has a detail area (bqplot charts).
EXPORT_SELECTED = (2, 5)
SELECT = f"""\
ex.heatmap.selected = {EXPORT_SELECTED}
ex.wait()
print(ex.last_detail.texts["kernel"])"""


# A second explorer in the same page (the export precomputes every explorer).
SECOND = """\
m2 = HeatMatrix(np.random.default_rng(0).random((4, 5)).astype(np.float32), [f"R{i}" for i in range(4)],
                [f"C{j}" for j in range(5)], title="second map").with_drill(drill)
hw.explore(m2)"""


def kernel_token(r: int, c: int) -> str:
    """What the notebook's kernel puts in the detail of cell (r, c)."""
    return hashlib.sha256(f"heatwidget:{r}:{c}".encode()).hexdigest()[:12]


def cell_value(r: int, c: int) -> float:
    return (r * COLS + c) / 7
