"""benchmarks/bench_probe_pipeline.py runs end to end on a few questions and reports what the docs quote."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_probe_pipeline_benchmark_reports_stage_ratios_and_agrees_with_the_reference() -> None:
    bench = ROOT / "benchmarks" / "bench_probe_pipeline.py"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, str(bench), "--questions", "60", "--layers", "1", "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        env=env,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["n_questions"] == 60 and r["n_kept"] > 40 and r["shape"][1:3] == [1, 15]
    assert set(r["ratio"]) == {"answer", "collect", "probe"} and all(v > 0 for v in r["ratio"].values())
    assert r["end_to_end_ratio"] > 0
    # Both pipelines keep the same questions and label each the same way; the AUCs are those of one optimum (a
    # 12-question test split makes one AUC step 1/(n_correct·n_wrong), so only the full run checks 0.01).
    assert r["same_rows"] and r["same_labels"]
    assert 0 <= r["max_abs_dauc_vs_converged_sklearn"] <= 0.1
