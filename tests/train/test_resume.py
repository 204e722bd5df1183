"""Checkpoints are atomic and resume is exact: runs really killed with SIGKILL, then resumed, end where an
uninterrupted run ends (every metric but timings, and every weight, bit for bit). Nothing the killed trainer started
outlives it."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch

from train_runs import read_run_metrics, train_args, wait_for
from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader



def start(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "prefix_rft_megatron.cli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run(args):
    proc = start(args)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def sigkill_leaves_no_orphans(proc, grace_s=10.0):
    """SIGKILL the trainer; every process it had started (reward pool, multiprocessing helpers, checkpoint writers)
    must be gone within `grace_s`. Survivors are killed here (no orphans left behind) and the test fails."""
    children, described = psutil.Process(proc.pid).children(recursive=True), {}
    for c in children:
        try:
            described[c.pid] = " ".join(c.cmdline())[:160]
        except psutil.Error:  # already ended
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def alive():
        out = []
        for c in children:
            try:
                if c.is_running() and c.status() != psutil.STATUS_ZOMBIE:  # re-parented zombies may stay unreaped
                    out.append(c)
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.time() + grace_s
    while alive() and time.time() < deadline:
        time.sleep(0.1)
    survivors = alive()
    for c in survivors:
        try:
            c.kill()
        except psutil.NoSuchProcess:
            pass
    assert not survivors, [f"{c.pid}: {described.get(c.pid, '?')}" for c in survivors]


def metrics(out_dir):
    return read_run_metrics(out_dir)


def final_weights(out_dir, step):
    reader = CheckpointReader(Path(out_dir) / "checkpoints" / f"step_{step:06d}")
    return {k: reader.read(k) for k in reader.tensor_keys() if not k.startswith("optimizer")}


def test_sigkill_mid_run_and_mid_save_resumes_exactly(tiny_policy, tmp_path):
    steps = 4
    ref = tmp_path / "uninterrupted"
    run(train_args(tiny_policy, ref, steps))

    out = tmp_path / "killed"
    ckpts = out / "checkpoints"
    # 1. SIGKILL between steps, once step 2's checkpoint is complete.
    proc = start(train_args(tiny_policy, out, steps))
    wait_for(lambda: (ckpts / "latest").is_file() and (ckpts / "latest").read_text() == "step_000002", proc)
    sigkill_leaves_no_orphans(proc)
    # 2. Resume, and SIGKILL it inside the save of step 3 (the save is held open by the test hook).
    proc = start(train_args(tiny_policy, out, steps), {"PREFIX_RFT_TEST_SAVE_DELAY_S": "30"})
    wait_for(lambda: (ckpts / "step_000003.partial" / "metadata.json").is_file(), proc)
    sigkill_leaves_no_orphans(proc)
    assert (ckpts / "latest").read_text() == "step_000002"  # the interrupted save never became "latest"
    assert (ckpts / "step_000002" / "metadata.json").is_file()
    # 3. Resume to the end.
    log = run(train_args(tiny_policy, out, steps))
    assert "resumed from" in log and "step_000002" in log
    assert not list(ckpts.glob("*.partial"))  # the torn save was cleaned up

    assert metrics(out) == metrics(ref)
    assert len(metrics(out)) == steps
    a, b = final_weights(ref, steps), final_weights(out, steps)
    assert a.keys() == b.keys() and len(a) >= 8
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_keep_last_and_export(tiny_policy, tmp_path):
    out = tmp_path / "run"
    run(train_args(tiny_policy, out, 3, **{"checkpoint.keep_last": 2, "checkpoint.export_hf_at_end": "true"}))
    # The engine samples with exactly the trainer's weights at every step (synced after each update): the log-probs
    # it returned equal the trainer's recomputation (fp32 HF vs Megatron, same bound as the logits parity).
    rows = metrics(out)
    assert all(r["logprob_diff/tokens"] > 0 and r["logprob_diff/max"] <= 1e-4 for r in rows), rows
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["latest", "step_000002", "step_000003"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out / "hf")  # the export loads
