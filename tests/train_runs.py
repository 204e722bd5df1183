"""Arguments for small but complete `prefix-rft train` runs used by the trainer tests."""


def train_args(policy, out, steps, **extra):
    """A small but complete Prefix-RFT run: 2 updates per step, checkpoint every step, no eval."""
    args = {
        "model.hf_path": str(policy), "logging.output_dir": str(out), "train.steps": str(steps),
        "train.prompts_per_step": "4", "train.mini_batch_prompts": "2", "train.micro_batch_size": "8",
        "train.lr": "1e-3", "rollout.max_new_tokens": "24", "algorithm.loss.max_response_tokens": "24",
        "eval.benchmarks": "[]", "checkpoint.save_every": "1", "logging.progress": "false",
        "checkpoint.export_hf_at_end": "false", "logging.tensorboard": "false",
    }
    args.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in args.items()]


def train_cmd(args):
    import sys

    return [sys.executable, "-m", "prefix_rft_megatron.cli", "train", *args]


def run_train(args, timeout=600, env_extra=None):
    """(rc, stdout, stderr lines) of a `prefix-rft train` process."""
    import os
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    proc = subprocess.run(train_cmd(args), capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stdout, proc.stderr.splitlines()


def error_lines(stderr_lines):
    return [line for line in stderr_lines if line.startswith("error:")]


TIMING = ("time/", "throughput/", "weight_sync/seconds", "weight_sync/gb_per_s")


def read_run_metrics(out_dir):
    """metrics.jsonl without timings (what two runs of the same steps must agree on)."""
    import json
    from pathlib import Path

    path = Path(out_dir) / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def wait_for(predicate, proc, timeout=300):
    """Poll `predicate` while the process `proc` runs (it must not end first)."""
    import time

    t0 = time.time()
    while not predicate():
        if proc.poll() is not None:
            stream = proc.stderr if proc.stderr is not None else proc.stdout
            raise AssertionError(f"the run ended before the point waited for:\n{(stream.read() if stream else '')[-3000:]}")
        assert time.time() - t0 < timeout, "timed out waiting"
        time.sleep(0.02)
