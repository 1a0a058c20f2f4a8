"""Explorer: clicks drill down off the main thread, supersede each other, are cached, never raise into the output."""

import threading
import time

import ipywidgets as W
import numpy as np
import pytest

import heatwidget as hw
from heatwidget._detail_view import subtree
from heatwidget._progress import progress
from heatwidget.explorer import state_bytes


def matrix(drill=None, **kw):
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    v[2, 3] = np.nan
    return hw.HeatMatrix(
        v,
        ["0", "1", "2"],
        ["a", "b", "c", "<script>x</script>"],
        title="T",
        row_title="Layer",
        col_title="Token",
        drill=drill,
        **kw,
    )


def rich_drill(m, r, c):
    d = m.cell(r, c)
    d.charts.append(
        hw.Chart(
            "top-k",
            "bar",
            [hw.Series("clean", ["<b>x</b>", "y"], [0.7, 0.3]), hw.Series("intervened", ["y", "z"], [0.5, 0.2])],
            "token",
            "p",
        )
    )
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
    assert "Layer 1" in title and "Token c" in title  # the cell's row and column labels


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
        return hw.HeatMatrix(
            np.ones((2, 2)),
            title=f"intervention={opts['intervention']}",
            meta={"options": {"intervention": opts["intervention"]}},
        ).with_recompute(recompute)

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


# ---- the explorer owns its widgets ----------------------------------------------------------------------------


def _live_widgets() -> int:
    from ipywidgets.widgets import widget

    return len(widget._instances)


def _kl_like_drill(m, r, c):
    """A drill-down shaped like ablation_kl's: top-k bars (two series), a table, texts, two re-runs."""
    import pandas as pd

    d = m.cell(r, c)
    toks = [" the", "\n", "Zorbin", "a", "b", "c"]
    d.charts.append(
        hw.Chart(
            "top-k",
            "bar",
            [
                hw.Series("clean", toks, list(np.linspace(0.5, 0.01, 6))),
                hw.Series("intervened", toks[::-1], list(np.linspace(0.4, 0.02, 6))),
            ],
            "token",
            "probability",
        )
    )
    d.tables["top-k"] = pd.DataFrame({"token": toks, "id": range(6), "p_clean": np.linspace(0.5, 0.01, 6)})
    d.texts["continuation"] = f"cell {r} {c}"
    d.reruns[f"row {r}"] = lambda: hw.HeatMatrix(np.ones((2, 2)))
    d.reruns[f"col {c}"] = lambda: hw.HeatMatrix(np.ones((2, 2)))
    return d


