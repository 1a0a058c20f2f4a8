"""Export a notebook to one HTML file whose widgets render and respond (hover, clicks) offline, without a kernel.

nbconvert's own HTML export loads require.js from cdnjs, the widget html-manager from unpkg and every widget front
end (anywidget, bqplot, bqscales, ...) from jsdelivr, so its pages are blank without internet, and bqplot's front
end in the version pip installs is not on the public CDN at all. Here the page carries everything inline:

* require.js (npm `requirejs`) and `@jupyter-widgets/html-manager`'s `embed-amd.js`, copied into
  `heatwidget/static/vendor/` when the front end is built (`js/vendor.mjs`, npm postbuild; a source checkout can
  also use `js/node_modules` directly);
* the AMD front end of every widget module the saved state names, from the installed Python packages'
  nbextension folders (`<prefix>/share/jupyter/nbextensions/<module>/index.js`), so page and kernel versions match;
* the saved widget state (nbclient `store_widget_state=True` when executing here), with the heatmap's own bundle in
  it (`Heatmap.get_state` keeps `_esm`).

Widget outputs whose state was not saved cannot be rendered: they fall back to the static image (the heatmap's SVG)
or text, with a note in each output and a banner at the top of the page saying so.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["export_notebook", "ExportError", "find_vendor_files", "find_widget_module"]

VIEW_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"

_PACKAGE = Path(__file__).resolve().parent
TEMPLATES = _PACKAGE / "templates"
TEMPLATE_NAME = "heatwidget_offline"
VENDOR_DIR = _PACKAGE / "static" / "vendor"
# Where a source checkout's npm install puts the same files (used when the postbuild copy has not run yet).
_NODE_MODULES = _PACKAGE.parent / "js" / "node_modules"
VENDOR_FILES = {
    "require.js": ("requirejs", "require.js"),
    "embed-amd.js": ("@jupyter-widgets/html-manager", "dist/embed-amd.js"),
}
# Modules the html-manager itself defines (base, controls, output, and their ipywidgets-7 twins).
_BUILTIN_PREFIX = "@jupyter-widgets/"
# Dependencies named in an AMD module's leading `define([...]` (a bundle's externals).
_AMD_DEPS = re.compile(r"define\(\s*\[([^\]]*)\]")
# Markdown that MathJax would typeset; without any, the page skips MathJax (a CDN script) and stays offline.
_MATH = re.compile(r"\$|\\\(|\\\[|\\begin\{")


class ExportError(RuntimeError):
    """The notebook cannot be exported as asked (missing files, a failed cell)."""


@dataclass
class _Module:
    name: str
    path: Path
    source: str = ""
    deps: list[str] = field(default_factory=list)


def _inline_js(source: str) -> str:
    """Make JavaScript safe to place between <script> and </script>.

    The HTML parser ends a script at the first `</script` and treats `<!--` specially; both only occur inside
    strings, comments or regular expressions, where `<\\/` and `<\\!` mean the same characters.
    """
    source = re.sub(r"</(script)", r"<\\/\1", source, flags=re.IGNORECASE)
    return source.replace("<!--", "<\\!--")


def _literal(text: str, _match: re.Match[str]) -> str:
    return text


def _inline_fonts(embed_source: str, folder: Path) -> str:
    """Point the html-manager's Font Awesome woff2 assets at data: URLs.

    Webpack emits them as `<runtime>.p + "<hash>.woff2"`, a path next to the script file; an inlined script has no
    file, so the browser would request `./@jupyter-widgets/<hash>.woff2` and log a failed load for each button
    icon. The CSS lists woff2 before woff/ttf/eot, so Chromium and Firefox never ask for the other formats.
    """
    for font in sorted(folder.glob("*.woff2")):
        url = "data:font/woff2;base64," + base64.b64encode(font.read_bytes()).decode("ascii")
        pattern = r'[A-Za-z_$][\w$]*\.p\+"' + re.escape(font.name) + '"'
        # A function as the replacement: re.sub then inserts the literal as it is (no backslash escapes).
        embed_source = re.sub(pattern, functools.partial(_literal, json.dumps(url)), embed_source)
    return embed_source


def find_vendor_files() -> dict[str, Path]:
    """Paths of require.js and the html-manager's embed-amd.js; ExportError saying how to get them if missing."""
    found: dict[str, Path] = {}
    for name, (pkg, rel) in VENDOR_FILES.items():
        for cand in (VENDOR_DIR / name, _NODE_MODULES / pkg / rel):
            if cand.is_file():
                found[name] = cand
                break
        else:
            raise ExportError(
                f"offline export needs {name} (npm package {pkg}), which is not in {VENDOR_DIR}. "
                "Build the front end: `cd js && npm ci && npm run build` (or reinstall: `pip install -e .`), "
                "or export with --cdn for a page that loads its scripts from the internet."
            )
    return found


