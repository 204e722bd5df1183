"""Process-group and Megatron parallel-state initialisation.

One entry point for every process that runs Megatron code: the trainer, the converters' checks, the tests. Under
`torchrun` it reads RANK/WORLD_SIZE from the environment; a plain `python` process becomes a world of one.
The backend is `parallel.backends.process_group_backend()`: a backend per device on CUDA ("cpu:gloo,cuda:nccl"), gloo
on CPU (with the CPU shims installed first). Collectives go through `parallel.collectives`.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from prefix_rft_megatron.compat import cpu
from prefix_rft_megatron.parallel.backends import DEFAULT_TIMEOUT_MINUTES, process_group_backend

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelLayout:
    tp: int
    pp: int
    dp: int
    rank: int
    world_size: int
    device: torch.device


def free_port() -> int:
    """A TCP port on loopback that is free now (the OS picks it; another process may still take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> None:
    """Create the default process group once (no-op if it exists). `timeout_minutes` bounds every collective's
    wait, the longest being the other ranks' while rank 0 alone generates or evaluates."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:  # plain `python`: a world of one on loopback
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    device_id = None
    if torch.cuda.is_available():
        device_id = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device_id)  # before NCCL: each rank's communicator on its own GPU
    else:
        cpu.install()
    import datetime

    dist.init_process_group(backend=process_group_backend(), timeout=datetime.timedelta(minutes=timeout_minutes),
                            device_id=device_id)


def initialize_parallel(tp: int = 1, pp: int = 1, seed: int = 1234,
                        timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES) -> ParallelLayout:
    """Initialise torch.distributed and Megatron's TP x PP x DP groups; DP is what is left of the world."""
    from megatron.core import parallel_state, tensor_parallel

    init_distributed(timeout_minutes)
    world = dist.get_world_size()
    if world % (tp * pp) != 0:
        raise ValueError(f"parallel: world size {world} is not divisible by tp*pp = {tp}*{pp}")
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        create_gloo_process_groups=True,
    )
    # Same seed on every rank: CPU-initialised master weights are split across TP, so they must agree.
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    layout = ParallelLayout(tp=tp, pp=pp, dp=world // (tp * pp), rank=dist.get_rank(), world_size=world, device=device)
    if layout.rank == 0:
        logger.info("parallel: world=%d tp=%d pp=%d dp=%d backend=%s", world, tp, pp, layout.dp,
                    dist.get_backend_config())
    return layout


def destroy_parallel() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
