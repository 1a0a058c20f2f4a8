"""The heatmap front end in a real Chromium: pixels, tooltip, selection, keyboard, resize, themes, export.

Each test renders the state that the Python `Heatmap` serialises (values as float32 bytes at a byte offset inside a
larger buffer, as ipywidgets delivers them) and checks what a user would see or do.
"""

from __future__ import annotations

import base64
import json
import xml.dom.minidom
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from heatwidget import _figure
from heatwidget.matrix import HeatMatrix
from heatwidget.widget import _BUNDLE as BUNDLE
from heatwidget.widget import Heatmap, value_stats

pytestmark = pytest.mark.browser


def wire_state(widget: Heatmap) -> dict[str, Any]:
    """The widget's state as ipywidgets sends it, with the bytes trait base64-encoded for page.evaluate."""
    return {
        k: base64.b64encode(v).decode("ascii") if isinstance(v, (bytes, bytearray, memoryview)) else v
        for k, v in widget.get_state().items()
    }


def mount(page: Any, widget: Heatmap, **opts: Any) -> dict:
    info = page.evaluate("([s, o]) => window.hw.mount(s, o)", [wire_state(widget), opts])
    info["plot"] = plot_rect(page, info["index"])
    return info


def root(page: Any, index: int) -> Any:
    return page.locator(".heatwidget").nth(index)


def plot_rect(page: Any, index: int) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in root(page, index).get_attribute("data-plot").split(","))
    return x, y, w, h


def cell_center(info: dict, shape: tuple[int, int], r: int, c: int) -> tuple[float, float]:
    x, y, w, h = info["plot"]
    return x + (c + 0.5) * w / shape[1], y + (r + 0.5) * h / shape[0]


def page_xy(page: Any, index: int, x: float, y: float) -> tuple[float, float]:
    box = page.locator(".heatwidget canvas.hw-overlay").nth(index).bounding_box()
    return box["x"] + x, box["y"] + y


def saved(page: Any, index: int) -> list[dict]:
    return page.evaluate("(i) => window.hw.models[i].saved", index)


def tooltip(page: Any, index: int) -> Any:
    return root(page, index).locator(".hw-tooltip")


def sample_matrix() -> HeatMatrix:
    v = np.array([[0.0, 1.0, 2.0, 3.0], [4.0, np.nan, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]], dtype=np.float32)
    return HeatMatrix(
        v,
        ["L0", "L1", "L2"],
        ["Gen0", "Gen1", "Gen2", "Gen3"],
        title="KL by layer",
        row_title="layer",
        col_title="generated token",
        metric="KL (nats)",
    )


def test_cells_are_painted_with_the_shared_lut(page: Any) -> None:
    m = sample_matrix()
    w = Heatmap(m, colormap="viridis")
    info = mount(page, w)
    assert info["hasCleanup"]
    norm = _figure.color_norm(m.values, "viridis")
    lut = _figure.build_lut("viridis")
    idx = _figure.lut_index(m.values, norm)
    for r in range(3):
        for c in range(4):
            x, y = cell_center(info, m.shape, r, c)
            px = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", [x, y])
            if np.isnan(m.values[r, c]):
                # The n/a hatch shows through: not a colour of the map.
                assert px[:3] not in lut[:, :3].tolist()
            else:
                assert px == lut[idx[r, c]].tolist(), (r, c)
    assert page.errors == []


def test_tooltip_shows_labels_and_value_as_text_never_html(page: Any) -> None:
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
    long = "x" * 10_000
    m = HeatMatrix(
        np.arange(6, dtype=np.float32).reshape(2, 3),
        [evil, long],
        ["a", "b", "c"],
        row_title="<b>rows</b>",
        metric="value",
    )
    info = mount(page, Heatmap(m))
    page.mouse.move(*page_xy(page, 0, *cell_center(info, m.shape, 0, 1)))
    tip = tooltip(page, 0)
    tip.wait_for(state="visible")
    text = tip.text_content()
    assert evil in text and "<b>rows</b>" in text and "value: 1" in text
    assert tip.locator("img, script, b").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.mouse.move(*page_xy(page, 0, *cell_center(info, m.shape, 1, 2)))
    text = tip.text_content()
    assert "x" * 2000 in text and "10,000 chars" in text
    # The 10,000-character label is cut on the axis, so the plot keeps most of the width.
    assert info["plot"][2] > 400
    assert page.errors == []