def find_widget_module(name: str) -> Path | None:
    """The installed AMD front end of widget module `name` (its nbextension's index.js), or None."""
    from jupyter_core.paths import jupyter_path

    # Module names are npm names; a scoped one ("@org/pkg") would be a nested folder, which is also how
    # `jupyter nbextension install` lays them out.
    for base in jupyter_path("nbextensions"):
        cand = Path(base) / name / "index.js"
        if cand.is_file():
            return cand
    return None


def _widget_state(nb: Any) -> dict[str, Any]:
    widgets = nb.get("metadata", {}).get("widgets") or {}
    return (widgets.get(STATE_MIME) or {}).get("state") or {}


def _modules_for(state: dict[str, Any]) -> tuple[list[_Module], list[str]]:
    """The front-end modules that `state` needs (dependencies first), and the names that could not be found."""
    wanted: list[str] = []
    for model in state.values():
        st = model.get("state", {})
        for key in ("_model_module", "_view_module"):
            name = model.get(key.lstrip("_")) or st.get(key)
            if isinstance(name, str) and name and name not in wanted:
                wanted.append(name)
    modules: dict[str, _Module] = {}
    missing: list[str] = []

    def visit(name: str) -> None:
        if name.startswith(_BUILTIN_PREFIX) or name in modules or name in missing:
            return
        path = find_widget_module(name)
        if path is None:
            missing.append(name)
            return
        source = path.read_text(encoding="utf-8")
        m = _AMD_DEPS.search(source)
        deps = [d.strip().strip("\"'") for d in m.group(1).split(",")] if m else []
        mod = _Module(name, path, source, [d for d in deps if d])
        for dep in mod.deps:  # e.g. a front end that requires another widget library at load time
            visit(dep)
        modules[name] = mod

    for name in wanted:
        visit(name)
    return list(modules.values()), missing


_MODEL_REF = re.compile(r"IPY_MODEL_([0-9a-f]+)")
_LINK_MODELS = ("LinkModel", "DirectionalLinkModel")


def _prune_state(nb: Any) -> int:
    """Drop saved widget models that no output can reach (widgets closed in the kernel: nbclient keeps their last
    state); links are kept when both their ends are. Returns how many were dropped."""
    state = _widget_state(nb)
    if not state:
        return 0
    refs = {mid: set(_MODEL_REF.findall(json.dumps(model.get("state", {})))) for mid, model in state.items()}
    todo = [
        out["data"][VIEW_MIME]["model_id"]
        for cell in nb.cells
        for out in cell.get("outputs", [])
        if isinstance((out.get("data") or {}).get(VIEW_MIME), dict)
    ]
    keep: set[str] = set()
    while todo:
        mid = todo.pop()
        if mid in keep or mid not in state:
            continue
        keep.add(mid)
        todo.extend(refs[mid])
    links = {
        mid
        for mid, model in state.items()
        if model.get("model_name", model.get("state", {}).get("_model_name")) in _LINK_MODELS
    }
    keep |= {mid for mid in links if refs[mid] and refs[mid] <= keep}
    dropped = [mid for mid in state if mid not in keep]
    for mid in dropped:
        del state[mid]
    return len(dropped)


def _has_math(nb: Any) -> bool:
    return any(c.get("cell_type") == "markdown" and _MATH.search(c.get("source", "")) for c in nb.cells)


def _unsaved_view_note(output_data: dict[str, Any]) -> str:
    """HTML for a widget output whose state was not saved: a note plus the best static fallback."""
    note = (
        "<div class='heatwidget-unsaved-widget' style='font:13px sans-serif;color:#8a6100;margin:4px 0'>"
        "Interactive widget not available: the notebook was saved without widget state; "
        "showing the static image.</div>"
    )
    svg = output_data.get("image/svg+xml")
    png = output_data.get("image/png")
    if svg:
        # As an <img>, never inline markup: an SVG from a notebook must not run scripts in the page.
        svg_text = "".join(svg) if isinstance(svg, list) else str(svg)
        b64 = base64.b64encode(svg_text.encode("utf-8")).decode("ascii")
        return note + f"<img alt='static heatmap' src='data:image/svg+xml;base64,{b64}'>"
    if png:
        png_b64 = "".join(png) if isinstance(png, list) else str(png)
        return note + f"<img alt='static image' src='data:image/png;base64,{png_b64.strip()}'>"
    text = output_data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else str(text)
    note = note.replace("showing the static image", "no static image was saved")
    return note + f"<pre>{html.escape(text)}</pre>"


