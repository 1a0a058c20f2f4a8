"""Export a notebook to HTML with its widget state, so heatmaps render and respond to hover/clicks without a kernel."""

from __future__ import annotations

from pathlib import Path


def export_notebook(notebook: Path, output: Path, *, execute: bool = False, timeout: int = 600) -> Path:
    """Optionally execute `notebook` (storing widget state) and write it as HTML to `output`."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook, output = Path(notebook), Path(output)
    if not notebook.exists():
        raise FileNotFoundError(f"no such notebook: {notebook}")
    nb = nbformat.read(notebook, as_version=4)
    if execute:
        from nbclient import NotebookClient

        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                                resources={"metadata": {"path": str(notebook.parent.resolve())}})
        client.execute()
    body, _ = HTMLExporter().from_notebook_node(nb)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(body, encoding="utf-8")
    return output
