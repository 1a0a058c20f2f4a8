"""Turn a `Detail` into one widget: a titled view with bqplot charts and tables side by side, texts, child heatmaps and
re-run buttons.

Everything user-supplied (token strings, generations, labels) goes through `html.escape` or a plain-text widget:
token text is user data and is never injected as HTML. The view's first element carries the CSS class
`hw-detail-title` and names the cell's row and column labels (a stable hook for outside checks). Buttons that need
the kernel (re-runs, opening a child matrix) are `jsdlink`-ed to the explorer heatmap's `offline` trait, which the
page sets when no kernel answers, so a saved report shows them disabled with a tooltip saying why.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ipywidgets as W
import numpy as np

from .matrix import Chart, Detail, HeatMatrix

__all__ = [
    "detail_view",
    "detail_widgets",
    "chart_figure",
    "escaped_pre",
    "close_tree",
    "visible_whitespace",
    "table_html",
    "texts_html",
    "fmt3",
    "NEEDS_KERNEL",
    "DETAIL_CSS",
]

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
NEEDS_KERNEL = "needs the notebook's kernel: disabled in a saved report (re-run the notebook to use it)"

# Styles for the view's HTML parts (the explorer shows them once); JupyterLab's --jp-* variables follow its
# light/dark theme (fallbacks: light).
DETAIL_CSS = """<style>
.hw-detail-title { font: 600 14px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color0, #111);
  margin: 4px 0 2px; }
