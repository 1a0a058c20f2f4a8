"""heatwidget.export without a browser: what goes into the offline page, and the error paths.

The browser half (the page really works with the network cut off) is tests/browser/test_export.py; this file
has another name because pytest needs unique test-module basenames across folders without __init__.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from heatwidget import export
from heatwidget.export import STATE_MIME, VIEW_MIME, ExportError, export_notebook
from heatwidget.matrix import Chart, Detail, HeatMatrix, Series

# Script tags that would make the page depend on the network.
REMOTE_SCRIPT = re.compile(r"<script[^>]+src=[\"']?https?:", re.IGNORECASE)


def _explorer_notebook(path: Path) -> Path:
    """A notebook holding an explorer with a drill-down, its state saved as JupyterLab would (no kernel needed)."""
    from ipywidgets.embed import embed_data

    import heatwidget as hw

    def drill(m: HeatMatrix, r: int, c: int) -> Detail:
        return Detail(
            r,
            c,
            m.rows[r],
            m.cols[c],
            float(m.values[r, c]),
            charts=[Chart("bars", "bar", [Series("a", ["x", "y"], [1.0, 2.0])])],
        )

    m = HeatMatrix(np.arange(6, dtype=np.float32).reshape(2, 3)).with_drill(drill)
    ex = hw.explore(m)
    ex.select(1, 2)
    ex.wait()
    data = embed_data(views=[ex])
    out = nbformat.v4.new_output("display_data", data={VIEW_MIME: data["view_specs"][0], "text/plain": "Explorer"})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("ex", outputs=[out])])
    nb.metadata["widgets"] = {STATE_MIME: data["manager_state"]}
    nbformat.write(nb, path)
    ex.close()
    return path


def test_offline_page_inlines_loader_manager_and_front_ends(tmp_path: Path) -> None:
    nb = _explorer_notebook(tmp_path / "ex.ipynb")
    html = export_notebook(nb, tmp_path / "ex.html").read_text(encoding="utf-8")
    assert not REMOTE_SCRIPT.search(html), REMOTE_SCRIPT.search(html)
    assert 'data-heatwidget-vendor="require.js"' in html and 'data-heatwidget-vendor="embed-amd.js"' in html
    for module in ("anywidget", "bqplot", "bqscales"):
        assert f'data-heatwidget-module="{module}"' in html
    # The html-manager's icon fonts are inlined, not fetched from beside the (non-existent) script file.
    assert "data:font/woff2;base64," in html
    assert not re.search(r'\.p\+"[0-9a-f]{20}\.woff2"', html)
    assert STATE_MIME in html and "heatwidget-export-note" not in html
    # An HTML parser sees each inlined script whole (nothing in the code ends its <script> early).
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    vendor = export.find_vendor_files()
    for name, path in vendor.items():
        text = soup.find("script", attrs={"data-heatwidget-vendor": name}).string
        assert text.rstrip().endswith(path.read_text(encoding="utf-8").rstrip()[-200:]), name
    bq = soup.find("script", attrs={"data-heatwidget-module": "bqplot"}).string
    assert bq.rstrip().endswith('(window.__heatwidgetNamedDefine("bqplot"));')


def test_cdn_mode_is_nbconverts_page(tmp_path: Path) -> None:
    nb = _explorer_notebook(tmp_path / "ex.ipynb")
    html = export_notebook(nb, tmp_path / "ex.html", offline=False).read_text(encoding="utf-8")
    assert REMOTE_SCRIPT.search(html)
    assert "data-heatwidget-module" not in html


def test_unsaved_widget_state_falls_back_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nb = nbformat.read(_explorer_notebook(tmp_path / "ex.ipynb"), as_version=4)
    del nb.metadata["widgets"]
    nbformat.write(nb, tmp_path / "unsaved.ipynb")
    html = export_notebook(tmp_path / "unsaved.ipynb", tmp_path / "unsaved.html").read_text(encoding="utf-8")
    assert "1 widget output(s)" in capsys.readouterr().err
    assert "heatwidget-export-note" in html and "saved without its widget state" in html
    assert "no static image was saved" in html  # an Explorer (VBox) has only text to fall back to
    assert 'data-heatwidget-vendor="embed-amd.js"' not in html  # nothing to render: no manager


def test_mathjax_only_when_markdown_has_math(tmp_path: Path) -> None:
    for src, expected in (("plain text", False), ("KL is $\\sum p \\log p/q$", True)):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(src)])
        nbformat.write(nb, tmp_path / "m.ipynb")
        html = export_notebook(tmp_path / "m.ipynb", tmp_path / "m.html").read_text(encoding="utf-8")
        assert ("mathjax" in html.lower()) is expected, src
        assert bool(REMOTE_SCRIPT.search(html)) is expected


def test_inline_js_cannot_close_its_script_tag() -> None:
    js = 'const a = "</script><script>alert(1)</script>"; const b = "<!-- x";'
    out = export._inline_js(js)
    assert "</script" not in out.lower() and "<!--" not in out
    assert out == 'const a = "<\\/script><script>alert(1)<\\/script>"; const b = "<\\!-- x";'


def test_missing_vendor_files_say_how_to_build_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "VENDOR_DIR", tmp_path / "vendor")
    monkeypatch.setattr(export, "_NODE_MODULES", tmp_path / "node_modules")
    with pytest.raises(ExportError, match=r"npm ci && npm run build.*--cdn"):
        export.find_vendor_files()


def test_widget_modules_resolved_from_nbextensions() -> None:
    state = {
        "a": {"model_module": "anywidget", "state": {"_view_module": "anywidget"}},
        "b": {"model_module": "bqplot", "state": {"_view_module": "bqplot"}},
        "c": {"model_module": "@jupyter-widgets/controls", "state": {"_view_module": "@jupyter-widgets/controls"}},
        "d": {"model_module": "no-such-widget-module", "state": {}},
    }
    modules, missing = export._modules_for(state)
    names = [m.name for m in modules]
    assert {"anywidget", "bqplot"} <= set(names)
    assert "@jupyter-widgets/controls" not in names  # the html-manager brings its own
    assert missing == ["no-such-widget-module"]
    assert all(m.path.name == "index.js" for m in modules)


def test_missing_notebook_and_failing_cell(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        export_notebook(tmp_path / "nope.ipynb", tmp_path / "out.html")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom in cell')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "bad.ipynb")
    with pytest.raises(ExportError, match="boom in cell"):
        export_notebook(tmp_path / "bad.ipynb", tmp_path / "bad.html", execute=True, timeout=120)
    assert not (tmp_path / "bad.html").exists()


# ---- precomputed drill-downs in the export ------------------------------------------------------------------------


def test_parse_drill() -> None:
    assert export.parse_drill("all") == "all" and export.parse_drill("NONE") == "none"
    assert export.parse_drill("12") == 12 and export.parse_drill(3) == 3
    for bad in ("-1", "some", "1.5", -2, True):
        with pytest.raises(ValueError, match="--drill must be"):
            export.parse_drill(bad)


def test_prune_state_keeps_what_outputs_reach_and_links_between_kept_models() -> None:
    def model(name: str, **state: object) -> dict:
        return {
            "model_name": name,
            "model_module": "@jupyter-widgets/controls",
            "model_module_version": "2.0.0",
            "state": {"_model_name": name, **state},
        }

    # Model ids are hex (uuid4().hex in the kernel).
    state = {
        "b0": model("VBoxModel", children=["IPY_MODEL_a1", "IPY_MODEL_b1"], layout="IPY_MODEL_1a"),
        "1a": model("LayoutModel"),
        "a1": model("HTMLModel"),
        "b1": model("ButtonModel"),
        "11": model("DirectionalLinkModel", source=["IPY_MODEL_a1", "value"], target=["IPY_MODEL_b1", "disabled"]),
        "c1": model("ButtonModel"),  # closed in the kernel: no output reaches it
        "51": model("DirectionalLinkModel", source=["IPY_MODEL_a1", "value"], target=["IPY_MODEL_c1", "disabled"]),
    }
    view = nbformat.v4.new_output(
        "display_data", data={VIEW_MIME: {"model_id": "b0", "version_major": 2, "version_minor": 0}}
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[view])])
    nb.metadata["widgets"] = {STATE_MIME: {"state": state, "version_major": 2, "version_minor": 0}}
    assert export._prune_state(nb) == 2
    assert set(export._widget_state(nb)) == {"b0", "1a", "a1", "b1", "11"}


def test_cli_names_the_demo_extra_when_a_package_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from heatwidget import cli

    monkeypatch.setitem(cli.DEMO_NEEDS, "html", ("nbconvert", "no_such_package_hw"))
    assert cli.main(["export", "a.ipynb", "b.html"]) == 1
    err = capsys.readouterr().err
    assert "no_such_package_hw" in err and "pip install 'heatwidget[demo]'" in err and "nbconvert" not in err
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "a.ipynb", "b.html", "--drill", "lots"])
    assert e.value.code == 2 and "--drill must be" in capsys.readouterr().err


def test_tour_is_found_in_the_package_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from heatwidget import cli

    packaged = tmp_path / "heatwidget" / "notebooks" / "tour.ipynb"
    monkeypatch.setattr(cli, "TOURS", (packaged, cli.TOURS[1]))
    assert cli._tour() == cli.TOURS[1]  # a source checkout: notebooks/ beside the package
    packaged.parent.mkdir(parents=True)
    packaged.write_text("{}")
    assert cli._tour() == packaged
    monkeypatch.setattr(cli, "TOURS", (packaged.with_name("gone.ipynb"),))
    with pytest.raises(FileNotFoundError, match="tour notebook is missing"):
        cli._tour()


@pytest.mark.slow
def test_execute_precomputes_the_explorers_within_the_budget(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = (
        "import numpy as np, heatwidget as hw\n"
        "m = hw.HeatMatrix(np.arange(12, dtype=np.float32).reshape(3, 4))\n"
        "ex = hw.explore(m)\n"
        "for c in range(3):\n"  # live clicks: the explorer keeps their views hidden, export drops them
        "    ex.select(0, c); ex.wait()\n"
        "ex"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "ex.ipynb")
    out = export_notebook(tmp_path / "ex.ipynb", tmp_path / "ex.html", execute=True, timeout=120, drill=5)
    assert "5 of 12 cells precomputed" in capsys.readouterr().err
    saved = nbformat.read(tmp_path / "ex.ipynb", as_version=4)
    assert len(saved.cells) == 1  # the notebook itself is untouched
    html = out.read_text(encoding="utf-8")
    assert "Details precomputed for 5 of 12 cells" in html
    # Views: 5 precomputed + the shown live one; the 2 hidden views of earlier clicks were dropped.
    assert html.count("class='hw-detail-title'") == 6, html.count("class='hw-detail-title'")
    assert "precompute_all" not in html and "get_manager_state" not in html  # the final cell is not in the page
