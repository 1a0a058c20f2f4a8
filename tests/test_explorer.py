"""Explorer: clicks drill down off the main thread, supersede each other, are cached, never raise into the output."""

import threading
import time

import ipywidgets as W
import numpy as np
import pytest

import heatwidget as hw
from heatwidget._detail_view import subtree
from heatwidget._progress import progress


def matrix(drill=None, **kw):
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    v[2, 3] = np.nan
    return hw.HeatMatrix(v, ["0", "1", "2"], ["a", "b", "c", "<script>x</script>"], title="T", row_title="Layer",
                         col_title="Token", drill=drill, **kw)


def rich_drill(m, r, c):
    d = m.cell(r, c)
    d.charts.append(hw.Chart("top-k", "bar", [hw.Series("clean", ["<b>x</b>", "y"], [0.7, 0.3]),
                                               hw.Series("intervened", ["y", "z"], [0.5, 0.2])], "token", "p"))
    d.charts.append(hw.Chart("roc", "line", [hw.Series("roc", [0, 0.5, 1], [0, 0.8, 1])]))
    d.charts.append(hw.Chart("scores", "hist", [hw.Series("right", [], list(np.random.rand(50)))]))
    d.texts["continuation"] = "<img src=x onerror=alert(1)>"
    d.children["child"] = hw.HeatMatrix(np.ones((2, 2)) * (r + 1))
    d.reruns[f"row {r} again"] = lambda: hw.HeatMatrix(np.full((2, 5), float(r)), title=f"rerun {r}")
    return d


def test_click_drills_down_and_renders_safely():
    ex = hw.explore(matrix(rich_drill))
    ex.heatmap.selected_row, ex.heatmap.selected_col = 1, 2
    ex.wait()
    d = ex.last_detail
    assert (d.row, d.col, d.value) == (1, 2, 6.0)
    parts = subtree(ex.detail)
    joined = " ".join(w.value for w in parts if isinstance(w, W.HTML))
    assert "<img" not in joined and "&lt;img src=x" in joined  # user text escaped, never HTML
    figures = [f for f in parts if type(f).__name__ == "Figure"]
    assert len(figures) == 3  # the bqplot charts
    title = next(w.value for w in parts if isinstance(w, W.HTML) and "hw-detail-title" in w.value)
    assert "1 × c" in title


def test_rerun_replaces_view_with_breadcrumb_back():
    ex = hw.explore(matrix(rich_drill))
    ex.select(0, 1)
    ex.wait()
    ex.rerun("row 0 again", ex.last_detail.reruns["row 0 again"])
    ex.wait()
    assert ex.heatmap.matrix.title == "rerun 0" and len(ex.history) == 2
    assert len(ex.breadcrumb.children) == 3
    ex.back(0)
    assert ex.heatmap.matrix.title == "T" and len(ex.history) == 1


def test_cached_click_is_fast_and_not_recomputed():
    calls = []

    def slow(m, r, c):
        calls.append((r, c))
        time.sleep(0.2)
        return m.cell(r, c)

    ex = hw.explore(matrix(slow))
    ex.select(0, 0)
    ex.wait()
    t0 = time.perf_counter()
    ex.select(0, 0)
    ex.wait()
    assert time.perf_counter() - t0 < 0.1 and calls == [(0, 0)]


def test_new_click_supersedes_running_one():
    started = threading.Event()

    def long_drill(m, r, c):
        if r == 0:
            started.set()
            for _ in progress(range(200)):
                time.sleep(0.01)
        return m.cell(r, c)

    ex = hw.explore(matrix(long_drill))
    first = ex.select(0, 0)
    started.wait(5)
    ex.select(1, 1)
    ex.wait()
    assert first.result(5) is None  # cancelled at a progress step, never applied
    assert ex.last_detail.row == 1


def test_errors_become_a_message_not_a_traceback():
    def broken(m, r, c):
        raise ValueError("option makes no sense")

    ex = hw.explore(matrix(broken))
    ex.select(0, 0)
    ex.wait()
    assert "option makes no sense" in ex.message.value and "ValueError" in ex.message.value
    assert ex.heatmap.status.startswith("error")


def test_nan_cell_says_na():
    ex = hw.explore(matrix(rich_drill))
    ex.select(2, 3)
    ex.wait()
    assert "n/a" in ex.message.value and "&lt;script&gt;" in ex.message.value


def test_recompute_controls():
    def recompute(**opts):
        return hw.HeatMatrix(np.ones((2, 2)), title=f"intervention={opts['intervention']}",
                             meta={"options": {"intervention": opts["intervention"]}}).with_recompute(recompute)

    m = matrix(meta={"options": {"intervention": "skip", "layers": [0, 1]}}).with_recompute(recompute)
    ex = hw.explore(m)
    names = [getattr(w, "description", "") for w in ex.controls.children]
    assert "intervention" in names and "re-run" in names
    ex.recompute(intervention="zero_mlp")
    ex.wait()
    assert ex.heatmap.matrix.title == "intervention=zero_mlp"


def test_explore_refuses_non_matrix():
    with pytest.raises(TypeError, match="HeatMatrix"):
        hw.explore(np.zeros((2, 2)))


@pytest.mark.slow
def test_hundred_clicks_on_the_demo_model_do_not_grow_memory():
    """Real drill-downs (ablation_kl on the demo model), cache cleared each time: RSS stays flat, no hooks left."""
    import gc

    import psutil

    lm = hw.demo_model()
    q = hw.demo_questions(attribute="capital")[0]
    m = hw.ablation_kl(lm, q["question"], max_new_tokens=3)
    ex = hw.explore(m)
    proc = psutil.Process()
    rss = []
    for i in range(100):
        ex._cache.clear()
        ex.select(i % m.shape[0], i % m.shape[1])
        ex.wait(60)
        assert ex.last_detail.row == i % m.shape[0]
        if i in (19, 99):
            gc.collect()
            rss.append(proc.memory_info().rss)
    assert rss[1] - rss[0] < 40e6, f"RSS grew {(rss[1] - rss[0]) / 1e6:.1f} MB over 80 clicks"
    hooked = [n for n, mod in lm.model.named_modules() if mod._forward_hooks or mod._forward_pre_hooks]
    assert not hooked, f"hooks left behind on {hooked[:3]}"
    ex.close()


def test_weight_change_stat_can_be_switched_from_the_explorer(tiny_dir):
    a = tiny_dir("llama")
    b = tiny_dir("llama", seed=1)
    m = hw.weight_change(a, b)
    ex = hw.explore(m)
    assert "stat" in [getattr(w, "description", "") for w in ex.controls.children]
    ex.recompute(stat="density")
    ex.wait(60)
    assert ex.heatmap.matrix.meta["stat"] == "density" and ex.heatmap.matrix == hw.weight_change(a, b, "density")


def test_layers_control_reruns_ablation_for_chosen_layers(tiny_dir):
    lm = hw.load(tiny_dir("llama"))
    m = hw.ablation_kl(lm, "the capital of Velmora is", max_new_tokens=2, layers=[2, 0])
    ex = hw.explore(m)
    editors = {w.description: w for w in ex.controls.children if hasattr(w, "value") and hasattr(w, "description")}
    assert editors["layers"].value == "2, 0"
    editors["layers"].value = "1, 2"
    ex._rerun_with({k: editors[k] for k in ("layers", "intervention")})
    ex.wait(60)
    assert ex.heatmap.matrix.rows == ["1", "2"]
    editors["layers"].value = "one"
    ex._rerun_with({"layers": editors["layers"]})
    assert "integers" in ex.message.value
