import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# Tiny test models gain nothing from intra-op threads, and two threads on a busy 2-core box mostly wait
# for each other (measured: ~8x slower under load). Subprocesses (kernels, benchmarks) choose their own.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """Factory: tiny_dir("gpt2") -> a saved random-weight model directory (cached for the session)."""
    from tiny_models import save_tiny

    cache: dict = {}

    def make(family: str, **kw) -> Path:
        key = (family, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = save_tiny(family, tmp_path_factory.mktemp(family), **kw)
        return cache[key]

    return make
