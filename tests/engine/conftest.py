"""The engine tier: the project's SGLang client, and the trainer, against a REAL sglang 0.5.23 server on CPU.

Runs under `make test-sglang` (which builds the server's own environment with tools/sglang_cpu/build_env.sh, a CPU
test harness) with PREFIX_RFT_SGLANG_PYTHON naming that environment's interpreter; the unit suite leaves this
directory out (tests/conftest.py). One server for the module, launched through the project's own launcher.
"""

import os
from pathlib import Path

import pytest

from tiny_models import make_tiny_policy

SGLANG_PYTHON = os.environ.get("PREFIX_RFT_SGLANG_PYTHON", "")
# sglang's CPU engine and the paths it has on a CPU without AMX (the overlap scheduler and CUDA graphs are GPU
# features; without --sleep-on-idle the idle scheduler spins a core)
os.environ["SGLANG_USE_CPU_ENGINE"] = "1"
CPU_SERVER_ARGS = ["--device", "cpu", "--attention-backend", "torch_native", "--sampling-backend", "pytorch",
                   "--disable-overlap-schedule", "--sleep-on-idle"]


def server_ports(count: int = 1) -> int:
    """A base port with `count` free ports from it, below Linux's ephemeral range (32768+). A port the OS hands out
    as free (`free_port`) is an ephemeral one, and between that and the server's bind (a minute on CPU) the
    trainer's gloo groups open listening sockets on ephemeral ports: measured, a server's bind failed with
    EADDRINUSE."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 32000 - count)
        try:
            for p in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports below the ephemeral range")


def cpu_server_overrides(port: int) -> dict:
    """rollout.* keys that launch a CPU server from the trainer (`prefix-rft train ... rollout.engine=sglang`)."""
    return {"rollout.engine": "sglang", "rollout.server_python": SGLANG_PYTHON, "rollout.dtype": "float32",
            "rollout.base_port": str(port), "rollout.extra_server_args": "[" + ",".join(CPU_SERVER_ARGS) + "]",
            "rollout.health_timeout_s": "300", "rollout.enable_memory_saver": "false", "train.colocate": "true"}


@pytest.fixture(scope="session")
def policy(tmp_path_factory) -> Path:
    """A tiny random Qwen2 over the bundled tokenizer (HF directory with safetensors and tokenizer)."""
    return make_tiny_policy(tmp_path_factory.mktemp("policy") / "hf")
