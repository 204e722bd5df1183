"""`prefix-rft train ... rollout.engine=sglang` on a tiny model with a real sglang 0.5.23 CPU server: launched by the
trainer and attached by URL, the engine-vs-trainer log-prob check every step, resume, and no server left behind by a
SIGKILLed trainer."""

import json
import os
import signal
import subprocess
import time

import psutil

from conftest import CPU_SERVER_ARGS, SGLANG_PYTHON, cpu_server_overrides
from prefix_rft_megatron.parallel.init import free_port
from train_runs import read_run_metrics, train_args, train_cmd, wait_for

# Megatron (fp32, the trainer's recompute) vs sglang's torch_native CPU engine (fp32) on the sampled tokens:
# round-off only (measured below 1e-5 here)
LOGPROB_TOL = 1e-4
DATA = {"data.train_files": "[bundled:math_chain/train.jsonl]"}


def _run(args, timeout=900):
    proc = subprocess.run(train_cmd(args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def _servers(port: int):
    return [p for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and "sglang.launch_server" in
            " ".join(p.info["cmdline"]) and f"--port {port}" in " ".join(p.info["cmdline"])]


def _check_steps(rows, n):
    assert [r["step"] for r in rows] == list(range(n))
    for r in rows:
        assert r["logprob_diff/tokens"] > 0 and r["logprob_diff/max"] <= LOGPROB_TOL, r
        assert r["weight_sync/tensors"] > 0


def test_trainer_launches_sglang_trains_and_resumes(policy, tmp_path):
    out, port = tmp_path / "run", free_port()
    over = {**DATA, **cpu_server_overrides(port), "rollout.server_log_dir": str(tmp_path / "logs")}
    _run(train_args(policy, out, 2, **over))
    rows = read_run_metrics(out)
    _check_steps(rows, 2)
    assert not _servers(port)  # the trainer stopped its server
    _run(train_args(policy, out, 3, **over))  # resumes from step 2's checkpoint
    resumed = read_run_metrics(out)
    _check_steps(resumed, 3)
    assert resumed[:2] == rows  # the resumed run kept the first steps' lines
    (tmp_path / "sglang_steps.json").write_text(json.dumps(resumed))


def test_trainer_attaches_to_a_running_server(policy, tmp_path):
    from prefix_rft_megatron.rollout import RolloutConfig
    from prefix_rft_megatron.rollout.sglang import SGLangEngine

    port = free_port()
    server = SGLangEngine(RolloutConfig(engine="sglang", model_path=str(policy), server_python=SGLANG_PYTHON,
                                        dtype="float32", base_port=port, extra_server_args=list(CPU_SERVER_ARGS),
                                        enable_memory_saver=False, health_timeout_s=300,
                                        server_log_dir=str(tmp_path / "logs")))
    try:
        over = {**DATA, "rollout.engine": "sglang", "rollout.server_urls": f"[{server.urls[0]}]"}
        _run(train_args(policy, tmp_path / "run", 1, **over))
        _check_steps(read_run_metrics(tmp_path / "run"), 1)
        assert server.health()  # an attached server outlives the trainer
    finally:
        server.shutdown()


def test_sigkilled_trainer_leaves_no_server(policy, tmp_path):
    out, port = tmp_path / "run", free_port()
    args = train_args(policy, out, 50, **DATA, **cpu_server_overrides(port))
    proc = subprocess.Popen(train_cmd(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        wait_for(lambda: (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text().count("\n") >= 1,
                 proc, timeout=600)
        assert _servers(port)  # the server it launched is up
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        deadline = time.time() + 60
        while _servers(port) and time.time() < deadline:
            time.sleep(0.5)
        assert not _servers(port), "the SGLang server outlived the SIGKILLed trainer"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _servers(port):
            p.kill()
