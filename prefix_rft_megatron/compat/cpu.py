"""Make megatron-core run on a machine without CUDA.

megatron-core 0.16 hard-codes CUDA in places that are about bookkeeping, not compute: the CUDA RNG tracker,
`torch.cuda.current_device()` as a tensor device, `device="cuda"` scalars in the schedules, grad buffers, optimizer
and checkpoint exchange, `.cuda()` copies, `tensor.type() == 'torch.cuda.FloatTensor'` checks, CUDA streams.
On a CPU-only torch each of those raises. `install()` maps them onto the CPU. It runs only when
`torch.cuda.is_available()` is false (from `parallel.init`), so the GPU path never sees any of it, and every shim
is in this file. The megatron modules patched are listed in `_CUDA_HARDCODED_MODULES`. Written for megatron-core
0.16 (checked at import). gloo also lacks the coalesced batch_isend_irecv of the pipeline schedules: `configure`
turns it off on a model's config. Sequence parallelism's all-gather / reduce-scatter run on gloo as they are
(torch 2.13's gloo has both).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import types

import torch

from prefix_rft_megatron.compat import require

require("megatron-core")
logger = logging.getLogger(__name__)
_INSTALLED = False

_CUDA_HARDCODED_MODULES = (
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.distributed.param_and_grad_buffer",
    "megatron.core.distributed.distributed_data_parallel",
    "megatron.core.optimizer.clip_grads",
    "megatron.core.optimizer.optimizer",
    "megatron.core.optimizer.distrib_optimizer",
    "megatron.core.optimizer.grad_scaler",
    "megatron.core.dist_checkpointing.strategies.state_dict_saver",
    "megatron.core.dist_checkpointing.exchange_utils",
    "megatron.core.tensor_parallel.data",
    "megatron.core.utils",
)
_FACTORIES = ("zeros", "ones", "empty", "full", "tensor", "arange", "empty_like", "zeros_like", "ones_like", "randn")


def _cpu_device(device):
    if device is None:
        return None
    if isinstance(device, torch.device):
        return torch.device("cpu") if device.type == "cuda" else device
    if isinstance(device, int) or (isinstance(device, str) and device.startswith("cuda")):
        return torch.device("cpu")
    return device


def _make_torch_proxy() -> types.ModuleType:
    """A stand-in for `torch` inside one megatron module: factories with device='cuda' create CPU tensors."""
    proxy = types.ModuleType("torch_cpu_proxy")
    proxy.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})

    def wrap(fn):
        def factory(*args, **kwargs):
            if "device" in kwargs:
                kwargs["device"] = _cpu_device(kwargs["device"])
            kwargs.pop("pin_memory", None)
            return fn(*args, **kwargs)

        return factory

    for name in _FACTORIES:
        setattr(proxy, name, wrap(getattr(torch, name)))
    return proxy


class _NullStream:
    def __init__(self, *a, **k):
        pass

    def wait_stream(self, *a, **k):
        pass

    def synchronize(self):
        pass


def install() -> None:
    global _INSTALLED
    if _INSTALLED or torch.cuda.is_available():
        return
    _INSTALLED = True

    # Device queries and synchronisation: "cpu" is a valid device argument everywhere megatron passes one.
    torch.cuda.current_device = lambda: "cpu"  # type: ignore[assignment]
    torch.cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    torch.cuda.Stream = _NullStream  # type: ignore[assignment,misc]
    torch.cuda.current_stream = lambda *a, **k: _NullStream()  # type: ignore[assignment]
    torch.cuda.stream = lambda *a, **k: contextlib.nullcontext()  # type: ignore[assignment]

    # `.cuda()` copies are no-ops; `.type()` reports CUDA names so dtype checks written for GPUs pass.
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    _orig_type = torch.Tensor.type

    def _type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None and self.device.type == "cpu":
            return _orig_type(self).replace("torch.", "torch.cuda.", 1)
        return _orig_type(self, dtype, non_blocking, **kwargs)

    torch.Tensor.type = _type  # type: ignore[method-assign]

    # The CUDA RNG that megatron's RNG tracker forks: use the CPU generator's state.
    from megatron.core.tensor_parallel import random as mrandom

    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    torch.cuda.manual_seed = lambda seed: None  # type: ignore[assignment]
    torch.cuda.manual_seed_all = lambda seed: None  # type: ignore[assignment]
    torch.cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()  # type: ignore[assignment]
    torch.cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)  # type: ignore[assignment]

    # `device="cuda"` scalars and buffers inside these modules become CPU tensors.
    proxy = _make_torch_proxy()
    for name in _CUDA_HARDCODED_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "torch", None) is torch:
            module.torch = proxy
    logger.info("compat.cpu: CUDA absent; megatron-core device/RNG/stream calls mapped to CPU")


def configure(config) -> None:
    """CPU settings of a model's TransformerConfig (no-op with CUDA): gloo has no coalesced batch_isend_irecv."""
    if not torch.cuda.is_available():
        config.batch_p2p_comm = False
