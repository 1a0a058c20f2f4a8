"""A throwaway JupyterLab server for browser tests and the render benchmark.

Started in a temporary root with its own config, runtime and workspace folders (announcements off, app exposed as
`window.jupyterapp` so tests drive Lab through its command registry rather than menu clicks), on 127.0.0.1 only,
with a random token (the browser logs in through `?token=` on the first page it opens).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Import heatwidget.widget in a kernel without the package __init__ (which loads torch and the analyses).
WIDGET_IMPORT = (
    "import sys, types\n"
    f"_pkg = types.ModuleType('heatwidget'); _pkg.__path__ = [{str(REPO / 'heatwidget')!r}]\n"
    "sys.modules.setdefault('heatwidget', _pkg)\n"
    "from heatwidget.widget import Heatmap\n"
    "from heatwidget.matrix import HeatMatrix\n"
)

# Run cell `index` (after replacing its source when `code` is given); resolves when the kernel replied.
RUN_CELL_JS = """
async ([index, code]) => {
  const app = window.jupyterapp;
  const nb = app.shell.currentWidget.content;
  if (code !== null) nb.widgets[index].model.sharedModel.setSource(code);
  nb.activeCellIndex = index;
  nb.deselectAll();
  await app.commands.execute('notebook:run-cell');
  return nb.widgets[index].node.querySelector('.jp-OutputArea')?.textContent ?? '';
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    def __init__(self, root: Path, notebooks: dict[str, list[str]]) -> None:
        self.root = root
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = root / ".config" / "labconfig"
        cfg.mkdir(parents=True)
        # No "would you like to receive news?" toast over the notebook.
        (cfg / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
        )
        for name, cells in notebooks.items():
            self.add_notebook(name, cells)
        env = dict(os.environ, JUPYTER_CONFIG_DIR=str(root / ".config"), JUPYTER_RUNTIME_DIR=str(root / ".runtime"))
        self.log_path = root / "lab.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter",
                "lab",
                "--no-browser",
                "--allow-root",
                f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={self.token}",
                "--ServerApp.password=",
                "--ServerApp.disable_check_xsrf=True",
                "--LabApp.expose_app_in_browser=True",
                f"--ServerApp.root_dir={root}",
                f"--LabApp.workspaces_dir={root / '.workspaces'}",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                req = urllib.request.Request(f"{self.url}/api/status", headers={"Authorization": f"token {self.token}"})
                urllib.request.urlopen(req, timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.3)
        self.close()
        raise RuntimeError(f"JupyterLab did not start; see {self.log_path}")

    def add_notebook(self, name: str, cells: list[str]) -> Path:
        """Write a notebook of code cells into the server's root (the server is shared by the whole session)."""
        import nbformat

        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, self.root / name)
        return self.root / name

    def open(self, browser: Any, name: str, viewport: tuple[int, int] = (1280, 1000)) -> tuple[Any, Any]:
        """A new browser context with notebook `name` open and its kernel idle."""
        ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        page = ctx.new_page()
        # `reset`: the server is shared by the session, and Lab would otherwise restore the previous test's tabs
        # (and might make one of them the current widget that commands act on).
        page.goto(f"{self.url}/lab/tree/{name}?reset&token={self.token}")
        page.wait_for_function(
            """(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                 const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
                 return k && k.status === 'idle' && w.context.path === name && w.content.widgets.length > 0; }""",
            arg=name,
            timeout=120_000,
        )
        return ctx, page

    @staticmethod
    def run_cell(page: Any, index: int, code: str | None = None) -> str:
        """Run cell `index` (optionally with new source) and return its output text."""
        return page.evaluate(RUN_CELL_JS, [index, code])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
