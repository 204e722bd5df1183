"""Process-group and Megatron parallel-state initialisation.

One entry point for every process that runs Megatron code: the trainer, the converters' checks, the tests. Under
`torchrun` it reads RANK/WORLD_SIZE from the environment; a plain `python` process becomes a world of one.
NCCL when CUDA is present, gloo otherwise (with the CPU shims installed first).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from prefix_rft_megatron.compat import cpu

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


def init_distributed(backend: str | None = None, timeout_minutes: int = 30) -> None:
    """Create the default process group once (no-op if it exists)."""
    if dist.is_initialized():
        return
    if "RANK" not in os.environ:  # plain `python`: a world of one on loopback
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    use_cuda = torch.cuda.is_available()
    backend = backend or ("nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    else:
        cpu.install()
    import datetime

    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))


def initialize_parallel(tp: int = 1, pp: int = 1, seed: int = 1234) -> ParallelLayout:
    """Initialise torch.distributed and Megatron's TP x PP x DP groups; DP is what is left of the world."""
    from megatron.core import parallel_state, tensor_parallel

    init_distributed()
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
        logger.info("parallel: world=%d tp=%d pp=%d dp=%d backend=%s", world, tp, pp, layout.dp, dist.get_backend())
    return layout


def destroy_parallel() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
