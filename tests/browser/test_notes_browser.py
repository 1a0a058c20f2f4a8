"""The kernel's notes (an analysis's meta["notes"], cells a log scale cannot show) reach the view, as text."""

from __future__ import annotations

from typing import Any

import numpy as np
from test_heatmap_browser import mount, root

from heatwidget.matrix import HeatMatrix
from heatwidget.widget import Heatmap


def test_kernel_notes_are_drawn_above_the_figure(page: Any) -> None:
    hostile = "b: layer 1 attn.q (<img src=x onerror=alert(1)>) has 1 NaN value: shown as n/a"
    m = HeatMatrix(np.array([[0.0, 1.0], [np.nan, 10.0]]), meta={"notes": [hostile]})
    plain = mount(page, Heatmap(HeatMatrix(m.values)))
    noted = mount(page, Heatmap(m, log=True))
    notes = root(page, 1).get_attribute("data-notes").split(" | ")
    assert notes[:2] == [
        hostile,
        "log scale: 1 of 3 cells are zero or negative and cannot be shown on it (drawn in the lowest colour)",
    ]
    assert root(page, 0).get_attribute("data-notes") == ""
    assert noted["plot"][1] > plain["plot"][1]  # the note lines push the plot down: they are drawn
    assert root(page, 1).locator("img").count() == 0  # canvas text, never HTML