def _mark_unsaved_views(nb: Any) -> int:
    """Give widget outputs without saved state an HTML fallback that says so; returns how many there were."""
    state = _widget_state(nb)
    count = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            view = data.get(VIEW_MIME)
            if not isinstance(view, dict) or view.get("model_id") in state:
                continue
            count += 1
            # nbconvert skips a view whose model is not in the state and shows the next mime type: make that
            # text/html, our note plus the fallback (an existing text/html keeps its content after the note).
            extra = data.get("text/html")
            fallback = _unsaved_view_note(data)
            if extra:
                fallback = (
                    fallback.split("</div>", 1)[0]
                    + "</div>"
                    + ("".join(extra) if isinstance(extra, list) else str(extra))
                )
            data["text/html"] = fallback
    return count


# Run in the notebook's kernel after its last cell (then removed from the notebook): precompute every explorer's
# drill-downs within the page budget, then write what was kept and the state of every open widget to a file.
# That state is taken from the kernel itself because nbclient's record of comm messages can miss some: the kernel's
# IOPub socket drops messages past ZeroMQ's high-water mark when thousands of views are built in a burst.
_FINAL_CELL = """\
import json as _hw_json
from ipywidgets import Widget as _HwWidget
from heatwidget.explorer import forget_all_views as _hw_forget_views, precompute_all as _hw_precompute_all
_hw_forget_views()  # hidden views of recent live clicks are not part of the report
_hw_report = _hw_precompute_all({cells!r}, {budget_mb!r}, {reserved!r}) if {cells!r} != "none" else []
with open({path!r}, "w", encoding="utf-8") as _hw_f:
    _hw_json.dump({{"report": _hw_report, "state": _HwWidget.get_manager_state(drop_defaults=False)["state"]}},
                  _hw_f)
del _hw_f, _hw_report"""


def parse_drill(value: str | int) -> str | int:
    """--drill: "all", "none" or a number of cells per explorer; ValueError in one sentence otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    text = str(value).strip().lower()
    if text in ("all", "none"):
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"--drill must be 'all', 'none' or a number of cells, got {value!r}")


def _script_bytes() -> int:
    """About what the offline page's inlined scripts weigh (counted against the drill-down budget)."""
    total = sum(p.stat().st_size for p in VENDOR_DIR.glob("*") if p.is_file())
    for name in ("anywidget", "bqplot", "bqscales"):
        path = find_widget_module(name)
        total += path.stat().st_size if path else 0
    return total


def _merge_kernel_state(nb: Any, path: Path) -> list[dict[str, Any]]:
    """Remove the final cell from `nb`, merge the kernel's widget state into the saved one (the kernel's is
    complete and current; nbclient's keeps closed widgets, e.g. finished progress bars still shown in outputs)
    and return the precompute report."""
    nb.cells.pop()
    data = json.loads(path.read_text(encoding="utf-8"))
    widgets = nb.metadata.setdefault("widgets", {}).setdefault(STATE_MIME, {"version_major": 2, "version_minor": 0})
    widgets.setdefault("state", {}).update(data["state"])
    return data["report"]


def _execute(nb: Any, notebook: Path, timeout: int, kernel_name: str) -> None:
    import os
    import tempfile

    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="hw-kernel-") as sockets:
        config = Config()
        if os.name == "posix":
            # Unix sockets in a private folder instead of localhost TCP ports: no race for "free" ports with other
            # kernels starting at the same moment (shared CI machines, a JupyterLab next to us), and no
            # "running over TCP without encryption" warning. Given as config (not a ready kernel manager) so
            # that nbclient owns the kernel and shuts it down when done.
            config.KernelManager.transport = "ipc"
            config.KernelManager.ip = os.path.join(sockets, "k")
        # store_widget_state: the client records every widget's state (comm messages, binary buffers included)
        # into the notebook metadata, which is what the exported page renders from.
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=kernel_name,
            store_widget_state=True,
            resources={"metadata": {"path": str(notebook.parent.resolve())}},
            config=config,
        )
        try:
            client.execute()
        except CellExecutionError as e:
            raise ExportError(f"executing {notebook} failed:\n{e}") from e


