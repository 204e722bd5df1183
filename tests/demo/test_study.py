"""`prefix-rft demo --study` in miniature: the same stages as the real study (grid on the validation split, the
chosen rates on every seed, sft_rft's two halves, an ablation at its parent's rate), one-point grids and 2 steps so
that it runs in about a minute; study.json, table.md and the PNGs are produced for real, and a second invocation
reuses every run (the study is resumable)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def test_study_in_miniature_writes_its_outputs_and_resumes(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "prefix_rft_megatron.demo", "--study", "--out", str(out), "--seeds", "1",
           "--steps", "2", "--base-steps", "2", "--algos", "prefix_rft,sft,sft_rft,rho_1.0", "--rl-grid", "3e-4",
           "--sft-grid", "1e-3", "eval.max_problems=6"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    study = json.loads((out / "study.json").read_text())
    assert study["chosen_lr"] == {"prefix_rft": 3e-4, "sft": 1e-3, "sft_rft": 3e-4}
    assert [r["arm"] for r in study["rows"]] == ["base", "prefix_rft", "sft", "sft_rft", "rho_1.0"]
    assert [r["lr"] for r in study["rows"]] == [None, 3e-4, 1e-3, 3e-4, 3e-4]  # the ablation at its parent's rate
    for r in study["rows"][1:]:
        assert len(r["heldout"]) == 1 and len(r["validation"]) == 1  # both splits were evaluated
    # sft_rft: the SFT half at SFT's chosen rate, the RFT half from its export
    rft_half = json.loads((out / "runs" / "sft_rft_lr3e-4_seed1" / "done.json").read_text())["overrides"]
    assert f"model.hf_path={out / 'runs' / 'sft_rft_sft1e-3_seed1' / 'hf'}" in rft_half
    assert "algorithm.name=RFT" in rft_half
    pairs = [(d["a"], d["b"]) for d in study["differences"]]
    assert pairs == [("prefix_rft", "sft"), ("prefix_rft", "sft_rft"), ("rho_1.0", "prefix_rft")]
    for d in study["differences"]:
        assert d["num_problems"] == 6 and d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert "## Validation accuracy of the grid" in (out / "table.md").read_text()
    for png in ("curves.png", "ablations.png"):
        assert (out / png).stat().st_size > 10_000
    assert "[1/" in proc.stdout  # progress
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert again.stdout.count("running ->") == 0 and again.stdout.count("cached") == 6, again.stdout[-3000:]