def test_click_selects_and_saves_both_traits_in_one_message(page: Any) -> None:
    m = sample_matrix()
    info = mount(page, Heatmap(m))
    page.mouse.click(*page_xy(page, 0, *cell_center(info, m.shape, 2, 1)))
    assert saved(page, 0) == [{"selected_row": 2, "selected_col": 1}]
    # The outline is drawn on the overlay canvas at the selected cell.
    x, y = cell_center(info, m.shape, 2, 1)
    _, _, cw, ch = info["plot"]
    edge = page.evaluate(
        """([x, y]) => { const c = document.querySelector('.heatwidget canvas.hw-overlay');
           return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data); }""",
        [int(x - cw / 8 + 1), int(y)],
    )
    assert edge[3] > 200  # an (anti-aliased) outline pixel at the left edge of the cell
    # A click outside the plot (on the colour bar) selects nothing.
    page.mouse.click(*page_xy(page, 0, info["plot"][0] + info["plot"][2] + 18, info["plot"][1] + 5))
    assert len(saved(page, 0)) == 1


def test_keyboard_moves_cursor_enter_selects_escape_clears(page: Any) -> None:
    m = sample_matrix()
    mount(page, Heatmap(m))
    root(page, 0).focus()
    for key in ["ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown", "ArrowDown", "ArrowLeft"]:
        page.keyboard.press(key)
    assert tooltip(page, 0).is_visible()
    assert "Gen1" in tooltip(page, 0).text_content()
    page.keyboard.press("Enter")
    assert saved(page, 0)[-1] == {"selected_row": 2, "selected_col": 1}
    page.keyboard.press("Escape")
    assert saved(page, 0)[-1] == {"selected_row": -1, "selected_col": -1}
    # Handled keys do not bubble to the notebook (JupyterLab would move between cells).
    bubbled = page.evaluate(
        """() => { let n = 0; document.addEventListener('keydown', () => n++, { once: true });
           document.querySelector('.heatwidget').dispatchEvent(
             new KeyboardEvent('keydown', { key: 'ArrowUp', bubbles: true, cancelable: true }));
           return n; }"""
    )
    assert bubbled == 0


def test_kernel_updates_redraw_matrix_selection_and_status(page: Any) -> None:
    m = sample_matrix()
    w = Heatmap(m)
    info = mount(page, w)
    paints = int(root(page, 0).get_attribute("data-paints"))
    # Replace the matrix from Python: values, shape and labels change in one update.
    w.matrix = HeatMatrix(np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2), title="new")
    st = wire_state(w)
    page.evaluate(
        "([p]) => window.hw.update(0, p)",
        [
            {
                k: st[k]
                for k in (
                    "values",
                    "shape",
                    "row_labels",
                    "col_labels",
                    "title",
                    "colormap",
                    "selected_row",
                    "selected_col",
                )
            }
        ],
    )
    page.wait_for_function(f"document.querySelector('.heatwidget').dataset.paints > {paints}")
    assert root(page, 0).get_attribute("data-shape") == "5x2"
    assert w.colormap == "rdbu"
    info = {"plot": plot_rect(page, 0)}
    x, y = cell_center(info, (5, 2), 2, 0)  # value -1/9: slightly blue of the white middle
    px = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", [x, y])
    lut = _figure.build_lut("rdbu")
    norm = _figure.color_norm(w.matrix.values, "rdbu")
    assert px == lut[_figure.lut_index(np.array([w.matrix.values[2, 0]]), norm)[0]].tolist()
    # Status and progress from long-running kernel work.
    page.evaluate("() => window.hw.update(0, { status: 'running layer 3/8', progress: 0.375 })")
    status = root(page, 0).locator(".hw-status")
    assert status.is_visible() and "running layer 3/8" in status.text_content()
    assert root(page, 0).locator("progress").evaluate("p => p.value") == 0.375
    page.evaluate("() => window.hw.update(0, { status: '', progress: null })")
    assert not status.is_visible()
    assert page.errors == []