.hw-detail-title .hw-value { font-weight: 400; color: var(--jp-ui-font-color2, #555); margin-left: 1em; }
.hw-table-name { font: 600 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  margin: 2px 0; }
table.hw-table { border-collapse: collapse; font: 12px var(--jp-code-font-family, monospace);
  color: var(--jp-ui-font-color1, #222); }
table.hw-table th { text-align: left; font-weight: 600; border-bottom: 1px solid var(--jp-border-color1, #bbb);
  padding: 2px 8px; }
table.hw-table td { padding: 1px 8px; border-bottom: 1px solid var(--jp-border-color3, #eee); white-space: pre; }
table.hw-table td.hw-num { text-align: right; }
.hw-legend { font: 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  margin: 0 0 0 56px; }
.hw-legend .hw-swatch { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px;
  vertical-align: -1px; }
.hw-detail-notice { font: italic 13px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color2, #555);
  padding: 4px 0; }
.hw-detail-text pre { white-space: pre-wrap; margin: 0; color: var(--jp-ui-font-color1, #222); }
.hw-detail .bqplot text { fill: var(--jp-ui-font-color1, #222); }
.hw-detail .bqplot .axis path, .hw-detail .bqplot .axis line { stroke: var(--jp-ui-font-color2, #666); }
</style>"""

_WHITESPACE = str.maketrans({" ": "␣", "\n": "↵", "\t": "→", "\r": "␍"})


def visible_whitespace(token: str) -> str:
    """A token string with its spaces, newlines and tabs shown ('␣', '↵', '→'); the empty token as '∅'."""
    return token.translate(_WHITESPACE) if token else "∅"


def fmt3(v: Any) -> str:
    """A number with 3 significant digits ('n/a' for NaN and infinities); integers unchanged."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "n/a" if not math.isfinite(f) else f"{f:.3g}"


def escaped_pre(text: str, label: str = "") -> W.HTML:
    """User text shown verbatim (escaped, monospace, wrapped)."""
    return W.HTML(_text_html(text, label))


def _text_html(text: str, label: str = "") -> str:
    head = f"<b>{html.escape(label)}</b><br>" if label else ""
    return f"<div class='hw-detail-text'>{head}<pre>{html.escape(text)}</pre></div>"


def texts_html(texts: dict[str, Any]) -> W.HTML:
    """All of a detail's texts in one widget (one comm instead of three per text: a click sends fewer widgets)."""
    return W.HTML("".join(_text_html(str(text), name) for name, text in texts.items()))


def _floats(ys: Sequence[Any]) -> np.ndarray:
    return np.asarray([float(y) for y in ys], dtype=np.float64)


def _legend(names: Sequence[str]) -> str:
    items = "".join(
        f"<span class='hw-swatch' style='background:{COLORS[i % len(COLORS)]}'></span>{html.escape(n)}"
        for i, n in enumerate(names)
    )
    return f"<div class='hw-legend'>{items}</div>"


def _bar_marks(chart: Chart) -> tuple[list, list]:
    import bqplot as bq

    tokens = chart.x_title == "token"
    cats: list[str] = []
    for s in chart.series:
        for x in s.x:
            label = visible_whitespace(str(x)) if tokens else str(x)
            if label not in cats:
                cats.append(label)
    ys = []
    for s in chart.series:
        by = {(visible_whitespace(str(x)) if tokens else str(x)): float(y) for x, y in zip(s.x, s.y, strict=False)}
        ys.append([by.get(c, 0.0) for c in cats])
    xs = bq.OrdinalScale()
    # An explicit range: bqplot's front end (0.6.x) computes no y domain for type="grouped" bars (it reads an
    # undefined field), so without one every bar is drawn with zero height.
    finite = [y for row in ys for y in row if math.isfinite(y)]
    top, bottom = max([0.0, *finite]), min([0.0, *finite])
    if top == bottom:  # all zero (or no data): any non-empty range
        top = 1.0
    ysc = bq.LinearScale(min=bottom * 1.05, max=top * 1.05)
    # Category labels are user data (token strings): bqplot draws them as SVG text, never as HTML.
    marks = [
        bq.Bars(
            x=cats,
            y=np.asarray(ys, dtype=np.float64),
            scales={"x": xs, "y": ysc},
            type="grouped",
            labels=[s.name for s in chart.series],
            colors=COLORS[: len(chart.series)],
            tooltip=bq.Tooltip(fields=["x", "y"], formats=["", ".3g"]),
        )
    ]
    axes = [
        bq.Axis(scale=xs, label=chart.x_title, tick_rotate=-35 if len(cats) > 6 else 0),
        bq.Axis(scale=ysc, side="left", label=chart.y_title, tick_format=".2g"),
    ]
    return marks, axes


def _xy_marks(chart: Chart) -> tuple[list, list]:
    import bqplot as bq

    xs, ysc = bq.LinearScale(), bq.LinearScale()
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
            marks.append(
                bq.Bars(
                    x=x,
                    y=np.asarray(y, dtype=np.float64),
                    scales={"x": xs, "y": ysc},
                    colors=color,
                    opacities=[0.55],
                    labels=[s.name],
                    padding=0.05,
                )
            )
        else:
            x, y = _floats(s.x), _floats(s.y)
            ok = np.isfinite(x) & np.isfinite(y)
            mark = bq.Scatter if chart.kind == "scatter" else bq.Lines
            kw: dict[str, Any] = dict(colors=color, labels=[s.name])
            if mark is bq.Scatter:
                kw["default_size"] = 24
            marks.append(mark(x=x[ok], y=y[ok], scales={"x": xs, "y": ysc}, **kw))
    axes = [
        bq.Axis(scale=xs, label=chart.x_title, tick_format=".3g"),
        bq.Axis(scale=ysc, side="left", label=chart.y_title, tick_format=".3g"),
    ]
    return marks, axes


def chart_figure(chart: Chart, height: str = "240px") -> W.Widget:
    """A bqplot figure for one Chart (bars: categories may differ between series and are aligned by label).

    With several series the legend is an HTML line above the plot (bqplot's own legend sits on the data).
    Numbers travel as binary arrays (bqplot serialises numpy arrays as buffers).
    """
    import bqplot as bq

    marks, axes = _bar_marks(chart) if chart.kind == "bar" else _xy_marks(chart)
    fig = bq.Figure(
        marks=marks,
        axes=axes,
        title=chart.title,
        fig_margin=dict(top=36, bottom=52, left=56, right=12),
        # A fixed width: bqplot sizes itself from its container, and a grid/flex track that is
        # only resolved later (exported HTML) leaves it at its ~280 px minimum with a clipped title.
        layout=W.Layout(width="460px", height=height, flex="0 0 auto"),
    )
    if len(chart.series) < 2:
        return fig
    return W.VBox([W.HTML(_legend([s.name for s in chart.series])), fig], layout=W.Layout(flex="0 0 auto"))


def table_html(name: str, df: Any, max_rows: int = 20) -> str:
    """A DataFrame as a compact HTML table: no index column, numbers to 3 significant digits, token columns with
    visible whitespace, every string escaped."""
    head = f"<div class='hw-table-name'>{html.escape(name)}</div>"
    if not hasattr(df, "columns") or not hasattr(df, "itertuples"):
        return head + f"<pre>{html.escape(str(df))}</pre>"
    cols = [str(c) for c in df.columns]
    rows = []
    for values in df.head(max_rows).itertuples(index=False, name=None):
        cells = []
        for col, v in zip(cols, values, strict=False):
            if isinstance(v, str):
                text = visible_whitespace(v) if col == "token" else v
                cells.append(f"<td>{html.escape(text)}</td>")
            else:
                cells.append(f"<td class='hw-num'>{html.escape(fmt3(v))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = f"<div class='hw-table-name'>… {len(df) - max_rows} more rows</div>" if len(df) > max_rows else ""
    header = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    return f"{head}<table class='hw-table'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def _kernel_button(
    description: str,
    tooltip: str,
    icon: str,
    on_click: Callable[[], None],
    offline: tuple[W.Widget, str] | None,
    links: list[W.Widget],
) -> W.Button:
    b = W.Button(
        description=description[:60], tooltip=f"{tooltip} ({NEEDS_KERNEL})", icon=icon, layout=W.Layout(width="auto")
    )
    b.on_click(lambda _b: on_click())
    if offline is not None:
        links.append(W.jsdlink(offline, (b, "disabled")))
    return b


def title_html(detail: Detail) -> str:
    """The view's header: the cell's row and column labels (and the analysis' own title), and its value."""
    cell = f"{detail.row_label} × {detail.col_label}"
    title = detail.title
    if title and detail.row_label in title and detail.col_label in title:
        text = html.escape(title)  # the analysis' own title already names the cell
    else:
        text = html.escape(cell) + (f" — {html.escape(title)}" if title else "")
    return (
        f"<div class='hw-detail-title'>{text} "
        f"<span class='hw-value'>value = {html.escape(fmt3(detail.value))}</span></div>"
    )


def detail_view(
    detail: Detail,
    *,
    open_matrix: Callable[[str, HeatMatrix], None],
    run_rerun: Callable[[str, Callable[[], HeatMatrix]], None],
    offline: tuple[W.Widget, str] | None = None,
) -> W.VBox:
    """One widget for `detail` (see module docstring). `offline`: (widget, trait) that disables kernel buttons."""
    from .widget import Heatmap

    links: list[W.Widget] = []
    out: list[W.Widget] = [W.HTML(title_html(detail))]
    if detail.reruns:
        buttons = [
            _kernel_button(label, label, "repeat", functools.partial(run_rerun, label, fn), offline, links)
            for label, fn in detail.reruns.items()
        ]
        out.append(W.HBox(buttons, layout=W.Layout(flex_flow="row wrap")))
    # Charts and tables side by side, wrapping to the next line when the output area is narrow.
    panels: list[W.Widget] = [chart_figure(c) for c in detail.charts]
    panels += [
        W.HTML(table_html(name, df), layout=W.Layout(margin="0 12px 8px 0", flex="0 1 auto"))
        for name, df in detail.tables.items()
    ]
    if panels:
        out.append(W.HBox(panels, layout=W.Layout(flex_flow="row wrap", align_items="flex-start", width="100%")))
    for name, child in detail.children.items():
        b = _kernel_button(
            f"open {name}",
            f"open {name} as the main view",
            "expand",
            functools.partial(open_matrix, name, child),
            offline,
            links,
        )
        out.append(W.VBox([b, Heatmap(child, layout=W.Layout(height="260px"), static_image=False)]))
    if detail.texts:
        out.append(texts_html(detail.texts))
    view = W.VBox(out, layout=W.Layout(width="100%"))
    view.add_class("hw-detail")
    view._hw_links = links  # closed with the view (close_tree)
    return view


def detail_widgets(
    detail: Detail,
    *,
    open_matrix: Callable[[str, HeatMatrix], None],
    run_rerun: Callable[[str, Callable[[], HeatMatrix]], None],
) -> list[W.Widget]:
    """The parts of `detail_view` as a list (title first)."""
    return list(detail_view(detail, open_matrix=open_matrix, run_rerun=run_rerun).children)


def _widgets_in(value: Any) -> Iterator[W.Widget]:
    if isinstance(value, W.Widget):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _widgets_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _widgets_in(v)


def subtree(root: W.Widget) -> list[W.Widget]:
    """Every widget reachable from `root` through its traits (children, layout, style, bqplot marks, scales,
    axes, tooltips …) and the links kept with a view, `root` first."""
    seen: dict[int, W.Widget] = {}
    stack = [root]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen[id(w)] = w
        if isinstance(w, W.widgets.widget_link.Link):
            continue  # a link's source and target belong to others (the explorer's heatmap)
        for name in w.trait_names():
            if name.startswith("_") and name != "_hw_links":
                continue
            stack.extend(_widgets_in(getattr(w, name, None)))
        stack.extend(getattr(w, "_hw_links", ()))
    return list(seen.values())


def close_tree(*roots: W.Widget) -> None:
    """Close every widget of each root's subtree (kernel and front end forget them)."""
    for root in roots:
        for w in subtree(root):
            w.close()
