"""Resuming with another TP/PP layout continues the run: model weights and Adam state (exp_avg, exp_avg_sq, step)
carry over, resharded by megatron's dist-checkpointing (train/checkpoint.py, optimizer format fully_reshardable).

One uninterrupted TP=1 run of 4 steps is the reference. A chain of runs resumes from its step-2 checkpoint and changes
the layout at every step: step 3 at TP=2 (TP 1 -> 2), step 4 at PP=2 (TP 2 -> 1 and PP 1 -> 2), as real
`prefix-rft train` runs of 2 gloo processes under torchrun. Each resumed step must give the reference's metrics and,
after its updates, the reference's weights and Adam moments to float tolerance: another TP/PP only reorders fp32 sums.
Then resume_reshard.py loads the TP=1, TP=2 and PP=2 checkpoints at other layouts (TP=2, PP=2, TP=1 with DP=2) and
checks that what was loaded is, bit for bit, what was saved.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distributed import REPO, run_torchrun_results
from train_runs import train_args
from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader

STEPS = 4
RESUME_AT = 2
CHAIN = [(3, 2, 1), (4, 1, 2)]  # (the step run after resuming, TP, PP)
# timings, and the weight sync's bucket count (a PP=2 run sends each stage's tensors separately)
NOT_COMPARED = ("time/", "throughput/", "weight_sync/seconds", "weight_sync/gb_per_s", "weight_sync/buckets")
# Metrics of a resumed step vs the uninterrupted run: |a - b| <= METRIC_RTOL |a| + METRIC_ATOL (the ATOL covers the
# logprob_diff/* statistics, themselves ~1e-7 differences). Measured at most 6.5e-7 relative (train/grad_norm).
METRIC_RTOL, METRIC_ATOL = 1e-5, 1e-6
# Checkpoint tensors after the resumed steps vs the uninterrupted run, per tensor: max |a - b| <= STATE_RTOL max |a|.
# Measured at most 1.3e-5 (weights, after both hops), 3.4e-7 (exp_avg), 2.7e-7 (exp_avg_sq). An Adam state lost
# on resume is far above it: with exp_avg, exp_avg_sq and step zeroed after the load (tried once), step 3 gave
# 4.3e-2 (weights), 0.6 (exp_avg), 0.99 (exp_avg_sq), and its kl/approx_old and train/grad_norm moved by 2x and 16%.
STATE_RTOL = 1e-4


def train(policy, out: Path, steps: int, tp: int = 1, pp: int = 1) -> str:
    """A `prefix-rft train` run at TP x PP (under torchrun when that is more than one process); its output."""
    args = train_args(policy, out, steps, **{"checkpoint.keep_last": STEPS, "parallel.tp": tp, "parallel.pp": pp})
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(tp * pp), "--standalone"] if tp * pp > 1 else []
    proc = subprocess.run([sys.executable, *launcher, "-m", "prefix_rft_megatron.cli", "train", *args], env=env,
                          capture_output=True, text=True, timeout=600)
    out_text = proc.stdout + proc.stderr
    assert proc.returncode == 0, out_text[-4000:]
    return out_text


def metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(NOT_COMPARED)} for r in rows]


def checkpoint(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step_{step:06d}"


@pytest.fixture(scope="module")
def runs(tiny_policy, tmp_path_factory):
    root = tmp_path_factory.mktemp("reshard")
    ref, chain = root / "tp1", root / "chain"
    train(tiny_policy, ref, STEPS)
    shutil.copytree(ref, chain)  # the reference up to step 2 (later checkpoints removed, metrics truncated on resume)
    for step in range(RESUME_AT + 1, STEPS + 1):
        shutil.rmtree(checkpoint(chain, step))
    (chain / "checkpoints" / "latest").write_text(checkpoint(chain, RESUME_AT).name)
    logs = {}
    for step, tp, pp in CHAIN:
        logs[step] = train(tiny_policy, chain, step, tp, pp)
    return ref, chain, logs


def test_resume_at_other_tp_pp_continues_the_run(runs):
    ref, chain, logs = runs
    previous = (1, 1)
    for step, tp, pp in CHAIN:
        # every hop really resharded the previous step's checkpoint
        assert f"resharding {checkpoint(chain, step - 1).name} from TP={previous[0]} PP={previous[1]} DP=1 to " \
               f"TP={tp} PP={pp} DP=1" in logs[step], logs[step][-3000:]
        previous = (tp, pp)

    a, b = metrics(ref), metrics(chain)
    assert len(a) == len(b) == STEPS and a[:RESUME_AT] == b[:RESUME_AT]
    worst = {}
    for step, _, _ in CHAIN:
        x, y = a[step - 1], b[step - 1]
        assert x.keys() == y.keys()
        for k in x:
            assert abs(x[k] - y[k]) <= METRIC_RTOL * abs(x[k]) + METRIC_ATOL, (step, k, x[k], y[k])
            if x[k]:
                worst[k] = max(worst.get(k, 0.0), abs(x[k] - y[k]) / abs(x[k]))
        assert x["train/updates"] == 2 and x["logprob_diff/tokens"] > 0

        ra, rb = CheckpointReader(checkpoint(ref, step)), CheckpointReader(checkpoint(chain, step))
        keys = set(ra.tensor_keys())
        assert keys == set(rb.tensor_keys()) and any(k.startswith("optimizer.state.exp_avg_sq.") for k in keys)
        for k in sorted(keys):
            t, u = ra.read(k), rb.read(k)
            err = float((t - u).abs().max()) / float(t.abs().max())
            assert err <= STATE_RTOL, (step, k, err)
            kind = k.split(".")[2] if k.startswith("optimizer.") else "model"
            worst[kind] = max(worst.get(kind, 0.0), err)
    print("worst relative differences, resumed chain vs uninterrupted TP=1:", {k: f"{v:.1e}" for k, v in worst.items() if v})


def test_loaded_state_is_the_saved_state_at_other_layouts(runs, tiny_policy, tmp_path):
    ref, chain, _ = runs
    jobs = [
        f"{checkpoint(ref, RESUME_AT)}@2x1",  # TP=1 -> TP=2
        f"{checkpoint(ref, RESUME_AT)}@1x2",  # TP=1 -> PP=2
        f"{checkpoint(chain, 3)}@1x1",  # TP=2 -> TP=1 (DP=2)
        f"{checkpoint(chain, 4)}@2x1",  # PP=2 -> TP=2
        f"{checkpoint(chain, 4)}@1x1",  # PP=2 -> PP=1 (DP=2)
    ]
    ranks = run_torchrun_results("resume_reshard.py", str(tiny_policy), str(tmp_path), *jobs, nproc=2)
    for rank, got in enumerate(ranks):
        assert len(got["jobs"]) == len(jobs)
        previous = None
        for r in got["jobs"]:
            tag = r["tag"]
            assert r["saved_step"] > 0, tag
            for steps in (r["adam_steps"], r["dp_adam_steps"]):
                # every parameter has its own Adam step tensor, equal to the count the checkpoint holds
                assert steps["group"] == steps["param"] == [r["saved_step"]], (tag, steps)
                assert steps["params"] > 1 and steps["own_tensors"], (tag, steps)
            for key in ("resaved", "dp_resaved"):
                cmp = r[key]
                if rank != 0:
                    assert cmp is None
                    continue
                # re-saved after loading at another layout: every tensor and the param groups bit-identical
                assert cmp["only_in_one"] == [] and cmp["differ"] == [] and cmp["param_groups_equal"], (tag, key, cmp)
                assert cmp["optimizer_kinds"] == ["exp_avg", "exp_avg_sq", "param"] and cmp["tensors"] > 20, tag
            if previous is not None:
                msg = r["previous_dp_refusal"]
                if previous != [r["tp"], r["pp"]]:  # a dp_reshardable save of another TP/PP: one line, refused
                    assert msg and "\n" not in msg and "dp_reshardable" in msg and "fully_reshardable" in msg, msg
                    assert f"TP={previous[0]} PP={previous[1]}" in msg, msg
                else:
                    assert msg is None, msg
            previous = [r["tp"], r["pp"]]
            # a model padded to another vocabulary size: one line naming the make_vocab_size_divisible_by that fits
            msg = r["vocab_refusal"]
            assert msg and "\n" not in msg and "padded to 768 rows" in msg, msg
            assert r["suggested_padding_rows"] == 768, (tag, msg)
