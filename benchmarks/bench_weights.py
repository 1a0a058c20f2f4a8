"""Benchmark `hw.weight_change`: streaming two checkpoint directories vs loading both models fully first.

    python benchmarks/bench_weights.py                 # random Llama, ~150 MB of float32 weights per checkpoint
    python benchmarks/bench_weights.py --hidden 512 --intermediate 1408 --layers 3 --json

Two random-weight checkpoints (b = a with a few modules perturbed) are saved to a temporary directory. Each mode then
runs once in a fresh Python process so that its peak memory is its own: after the imports (and a warm-up that builds
the model skeleton on the meta device, so both modes have imported the same modeling code) the kernel's RSS high-
water mark is reset (`/proc/self/clear_refs`), and the reported peak is the high-water mark above that baseline.
  stream: hw.weight_change(dir_a, dir_b)                       (tensors read one pair at a time)
  full:   from_pretrained(dir_a), from_pretrained(dir_b), then hw.weight_change(model_a, model_b)
Both must give the same matrix (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakRSS:
    """Peak RSS above the baseline at construction: the kernel's VmHWM after resetting it (Linux), else the maximum
    of psutil samples taken every millisecond (which can miss a short spike)."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # "5" resets VmHWM to the current RSS
            self.kernel = _status_kb("VmHWM") is not None
        except OSError:
            self.kernel = False
        self.baseline = self._proc.memory_info().rss
        self._max = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._proc.memory_info().rss)
            time.sleep(0.001)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        sampled = max(self._max, self._proc.memory_info().rss)
        hwm = (_status_kb("VmHWM") or 0) * 1024 if self.kernel else 0
        peak = max(hwm, sampled)
        return dict(
            baseline_mb=self.baseline / 2**20,
            peak_mb=(peak - self.baseline) / 2**20,
            method="VmHWM" if self.kernel else "psutil sampling",
        )


def make_pair(root: Path, hidden: int, intermediate: int, layers: int, seed: int = 0) -> tuple[Path, Path, int]:
    """Save a random Llama as `a` and a perturbed copy as `b`; returns (a, b, bytes of one checkpoint)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        vocab_size=1024,
        max_position_embeddings=256,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    a, b = root / "a", root / "b"
    model.save_pretrained(a)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.self_attn.q_proj.weight.add_(0.01 * (i + 1) * torch.randn_like(layer.self_attn.q_proj.weight))
            layer.mlp.down_proj.weight.mul_(1.05)
    model.save_pretrained(b)
    size = sum(p.stat().st_size for p in a.glob("*.safetensors"))
    return a, b, size


def child(mode: str, a: str, b: str, out: str) -> None:
    """One measured run in this (fresh) process; writes a JSON result and the matrix values to `out`."""
    import numpy as np
    import torch

    import heatwidget as hw
    from heatwidget._checkpoint import checkpoint_anatomy

    torch.set_num_threads(2)
    checkpoint_anatomy(a)  # warm-up: import the modeling code both modes need, outside the measurement
    from transformers import AutoModelForCausalLM

    meter = PeakRSS()
    t0 = time.perf_counter()
    if mode == "stream":
        m = hw.weight_change(a, b)
    else:
        ma = AutoModelForCausalLM.from_pretrained(a, dtype=torch.float32)
        mb = AutoModelForCausalLM.from_pretrained(b, dtype=torch.float32)
        m = hw.weight_change(ma, mb)
    seconds = time.perf_counter() - t0
    mem = meter.stop()
    np.save(out + ".npy", m.values)
    Path(out).write_text(
        json.dumps(dict(mode=mode, seconds=seconds, largest_pair_mb=m.meta["largest_pair_bytes"] / 2**20, **mem))
    )


def run_mode(mode: str, a: Path, b: Path, tmp: Path) -> dict:
    out = tmp / f"result_{mode}.json"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_OFFLINE": "1",
    }
    subprocess.run([sys.executable, __file__, "--child", mode, str(a), str(b), str(out)], check=True, env=env)
    res = json.loads(out.read_text())
    import numpy as np

    res["values"] = np.load(str(out) + ".npy")
    return res


def bench(hidden: int = 1024, intermediate: int = 2816, layers: int = 4, tmpdir: str | None = None) -> dict:
    import numpy as np

    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        a, b, size = make_pair(tmp, hidden, intermediate, layers)
        setup = time.perf_counter() - t0
        results = {mode: run_mode(mode, a, b, tmp) for mode in ("stream", "full")}
    same = bool(np.array_equal(results["stream"]["values"], results["full"]["values"], equal_nan=True))
    for r in results.values():
        r.pop("values")
    return dict(checkpoint_mb=size / 2**20, setup_seconds=setup, same_matrix=same, **results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--intermediate", type=int, default=2816)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "A", "B", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    res = bench(args.hidden, args.intermediate, args.layers)
    if args.json:
        print(json.dumps(res, indent=1))
        return
    print(
        f"two random Llama checkpoints of {res['checkpoint_mb']:.1f} MB each (float32; built and saved in "
        f"{res['setup_seconds']:.1f} s); same matrix from both modes: {res['same_matrix']}"
    )
    print(f"{'mode':<8}{'time (s)':>10}{'peak RSS above baseline (MB)':>31}{'largest tensor pair (MB)':>27}")
    for mode in ("stream", "full"):
        r = res[mode]
        print(f"{mode:<8}{r['seconds']:>10.2f}{r['peak_mb']:>31.1f}{r['largest_pair_mb']:>27.1f}")
    print(f"(peak measured with {res['stream']['method']})")


if __name__ == "__main__":
    main()
