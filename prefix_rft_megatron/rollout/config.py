"""Rollout engine configuration (an OmegaConf structured config).

Plain types only (no unions, no Optional): OmegaConf structured configs and YAML overrides such as
`rollout.engine=sglang rollout.server_urls=[http://10.0.0.2:30000]` map onto these fields directly. "Unset" is an
empty string or list, documented on the field. String choices are plain `str` checked in `__post_init__`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from .types import SamplingParams

ENGINES = ("hf", "sglang")
WEIGHT_SYNC_MODES = ("tensor", "distributed")
PAUSE_MODES = ("abort", "retract", "in_place")


@dataclass
class RolloutConfig:
    # Which engine generates rollouts: "hf" (transformers model in the trainer process, CPU tests and the demo) or
    # "sglang" (SGLang HTTP servers, the GPU path).
    engine: str = "hf"

    # --- sampling defaults (per request overridable through SamplingParams) ---
    # (The sampling temperature is algorithm.temperature: the log-probs and entropies the loss uses are defined at
    # the temperature the rollouts were sampled at, so one key sets both.)
    # Nucleus sampling mass; 1.0 disables top-p. Reference recipe: 1.0 for training, 0.95 for evaluation.
    top_p: float = 1.0
    # Upper bound on sampled tokens per rollout (the paper's response budget L_max is 8192).
    max_new_tokens: int = 1024
    # Extra token ids that end a rollout besides the model's EOS ids (e.g. a chat template's end-of-turn id).
    stop_token_ids: List[int] = field(default_factory=list)
    # Base seed of the sampling draws; each request and sample derives its own seed from it (step, group, slot).
    seed: int = 1234
    # Prefixed rollouts: when true, the demonstration prefix counts against max_new_tokens (continuation budget is
    # max_new_tokens - L, at least 1), so a prefixed response is no longer than an on-policy one.
    prefix_counts_toward_budget: bool = True

    # --- Hugging Face engine ---
    # Rows (prompt x sample) per forward pass of the HF engine; results do not depend on it.
    hf_max_batch_size: int = 64
    # dtype of the HF engine model: "float32" (exact log-probs in the tests) or "bfloat16".
    hf_dtype: str = "float32"
    # Attention implementation of the HF engine model ("sdpa" or "eager").
    hf_attn_implementation: str = "sdpa"

    # --- SGLang servers ---
    # URLs of already running SGLang servers to attach to (e.g. ["http://10.0.0.2:30000"]); empty launches servers.
    server_urls: List[str] = field(default_factory=list)
    # HF checkpoint directory the launched servers load first (weights are then replaced by the trainer's); empty
    # means the trainer fills it in (model.hf_path). Required to launch, not to attach.
    model_path: str = ""
    # Number of SGLang servers to launch on this node (each uses tp_size consecutive GPUs from base_gpu_id).
    num_servers: int = 1
    # Tensor-parallel size of each launched server (--tp-size).
    tp_size: int = 1
    # First GPU index used by the launched servers (--base-gpu-id of server 0).
    base_gpu_id: int = 0
    # Fraction of GPU memory SGLang reserves for weights and KV cache (--mem-fraction-static); colocated with training
    # this must leave room for the trainer.
    mem_fraction_static: float = 0.6
    # Host the launched servers bind to and are reached at (--host).
    host: str = "127.0.0.1"
    # Port of server 0; server i listens on base_port + i (--port).
    base_port: int = 30000
    # Launch with --enable-memory-saver so release/resume_memory_occupation can free GPU memory during training.
    enable_memory_saver: bool = True
    # Model dtype of the launched servers (--dtype): "auto", "bfloat16", "float16", "float32".
    dtype: str = "auto"
    # Launch with --enable-deterministic-inference (bitwise reproducible sampling with sampling_seed; slower).
    deterministic_inference: bool = False
    # Extra command-line arguments appended verbatim to `python -m sglang.launch_server`.
    extra_server_args: List[str] = field(default_factory=list)
    # Python executable that runs SGLang (its own environment); empty means the current interpreter.
    server_python: str = ""
    # Directory for the launched servers' stdout/stderr logs (server_<i>.log); empty means a temporary directory.
    server_log_dir: str = ""

    # --- HTTP client ---
    # Seconds to wait for every server to answer /health_generate after launch or attach.
    health_timeout_s: float = 600.0
    # Seconds between health polls while waiting.
    health_poll_interval_s: float = 2.0
    # Timeout of one HTTP request in seconds (a long generation must fit in it).
    request_timeout_s: float = 3600.0
    # Attempts per HTTP request (first try included) when it fails transiently: connection refused/reset, timeouts,
    # HTTP 429/502/503/504. Other HTTP errors are reported at once.
    max_attempts: int = 5
    # First backoff delay in seconds; doubles after each failed attempt.
    retry_backoff_s: float = 1.0
    # Upper bound of one backoff delay in seconds.
    retry_backoff_max_s: float = 30.0
    # Concurrent /generate requests in flight per server (one request per sample): the fleet takes this many times the
    # number of servers, so adding servers adds throughput (one cap for the whole fleet left 32 per server at 8).
    max_requests_per_server: int = 256

    # --- weight sync ---
    # "tensor": colocated servers receive CUDA-IPC handles via /update_weights_from_tensor; "distributed": servers on
    # other GPUs receive an NCCL broadcast via /init_weights_update_group + /update_weights_from_distributed.
    weight_sync: str = "tensor"
    # Upper bound of one weight-update bucket in MiB (a single larger tensor travels alone).
    weight_bucket_mib: int = 512
    # How /pause_generation treats in-flight requests during a weight update: "abort", "retract" or "in_place".
    pause_mode: str = "abort"
    # Master address of the NCCL weight-update group (distributed mode), where the servers connect to trainer rank 0
    # (the sending rank). Empty: found at start-up, the address of rank 0's host on its route to the first server.
    update_group_master_address: str = ""
    # Master port of the NCCL weight-update group (distributed mode).
    update_group_master_port: int = 29600
    # Name of the weight-update process group on the servers.
    update_group_name: str = "prefix_rft_weight_update"
    # Release GPU memory of colocated servers (weights and KV cache) while the trainer runs (read when
    # train.colocate; servers on their own GPUs keep their memory).
    offload_during_training: bool = True

    def colocated_server_ranks(self) -> Optional[List[int]]:
        """With weight_sync=tensor (colocated SGLang servers), the trainer ranks on the servers' GPUs: server i's TP
        rank j on GPU base_gpu_id + i * tp_size + j of the first node, where trainer rank = local rank = GPU; the
        weight sync hands each its own GPU's handles. None otherwise."""
        if self.engine != "sglang" or self.weight_sync != "tensor":
            return None
        servers = len(self.server_urls) or self.num_servers
        return [self.base_gpu_id + i * self.tp_size + j for i in range(servers) for j in range(self.tp_size)]

    def sampling_params(self, temperature: float) -> SamplingParams:
        """The rollout sampling defaults as per-request parameters at `temperature` (algorithm.temperature; n is
        set per request by the group helper)."""
        return SamplingParams(
            temperature=temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            stop_token_ids=tuple(self.stop_token_ids),
            seed=self.seed,
        )

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"rollout.{msg}")

        check(self.engine in ENGINES, f"engine={self.engine!r}: expected one of {ENGINES}")
        check(self.weight_sync in WEIGHT_SYNC_MODES,
              f"weight_sync={self.weight_sync!r}: expected one of {WEIGHT_SYNC_MODES}")
        check(self.pause_mode in PAUSE_MODES, f"pause_mode={self.pause_mode!r}: expected one of {PAUSE_MODES}")
        check(0.0 < self.top_p <= 1.0, f"top_p={self.top_p}: must be in (0, 1]")
        check(self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        check(self.tp_size >= 1, f"tp_size={self.tp_size}: must be >= 1")
        check(self.num_servers >= 1, f"num_servers={self.num_servers}: must be >= 1")
        check(0.0 < self.mem_fraction_static < 1.0,
              f"mem_fraction_static={self.mem_fraction_static}: must be in (0, 1)")
        check(self.weight_bucket_mib >= 1, f"weight_bucket_mib={self.weight_bucket_mib}: must be >= 1")
        check(self.max_attempts >= 1, f"max_attempts={self.max_attempts}: must be >= 1")
        check(self.max_requests_per_server >= 1,
              f"max_requests_per_server={self.max_requests_per_server}: must be >= 1")
        check(self.hf_max_batch_size >= 1, f"hf_max_batch_size={self.hf_max_batch_size}: must be >= 1")
        check(self.hf_dtype in ("float32", "bfloat16", "float16"),
              f"hf_dtype={self.hf_dtype!r}: float32|bfloat16|float16")
        for url in self.server_urls:
            check(url.startswith(("http://", "https://")), f"server_urls: {url!r} is not an http(s) URL")
