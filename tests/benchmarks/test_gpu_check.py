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
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=900)
    lines = proc.stdout.rstrip().splitlines()
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert lines[-1] == "gpu_check: 5/5 ok"  # one GPU's checks (no TP/DP rows without 2 devices)
    assert [line.split(" ok ")[0] for line in lines[1:-1]] == [
        "gpu_check: process group", "gpu_check: logits vs transformers", "gpu_check: trainer", "gpu_check: MFU",
        "gpu_check: generation"]
    r = json.loads(out.read_text())["checks"]
    assert "cpu:gloo" in r["process group"]["backend"] and r["process group"]["cpu_sum"] == 4.0  # a world of one
    assert r["logits vs transformers"]["max_logit_diff"] <= 0.1  # bf16 (compare-logits' bf16 bound)
    t = r["trainer"]
    assert t["steps"] == 4 and t["logprob_diff_max"] <= 1e-4  # 3 steps, then a resume for the 4th; fp32 on CPU
    assert "local layer spec" in t["fused_paths"] and "torch.optim.AdamW" in t["fused_paths"]
    assert t["sync_bytes"] > 0 and t["sync_vs_copy"] > 0
    assert 0 < r["MFU"]["mfu"] and r["MFU"]["matmul_peak_tflops"] > 0
    assert r["generation"]["tokens"] == 8 * 16 and r["generation"]["tokens_per_s"] > 0
