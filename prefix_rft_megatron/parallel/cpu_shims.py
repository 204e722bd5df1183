"""Make megatron-core run on a machine without CUDA.

megatron-core 0.16 hard-codes CUDA in a few places that are not about compute: the CUDA RNG tracker, 
`torch.cuda.current_device()` used as a tensor device, `torch.cuda.synchronize()`. On a CPU-only torch each of those
raises "Torch not compiled with CUDA enabled". `install()` maps them onto the CPU; it is called only when
`torch.cuda.is_available()` is false, so the GPU path never sees it. Every shim is listed here and nowhere else.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)
_INSTALLED = False


def install() -> None:
    global _INSTALLED
    if _INSTALLED or torch.cuda.is_available():
        return
    _INSTALLED = True

    # 1. Device queries: megatron builds tensors with device=torch.cuda.current_device(); "cpu" is a valid device.
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]

    # 2. The CUDA RNG state that megatron's RNG tracker forks: use the CPU generator's state instead.
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    torch.cuda.manual_seed = lambda seed: None  # type: ignore[assignment]
    torch.cuda.manual_seed_all = lambda seed: None  # type: ignore[assignment]
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()  # type: ignore[assignment]
    torch.cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)  # type: ignore[assignment]
    logger.info("cpu_shims: CUDA absent, megatron-core device/RNG calls mapped to CPU")
