"""The `heatwidget` command: `heatwidget demo` (JupyterLab on the tour, or --html for a headless report)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _tour() -> Path:
    tour = NOTEBOOKS / "tour.ipynb"
    if not tour.exists():
        sys.exit(f"heatwidget: the tour notebook is not at {tour} (run from a source checkout)")
    return tour


def _export(command: str, notebook: Path, output: Path, **options) -> int:
    """Export, print where it went, and turn export errors into one line on stderr (exit 1)."""
    from .export import ExportError, export_notebook

    try:
        out = export_notebook(notebook, output, **options)
    except (ExportError, FileNotFoundError) as e:
        print(f"heatwidget {command}: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    tour = _tour()
    if args.html:
        return _export("demo", tour, Path(args.html), execute=True, timeout=args.timeout)
    cmd = [sys.executable, "-m", "jupyter", "lab", str(tour), f"--port={args.port}"]
    if args.no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd)


def cmd_export(args: argparse.Namespace) -> int:
    return _export("export", Path(args.notebook), Path(args.output), execute=args.execute, timeout=args.timeout,
                   offline=not args.cdn, theme=args.theme)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="heatwidget", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="open JupyterLab on the tour notebook (or write an HTML report with --html)")
    d.add_argument("--html", metavar="FILE", help="execute the tour headless and write a self-contained HTML report")
    d.add_argument("--port", type=int, default=8888)
    d.add_argument("--no-browser", action="store_true")
    d.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing")
    d.set_defaults(func=cmd_demo)
    e = sub.add_parser("export", help="export a notebook to an HTML file whose widgets work offline")
    e.add_argument("notebook")
    e.add_argument("output")
    e.add_argument("--execute", action="store_true", help="run the notebook first (widget state is saved)")
    e.add_argument("--timeout", type=int, default=600)
    e.add_argument("--theme", choices=["light", "dark"], default="light", help="JupyterLab page theme")
    e.add_argument("--cdn", action="store_true",
                   help="load require.js and widget front ends from CDNs (nbconvert's default; needs internet)")
    e.set_defaults(func=cmd_export)
    args = p.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
