"""The trainer reads one AlgorithmSpec (algo/spec.py), never the algorithm's name: an algorithm registered in algo/
alone trains; a rollout keeps its kind from the engine to the batch, so a prefixed slot whose prefix length came out
0 stays out of the on-policy baseline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prefix_rft_megatron.algo import AlgorithmConfig, Baseline, algorithm_spec, group_advantages
from prefix_rft_megatron.config import ConfigError, load_config
from prefix_rft_megatron.rollout import Rollout, RolloutKind
from prefix_rft_megatron.train.batch import build_batch
from train_runs import train_args

TOY_RUN = Path(__file__).with_name("toy_algorithm_run.py")


def test_builtin_specs():
    spec = {n: algorithm_spec(AlgorithmConfig(name=n, num_prefixed=0 if n == "rft" else 2))
            for n in ("prefix_rft", "rft", "luffy", "sft")}
    assert (spec["prefix_rft"].num_prefixed, spec["prefix_rft"].samples_per_group) == (2, 8)
    assert (spec["luffy"].num_prefixed, spec["luffy"].samples_per_group, spec["luffy"].baseline) == (
        0, 6, Baseline.GROUP_MEAN)
    assert (spec["rft"].num_demo_members, spec["rft"].prefix_entropy_mask) == (0, False)
    assert (spec["sft"].group_size, spec["sft"].samples_per_group, spec["sft"].has_groups) == (1, 0, False)


def test_unknown_algorithm_is_one_line():
    with pytest.raises(ConfigError, match=r"^config: algorithm.name='ppo': not one of luffy\|prefix_rft\|rft\|sft$"):
        load_config(overrides=["algorithm.name=ppo"])


def _rollout(kind, prefix, response, reward, group=0):
    return Rollout([5, 6], list(prefix), list(response), [-0.5] * len(response), "stop", group, 0, kind,
                   reward=reward)


def test_prefixed_slot_with_empty_prefix_stays_out_of_the_baseline():
    """min_prefix_tokens=0 can draw L=0: the slot is still a prefixed one (is_prefixed), not an on-policy sample."""
    rollouts = [_rollout(RolloutKind.ON_POLICY, [], [7, 8], 0.0), _rollout(RolloutKind.ON_POLICY, [], [9], 1.0),
                _rollout(RolloutKind.PREFIXED, [], [7, 7, 8], 1.0)]
    batch = build_batch(rollouts)
    assert batch.from_demo.tolist() == [False, False, True]
    adv = group_advantages(torch.tensor([r.reward for r in rollouts]), torch.zeros(3), batch.from_demo,
                           Baseline.ON_POLICY_MEAN)
    # baseline = mean of the two on-policy rewards, 0.5 (with the empty-prefix slot counted it would be 2/3)
    assert adv.prefix.tolist() == [-0.5, 0.5, 0.5]


def test_a_toy_algorithm_registered_in_algo_trains(tiny_policy, tmp_path):
    """toy_algorithm_run.py registers `toy_all_prefix` through algo's registry only (prefixed rollouts, group-mean
    baseline, every prefix token trained) and runs `prefix-rft train` with it."""
    args = train_args(tiny_policy, tmp_path / "run", 1, **{"data.train_files": "[bundled:math_chain/train.jsonl]",
                                                            "algorithm.name": "toy_all_prefix",
                                                            "algorithm.num_prefixed": "2"})
    proc = subprocess.run([sys.executable, str(TOY_RUN), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    (m,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert m["train/grad_norm"] > 0 and m["train/updates"] == 2
    assert m["prefix/tokens_mean"] > 0  # the spec's rollout plan made prefixed members
    # prefix_entropy_mask off: every prefix token kept its advantage; the metric still reports the top-rho mask
    assert 0 < m["tokens/prefix_share"] < 1
