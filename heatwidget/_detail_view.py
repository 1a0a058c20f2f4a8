"""Turn a `Detail` into widgets: bqplot charts for series, escaped text for user data, child heatmaps, buttons.

Everything user-supplied (token strings, generations, labels) goes through `html.escape` or a plain-text widget:
token text is user data and is never injected as HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import numpy as np

from .matrix import Chart, Detail, HeatMatrix

__all__ = ["detail_widgets", "chart_figure", "escaped_pre"]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


def escaped_pre(text: str, label: str = "") -> W.HTML:
    """User text shown verbatim (escaped, monospace, wrapped)."""
    head = f"<b>{html.escape(label)}</b><br>" if label else ""
    return W.HTML(f"{head}<pre style='white-space:pre-wrap;margin:0'>{html.escape(text)}</pre>")


def _floats(ys: Sequence[Any]) -> np.ndarray:
    return np.asarray([float(y) for y in ys], dtype=np.float64)


def chart_figure(chart: Chart, height: str = "220px") -> W.Widget:
    """A bqplot figure for one Chart (bars: categories may differ between series and are aligned by label)."""
    import bqplot as bq

    title = chart.title
    if chart.kind == "bar":
        cats: list[str] = []
        for s in chart.series:
            for x in s.x:
                if str(x) not in cats:
                    cats.append(str(x))
        ys = []
        for s in chart.series:
            by = {str(x): float(y) for x, y in zip(s.x, s.y, strict=False)}
            ys.append([by.get(c, 0.0) for c in cats])
        xs = bq.OrdinalScale()
        # An explicit max: bqplot's front end (0.6.x) computes no y domain for type="grouped" bars (it reads an
        # undefined field), so without one every bar is drawn with zero height.
        finite = [y for row in ys for y in row if math.isfinite(y)]
        top = max([0.0, *finite])
        bottom = min([0.0, *finite])
        if top == bottom:  # all zero (or no data): any non-empty range
            top = 1.0
        ysc = bq.LinearScale(min=bottom * 1.05, max=top * 1.05)
        # Category labels are user data (token strings): bqplot draws them as SVG text, never as HTML.
        marks = [bq.Bars(x=cats, y=ys, scales={"x": xs, "y": ysc}, type="grouped",
                         labels=[s.name for s in chart.series], display_legend=len(chart.series) > 1,
                         colors=COLORS[: len(chart.series)], tooltip=bq.Tooltip(fields=["x", "y"]))]
        axes = [bq.Axis(scale=xs, label=chart.x_title, tick_rotate=-35 if len(cats) > 6 else 0),
                bq.Axis(scale=ysc, side="left", label=chart.y_title, tick_format=".2g")]
    else:
        xs = bq.LinearScale()
        ysc = bq.LinearScale()
        marks = []
        for i, s in enumerate(chart.series):
            color = [COLORS[i % len(COLORS)]]
            if chart.kind == "hist":
                y = _floats(s.y)
                if len(s.x) != len(s.y):  # raw samples: bin them here
                    y, edges = np.histogram(y[np.isfinite(y)], bins=30)
                    x = (edges[:-1] + edges[1:]) / 2
                else:
                    x = _floats(s.x)
                marks.append(bq.Bars(x=x, y=y, scales={"x": xs, "y": ysc}, colors=color, opacities=[0.55],
                                     labels=[s.name], display_legend=len(chart.series) > 1, padding=0.05))
            else:
                x, y = _floats(s.x), _floats(s.y)
                ok = np.isfinite(x) & np.isfinite(y)
                mark = bq.Scatter if chart.kind == "scatter" else bq.Lines
                kw: dict[str, Any] = dict(colors=color, labels=[s.name], display_legend=len(chart.series) > 1)
                if mark is bq.Scatter:
                    kw["default_size"] = 24
                marks.append(mark(x=x[ok], y=y[ok], scales={"x": xs, "y": ysc}, **kw))
        axes = [bq.Axis(scale=xs, label=chart.x_title, tick_format=".3g"),
                bq.Axis(scale=ysc, side="left", label=chart.y_title, tick_format=".3g")]
    fig = bq.Figure(marks=marks, axes=axes, title=title, legend_location="top-right",
                    fig_margin=dict(top=40, bottom=50, left=55, right=15),
                    # A fixed width: bqplot sizes itself from its container, and a grid/flex track that is
                    # only resolved later (exported HTML) leaves it at its ~280 px minimum with a clipped title.
                    layout=W.Layout(width="460px", height=height, flex="0 0 auto"))
    return fig


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.4g}"


def detail_widgets(
    detail: Detail,
    *,
    open_matrix: Callable[[str, HeatMatrix], None],
    run_rerun: Callable[[str, Callable[[], HeatMatrix]], None],
) -> list[W.Widget]:
    """Widgets for one Detail; `open_matrix` shows a child matrix as the main view, `run_rerun` starts a re-run."""
    head = f"<b>{html.escape(detail.title)}</b> &nbsp; value = {html.escape(_fmt(detail.value))}"
    out: list[W.Widget] = [W.HTML(head)]
    if detail.reruns:
        buttons = []
        for label, fn in detail.reruns.items():
            b = W.Button(description=label[:60], tooltip=label, icon="repeat", layout=W.Layout(width="auto"))
            b.on_click(lambda _b, label=label, fn=fn: run_rerun(label, fn))
            buttons.append(b)
        out.append(W.HBox(buttons, layout=W.Layout(flex_flow="row wrap")))
    charts = [chart_figure(c) for c in detail.charts]
    if charts:
        out.append(W.HBox(charts, layout=W.Layout(flex_flow="row wrap", width="100%")))
    for name, child in detail.children.items():
        from .widget import Heatmap

        b = W.Button(description=f"open {name}"[:60], icon="expand", layout=W.Layout(width="auto"))
        b.on_click(lambda _b, name=name, child=child: open_matrix(name, child))
        out.append(W.VBox([b, Heatmap(child, layout=W.Layout(height="260px"))]))
    for name, df in detail.tables.items():
        to_html = getattr(df, "to_html", None)
        body = to_html(escape=True, max_rows=20) if to_html else f"<pre>{html.escape(str(df))}</pre>"
        out.append(W.HTML(f"<b>{html.escape(name)}</b>{body}"))
    for name, text in detail.texts.items():
        out.append(escaped_pre(str(text), name))
    return out
