"""Python side of the heatmap widget: wire format, validation, selection, pooling, static image, saved state.

Browser behaviour (pixels, tooltip, keyboard, export buttons) is in tests/browser/.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import textwrap
import xml.dom.minidom
from pathlib import Path

import numpy as np
import pytest
import traitlets

from heatwidget import _figure
from heatwidget import matrix as matrix_mod
from heatwidget.matrix import HeatMatrix
from heatwidget.widget import MAX_WIDGET_CELLS, Heatmap

ROOT = Path(__file__).resolve().parents[1]


def km(values=None, **kw) -> HeatMatrix:
    v = np.arange(12, dtype=np.float32).reshape(3, 4) if values is None else values
    kw.setdefault("title", "KL")
    return HeatMatrix(v, **kw)


# ---- wire format ------------------------------------------------------------------------------------------------
def test_matrix_crosses_as_float32_bytes_plus_shape_not_json_lists():
    v = np.array([[0.5, np.nan, -1.0], [2.0, 3.0, 1e-8]], dtype=np.float64)
    w = Heatmap(HeatMatrix(v, ["a", "b"], ["x", "y", "z"], title="t", row_title="layer", col_title="tok", metric="KL"))
    assert w.shape == [2, 3]
    assert isinstance(w.values, bytes) and len(w.values) == 2 * 3 * 4
    back = np.frombuffer(w.values, dtype="<f4").reshape(2, 3)
    np.testing.assert_array_equal(back, v.astype(np.float32))
    assert (w.row_labels, w.col_labels) == (["a", "b"], ["x", "y", "z"])
    assert (w.title, w.row_title, w.col_title, w.metric) == ("t", "layer", "tok", "KL")
    # ipywidgets splits bytes out of the JSON state into binary buffers.
    from ipywidgets.widgets.widget import _remove_buffers

    state, paths, buffers = _remove_buffers(w.get_state())
    assert ["values"] in paths and "values" not in state
    json.dumps(state)  # the rest is plain JSON


def test_accepts_arrays_lists_and_dataframes():
    import pandas as pd

    assert Heatmap([[1, 2], [3, 4]]).shape == [2, 2]
    df = pd.DataFrame([[1.0, 2.0]], index=pd.Index(["L0"], name="layer"), columns=pd.Index(["a", "b"], name="mod"))
    w = Heatmap(df)
    assert (w.row_labels, w.col_labels, w.row_title, w.col_title) == (["L0"], ["a", "b"], "layer", "mod")
    assert w.matrix.shape == (1, 2)


def test_esm_is_the_built_bundle_and_never_json_lists():
    bundle = ROOT / "heatwidget" / "static" / "widget.js"
    w = Heatmap(km())
    if bundle.is_file():
        assert w._esm == bundle.read_text(encoding="utf-8")
    else:
        assert "npm run build" in w._esm


def test_widget_module_never_imports_torch():
    # Import heatwidget.widget without running the package __init__ (which may load analyses), then check.
    code = textwrap.dedent(f"""
        import importlib.util, sys, types
        pkg = types.ModuleType("heatwidget"); pkg.__path__ = [{str(ROOT / "heatwidget")!r}]
        sys.modules["heatwidget"] = pkg
        import heatwidget.widget
        assert "torch" not in sys.modules, "heatwidget.widget imported torch"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# ---- options and validation -------------------------------------------------------------------------------------
def test_colormap_default_and_validation():
    assert Heatmap(km()).colormap == "blues"
    assert Heatmap(np.array([[-1.0, 2.0]])).colormap == "rdbu"
    assert Heatmap(km(), colormap="YlOrRd").colormap == "ylorrd"
    assert Heatmap(km(), colormap="viridis_r").colormap == "viridis_r"
    with pytest.raises(traitlets.TraitError, match="unknown colormap 'jet'"):
        Heatmap(km(), colormap="jet")
    w = Heatmap(km())
    with pytest.raises(traitlets.TraitError, match="choose one of"):
        w.colormap = "<script>"
    # The automatic choice follows new matrices; an explicit one sticks.
    w.matrix = np.array([[-1.0, 1.0]])
    assert w.colormap == "rdbu"
    w.colormap = "viridis"
    w.matrix = np.array([[-2.0, 1.0]])
    assert w.colormap == "viridis"
    assert Heatmap(np.array([[-1.0, 1.0]]), colormap="blues").colormap == "blues"


