"""The README's pictures: every image it references exists and is a small PNG, the README opens with the explorer,
and the script that makes them (scripts/make_images.py) runs, here on a small case."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CHROMIUM = Path("/usr/bin/chromium")
MAX_BYTES = 200_000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _image_refs(markdown: str) -> list[str]:
    """Paths of images referenced by Markdown ![alt](path) and HTML <img src="path">, in order."""
    refs = re.findall(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img\s[^>]*src=\"([^\"]+)\"", markdown)
    return [a or b for a, b in refs]


def test_image_refs_are_found_in_both_syntaxes() -> None:
    md = '![x](docs/img/a.png "t")\ntext <img width="300" src="docs/img/b.png"> ![y](c.png)'
    assert _image_refs(md) == ["docs/img/a.png", "docs/img/b.png", "c.png"]


def test_every_image_the_readme_references_exists_and_is_a_small_png() -> None:
    refs = _image_refs(README.read_text(encoding="utf-8"))
    assert refs, "the README shows no pictures"
    for ref in refs:
        assert not ref.startswith(("http:", "https:")), f"{ref}: the README's pictures ship in the repository"
        path = REPO / ref
        assert path.is_file(), f"the README references {ref}, which does not exist"
        data = path.read_bytes()
        assert data[:8] == PNG_MAGIC, f"{ref} is not a PNG"
        assert len(data) < MAX_BYTES, f"{ref} is {len(data)} bytes; keep pictures under {MAX_BYTES}"


def test_readme_opens_with_the_explorer_and_shows_every_seed_figure() -> None:
    text = README.read_text(encoding="utf-8")
    refs = _image_refs(text)
    assert refs[0] == "docs/img/explorer.png"
    assert text.index("docs/img/explorer.png") < text.index("\n## ")  # before the first section
    analyses = text[text.index("## The analyses") :]
    analyses = analyses[: analyses.index("\n## ", 1)]
    for name in ("kl", "js", "probe", "weights"):
        assert f"docs/img/{name}.png" in analyses, f"the analyses section lacks docs/img/{name}.png"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_images", REPO / "scripts" / "make_images.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium")
def test_make_images_smoke_run(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    # In a process of its own: Playwright's sync API refuses to run where an earlier test (nbclient) left an
    # asyncio loop running in this one.
    code = (
        "import importlib.util, sys; from pathlib import Path;"
        "spec = importlib.util.spec_from_file_location('make_images', sys.argv[1]);"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod);"
        "mod.make_images(Path(sys.argv[2]), small=True, explorer=False)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "scripts" / "make_images.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    done = json.loads((tmp_path / "readings.json").read_text(encoding="utf-8"))
    assert set(done) == {"kl", "js", "probe", "weights"}
    for name, item in done.items():
        data = (tmp_path / item["file"]).read_bytes()
        assert data[:8] == PNG_MAGIC and 2_000 < len(data) < MAX_BYTES, (name, len(data))
        assert item["reading"].strip()
    # the readings are computed from the figures, not fixed text
    assert re.search(r"\d\.\d", done["probe"]["reading"]) and re.search(r"layer \d", done["kl"]["reading"])
