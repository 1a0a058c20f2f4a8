"""The `heatwidget` command: `heatwidget demo` (JupyterLab on the tour, or --html for a headless report)."""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# The wheel carries the tour at heatwidget/notebooks/ (pyproject force-include); a source checkout has it in
# notebooks/ next to the package.
TOURS = (_PACKAGE / "notebooks" / "tour.ipynb", _PACKAGE.parent / "notebooks" / "tour.ipynb")
# What `demo` and `export --execute` need beyond the core, by import name (the `demo` extra installs them).
DEMO_NEEDS = {"html": ("nbconvert", "nbclient", "ipykernel"), "lab": ("jupyterlab", "ipykernel")}


def _tour() -> Path:
    for tour in TOURS:
        if tour.is_file():
            return tour
    raise FileNotFoundError(
        f"the tour notebook is missing (looked in {', '.join(map(str, TOURS))}); reinstall heatwidget"
    )


def _missing(what: str) -> str | None:
    """One line naming the packages `what` needs that are not installed and the extra that brings them."""
    import importlib.util

    missing = [name for name in DEMO_NEEDS[what] if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: "
        "pip install 'heatwidget[demo]'"
    )


def _export(command: str, notebook: Path, output: Path, **options) -> int:
    """Export and print where it went (user errors become one line on stderr in `_run`)."""
    from .export import export_notebook

    if output.is_dir():  # before a possibly long execution, not after it
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(output))
    out = export_notebook(notebook, output, **options)
    print(f"wrote {out}")
    return 0


USAGE_ERROR = 2  # what argparse returns for a bad command line; bad files given on it are the same kind of error


def _user_error(e: BaseException, args: argparse.Namespace) -> str | None:
    """One line for an error the user can fix (a missing or wrong file, a failed cell), or None for a bug."""
    # nbformat's errors for a file that is not JSON / not a valid notebook (both ship with nbformat, a dependency)
    from jsonschema import ValidationError
    from nbformat.reader import NotJSONError

    from .export import ExportError

    notebook = getattr(args, "notebook", None)
    if isinstance(e, NotJSONError):
        return f"{notebook or 'the notebook'} is not a Jupyter notebook: it is not JSON"
    if isinstance(e, ValidationError):
        first = str(getattr(e, "message", e)).strip().splitlines()[0][:200]
        return f"{notebook or 'the notebook'} is not a valid Jupyter notebook ({first})"
    if isinstance(e, IsADirectoryError):
        where = e.filename or "a path"
        return f"{where} is a directory: give a file path (e.g. {Path(str(where)) / 'out.html'})"
    if isinstance(e, (ExportError, OSError, ValueError)):
        lines = str(e).strip().splitlines()
        return lines[0] if lines else type(e).__name__
    return None


def _run(args: argparse.Namespace) -> int:
    """Run a command; user errors print one line on stderr and exit 2, never a traceback (bugs still show one)."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"heatwidget {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        msg = _user_error(e, args)
        if msg is None:
            raise
        print(f"heatwidget {args.command}: {msg}", file=sys.stderr)
        return USAGE_ERROR


def cmd_demo(args: argparse.Namespace) -> int:
    tour = _tour()
    problem = _missing("html" if args.html else "lab")
    if problem:
        print(f"heatwidget demo {problem}", file=sys.stderr)
        return 1
    if args.html:
        return _export(
            "demo",
            tour,
            Path(args.html),
            execute=True,
            timeout=args.timeout,
            drill=args.drill,
            drill_budget_mb=args.drill_budget,
        )
    cmd = [sys.executable, "-m", "jupyter", "lab", str(tour), f"--port={args.port}"]
    if args.no_browser:
        cmd.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return subprocess.call(cmd)


def cmd_export(args: argparse.Namespace) -> int:
    problem = _missing("html")
    if problem:
        print(f"heatwidget export {problem}", file=sys.stderr)
        return 1
    return _export(
        "export",
        Path(args.notebook),
        Path(args.output),
        execute=args.execute,
        timeout=args.timeout,
        offline=not args.cdn,
        theme=args.theme,
        drill=args.drill,
        drill_budget_mb=args.drill_budget,
    )


def _drill_options(p: argparse.ArgumentParser) -> None:
    from .export import parse_drill

    def drill(text: str) -> str | int:
        try:
            return parse_drill(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    p.add_argument(
        "--drill",
        type=drill,
        default="all",
        metavar="all|none|N",
        help="precompute the explorers' drill-downs so clicks in the page work without a kernel: every "
        "cell (default), none, or the N most extreme cells per explorer (with --execute)",
    )
    p.add_argument(
        "--drill-budget",
        type=float,
        default=25.0,
        metavar="MB",
        help="size budget of the whole page; past it the most extreme cells keep their details and "
        "each explorer says how many cells have them (default 25)",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="heatwidget", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="open JupyterLab on the tour notebook (or write an HTML report with --html)")
    d.add_argument("--html", metavar="FILE", help="execute the tour headless and write a self-contained HTML report")
    d.add_argument("--port", type=int, default=8888)
    d.add_argument("--no-browser", action="store_true")
    d.add_argument("--timeout", type=int, default=600, help="seconds per cell when executing")
    _drill_options(d)
    d.set_defaults(func=cmd_demo)
    e = sub.add_parser("export", help="export a notebook to an HTML file whose widgets work offline")
    e.add_argument("notebook")
    e.add_argument("output")
    e.add_argument("--execute", action="store_true", help="run the notebook first (widget state is saved)")
    e.add_argument("--timeout", type=int, default=600)
    e.add_argument("--theme", choices=["light", "dark"], default="light", help="JupyterLab page theme")
    e.add_argument(
        "--cdn",
        action="store_true",
        help="load require.js and widget front ends from CDNs (nbconvert's default; needs internet)",
    )
    _drill_options(e)
    e.set_defaults(func=cmd_export)
    args = p.parse_args(argv)
    return _run(args)


if __name__ == "__main__":
    raise SystemExit(main())
