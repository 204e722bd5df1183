"""Which torch.distributed backend serves which device: decided here, once.

- The default process group (and every group that inherits it: megatron-core's TP / PP / DP groups are created with
  `backend=None`) has a backend per device on CUDA, "cpu:gloo,cuda:nccl" (as torchtitan does): CUDA tensors go over
  NCCL, small CPU bookkeeping tensors (flags, metric sums) and pickled objects over gloo. On CPU it is gloo.
- The weight-update group that trainer rank 0 forms with SGLang servers (`rollout.weight_sync=distributed`) holds
  one device's tensors: NCCL on CUDA, gloo on CPU (sglang 0.5.23's CPU server accepts "gloo").
"""

from __future__ import annotations

import torch

DEFAULT_TIMEOUT_MINUTES = 120.0  # parallel.timeout_minutes' default: why, in config/schema.py ParallelConfig

_DEFAULT_DEVICES = {"nccl": {"cuda"}, "gloo": {"cpu"}, "ucc": {"cpu", "cuda"}, "mpi": {"cpu"}}


def compute_device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def process_group_backend(device_type: str | None = None) -> str:
    """The default group's backend for a run on `device_type` (default: this machine's)."""
    return "cpu:gloo,cuda:nccl" if (device_type or compute_device_type()) == "cuda" else "gloo"


def weight_update_backend(device_type: str | None = None) -> str:
    """The backend of the group that broadcasts weights to SGLang servers."""
    return "nccl" if (device_type or compute_device_type()) == "cuda" else "gloo"


def backend_devices(config: str) -> set[str]:
    """Device types a backend string serves: "cpu:gloo,cuda:nccl" -> {cpu, cuda}; "nccl" -> {cuda}. A bare "gloo"
    counts as CPU only: gloo takes some CUDA collectives, but nothing here relies on that."""
    out: set[str] = set()
    for part in str(config).lower().split(","):
        if ":" in part:
            out.add(part.split(":", 1)[0].strip())
        else:
            out |= _DEFAULT_DEVICES.get(part.strip(), set())
    return out
