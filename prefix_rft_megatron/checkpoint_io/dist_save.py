"""megatron-core's `dist_checkpointing.save`, synchronous and atomic: written beside its place and renamed.

The save strategy (megatron's torch_dist without its Manager process; writer processes that die with the saver)
is `compat.megatron_dist_save`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

from megatron.core import dist_checkpointing

from prefix_rft_megatron.compat.megatron_dist_save import InProcessTorchDistSaveStrategy


def save_sharded(sharded_state_dict: dict, checkpoint_dir: str | Path) -> None:
    """Collective: `dist_checkpointing.save(sharded_state_dict, checkpoint_dir)`, without the Manager process."""
    dist_checkpointing.save(sharded_state_dict, str(checkpoint_dir), sharded_strategy=InProcessTorchDistSaveStrategy())


def save_sharded_atomically(sharded_state_dict: dict, final: str | Path, partial: str | Path,
                            finish: Callable[[Path], None] | None = None) -> Path:
    """Collective: `save_sharded` into `partial` (emptied first); once every rank has written, rank 0 runs
    `finish(partial)` (extra files) and renames `partial` onto `final`, replacing an older one. A crash leaves
    `partial` behind, never a half-written `final`."""
    import torch.distributed as dist

    from prefix_rft_megatron.parallel import collectives

    final, partial = Path(final), Path(partial)
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    if dist.is_initialized():
        collectives.barrier()
    save_sharded(sharded_state_dict, partial)
    if dist.is_initialized():
        collectives.barrier()
    if rank0:
        if finish is not None:
            finish(partial)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    if dist.is_initialized():
        collectives.barrier()
    return final
