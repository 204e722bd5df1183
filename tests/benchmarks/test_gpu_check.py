"""benchmarks/gpu_check.py runs end to end at tiny size here (on CPU: fp32 trainer, bf16 parity), so the script a
GPU session runs once cannot rot. Its figures at this size say nothing about speed; the bounds below are about
correctness."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_gpu_check_tiny(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--tiny", "--out", str(out),
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.rstrip().splitlines()[-1].startswith("HF engine generation")  # the table comes last
    r = json.loads(out.read_text())
    assert r["parity"]["max_logit_diff"] <= 0.1  # bf16 (compare-logits' bf16 bound)
    assert r["trainer"]["steps"] == 3 and r["trainer"]["logprob_diff_max"] <= 1e-4  # fp32 on CPU
    assert r["trainer"]["sync_bytes"] > 0 and r["trainer"]["sync_vs_copy"] > 0
    assert 0 < r["mfu"]["mfu"] and r["mfu"]["matmul_peak_tflops"] > 0
    assert r["generation"]["tokens"] == 8 * 16 and r["generation"]["tokens_per_s"] > 0
