"""Every baseline of prefix-rft.md section 6 runs from the same trainer by config (`algorithm.name`), and each
step's metrics say what that algorithm did: which sequences carry demonstration tokens, how many prefix tokens
were kept, and how many groups gave no learning signal."""

import json
import math
import subprocess
import sys

import pytest

from train_runs import train_args

DATA = "[bundled:math_chain/train.jsonl]"


def run_one_step(policy, out, *overrides) -> dict:
    args = train_args(policy, out, 1, **{"data.train_files": DATA, "checkpoint.save_every": "1000"}) + list(overrides)
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", "train", *args], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0]
    return rows[0]


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


@pytest.mark.parametrize("name,overrides", [
    ("prefix_rft", ["algorithm.name=prefix_rft", "algorithm.num_prefixed=1"]),
    ("luffy", ["algorithm.name=luffy", "algorithm.num_prefixed=1"]),
    ("sft", ["algorithm.name=sft", "train.micro_batch_size=2"]),
])
def test_algorithm_runs_one_step(tiny_policy, tmp_path, name, overrides):
    m = run_one_step(tiny_policy, tmp_path / name, *overrides)
    assert math.isfinite(m["train/grad_norm"]) and m["train/grad_norm"] > 0
    assert m["train/updates"] == 2  # prompts_per_step 4 / mini_batch_prompts 2
    if name == "sft":
        assert "groups/no_signal_frac" not in m  # one demonstration per prompt: no groups, no rollouts
        return
    for key in ("groups/no_signal_frac", "groups/on_policy_all_wrong_frac"):
        assert 0.0 <= m[key] <= 1.0
    assert m["prefix/tokens_mean"] > 0
    if name == "luffy":
        assert m["reward/prefixed"] == 1.0  # the full demonstrations are scored too, and they are right
    if name == "prefix_rft":
        # top-rho (0.2) of the step's prefix tokens by entropy are trained; ties at the threshold may add a few
        assert 0.15 <= m["tokens/prefix_kept_share"] <= 0.3, m["tokens/prefix_kept_share"]


def test_rft_with_one_update_skips_the_recompute_pass_and_trains_the_same(tiny_policy, tmp_path):
    """rft from the same trainer; train.recompute=auto drops the pass for rft with one update per step (the update's own forward has the same
    log-probs); the step's losses, gradient norm and engine-vs-trainer log-prob check match a run that recomputes."""
    common = ["algorithm.name=rft", "algorithm.num_prefixed=0", "train.mini_batch_prompts=4"]
    skipped = run_one_step(tiny_policy, tmp_path / "auto", *common)
    always = run_one_step(tiny_policy, tmp_path / "always", *common, "train.recompute=always")
    assert (skipped["train/recomputed"], always["train/recomputed"], skipped["train/updates"]) == (0.0, 1.0, 1.0)
    assert skipped["reward/mean"] == always["reward/mean"]  # the same rollouts
    # fp32; the recompute pass and the update forward run the same micro-batches: round-off only
    for key in ("loss/per_sequence", "train/grad_norm", "logprob_diff/mean", "logprob_diff/max", "kl/approx_old",
                "entropy/on_policy"):
        assert abs(skipped[key] - always[key]) <= 1e-5 * max(1.0, abs(always[key])), (key, skipped[key], always[key])
    assert skipped["logprob_diff/tokens"] == always["logprob_diff/tokens"] > 0
    # what rft's metrics say (its one-step run with two updates is not repeated separately)
    for m in (skipped, always):
        assert math.isfinite(m["train/grad_norm"]) and m["train/grad_norm"] > 0
        assert _nan(m["reward/prefixed"]) and _nan(m["prefix/tokens_mean"])
        assert 0.0 <= m["groups/on_policy_all_wrong_frac"] <= 1.0
        # a group whose rollouts are all wrong has all-equal rewards, hence no signal
        assert m["groups/no_signal_frac"] >= m["groups/on_policy_all_wrong_frac"]
