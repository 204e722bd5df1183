"""algorithm.dynamic_sampling (DAPO): groups whose rewards are all equal are dropped and the step is refilled from
more prompt batches, up to algorithm.dynamic_sampling_max_draws; the metrics count what was drawn and dropped, and
the sampler advances by every batch drawn (on every rank: the checkpoint's data position is the sum).

The tiny test policy is random: its own samples are rarely right. So under `rft` most groups are flat (refills are
drawn, the bound is reached, and a short step trains on flat groups, counted), and under `luffy` every group has a
spread (the full demonstration scores 1), so one batch suffices."""

import json
import subprocess
import sys

import torch

from train_runs import train_args

DATA = "[bundled:math_chain/train.jsonl]"
COMMON = {"data.train_files": DATA, "algorithm.dynamic_sampling": "true", "algorithm.dynamic_sampling_max_draws": 3}


def _run(policy, out, steps, launcher, **overrides):
    args = train_args(policy, out, steps, **COMMON, **overrides)
    proc = subprocess.run([sys.executable, *launcher, "-m", "prefix_rft_megatron.cli", "train", *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_rft_refills_flat_groups_at_two_data_parallel_ranks(tiny_policy, tmp_path):
    out = tmp_path / "rft"
    rows = _run(tiny_policy, out, 2, ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"],
                **{"algorithm.name": "rft", "algorithm.num_prefixed": 0})
    assert [r["step"] for r in rows] == [0, 1]
    for r in rows:
        drawn, flat = r["dynamic_sampling/prompts_drawn"], r["dynamic_sampling/no_signal_groups"]
        assert drawn in (4, 8, 12)  # whole batches of 4 prompts, at most 3
        kept = drawn - flat  # groups with a reward spread
        assert r["dynamic_sampling/no_signal_frac_drawn"] == flat / drawn
        if drawn < 12:  # it stopped drawing because it had enough
            assert kept >= 4
        assert r["dynamic_sampling/no_signal_trained"] == max(0, 4 - kept)  # a short step is filled with flat ones
        assert r["groups/no_signal_frac"] == r["dynamic_sampling/no_signal_trained"] / 4  # the 4 groups trained
    assert any(r["dynamic_sampling/prompts_drawn"] > 4 for r in rows), rows  # refills happened
    common = torch.load(out / "checkpoints" / "step_000002" / "common.pt", weights_only=False)
    # every prompt drawn, refills included
    assert common["sampler"]["position"] == sum(r["dynamic_sampling/prompts_drawn"] for r in rows)


def test_luffy_keeps_its_first_batch_when_every_group_has_signal(tiny_policy, tmp_path):
    rows = _run(tiny_policy, tmp_path / "luffy", 1, [], **{"algorithm.name": "luffy", "algorithm.num_prefixed": 1})
    r = rows[0]
    assert r["dynamic_sampling/prompts_drawn"] == 4
    assert (r["dynamic_sampling/no_signal_groups"], r["dynamic_sampling/no_signal_trained"]) == (0, 0)
    assert r["groups/no_signal_frac"] == 0.0 and r["train/updates"] == 2


def test_dynamic_sampling_needs_groups():
    import pytest

    from prefix_rft_megatron.algo.config import AlgorithmConfig

    with pytest.raises(ValueError, match="algorithm.dynamic_sampling"):
        AlgorithmConfig(name="sft", dynamic_sampling=True)
    with pytest.raises(ValueError, match="dynamic_sampling_max_draws"):
        AlgorithmConfig(name="rft", num_prefixed=0, dynamic_sampling=True, dynamic_sampling_max_draws=0)
