"""benchmarks/bench_vs_trl.py runs end to end at tiny size (random policy, 1 run of 2 steps): both trainers train
on the same prompt ids (the worker asserts it) and the script prints its table and last line. The timings at this
size say nothing; the README's figures come from the full run."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_bench_vs_trl_tiny(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_vs_trl.py"), "--tiny", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    last = proc.stdout.rstrip().splitlines()[-1]
    assert re.fullmatch(r"project/TRL step time \d+\.\d\d \(rft\), \d+\.\d\d \(prefix_rft\)", last), last
    summary = json.loads((tmp_path / "summary.json").read_text())
    runs = summary["runs"]
    assert set(runs) == {"project rft", "TRL GRPOTrainer", "project prefix_rft"}
    for name, (r,) in runs.items():
        assert len(r["step_s"]) == 2 and all(s > 0 for s in r["step_s"]), name  # every step of every trainer timed
        assert all(0 < t <= 16 * 8 * 24 for t in r["tokens"]), name  # 128 samples of at most 24 new tokens
        assert r["peak_rss"] > 0 and r["startup_s"] > 0, name
