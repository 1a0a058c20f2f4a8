"""The version is written once, in heatwidget/__init__.py: the build reads it from there and js/ follows it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import heatwidget

ROOT = Path(__file__).resolve().parents[1]
# hatchling's default pattern for a `path` version source (hatchling/version/source/regex.py).
HATCH_VERSION_PATTERN = r"""(?i)^(__version__|VERSION) *= *([\'"])v?(?P<version>.+?)\2"""


def test_pyproject_takes_the_version_from_the_package() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in config["project"], "pyproject.toml must not write the version itself"
    assert "version" in config["project"]["dynamic"]
    source = ROOT / config["tool"]["hatch"]["version"]["path"]
    found = re.search(HATCH_VERSION_PATTERN, source.read_text(encoding="utf-8"), re.MULTILINE)
    assert found is not None and found["version"] == heatwidget.__version__


def test_js_package_has_the_python_version() -> None:
    package = json.loads((ROOT / "js" / "package.json").read_text(encoding="utf-8"))
    lock = json.loads((ROOT / "js" / "package-lock.json").read_text(encoding="utf-8"))
    assert package["version"] == heatwidget.__version__, "js/package.json: set its version to heatwidget.__version__"
    assert lock["version"] == lock["packages"][""]["version"] == heatwidget.__version__, (
        "js/package-lock.json: run `cd js && npm install --package-lock-only` after changing the version"
    )
