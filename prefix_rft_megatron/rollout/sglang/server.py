"""Launched SGLang servers: the `python -m sglang.launch_server` command line, and each server's process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ...process.parent_death import set_parent_death_signal
from ..config import RolloutConfig


# The trainer's settings that a server must not inherit: CUDA_DEVICE_MAX_CONNECTIONS=1 keeps Megatron's TP
# communication in launch order and would serialise the server's kernels; torchrun's variables name a rank of the
# trainer's world, which a server is not, and with TORCHELASTIC_USE_AGENT_STORE=True (any TORCHELASTIC_* is dropped)
# the server's own process group waits forever for torchrun's store (measured: a server launched by a TP=2 trainer
# hung in torch's _create_c10d_store).
TRAINER_ONLY_ENV = ("CUDA_DEVICE_MAX_CONNECTIONS", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                    "GROUP_WORLD_SIZE", "ROLE_NAME", "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TRAINER_ONLY_PREFIXES = ("TORCHELASTIC_",)


def server_env(base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment of a launched server: the trainer's (`base`, default os.environ) less TRAINER_ONLY_ENV and
    TRAINER_ONLY_PREFIXES."""
    return {k: v for k, v in (os.environ if base is None else base).items()
            if k not in TRAINER_ONLY_ENV and not k.startswith(TRAINER_ONLY_PREFIXES)}


def build_server_command(cfg: RolloutConfig, index: int) -> List[str]:
    """`python -m sglang.launch_server ...` for server `index` of `cfg` (GPUs base_gpu_id + index * tp_size ...)."""
    cmd = [
        cfg.server_python or sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path", cfg.model_path,
        "--tp-size", str(cfg.tp_size),
        "--base-gpu-id", str(cfg.base_gpu_id + index * cfg.tp_size),
        "--mem-fraction-static", str(cfg.mem_fraction_static),
        "--host", cfg.host,
        "--port", str(cfg.base_port + index),
        "--dtype", cfg.dtype,
        "--random-seed", str(cfg.seed),
        "--skip-tokenizer-init",  # token ids in, token ids out: the server never sees text
    ]  # fmt: skip
    if cfg.enable_memory_saver:
        cmd.append("--enable-memory-saver")
    if cfg.deterministic_inference:
        cmd.append("--enable-deterministic-inference")
    cmd.extend(cfg.extra_server_args)
    return cmd


def _die_with_launcher() -> None:
    """In the forked child, before exec: SIGKILL when the launcher ends (Linux; elsewhere nothing)."""
    set_parent_death_signal(signal.SIGKILL)


class ServerProcess:
    """A launched server: its own process group (SGLang forks scheduler/detokenizer workers), output to a log file.
    It is armed to receive SIGKILL when the process that launched it ends, however it ends (a SIGKILLed trainer
    included); sglang's own workers die with it (their kill_itself_when_parent_died)."""

    def __init__(self, cmd: Sequence[str], log_path: Path, env: Optional[Dict[str, str]] = None):
        self.cmd = list(cmd)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            preexec_fn=_die_with_launcher,
        )

    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)  # the group this Popen created, nothing else
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()
