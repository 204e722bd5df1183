"""`prefix-rft launch --check`: the table and `fits`, or exit non-zero with one line naming what is illegal or
does not fit (no GPU). The 7B check runs as a real CLI process; the other cases call the same CLI entry point in
this process (`prefix_rft_megatron.cli.main`, its return code and stderr), which saves a Python start-up and a
megatron import per case."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def check(*args):
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", "launch", "--check", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    return proc.returncode, proc.stdout, [l for l in proc.stderr.splitlines() if l.startswith("error")]


@pytest.fixture
def check_here(capsys, monkeypatch):
    """`check` through the CLI's entry point in this process: (return code, stdout, error lines, stderr)."""
    from prefix_rft_megatron.cli import main

    monkeypatch.chdir(REPO)

    def run(*args):
        rc = main(["launch", "--check", *args])
        out, err = capsys.readouterr()
        return rc, out, [l for l in err.splitlines() if l.startswith("error")], err

    return run


def test_7b_fits_with_the_table():
    rc, out, err = check("conf/qwen2.5-math-7b.yaml")
    assert rc == 0 and out.splitlines()[-1] == "fits" and not err, out
    for row in ("weights", "gradients (fp32)", "optimizer (master, Adam m, v)", "activations, no recompute",
                "activations, full recompute", "logits + fp32 copy", "pipeline buffers", "weight-sync peak",
                "engine weights (colocated)", "engine KV cache (colocated)", "training peak",
                "generation peak (colocated)"):
        assert row in out, row
    assert "TP 4 x PP 1 x DP 2, sequence parallel on, micro-batches of <= 18432 tokens (packed)" in out


def test_70b_fits_on_the_8_nodes_its_config_names(check_here):
    rc, out, err, _ = check_here("conf/llama-70b.yaml")  # cluster.nodes=8 in the YAML
    assert rc == 0 and out.splitlines()[-1] == "fits", out
    assert "stage 3" in out and "TP 8 x PP 4 x DP 2" in out


def test_kl_to_a_reference_adds_its_weights(check_here):
    _, base, _, _ = check_here("conf/qwen2.5-math-7b.yaml")
    rc, out, err, _ = check_here("conf/qwen2.5-math-7b.yaml", "algorithm.loss.kl_coef=0.01")
    assert rc == 0 and out.splitlines()[-1] == "fits" and not err, out

    def row(text, name):
        return float(next(l for l in text.splitlines() if l.startswith(name)).split()[-1])

    assert row(out, "reference weights (KL)") == row(out, "weights")  # one more copy, same layout and dtype
    assert row(out, "training peak") == pytest.approx(row(base, "training peak") + row(out, "weights"), abs=0.11)
    assert "reference weights" not in base


@pytest.mark.parametrize("args,line", [
    (["conf/qwen2.5-math-7b.yaml", "parallel.tp=3"], "8 processes do not split into parallel.tp=3"),
    (["--gpus-per-node", "6", "conf/qwen2.5-math-7b.yaml", "parallel.tp=3", "rollout.num_servers=6"],
     "num_attention_heads=28"),  # 6 GPUs split into TP 3 x DP 2, but 28 heads do not split over 3
    # the recipe's 8 colocated servers on a 4-GPU node: 4 of them would have no trainer rank to hand them weights
    (["--gpus-per-node", "4", "conf/qwen2.5-math-7b.yaml"], "colocated servers on GPUs 0..7"),
    (["--nodes", "8", "conf/llama-70b.yaml", "model.recompute_activations=false", "parallel.sequence_parallel=false"],
     "does not fit: training on pipeline stage 0 needs"),
    (["--nodes", "8", "conf/llama-70b.yaml", "model.recompute_activations=false", "--gpu-mem-gib", "48"],
     "does not fit: training on pipeline stage 0 needs"),
    (["conf/qwen2.5-math-7b.yaml", "rollout.mem_fraction_static=0.2"], "KV cache holds"),
    (["conf/qwen2.5-math-7b.yaml", "rollout.max_new_tokens=16000"], "max_position_embeddings=16384"),
    (["conf/qwen2.5-math-7b.yaml", "train.max_tokens_per_micro_batch=0", "train.micro_batch_size=3"],
     "not divisible by data-parallel size 2 x train.micro_batch_size=3"),
    # the token budget sizes a micro-batch's activations
    (["conf/qwen2.5-math-7b.yaml", "model.recompute_activations=false", "train.max_tokens_per_micro_batch=200000"],
     "does not fit: training on pipeline stage 0 needs"),
    (["conf/qwen2.5-math-7b.yaml", "model.hf_path=/nowhere/model"], "no config.json there"),
])
def test_what_cannot_start_or_fit_is_one_line(check_here, args, line):
    rc, out, err, stderr = check_here(*args)
    assert rc != 0 and len(err) == 1 and line in err[0], (err, out[-2000:])
    assert "Traceback" not in out + stderr


def test_launch_refuses_a_job_that_does_not_fit(tmp_path):
    from prefix_rft_megatron.launch import recipes
    from prefix_rft_megatron.launch.config import LaunchConfig
    from prefix_rft_megatron.launch.preflight import CheckFailed

    lc = LaunchConfig(gpus_per_node=8, config_files=[str(REPO / "conf/qwen2.5-math-7b.yaml")],
                      overrides=["model.recompute_activations=false", "parallel.tp=1"],
                      experiment_dir=str(tmp_path / "exp"))
    with pytest.raises(CheckFailed, match="does not fit: training on pipeline stage 0"):
        recipes.launch(lc)
    assert not (tmp_path / "exp").exists()  # nothing was launched
