"""Every notebook in notebooks/ executes top to bottom on the demo model (CPU), as users will run it."""

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_notebooks_are_up_to_date_with_their_builder():
    import sys

    sys.path.insert(0, str(NOTEBOOKS[0].parent))
    import _build

    for name, cells in _build.NOTEBOOKS.items():
        nb = nbformat.read(NOTEBOOKS[0].parent / name, as_version=4)
        assert [c.source for c in nb.cells] == [src for _kind, src in cells], f"{name}: run notebooks/_build.py"


def stderr_and_warnings(nb: nbformat.NotebookNode) -> list[str]:
    """Every output a user would see as noise: anything on stderr (warnings, progress bars of other libraries,
    log lines: a red box in JupyterLab) and any Python warning printed elsewhere."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            stream = out.output_type == "stream"
            text = out.get("text", "") if stream else str(out.get("data", {}).get("text/plain", ""))
            if stream and out.name == "stderr":
                found.append(f"cell {i} wrote to stderr: {text[:200]!r}")
            elif re.search(r"\b[A-Z]\w*Warning\b", text):
                found.append(f"cell {i} shows a warning: {text[:200]!r}")
    return found


def test_noise_in_an_executed_notebook_is_found():
    """The check above on a real kernel's outputs: a warning, a stderr write and clean output."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import warnings; warnings.warn('careful')"),
            nbformat.v4.new_code_cell("import sys; print('progress 3/4', file=sys.stderr)"),
            nbformat.v4.new_code_cell("print('fine'); 1 + 1"),
        ]
    )
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    noise = stderr_and_warnings(nb)
    assert len(noise) == 2 and "cell 0" in noise[0] and "UserWarning" in noise[0] and "cell 1" in noise[1], noise


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    took = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    noise = stderr_and_warnings(nb)
    assert not noise, f"{path.name}: " + "; ".join(noise[:5])
    widget_state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    assert widget_state.get("state"), "widget state was not stored"
    assert took < 240, f"{path.name} took {took:.0f} s"
