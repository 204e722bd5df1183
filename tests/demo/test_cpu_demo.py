"""The CPU demo (`prefix-rft demo`): its bundled data, and a miniature end-to-end run of the driver.

The full demo (3 bases of 600 SFT steps, 3 x 3 runs of 40 steps) is what `make demo` runs; here the same driver runs
with a few steps so that the table, the per-kind breakdown, the verdict, summary.json and the plot are produced for
real. The study (`--study`) is the same driver over more arms; tests/demo/test_study.py runs a miniature of it.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefix_rft_megatron import demo
from prefix_rft_megatron.demo.arms import CHOSEN_LR, lr_tag

REPO = Path(__file__).resolve().parents[2]


def _run_dir(out: Path, arm: str) -> Path:
    return out / "runs" / f"{arm}_lr{lr_tag(CHOSEN_LR[arm])}_seed1"  # the demo runs each arm at the study's rate


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_bundled_chain_data_is_what_the_generator_writes(tmp_path):
    demo.make_chain_data(tmp_path)
    for split in demo.task.SPLITS:
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (demo.CHAIN_DIR / f"{split}.jsonl").read_bytes(), split


def test_chain_splits_hold_out_the_two_step_problems():
    rows = {s: _rows(demo.CHAIN_DIR / f"{s}.jsonl") for s in demo.task.SPLITS}
    two_step = {s: {r["problem"] for r in rs if r["kind"] == "sum3"} for s, rs in rows.items()}
    assert {s: len(v) for s, v in two_step.items()} == {"eval": 300, "validation": 125, "train": 280, "pretrain": 24}
    for a in two_step:  # every two-step problem is in one split only
        for b in two_step:
            assert a == b or not two_step[a] & two_step[b], (a, b)
    assert not {r["problem"] for r in rows["validation"]} & {r["problem"] for r in rows["eval"]}
    for r in rows["eval"] + rows["train"] + rows["validation"]:  # answers are right, demonstrations end in them
        terms = [int(t) for t in r["problem"].removeprefix("Compute ").rstrip(".").split(" + ")]
        assert int(r["answer"]) == sum(terms) and r["solution"].endswith(f"\\boxed{{{sum(terms)}}}")


@pytest.mark.e2e
def test_demo_driver_end_to_end_in_miniature(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "prefix_rft_megatron.demo", "--out", str(out), "--seeds", "1", "--steps", "2",
           "--base-steps", "3", "--jobs", "2", "eval.max_problems=8"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    algos = [r["arm"] for r in summary["rows"]]
    assert algos == ["base", "prefix_rft", "rft", "sft"]
    for r in summary["rows"]:
        assert len(r["heldout"]) == 1 and 0.0 <= r["heldout"][0] <= 1.0
        # 8 eval problems of the shuffled split: the per-kind breakdown covers exactly them
        assert set(r["per_kind"][0]) <= {"sum2", "sum3"} and r["per_kind"][0]
    for algo in ("prefix_rft", "rft", "sft"):
        steps = [m["step"] for m in _rows(_run_dir(out, algo) / "metrics.jsonl")]
        assert steps == [0, 1]
    prefixed = [m.get("reward/prefixed") for m in _rows(_run_dir(out, "prefix_rft") / "metrics.jsonl")]
    assert all(v is not None for v in prefixed)  # Prefix-RFT really generated prefixed rollouts
    assert (out / "curves.png").stat().st_size > 10_000
    assert summary["float_path"] in ("AVX512", "AVX2", "DEFAULT")
    assert f"float path: {summary['float_path']}" in proc.stdout
    verdicts = [line for line in proc.stdout.splitlines() if line.startswith("verdict: prefix_rft - rft: ")]
    assert len(verdicts) == 1 and "95% CI" in verdicts[0], proc.stdout[-2000:]
    diff = summary["differences"][0]
    assert (diff["a"], diff["b"]) == ("prefix_rft", "rft") and diff["num_problems"] == 8
    assert diff["ci95"][0] <= diff["mean"] <= diff["ci95"][1]
    # a second invocation reuses the finished runs
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("cached") == 4, again.stdout  # the base and the 3 runs
    # a run that did not finish (no done.json, its checkpoints and metrics left) is run again from the start
    (_run_dir(out, "rft") / "done.json").unlink()
    third = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0 and third.stdout.count("cached") == 3, third.stdout[-2000:] + third.stderr[-2000:]
    assert [m["step"] for m in _rows(_run_dir(out, "rft") / "metrics.jsonl")] == [0, 1]