@pytest.mark.slow
def test_two_hundred_clicks_leave_widgets_and_memory_flat():
    """200 clicks over a 40-cell matrix, 80 fresh (cache cleared) then 120 cached: after the first pass of 40, the
    number of live widgets does not change and RSS stays flat (see the comment at the check)."""
    import gc

    import psutil

    m = hw.HeatMatrix(np.random.default_rng(0).random((5, 8)).astype(np.float32)).with_drill(_kl_like_drill)
    ex = hw.explore(m)
    proc = psutil.Process()
    counts, rss = [], []
    for i in range(200):
        if i < 80:
            ex._cache.clear()
        ex.select(i % 5, (i // 5) % 8)
        ex.wait()
        if i % 40 == 39:
            gc.collect()
            counts.append(_live_widgets())
            rss.append(proc.memory_info().rss)
    assert ex.last_detail is not None and ex.message.value == ""
    assert max(counts) == min(counts), f"live widgets per 40 clicks: {counts}"
    # A leak grows with every click; a one-off step is the allocator growing an arena once (seen in the full suite:
    # +6.5 MB between clicks 80 and 120, then flat). So: flat over the last 80 clicks, and bounded overall.
    assert rss[4] - rss[2] <= 2e6, f"RSS grew {(rss[4] - rss[2]) / 1e6:.2f} MB over the last 80 clicks: {rss}"
    assert max(rss[1:]) - rss[0] <= 8e6, f"RSS grew {(max(rss[1:]) - rss[0]) / 1e6:.2f} MB: {rss}"
    before_close = _live_widgets()
    ex.close()
    assert _live_widgets() < before_close - 30  # closing the explorer closes everything it made


def test_rebuilt_controls_and_breadcrumb_are_closed():
    m = matrix(rich_drill)
    ex = hw.explore(m)
    ex.select(0, 1)
    ex.wait()
    ex.rerun("row 0 again", ex.last_detail.reruns["row 0 again"])
    ex.wait()
    ex.back(0)
    n = _live_widgets()
    observers = len(ex.heatmap._trait_notifiers.get("colormap", {}).get("change", []))
    for _ in range(5):
        ex.rerun("row 0 again", ex.last_detail.reruns["row 0 again"]) if ex.last_detail else None
        ex.wait()
        ex.back(0)
    assert _live_widgets() == n
    assert len(ex.heatmap._trait_notifiers.get("colormap", {}).get("change", [])) == observers


# ---- precomputed drill-downs ----------------------------------------------------------------------------------


def test_precompute_keeps_a_view_per_cell_most_extreme_first():
    calls = []

    def drill(m, r, c):
        calls.append((r, c))
        return _kl_like_drill(m, r, c)

    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    v[1, 1] = 100.0
    m = hw.HeatMatrix(v, ["L0", "L1", "L2"], ["a", "b", "c", "d"]).with_drill(drill)
    ex = hw.explore(m)
    rep = ex.precompute(3)
    assert rep.cells[0] == (1, 1) and len(rep.cells) == 3 and rep.requested == 3 and rep.total_cells == 12
    assert len(ex.details.children) == 2 + 3
    cells = np.frombuffer(ex.heatmap.detail_cells, dtype="<i4")
    assert list(cells) == [r * 4 + c for r, c in rep.cells]
    assert "3 of 12 cells" in ex.precompute_note.value
    # A click on a precomputed cell shows its view (no new computation, no new widgets) ...
    n_calls, n_widgets = len(calls), _live_widgets()
    ex.heatmap.selected = (1, 1)
    ex.wait()
    assert ex.details.selected_index == ex.heatmap.detail_index == 2 and ex.last_detail.row == 1
    view = ex.details.children[2]
    title = next(w.value for w in subtree(view) if isinstance(w, W.HTML) and "hw-detail-title" in w.value)
    assert "L1" in title and "b" in title
    assert len(calls) == n_calls and _live_widgets() == n_widgets
    # ... a cell without a view is computed live, in slot 0.
    assert rep.cells == [(1, 1), (0, 0), (0, 1)]  # median 6.5: 100, then 0, then 1
    ex.heatmap.selected = (1, 2)
    ex.wait()
    assert ex.details.selected_index == 0 and calls[-1] == (1, 2)
    # precompute goes through the cache: cells drilled before are not computed again
    ex.precompute([(1, 2), ("L2", "d")])
    assert calls.count((1, 2)) == 1 and calls[-1] == (2, 3)
    assert len(ex.details.children) == 4  # replaced the earlier set (its views were closed)


def test_precompute_budget_and_bad_input():
    m = hw.HeatMatrix(np.random.default_rng(1).random((4, 10)).astype(np.float32)).with_drill(_kl_like_drill)
    ex = hw.explore(m)
    one = state_bytes(ex._view(_kl_like_drill(m, 0, 0)))
    rep = ex.precompute("all", budget_mb=3.5 * one / 1e6)
    assert len(rep.cells) == 3 and rep.requested == 40 and rep.state_bytes <= rep.budget_bytes
    assert "3 of 40 cells" in ex.precompute_note.value
    with pytest.raises(ValueError, match=r"cells\[1\]"):
        ex.precompute([(0, 0), (9, 0)])
    with pytest.raises(ValueError, match=r"cells\[0\] must be a \(row, col\) pair"):
        ex.precompute([3])
    with pytest.raises(ValueError, match="budget_mb"):
        ex.precompute("all", budget_mb=0)
    with pytest.raises(ValueError, match="'all'"):
        ex.precompute("some")


def test_precompute_can_be_cancelled():
    started = threading.Event()

    def slow(m, r, c):
        started.set()
        for _ in progress(range(100)):
            time.sleep(0.01)
        return m.cell(r, c)

    ex = hw.explore(matrix(slow))
    fut = ex.precompute("all", wait=False)
    started.wait(5)
    ex.cancel()
    assert fut.result(10) is None and ex.details.children[2:] == ()
    assert "cancelled" in ex.message.value


def test_explore_precompute_true_and_kernel_buttons_follow_offline():
    ex = hw.explore(matrix(rich_drill), precompute=True)
    assert len(ex.last_precompute.cells) == 12
    view = ex.details.children[2]
    buttons = [w for w in subtree(view) if isinstance(w, W.Button)]
    assert buttons and all("saved report" in b.tooltip for b in buttons)
    links = [w for w in view._hw_links]
    assert {(lk.source[0], lk.source[1]) for lk in links} == {(ex.heatmap, "offline")}
    assert {lk.target[0] for lk in links} == set(buttons)
    # The page says hello; the kernel answers that it is live.
    sent = []
    ex.heatmap.send = lambda content, buffers=None: sent.append(content)
    ex.heatmap.offline = True
    ex._on_front_end_msg(ex.heatmap, {"type": "hello"}, [])
    assert sent == [{"type": "live"}] and ex.heatmap.offline is False


def test_detail_tables_and_titles_look_finished():
    import pandas as pd

    from heatwidget._detail_view import fmt3, table_html, title_html, visible_whitespace

    assert visible_whitespace(" the\n\t") == "␣the↵→" and visible_whitespace("") == "∅"
    assert [fmt3(x) for x in (0.123456, 12345.6, 1e-7, float("nan"), 7, np.int64(3), "x")] == [
        "0.123",
        "1.23e+04",
        "1e-07",
        "n/a",
        "7",
        "3",
        "x",
    ]
    df = pd.DataFrame({"token": [" Paris", "<b>"], "id": [5, 6], "p_clean": [0.912345, 0.0001234]}, index=[7, 8])
    out = table_html("top-k", df)
    assert "␣Paris" in out and "&lt;b&gt;" in out and "<b>" not in out
    assert "0.912" in out and "0.000123" in out and "0.912345" not in out
    assert ">7<" not in out and ">8<" not in out  # no index column
    assert out.count("<th>") == 3
    d = hw.Detail(0, 1, "L0", "Gen1", 0.5, title="something else")
    t = title_html(d)
    assert "hw-detail-title" in t and "L0 × Gen1" in t and "something else" in t


# ---- click latency: kept views, fewer widgets, cheap collection ----------------------------------------------


def test_recent_cells_show_their_kept_view_without_building_widgets():
    """A cached click on one of the last VIEW_CACHE_SIZE cells shown re-shows its view: nothing is built or sent,
    only which box of the live detail is displayed changes; older views are closed, so the number of live widgets
    stays bounded."""
    from heatwidget.explorer import VIEW_CACHE_SIZE, forget_all_views

    m = hw.HeatMatrix(np.random.default_rng(0).random((4, 4)).astype(np.float32)).with_drill(_kl_like_drill)
    ex = hw.explore(m)
    ex.select(0, 0)
    ex.wait()
    first = ex.live_view
    ex.select(0, 1)
    ex.wait()
    assert first.comm is not None  # kept, not closed
    n = _live_widgets()
    ex.select(0, 0)
    ex.wait()
    assert ex.live_view is first and _live_widgets() == n and ex.last_detail.col == 0
    shown = [box for box in ex.detail.children if box.layout.display != "none"]
    assert shown == [ex._shown_box] and first in shown[0].children  # the other kept view is hidden, not gone
    for k in range(1, VIEW_CACHE_SIZE + 1):  # VIEW_CACHE_SIZE other cells: the first view drops out
        ex.select(1 + k // 4, k % 4)
        ex.wait()
    assert first.comm is not None  # evicted; closed at the next request (Explorer._retire)
    ex.select(0, 2)
    ex.wait()
    assert first.comm is None  # closed
    counts = []
    for k in range(2 * VIEW_CACHE_SIZE):
        ex.select(k // 4, k % 4)
        ex.wait()
        counts.append(_live_widgets())
    assert max(counts) == min(counts), counts
    ex._cache.clear()  # a fresh result for the shown cell gets a fresh view, the old one is closed
    shown = ex.live_view
    ex.select(*divmod(2 * VIEW_CACHE_SIZE - 1, 4))
    ex.wait()
    assert ex.live_view is not shown and shown.comm is not None  # replaced; closed at the next request
    ex.select(*divmod(2 * VIEW_CACHE_SIZE - 2, 4))
    ex.wait()
    assert shown.comm is None
    kept = [box.children[0] for _m, _d, box in ex._recent_views.values() if box.children[0] is not ex.live_view]
    forget_all_views()  # what export does before saving: hidden views closed, the shown one stays
    assert kept and all(v.comm is None for v in kept) and ex.live_view.comm is not None
    ex.close()


def test_only_fresh_computations_collect_garbage_and_the_full_collection_waits_for_idle(monkeypatch):
    """Cache hits collect nothing; a fresh run collects the young generations after its result is shown; every
    FULL_COLLECT_EVERY fresh runs, a full collection runs once the explorer is idle."""
    import heatwidget.explorer as explorer

    calls = []
    real = explorer._release_memory
    monkeypatch.setattr(explorer, "_release_memory", lambda full=False: (calls.append(full), real(full)))
    monkeypatch.setattr(explorer, "IDLE_COLLECT_S", 0.2)
    monkeypatch.setattr(explorer, "FULL_COLLECT_EVERY", 2)
    ex = hw.explore(matrix(rich_drill))
    ex.select(0, 0)
    ex.wait()
    assert calls == [False]  # the young generations only, right after the result
    ex.select(0, 1)
    ex.wait()
    ex.select(0, 0)  # cache hit: no collection
    ex.wait()
    assert calls == [False, False]
    deadline = time.monotonic() + 10
    while calls[-1] is not True and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls == [False, False, True]  # one full collection, after the second fresh run, once idle
    ex.precompute([(0, 0), (0, 1)])  # all cached: nothing to collect
    time.sleep(0.4)
    assert calls == [False, False, True]
    ex.close()


def test_detail_view_sends_few_widgets():
    """Texts share one widget (each widget is a message and a view to build in the page on every fresh click)."""
    m = hw.HeatMatrix(np.ones((2, 2), dtype=np.float32)).with_drill(_kl_like_drill)
    ex = hw.explore(m)
    ex.select(0, 0)
    ex.wait()
    parts = subtree(ex.live_view)
    assert sum("hw-detail-text" in w.value for w in parts if isinstance(w, W.HTML)) == 1
    assert len(parts) <= 40, sorted(type(w).__name__ for w in parts)
    ex.close()