def test_resize_follows_the_container_and_theme_follows_jp_variables(page: Any) -> None:
    m = sample_matrix()
    mount(page, Heatmap(m))
    canvas = root(page, 0).locator("canvas.hw-base")
    w0 = canvas.bounding_box()["width"]
    page.evaluate("() => { document.getElementById('host').style.width = '420px'; }")
    page.wait_for_function("document.querySelector('.heatwidget canvas.hw-base').getBoundingClientRect().width < 430")
    assert canvas.bounding_box()["width"] < w0
    light_bg = page.evaluate("() => window.hw.pixel(0, 2, 2)")
    assert light_bg[:3] == [255, 255, 255]
    # JupyterLab dark theme: --jp-* variables on the body and the theme flag Lab flips.
    page.evaluate(
        """() => { const s = document.body.style;
           s.setProperty('--jp-layout-color0', '#111111'); s.setProperty('--jp-ui-font-color1', '#eeeeee');
           s.setProperty('--jp-border-color1', '#555555');
           document.body.setAttribute('data-jp-theme-light', 'false'); }"""
    )
    page.wait_for_function("window.hw.pixel(0, 2, 2)[0] === 17")
    assert page.errors == []


def test_degenerate_and_extreme_shapes_render(page: Any) -> None:
    cases = [
        np.full((4, 5), 3.0),  # constant: degenerate colour range
        np.arange(300, dtype=np.float32).reshape(1, 300),  # 1 × N
        np.arange(300, dtype=np.float32).reshape(300, 1),  # N × 1
        np.array([[np.nan, 1.0], [np.nan, np.nan]]),  # mostly NaN
        np.array([[-5.0, 0.0, 5.0]]),  # diverging
    ]
    for i, v in enumerate(cases):
        info = mount(page, Heatmap(v))
        x, y, w, h = info["plot"]
        assert w > 100 and h >= 20, (i, info["plot"])
    assert page.errors == []
    # Constant matrix: every cell is the middle colour; one colour-bar tick.
    lut = _figure.build_lut("blues")
    info = {"plot": plot_rect(page, 0)}
    px = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", list(cell_center(info, (4, 5), 1, 1)))
    assert px == lut[128].tolist()


def test_log_scale_and_bad_front_end_input_do_not_crash(page: Any) -> None:
    m = HeatMatrix(np.array([[0.001, 0.1], [10.0, 1000.0]], dtype=np.float32))
    info = mount(page, Heatmap(m, log=True, colormap="ylorrd"))
    lut = _figure.build_lut("ylorrd")
    norm = _figure.color_norm(m.values, "ylorrd", log=True)
    idx = _figure.lut_index(m.values, norm)
    px = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", list(cell_center(info, m.shape, 1, 0)))
    assert px == lut[idx[1, 0]].tolist()
    # State that does not add up (wrong byte count) shows a message instead of throwing.
    st = wire_state(Heatmap(np.ones((2, 2))))
    st["shape"] = [3, 3]
    page.evaluate(
        "([s]) => { const el = document.createElement('div'); document.getElementById('host').append(el);"
        " return import(URL.createObjectURL(new Blob([s._esm], {type: 'text/javascript'})))"
        ".then(m => m.default.render({ model: new window.hw.FakeModel({...s, values: new ArrayBuffer(16)}),"
        " el })); }",
        [st],
    )
    err = page.locator(".hw-error").last
    err.wait_for(state="visible")
    assert "16 bytes but shape 3×3 needs 36" in err.text_content()


