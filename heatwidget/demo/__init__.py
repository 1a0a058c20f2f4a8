"""The shipped demo model: a small Llama-style LM trained on a synthetic fact world (no download needed).

``demo_model()`` loads the weights stored in this package; ``demo_questions()`` regenerates its QA set
(deterministically, from the same world the model was trained on). The weights were made with

    python -m heatwidget.demo.train --out DIR --steps 1200      # 8 layers x 192, lr 2e-3, seed 0
    python -m heatwidget.demo.evaluate DIR --write               # accuracy, layer-skip KL, probe AUC

(``weights/training.json`` records the exact run, its loss curve and that evaluation).
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .world import exact_answer

if TYPE_CHECKING:  # the loader pulls in torch/transformers; keep `import heatwidget.demo` light
    from .._lm import LM

WEIGHTS_DIR: Path = Path(__file__).resolve().parent / "weights"

__all__ = ["WEIGHTS_DIR", "demo_model", "demo_questions", "exact_answer"]


def demo_model(device: str = "cpu", dtype: Any = None) -> LM:
    """The shipped demo model as an ``hw.LM`` (8 Llama blocks, ~4M parameters; loads in about a second)."""
    from .._lm import load

    return load(WEIGHTS_DIR, device=device, dtype=dtype)


def _world_params() -> dict[str, Any]:
    """The world the shipped weights were trained on, as recorded by the training run."""
    info = WEIGHTS_DIR / "training.json"
    if info.exists():
        return dict(json.loads(info.read_text())["corpus"]["world"])
    return {"seed": 0, "n_countries": 400}


@lru_cache(maxsize=1)
def _questions() -> tuple[dict[str, Any], ...]:
    from .world import make_world, questions

    return tuple(questions(make_world(**_world_params())))


def demo_questions(split: str | None = None, attribute: str | None = None) -> list[dict[str, Any]]:
    """The demo model's QA set, one question per (country, attribute).

    Each item: ``question`` (the exact prompt, e.g. "Q: What is the capital of Biasland? A:"), ``gold`` (the
    answer), ``subject`` (the country, as it appears in the prompt), ``attribute`` ("capital", "continent" or
    "language"), ``mult`` (how often the fact occurred in training: 1..32), ``prompt`` (a cloze statement of
    the same fact, e.g. "The capital of Biasland is"), ``split`` ("train"/"test", a fixed split for probes)
    and ``id``. ``split`` / ``attribute`` filter. Returns fresh copies (callers may mutate them).
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', not {split!r}")
    qs = [
        q
        for q in _questions()
        if (split is None or q["split"] == split) and (attribute is None or q["attribute"] == attribute)
    ]
    if attribute is not None and not qs:
        raise ValueError(f"unknown attribute {attribute!r}: use 'capital', 'continent' or 'language'")
    return copy.deepcopy(qs)
