"""The whole config checked and completed in one place, before any process is launched.

`derive` fills in the values one key decides for another (so every stage reads the same one); `check` refuses
combinations that no stage can run, with one line naming the keys. `load_config` runs both; `check_training` adds
what only a training job needs (a starting model, a world size that splits into TP x PP x DP and the batch into
micro-batches), and runs in `prefix-rft train` before it relaunches itself under torchrun, in the trainer itself, and in
`prefix-rft launch --check` / before a launcher submits.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

from prefix_rft_megatron.algo.spec import algorithm_spec
from prefix_rft_megatron.config.schema import Config


class ConfigError(ValueError):
    """A user-visible configuration problem (one line)."""


def derive(cfg: Config) -> Config:
    """Fill in derived values in place (and return `cfg`)."""
    if not cfg.rollout.model_path and not cfg.rollout.server_urls:
        # launched SGLang servers load the policy's starting point first (the trainer's weights replace it)
        cfg.rollout.model_path = cfg.model.hf_path
    budget = cfg.rollout.max_new_tokens
    if not cfg.data.max_demo_tokens:
        cfg.data.max_demo_tokens = budget  # no response, prefixed or demonstration, is longer than a rollout's
    if not cfg.algorithm.loss.max_response_tokens:
        cfg.algorithm.loss.max_response_tokens = budget  # Dr. GRPO's L_max: the maximum response length
    return cfg


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check(cfg: Config) -> None:
    """Combinations of keys from different sections that cannot work (each section checks its own keys)."""
    r = cfg.rollout
    if cfg.data.max_demo_tokens > r.max_new_tokens:
        raise ConfigError(f"data.max_demo_tokens={cfg.data.max_demo_tokens} > rollout.max_new_tokens={r.max_new_tokens}:"
                          " a longer demonstration makes prefixed and SFT/LUFFY responses longer than any rollout "
                          "(leave it at 0, or raise rollout.max_new_tokens)")
    if cfg.algorithm.loss.max_response_tokens < r.max_new_tokens:
        raise ConfigError(f"algorithm.loss.max_response_tokens={cfg.algorithm.loss.max_response_tokens} < "
                          f"rollout.max_new_tokens={r.max_new_tokens}: L_max must bound every response (leave it at 0)")
    if r.engine == "sglang" and r.weight_sync == "distributed":
        remote = [u for u in r.server_urls if not _is_loopback(urlparse(u).hostname or "")]
        if remote and r.update_group_master_address and _is_loopback(r.update_group_master_address):
            raise ConfigError(
                f"rollout.update_group_master_address={r.update_group_master_address} is a loopback address, which "
                f"the servers at {remote[0]} cannot reach; leave it empty (trainer rank 0 finds its own address)")
    if r.engine == "sglang" and r.weight_sync == "tensor" and not cfg.train.colocate:
        raise ConfigError("rollout.weight_sync=tensor passes CUDA-IPC handles, which only colocated servers can open; "
                          "with train.colocate=false use rollout.weight_sync=distributed")


def check_training(cfg: Config, world_size: int) -> int:
    """What a training job needs besides `check`; returns the data-parallel size."""
    if not cfg.model.hf_path:
        raise ConfigError("model.hf_path is required (the HF directory the policy starts from)")
    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    if world_size % (tp * pp):
        raise ConfigError(f"parallel: {world_size} processes do not split into parallel.tp={tp} x parallel.pp={pp}")
    dp = world_size // (tp * pp)
    group = algorithm_spec(cfg.algorithm).group_size
    per_mini = cfg.train.mini_batch_prompts * group
    head = (f"train: a mini-batch has {per_mini} sequences (train.mini_batch_prompts={cfg.train.mini_batch_prompts} "
            f"x group {group}), not divisible by data-parallel size {dp}")
    if cfg.train.max_tokens_per_micro_batch:  # micro-batches by token budget: only the DP split must be even
        if per_mini % dp:
            raise ConfigError(head)
    elif per_mini % (dp * cfg.train.micro_batch_size):
        raise ConfigError(f"{head} x train.micro_batch_size={cfg.train.micro_batch_size}")
    server_ranks = cfg.rollout.colocated_server_ranks()
    if server_ranks and max(server_ranks) >= world_size:
        raise ConfigError(
            f"rollout: colocated servers on GPUs {server_ranks[0]}..{server_ranks[-1]} (rollout.base_gpu_id="
            f"{cfg.rollout.base_gpu_id}, num_servers, tp_size={cfg.rollout.tp_size}) but only {world_size} trainer "
            "ranks: each server GPU gets its weights from the trainer rank on it")
    return dp


def routable_address(url: str) -> str:
    """This host's address on the route to `url`'s host: what a process there can connect back to. No packet is
    sent (a UDP socket's connect only picks the route)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((socket.gethostbyname(host), port))
        return s.getsockname()[0]