def _execute_with_state(
    nb: Any, notebook: Path, timeout: int, kernel_name: str, drill: str | int, budget_mb: float, offline: bool
) -> None:
    """Run `nb` in a kernel with a last cell that precomputes drill-downs and saves the widget state into it."""
    import tempfile

    import nbformat

    with tempfile.TemporaryDirectory(prefix="hw-export-") as tmp:
        state_path = Path(tmp) / "state.json"
        reserved = _script_bytes() if offline else 0
        nb.cells.append(
            nbformat.v4.new_code_cell(
                _FINAL_CELL.format(cells=drill, budget_mb=budget_mb, reserved=reserved, path=str(state_path))
            )
        )
        _execute(nb, notebook, timeout, kernel_name)
        report = _merge_kernel_state(nb, state_path)
    for ex in report:
        print(
            f"heatwidget export: explorer {ex['explorer'] + 1} ({ex['title'] or 'untitled'}): "
            f"{ex['cells']} of {ex['total']} cells precomputed, {ex['bytes'] / 1e6:.2f} MB, "
            f"{ex['seconds']:.1f} s",
            file=sys.stderr,
        )


def _offline_resources(nb: Any, mathjax: bool | None, unsaved: int) -> dict[str, Any]:
    """What the offline template inlines: require.js, the html-manager (with its fonts), the widget front ends."""
    state = _widget_state(nb)
    modules, missing = _modules_for(state)
    if missing:
        print(
            f"heatwidget export: no local front end for widget module(s) {', '.join(missing)} "
            "(not in any nbextensions folder); the page will try the CDN for them",
            file=sys.stderr,
        )
    vendor = find_vendor_files()
    embed = vendor["embed-amd.js"]
    return {
        "requirejs": _inline_js(vendor["require.js"].read_text(encoding="utf-8")),
        "embed": _inline_js(_inline_fonts(embed.read_text(encoding="utf-8"), embed.parent)) if state else "",
        "has_state": bool(state),
        "modules": [
            {"name_attr": html.escape(m.name), "name_js": json.dumps(m.name), "source": _inline_js(m.source)}
            for m in modules
        ],
        "mathjax": _has_math(nb) if mathjax is None else mathjax,
        "unsaved_views": unsaved,
    }


def _check_budget(mb: Any) -> None:
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 0 < mb < float("inf"):
        raise ValueError(f"--drill-budget must be a positive number of MB, got {mb!r}")


def export_notebook(
    notebook: Path | str,
    output: Path | str,
    *,
    execute: bool = False,
    timeout: int = 600,
    kernel_name: str = "python3",
    offline: bool = True,
    theme: str = "light",
    mathjax: bool | None = None,
    drill: str | int = "all",
    drill_budget_mb: float = 25.0,
) -> Path:
    """Write `notebook` as an HTML page to `output`; with `execute`, run it first and save its widget state.

    drill: with `execute`, precompute the explorers' drill-downs so that clicks in the page show them without a
        kernel: "all" cells, "none", or a number of cells per explorer (the most extreme first).
    drill_budget_mb: the whole page's size budget; drill-downs are kept while it holds, and each explorer says how
        many of its cells have details.

    offline: inline require.js, the html-manager and the widget front ends (default); False gives nbconvert's
        CDN page (needs internet, and bqplot's installed front-end version may not be on the CDN).
    theme: "light" or "dark" (JupyterLab's page theme; the heatmap follows it).
    mathjax: load MathJax (from its CDN) for LaTeX in markdown; None = only when markdown contains math.
    """
    import nbformat
    from nbconvert import HTMLExporter

    notebook, output = Path(notebook), Path(output)
    if not notebook.is_file():
        raise FileNotFoundError(f"no such notebook: {notebook}")
    drill = parse_drill(drill)
    _check_budget(drill_budget_mb)
    nb = nbformat.read(notebook, as_version=4)
    if execute:
        _execute_with_state(nb, notebook, timeout, kernel_name, drill, float(drill_budget_mb), offline)
    dropped = _prune_state(nb)
    if dropped:
        print(f"heatwidget export: left out {dropped} closed widget(s) no output shows", file=sys.stderr)
    unsaved = _mark_unsaved_views(nb)
    if unsaved:
        print(
            f"heatwidget export: {unsaved} widget output(s) in {notebook.name} have no saved widget state; "
            "they are exported as static images (use --execute to save the state)",
            file=sys.stderr,
        )

    resources: dict[str, Any] = {"metadata": {"name": notebook.stem, "path": str(notebook.parent)}}
    if offline:
        resources["heatwidget"] = _offline_resources(nb, mathjax, unsaved)
        exporter = HTMLExporter(
            template_name=TEMPLATE_NAME, extra_template_basedirs=[str(TEMPLATES)], theme=theme, embed_images=True
        )
    else:
        exporter = HTMLExporter(template_name="lab", theme=theme, embed_images=True)
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(body, encoding="utf-8")
    return output