def test_save_png_and_svg_downloads(page: Any) -> None:
    m = HeatMatrix(
        np.arange(6, dtype=np.float32).reshape(2, 3),
        ["<script>alert(1)</script>", "b"],
        ["c0", "c1", "c2"],
        title="My / map",
    )
    mount(page, Heatmap(m))
    root(page, 0).hover()
    with page.expect_download() as dl:
        root(page, 0).locator("button.hw-save-png").click()
    d = dl.value
    assert d.suggested_filename == "My_map.png"
    data = open(d.path(), "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    with page.expect_download() as dl:
        root(page, 0).locator("button.hw-save-svg").click()
    svg = open(dl.value.path(), encoding="utf-8").read()
    doc = xml.dom.minidom.parseString(svg)  # well-formed XML
    assert doc.documentElement.tagName == "svg"
    assert not doc.getElementsByTagName("script")
    assert "&lt;script&gt;" in svg
    assert "data:image/png;base64," in svg


def test_downsampled_matrix_maps_selection_to_full_indices(page: Any) -> None:
    v = np.arange(200 * 300, dtype=np.float32).reshape(200, 300)
    w = Heatmap(v, max_cells=10_000, pooling="max")
    assert w.downsample["row_step"] * w.downsample["col_step"] >= 6
    info = mount(page, w)
    assert "downsampled for display: max of" in root(page, 0).get_attribute("data-notes")
    shape = tuple(w.shape)
    page.mouse.click(*page_xy(page, 0, *cell_center(info, shape, 3, 4)))
    got = saved(page, 0)[-1]
    assert got == {"selected_row": 3 * w.downsample["row_step"], "selected_col": 4 * w.downsample["col_step"]}
    w.set_state(got)  # what the kernel receives: indices valid in the full matrix
    assert w.selected == (got["selected_row"], got["selected_col"])
    page.mouse.move(*page_xy(page, 0, *cell_center(info, shape, 3, 4)))
    assert "block" in tooltip(page, 0).text_content()


def test_million_cells_paint_fast_and_hover_is_constant_time(page: Any) -> None:
    rng = np.random.default_rng(0)
    w = Heatmap(rng.standard_normal((1000, 1000)).astype(np.float32), colormap="viridis")
    info = mount(page, w)
    # Generous bound for a shared 2-core box; benchmarks/bench_render.py reports the real number.
    assert info["paintMs"] < 1000, info
    per_move = page.evaluate(
        """() => { const o = document.querySelector('.heatwidget canvas.hw-overlay');
           const b = o.getBoundingClientRect(); const t = performance.now();
           for (let i = 0; i < 200; i++) o.dispatchEvent(new PointerEvent('pointermove',
             { clientX: b.left + 100 + i, clientY: b.top + 100 + (i % 50), bubbles: true }));
           return (performance.now() - t) / 200; }"""
    )
    assert per_move < 5, per_move
    print(json.dumps({"paint_ms_1M": round(info["paintMs"], 1), "hover_ms": round(per_move, 3)}))


def test_too_wide_for_one_canvas_is_pooled_in_the_browser_with_a_note(page: Any) -> None:
    # 1 × 20,000 is small for the kernel (no pooling there) but wider than a canvas may be: the view pools.
    w = Heatmap(np.arange(20_000, dtype=np.float32).reshape(1, 20_000))
    assert w.downsample == {}
    info = mount(page, w)
    assert root(page, 0).get_attribute("data-shape") == "1x10000"
    assert "pooled in the browser: max of 1×2 cells" in root(page, 0).get_attribute("data-notes")
    x, y, pw, ph = info["plot"]
    page.mouse.click(*page_xy(page, 0, x + pw - 0.5, y + ph / 2))
    got = saved(page, 0)[-1]
    # Pointer positions are whole pixels (~17 blocks each here): the last pixel's block, in full-matrix columns.
    assert got["selected_row"] == 0 and 19_900 <= got["selected_col"] <= 19_998 and got["selected_col"] % 2 == 0
    assert page.errors == []


def test_colour_map_switch_recolours_without_relayout_and_hover_repaints_nothing(page: Any) -> None:
    # Issue 18: the frame caches. A switch between sequential maps recolours the cells through the new LUT but
    # keeps the layout; the log scale changes the ticks, so it lays out again; hovering redraws only the overlay.
    m = HeatMatrix(np.array([[0.5, 1.0, 2.0], [4.0, 8.0, 16.0]], dtype=np.float32), ["a", "b"], ["x", "y", "z"])
    info = mount(page, Heatmap(m, colormap="viridis"))
    r = root(page, 0)
    assert (r.get_attribute("data-layouts"), r.get_attribute("data-recolors")) == ("1", "1")

    def update(partial: dict, paints: int) -> None:
        page.evaluate("([p]) => window.hw.update(0, p)", [partial])
        page.wait_for_function(f"document.querySelector('.heatwidget').dataset.paints > {paints}")

    def pixel_index(colormap: str, log: bool = False) -> None:
        lut = _figure.build_lut(colormap)
        idx = _figure.lut_index(m.values, _figure.color_norm(m.values, colormap, log=log))
        for rr in range(2):
            for cc in range(3):
                px = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", list(cell_center(info, m.shape, rr, cc)))
                assert px == lut[idx[rr, cc]].tolist(), (colormap, log, rr, cc)

    update({"colormap": "ylorrd"}, 1)
    pixel_index("ylorrd")
    assert (r.get_attribute("data-layouts"), r.get_attribute("data-recolors")) == ("1", "2")
    update({"log": True}, 2)
    pixel_index("ylorrd", log=True)
    assert (r.get_attribute("data-layouts"), r.get_attribute("data-recolors")) == ("2", "3")
    info["plot"] = plot_rect(page, 0)
    paints = r.get_attribute("data-paints")
    page.mouse.move(*page_xy(page, 0, *cell_center(info, m.shape, 1, 2)))
    tooltip(page, 0).wait_for(state="visible")
    page.mouse.move(*page_xy(page, 0, *cell_center(info, m.shape, 0, 0)))
    assert r.get_attribute("data-paints") == paints
    assert page.errors == []


LAZY_COMPILES_JS = """
async ([esm, state]) => {
  // Load the module first (untimed, as Jupyter does once per page), then count V8's lazy compilations during
  // render(): the caller traces only that call.
  const url = URL.createObjectURL(new Blob([esm], { type: "text/javascript" }));
  window.__widget = (await import(url)).default;
  window.__state = state;
}
"""


RENDER_JS = """
() => {
  const el = document.createElement("div");
  document.getElementById("host").appendChild(el);
  const s = { ...window.__state, values: new DataView(new Float32Array(window.__state.values).buffer) };
  window.__widget.render({ model: new window.hw.FakeModel(s), el });
}
"""


def _lazy_compiles_during_render(browser: Any, esm: str, state: dict) -> int:
    from conftest import ORIGIN

    harness = (Path(__file__).parent / "harness.html").read_text(encoding="utf-8")
    ctx = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = ctx.new_page()
        page.route(f"{ORIGIN}/**", lambda r: r.fulfill(status=200, content_type="text/html", body=harness))
        page.goto(f"{ORIGIN}/harness.html")
        page.wait_for_function("window.hwReady === true")
        page.evaluate(LAZY_COMPILES_JS, [esm, state])
        cdp = ctx.new_cdp_session(page)
        events: list[dict] = []
        done: list[bool] = []
        cdp.on("Tracing.dataCollected", lambda e: events.extend(e["value"]))
        cdp.on("Tracing.tracingComplete", lambda e: done.append(True))
        categories = ["v8", "disabled-by-default-v8.compile"]
        cdp.send("Tracing.start", {"traceConfig": {"includedCategories": categories}, "transferMode": "ReportEvents"})
        page.evaluate(RENDER_JS)
        cdp.send("Tracing.end")
        while not done:
            page.wait_for_timeout(20)
        return sum(1 for e in events if e.get("name") == "V8.ParseFunction")
    finally:
        ctx.close()


def test_bundle_is_compiled_when_loaded_not_during_the_first_paint(browser: Any) -> None:
    # The bundle's first line asks V8 to compile every function while the module loads (explicit compile hints):
    # profiling showed 4-5 ms of lazy parsing and bytecode compilation inside the first render() without it.
    esm = BUNDLE.read_text(encoding="utf-8")
    assert esm.startswith("//# allFunctionsCalledOnLoad\n"), esm[:80]
    w = Heatmap(np.random.default_rng(0).random((40, 30), dtype=np.float32), colormap="viridis")
    state = {k: v for k, v in w.get_state().items() if k != "_esm"}
    state["values"] = np.frombuffer(w.values, dtype="<f4").tolist()
    hinted = _lazy_compiles_during_render(browser, esm, state)
    lazy = _lazy_compiles_during_render(browser, esm.split("\n", 1)[1], state)
    print(json.dumps({"lazy_compiles_hinted": hinted, "without_hint": lazy}))
    assert hinted * 2 < lazy, (hinted, lazy)


def test_colour_range_comes_from_the_kernels_statistics_when_they_fit(page: Any) -> None:
    # widget.py sends the statistics of the values it sends (one numpy pass), so the first paint skips a pass over
    # every cell; the view takes them only when they describe the cells it draws.
    values = np.array([[0.0, 1.0], [0.5, np.nan], [np.nan, -2.0]], dtype=np.float32)
    w = Heatmap(values, colormap="viridis")
    assert w.value_stats == {"min": -2.0, "max": 1.0, "minPositive": 0.5, "finite": 4, "nan": 2}
    assert value_stats(np.array([np.nan, np.inf, -1.0], dtype=np.float32)) == {
        "min": -1.0,
        "max": -1.0,
        "minPositive": None,
        "finite": 1,
        "nan": 2,
    }
    assert value_stats(np.full((2, 2), np.nan, dtype=np.float32)) == {
        "min": None,
        "max": None,
        "minPositive": None,
        "finite": 0,
        "nan": 4,
    }
    lut = _figure.build_lut("viridis").tolist()
    two = Heatmap(np.array([[0.0, 1.0], [0.5, 1.0]], dtype=np.float32), colormap="viridis")
    state = wire_state(two)
    info = page.evaluate("([s]) => window.hw.mount(s)", [state])
    # Statistics that claim a maximum of 100 (so 1.0 sits near the bottom of the map) are used ...
    claimed = {**state, "value_stats": {**two.value_stats, "max": 100.0}}
    page.evaluate("([s]) => window.hw.mount(s)", [claimed])
    # ... and ones about another number of cells are not.
    page.evaluate("([s]) => window.hw.mount(s)", [{**claimed, "value_stats": {**claimed["value_stats"], "nan": 1}}])
    info["plot"] = plot_rect(page, 0)
    x, y = cell_center(info, (2, 2), 0, 1)
    pixels = [page.evaluate("([i, x, y]) => window.hw.pixel(i, x, y)", [i, x, y]) for i in range(3)]
    assert pixels == [lut[255], lut[2], lut[255]]
    assert page.errors == []


@pytest.mark.parametrize("fixture", ["page", "hidpi_page"])
def test_more_cells_than_pixels_show_the_cell_under_each_pixel_and_export_every_cell(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    # Issue 18: a matrix with more cells than the plot has device pixels is coloured at device resolution (only
    # the cell under each pixel's centre), which must be the cell the pointer names there; exports keep every cell.
    page = request.getfixturevalue(fixture)
    rows, cols = (400, 900) if fixture == "page" else (800, 1800)  # more cells than device pixels either way
    v = (np.add.outer(np.arange(rows) * 7.0, np.arange(cols) * 13.0) % 101).astype(np.float32)
    v[::37, ::41] = np.nan
    info = mount(page, Heatmap(v, colormap="viridis"))
    r = root(page, 0)
    assert r.get_attribute("data-sampled") == "true"
    lut = _figure.build_lut("viridis")
    idx = _figure.lut_index(v, _figure.color_norm(v, "viridis"))
    dpr = page.evaluate("devicePixelRatio")
    x0, y0, pw, ph = info["plot"]
    rng = np.random.default_rng(1)
    checked = nan_seen = 0
    for _ in range(300):
        # A device pixel inside the plot's frame line (1 CSS px), read at its centre (hw.pixel reads the pixel
        # containing x, y).
        dx = int(rng.integers(np.ceil(x0 * dpr) + 2 * dpr, np.floor((x0 + pw) * dpr) - 2 * dpr))
        dy = int(rng.integers(np.ceil(y0 * dpr) + 2 * dpr, np.floor((y0 + ph) * dpr) - 2 * dpr))
        cx, cy = (dx + 0.5) / dpr, (dy + 0.5) / dpr
        fy, fx = (cy - y0) / ph * rows, (cx - x0) / pw * cols  # hitTest's arithmetic at the pixel's centre
        if min(fy % 1, 1 - fy % 1, fx % 1, 1 - fx % 1) < 0.02:
            continue  # data-plot has 2 decimals: too close to a cell edge to tell from here
        row, col = int(fy), int(fx)
        px = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", [cx, cy])
        if np.isnan(v[row, col]):
            nan_seen += 1
            assert px[:3] not in lut[:, :3].tolist(), (row, col)
        else:
            assert px == lut[idx[row, col]].tolist(), (dx, dy, row, col)
            checked += 1
    assert checked > 200 and nan_seen >= 0
    # A click on a pixel selects the cell that pixel shows (the pointer lands on a pixel's corner: for cells
    # narrower than a pixel, the cell at the corner is often the left neighbour of the one shown).
    for k in range(40):
        cx, cy = np.ceil(x0) + 3 + 7 * k, np.ceil(y0) + 2 + 5 * k  # whole CSS pixels: corners of device pixels
        page.mouse.click(*page_xy(page, 0, cx, cy))
        got = saved(page, 0)[-1]
        shown = page.evaluate("([x, y]) => window.hw.pixel(0, x, y)", [cx, cy])
        want = (int((cy + 0.5 / dpr - y0) / ph * rows), int((cx + 0.5 / dpr - x0) / pw * cols))
        if not np.isnan(v[want]):
            assert shown == lut[idx[want]].tolist(), (k, want)
        assert (got["selected_row"], got["selected_col"]) == want, k
    # The SVG export embeds the full matrix, one pixel per cell.
    with page.expect_download() as dl:
        r.hover()
        r.locator("button.hw-save-svg").click()
    svg = open(dl.value.path(), encoding="utf-8").read()
    images = [base64.b64decode(s.split('"')[0]) for s in svg.split("data:image/png;base64,")[1:]]
    sizes = {(int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) for png in images}
    assert (cols, rows) in sizes, sizes
    assert page.errors == []