def test_range_and_log_validation():
    with pytest.raises(ValueError, match="vmin .* must be smaller than vmax"):
        Heatmap(km(), vmin=2, vmax=1)
    with pytest.raises(traitlets.TraitError, match="finite"):
        Heatmap(km(), vmin=math.inf)
    with pytest.raises(traitlets.TraitError, match="finite"):
        Heatmap(km()).vmax = float("nan")
    with pytest.raises(traitlets.TraitError, match="log colour scale needs positive"):
        Heatmap(np.array([[-1.0, 0.0]]), log=True)
    w = Heatmap(np.array([[0.1, 10.0]]), log=True, vmin=0.5)
    assert w.log and w.vmin == 0.5 and w.vmax is None
    with pytest.raises(traitlets.TraitError, match="log colour scale"):
        w.matrix = np.array([[-1.0, -2.0]])
    with pytest.raises(traitlets.TraitError, match="progress"):
        w.progress = 1.5
    w.progress = 0.25
    w.status = "running"
    with pytest.raises(traitlets.TraitError, match="height"):
        w.height = -3


@pytest.mark.parametrize(
    ("values", "match"),
    [
        (np.zeros((0, 3)), "empty"),
        (np.array([[1.0, np.inf]]), "inf"),
        (np.array([[-np.inf, 1.0]]), "inf"),
        (np.full((2, 2), np.nan), "all NaN"),
        (np.zeros(5), "2-D"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(values, match):
    with pytest.raises(ValueError, match=match):
        Heatmap(values)


def test_absurd_sizes_are_refused(monkeypatch):
    monkeypatch.setattr(matrix_mod, "MAX_CELLS", 1000)
    with pytest.raises(ValueError, match="larger than 1,000"):
        Heatmap(np.zeros((50, 50)))


def test_degenerate_and_thin_matrices_are_accepted():
    for v in (np.full((3, 3), 7.0), np.zeros((1, 500)), np.ones((500, 1)), np.array([[np.nan, 1.0]])):
        w = Heatmap(v)
        assert w.shape == list(v.shape)
        xml.dom.minidom.parseString(w.to_svg())


def test_long_and_markup_labels_are_kept_verbatim_on_the_wire():
    evil = "<script>alert('x')</script>"
    long = "y" * 10_000
    w = Heatmap(HeatMatrix([[1.0, 2.0]], [evil], [long, "b"]))
    assert w.row_labels == [evil] and w.col_labels[0] == long  # the view escapes and truncates, not the kernel


# ---- pooling ----------------------------------------------------------------------------------------------------
def test_ten_million_cells_are_pooled_with_a_note_not_sent_whole():
    v = np.random.default_rng(0).random((5000, 2000), dtype=np.float32)
    w = Heatmap(v)
    r, c = w.shape
    assert r * c <= MAX_WIDGET_CELLS and len(w.values) == r * c * 4
    assert w.downsample == {"rows": 5000, "cols": 2000, "row_step": 3, "col_step": 1, "how": "mean"}
    assert w.matrix.shape == (5000, 2000)  # the full matrix stays in the kernel
    assert w.row_labels[0] == "0 … 2" and w.col_labels[:2] == ["0", "1"]
    got = np.frombuffer(w.values, dtype="<f4").reshape(r, c)
    np.testing.assert_allclose(got[0], v[0:3].mean(axis=0), rtol=1e-6)
    assert "matrix is 5,000×2,000" in w.to_svg()


def test_pooling_is_nan_aware_max_and_mean():
    v = np.array([[1, 2, 3], [np.nan, 5, np.nan], [np.nan, np.nan, 9]], dtype=np.float32)
    np.testing.assert_array_equal(_figure.pool(v, 2, 2, "max"), np.array([[5, 3], [np.nan, 9]], np.float32))
    np.testing.assert_allclose(_figure.pool(v, 2, 2, "mean"), np.array([[8 / 3, 3], [np.nan, 9]], np.float32))
    w = Heatmap(np.arange(100, dtype=np.float32).reshape(10, 10), max_cells=25, pooling="max")
    assert w.shape == [5, 5]
    assert np.frombuffer(w.values, "<f4")[0] == 11
    with pytest.raises(ValueError, match="pooling"):
        Heatmap(km(), pooling="median")
    assert _figure.pool_factors(100, 100, 10**6) == (1, 1)
    fr, fc = _figure.pool_factors(10, 10**6, 10**5)
    assert math.ceil(10 / fr) * math.ceil(10**6 / fc) <= 10**5


# ---- replacing the matrix ---------------------------------------------------------------------------------------
def test_replacing_the_matrix_sends_one_update(monkeypatch):
    w = Heatmap(km())
    sent: list[set[str]] = []
    orig = w.send_state

    def spy(key=None):
        sent.append(set([key] if isinstance(key, str) else key or []))
        return orig(key)

    monkeypatch.setattr(w, "send_state", spy)
    w.matrix = HeatMatrix(np.ones((2, 5)), title="other", metric="JS")
    assert len(sent) == 1
    assert {"values", "shape", "row_labels", "col_labels", "title", "metric"} <= sent[0]
    assert w.shape == [2, 5] and w.title == "other" and w.matrix.title == "other"


def test_selection_is_kept_for_same_labels_and_reset_otherwise():
    w = Heatmap(km())
    w.selected = (1, 2)
    w.matrix = km(np.ones((3, 4), dtype=np.float32))  # recomputed, same axes
    assert w.selected == (1, 2)
    w.matrix = km(np.ones((3, 5), dtype=np.float32))  # different axes: the old cell means nothing
    assert w.selected is None and (w.selected_row, w.selected_col) == (-1, -1)


# ---- selection --------------------------------------------------------------------------------------------------
def test_on_select_fires_once_per_front_end_selection():
    w = Heatmap(km(rows=["L0", "L1", "L2"], cols=["a", "b", "c", "d"]))
    calls: list[tuple[int, int]] = []
    cb = w.on_select(lambda r, c: calls.append((r, c)))
    # What the view sends on a click: both traits in one message.
    w.set_state({"selected_row": 2, "selected_col": 3})
    assert calls == [(2, 3)]
    w.set_state({"selected_row": 2, "selected_col": 1})  # same row, new column
    assert calls == [(2, 3), (2, 1)]
    w.set_state({"selected_row": -1, "selected_col": -1})  # cleared: no call
    assert calls == [(2, 3), (2, 1)]
    w.selected = ("L0", "b")  # from Python, by labels
    assert calls[-1] == (0, 1) and w.selected == (0, 1)
    w.on_select(cb, remove=True)
    w.selected = (1, 1)
    assert len(calls) == 3


def test_selection_is_validated_against_the_full_matrix():
    w = Heatmap(np.zeros((40, 50)), max_cells=100)
    assert w.shape != [40, 50]
    w.set_state({"selected_row": 39, "selected_col": 49})  # a pooled view still selects full indices
    assert w.selected == (39, 49)
    with pytest.raises(traitlets.TraitError, match=r"selected_row must be -1 \(none\) or in \[0, 40\)"):
        w.selected_row = 40
    with pytest.raises(KeyError):
        w.selected = ("nope", 0)


def test_selection_set_before_display_is_in_the_state():
    w = Heatmap(km())
    w.selected = (2, 0)
    st = w.get_state()
    assert (st["selected_row"], st["selected_col"]) == (2, 0)


# ---- static image ----------------------------------------------------------------------------------------------
def test_mimebundle_carries_widget_view_text_and_static_svg():
    m = km(
        np.array([[0.0, np.nan], [1.0, 2.0]], dtype=np.float32),
        rows=["<script>x</script>", "b"],
        cols=["c0", "c1"],
        title="A & B",
        metric="KL",
    )
    w = Heatmap(m, colormap="viridis")
    data, _meta = w._repr_mimebundle_()
    assert data["application/vnd.jupyter.widget-view+json"]["model_id"] == w.model_id
    assert data["text/plain"].startswith("Heatmap(HeatMatrix('A & B'")
    svg = data["image/svg+xml"]
    doc = xml.dom.minidom.parseString(svg)
    assert not doc.getElementsByTagName("script")
    assert "&lt;script&gt;x&lt;/script&gt;" in svg and "A &amp; B" in svg
    texts = [t.firstChild.data for t in doc.getElementsByTagName("text") if t.firstChild]
    assert {"A & B", "c0", "c1", "b", "KL", "n/a"} <= set(texts)
    # The cells image has exactly the widget's colours; NaN is transparent over the n/a hatch.
    href = doc.getElementsByTagName("image")[0].getAttribute("xlink:href")
    img = _figure.decode_png_rgba(base64.b64decode(href.split(",", 1)[1]))
    lut = _figure.build_lut("viridis")
    idx = _figure.lut_index(m.values, _figure.color_norm(m.values, "viridis"))
    assert img.shape == (2, 2, 4)
    assert img[0, 1, 3] == 0
    for r, c in [(0, 0), (1, 0), (1, 1)]:
        assert img[r, c].tolist() == lut[idx[r, c]].tolist()
    assert "url(#hw-hatch)" in svg
    assert "image/svg+xml" not in Heatmap(m, static_image=False)._repr_mimebundle_()[0]


def test_static_svg_thins_labels_and_stays_small_for_big_matrices():
    w = Heatmap(np.random.default_rng(1).random((1000, 1000), dtype=np.float32))
    svg = w.to_svg()
    doc = xml.dom.minidom.parseString(svg)
    assert len(doc.getElementsByTagName("text")) < 120
    assert len(svg) < 500_000
    assert "static image: mean of 4×4 cells" in svg


def test_png_writer_round_trips():
    rgba = np.random.default_rng(2).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    data = _figure.encode_png(rgba)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(_figure.decode_png_rgba(data), rgba)
    with pytest.raises(ValueError):
        _figure.encode_png(np.zeros((2, 2, 3), np.uint8))


# ---- shared colour maps --------------------------------------------------------------------------------------
def test_colour_maps_match_the_golden_table_shared_with_typescript():
    golden = json.loads(_figure.GOLDEN_PATH.read_text(encoding="utf-8"))
    assert golden == _figure.golden_table(), "regenerate: python -m heatwidget._figure --write-golden"
    assert set(golden) == {"blues", "blues_r", "viridis", "viridis_r", "ylorrd", "ylorrd_r", "rdbu", "rdbu_r"}
    for name, spec in _figure.COLORMAPS.items():
        assert golden[name][0] == spec["colors"][0] and golden[name][-1] == spec["colors"][-1]


def test_colour_range_rules_match_the_front_end():
    n = _figure.color_norm(np.array([-1.0, 4.0]), "rdbu")
    assert (n.lo, n.hi, n.mode) == (-4.0, 4.0, "diverging")
    n = _figure.color_norm(np.array([-1.0, 4.0]), "rdbu", vmin=-1, vmax=8)
    np.testing.assert_allclose(_figure.to_unit(np.array([-1.0, 0.0, 4.0, 8.0]), n), [0, 0.5, 0.75, 1])
    n = _figure.color_norm(np.array([3.0, 3.0]), "viridis")
    assert n.degenerate and _figure.lut_index(np.array([3.0]), n)[0] == 128
    assert _figure.colorbar_ticks(n) == [3.0]
    n = _figure.color_norm(np.array([0.0, 0.01, 1.0, 100.0]), "viridis", log=True)
    assert n.mode == "log" and _figure.colorbar_ticks(n) == [0.01, 0.1, 1.0, 10.0, 100.0]
    n = _figure.color_norm(np.array([0.0, 1.0]), "blues")
    assert _figure.lut_index(np.array([0.0, 0.5, 1.0, np.nan]), n).tolist() == [0, 128, 255, -1]
    assert _figure.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1]
    assert _figure.nice_ticks(0.02199, 0.9992, 2) == [0.2, 0.4, 0.6, 0.8]
    for v, s in [
        (0, "0"),
        (0.123456, "0.1235"),
        (-2, "−2"),
        (12345, "12350"),
        (123456, "1.23e5"),
        (0.0001234, "1.23e-4"),
        (float("nan"), "n/a"),
    ]:
        assert _figure.format_value(v) == s
    assert [_figure.thin_step(px, 14) for px in (20, 7, 1, 0.05)] == [1, 2, 20, 500]


# ---- saved widget state (static HTML export) -------------------------------------------------------------------
def test_embedded_state_carries_the_matrix_buffer_and_the_bundle():
    from ipywidgets.embed import embed_data

    w = Heatmap(km())
    w.selected = (1, 3)
    data = embed_data(views=[w])
    state = data["manager_state"]["state"][w.model_id]
    buf = next(b for b in state["buffers"] if b["path"] == ["values"])
    assert buf["encoding"] == "base64"
    assert base64.b64decode(buf["data"]) == w.values
    assert state["state"]["_esm"] == w._esm
    assert (state["state"]["selected_row"], state["state"]["selected_col"]) == (1, 3)


@pytest.mark.slow
def test_executed_notebook_saves_widget_state_with_the_buffer(tmp_path):
    """nbclient (what `jupyter nbconvert --execute` uses) stores the widget state, bytes trait included."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = textwrap.dedent(f"""
        import sys, types
        # Load heatwidget.widget without the package __init__ (which imports torch: slow, not needed here).
        pkg = types.ModuleType("heatwidget"); pkg.__path__ = [{str(ROOT / "heatwidget")!r}]
        sys.modules["heatwidget"] = pkg
        import numpy as np
        from heatwidget.widget import Heatmap
        w = Heatmap(np.arange(6, dtype=np.float32).reshape(2, 3), colormap="viridis")
        w.selected = (1, 2)
        w
    """)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", store_widget_state=True, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    out = nb.cells[0].outputs[0]["data"]
    assert "application/vnd.jupyter.widget-view+json" in out and "image/svg+xml" in out
    model_id = out["application/vnd.jupyter.widget-view+json"]["model_id"]
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    st = states[model_id]
    assert st["model_name"] == "AnyModel"
    buf = next(b for b in st["buffers"] if b["path"] == ["values"])
    assert np.frombuffer(base64.b64decode(buf["data"]), "<f4").tolist() == [0, 1, 2, 3, 4, 5]
    assert st["state"]["shape"] == [2, 3] and st["state"]["selected_row"] == 1
    assert "render" in st["state"]["_esm"]
    # nbconvert's HTML export embeds that state next to the view.
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "application/vnd.jupyter.widget-state+json" in html and model_id in html


def test_analysis_suggested_range_and_colormap_are_defaults():
    import heatwidget as hw

    m = hw.HeatMatrix(np.array([[0.6, 0.7], [0.8, 0.9]]), meta={"vmin": 0.5, "vmax": 1.0, "colormap": "viridis"})
    w = Heatmap(m)
    assert (w.vmin, w.vmax, w.colormap) == (0.5, 1.0, "viridis")
    w2 = Heatmap(m, vmin=0.0, colormap="blues")
    assert (w2.vmin, w2.vmax, w2.colormap) == (0.0, 1.0, "blues")


def test_suggested_log_scale_is_the_default_and_follows_new_matrices_until_the_user_sets_it():
    import heatwidget as hw
    from heatwidget.matrix import suggests_log_scale

    kl = [[9.4, 6.0], [0.04, 0.02], [0.05, 0.03]]  # layer 0's skip costs nats, the other layers hundredths
    assert suggests_log_scale(kl)
    assert not suggests_log_scale([[0.6, 0.9]])  # within a decade
    assert not suggests_log_scale([[0.3, 0.2, 1e-8], [0.25, 0.2, 0.1]])  # one near-zero cell: linear reads best
    assert not suggests_log_scale([[-1.0, 0.001, 5.0]])  # negative values: no log scale
    assert not suggests_log_scale([[np.nan, 3.0]])  # one positive value spans nothing

    spread = hw.HeatMatrix(np.array(kl), meta={"log": True})
    flat = hw.HeatMatrix(np.array([[0.6, 0.7], [0.8, 0.9]]))
    w = Heatmap(spread)
    assert w.log is True
    w.matrix = flat  # the suggestion follows the matrix shown
    assert w.log is False
    w.matrix = spread
    assert w.log is True
    assert Heatmap(spread, log=False).log is False  # an explicit argument wins
    w.log = False  # the user's choice sticks across new matrices
    w.matrix = spread
    assert w.log is False
    assert "log scale" in Heatmap(spread).to_svg() and "log scale" not in Heatmap(flat).to_svg()
