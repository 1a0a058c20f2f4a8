"""The widget through the real anywidget path: JupyterLab + kernel + Chromium.

A click and the keyboard reach the kernel as `selected_row/selected_col` (and `on_select`) for a widget created in
one cell and displayed in another; kernel-side changes (new matrix, status) redraw the view; Lab's dark theme
recolours it; arrow keys typed in the widget do not move Lab's active cell.
"""

from __future__ import annotations

from typing import Any

import pytest
from labserver import WIDGET_IMPORT, LabServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SETUP = (
    WIDGET_IMPORT
    + """
import numpy as np
clicks = []
m = HeatMatrix(np.arange(20, dtype=np.float32).reshape(4, 5), [f"L{i}" for i in range(4)],
               [f"Gen{j}" for j in range(5)], title="lab test", row_title="layer", col_title="token", metric="KL")
w = Heatmap(m, colormap="viridis")          # created here ...
w.on_select(lambda r, c: clicks.append((r, c)))
print("READY")
"""
)


@pytest.fixture(scope="module")
def lab(lab_server: LabServer) -> LabServer:
    # The session's one Lab server (conftest.py): starting a second one costs seconds on 2 cores.
    lab_server.add_notebook("widget.ipynb", [SETUP, "w  # ... displayed here", ""])
    return lab_server


def widget_pixel(page: Any, x: float, y: float) -> list[int]:
    return page.evaluate(
        """([x, y]) => { const c = document.querySelector('.heatwidget canvas.hw-base');
           const d = c.width / parseFloat(c.style.width);
           return Array.from(c.getContext('2d').getImageData(Math.floor(x * d), Math.floor(y * d), 1, 1).data); }""",
        [x, y],
    )


def test_click_keyboard_kernel_updates_and_theme_in_jupyterlab(lab: LabServer, browser: Any) -> None:
    ctx, page = lab.open(browser, "widget.ipynb")
    try:
        assert "READY" in lab.run_cell(page, 0)
        lab.run_cell(page, 1)
        root = page.locator(".heatwidget")
        root.wait_for(state="visible", timeout=30_000)
        page.wait_for_function("document.querySelector('.heatwidget')?.dataset.paints >= 1")

        # Click cell (row 2, col 3): the kernel's on_select sees full-matrix indices.
        x, y, w, h = (float(v) for v in root.get_attribute("data-plot").split(","))
        box = page.locator(".heatwidget canvas.hw-overlay").bounding_box()
        page.mouse.click(box["x"] + x + 3.5 * w / 5, box["y"] + y + 2.5 * h / 4)
        out = lab.run_cell(page, 2, "print(clicks, w.selected)")
        assert "[(2, 3)] (2, 3)" in out

        # Keyboard: arrows move the cursor inside the widget (not Lab's active cell), Enter selects.
        root.focus()
        active = page.evaluate("window.jupyterapp.shell.currentWidget.content.activeCellIndex")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")
        assert page.evaluate("window.jupyterapp.shell.currentWidget.content.activeCellIndex") == active
        out = lab.run_cell(page, 2, "print(clicks[-1])")
        assert "(1, 4)" in out

        # Kernel -> view: replace the matrix and report progress.
        lab.run_cell(
            page,
            2,
            "w.matrix = HeatMatrix(np.ones((6, 7), dtype=np.float32)); "
            "w.status = 'computing layer 3/8'; w.progress = 0.375",
        )
        page.wait_for_function("document.querySelector('.heatwidget').dataset.shape === '6x7'")
        status = page.locator(".heatwidget .hw-status")
        status.wait_for(state="visible")
        assert "computing layer 3/8" in status.text_content()

        # Dark theme: the canvas background follows --jp-layout-color0.
        light = widget_pixel(page, 2, 2)
        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_function(
            """() => { const c = document.querySelector('.heatwidget canvas.hw-base');
               return c.getContext('2d').getImageData(2, 2, 1, 1).data[0] < 100; }""",
            timeout=30_000,
        )
        dark = widget_pixel(page, 2, 2)
        assert sum(light[:3]) > 600 and sum(dark[:3]) < 200, (light, dark)
    finally:
        ctx.close()
