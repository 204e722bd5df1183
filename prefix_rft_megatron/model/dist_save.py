"""megatron-core's `dist_checkpointing.save`, synchronous, with no helper process that can outlive the caller.

megatron-core 0.16's torch_dist save strategy (TorchDistSaveShardedStrategy, writer FileSystemWriterAsync) is built
for async saving. On the first save with anything to write, it starts a `spawn` multiprocessing Manager
(filesystem_async._get_write_results_queue) that only holds the queue the write results come back through, and
keeps it for the life of the process. That process re-imports the caller's `__main__` (~270 MB for the trainer, and
seconds of the first save), and nothing ties it to its parent: a trainer killed with SIGKILL leaves it running
forever under pid 1, and with it the multiprocessing resource tracker whose pipe it holds.

A synchronous save runs the write function in the calling process (AsyncRequest.execute_sync), so the results never
cross a process boundary: `save_sharded` gives the writer a plain in-process queue for the duration of the save
(megatron's own is put back afterwards, so an async save elsewhere still gets its Manager). The writer also forks
`thread_count` short-lived processes per save to write the files; forked during `save_sharded`, they are armed to
die with the caller (PR_SET_PDEATHSIG, `process.parent_death`): a writer left without its parent can otherwise block
forever at exit (its results queue or completion queue has no one at the other end).

Same files, same format: it is megatron's own TorchDistSaveShardedStrategy('torch_dist', 1) with its default
thread_count, called through `dist_checkpointing.save`.
"""

from __future__ import annotations

import os
import queue
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

from prefix_rft_megatron.process.parent_death import die_with_parent

_saving: int | None = None  # the pid of a process inside save_sharded: what it forks then (the writers) dies with it


def _after_fork_in_child() -> None:
    if _saving is None:
        return
    die_with_parent()  # PR_SET_PDEATHSIG, or the watchdog thread where that is not available
    if os.getppid() != _saving:  # the saver was gone before the signal was armed
        os._exit(1)


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def _in_process_save():
    global _saving
    saved_queue, saved_flag = filesystem_async._results_queue, _saving
    # what _get_write_results_queue hands the writer instead of a Manager's queue (megatron-core 0.16's name;
    # tests/train/test_resume.py fails if a megatron-core upgrade brings the Manager back)
    filesystem_async._results_queue = queue.Queue()
    _saving = os.getpid()
    try:
        yield
    finally:
        filesystem_async._results_queue, _saving = saved_queue, saved_flag


class InProcessTorchDistSaveStrategy(TorchDistSaveShardedStrategy):
    """torch_dist, version 1, as megatron's default; `save` (synchronous) starts no Manager process. `async_save`
    is megatron's, unchanged."""

    def __init__(self, thread_count: int = 2):
        super().__init__("torch_dist", 1, thread_count=thread_count)

    def save(self, sharded_state_dict, checkpoint_dir):
        with _in_process_save():
            super().save(sharded_state_dict, checkpoint_dir)


def save_sharded(sharded_state_dict: dict, checkpoint_dir: str | Path) -> None:
    """Collective: `dist_checkpointing.save(sharded_state_dict, checkpoint_dir)`, without the Manager process."""
    dist_checkpointing.save(sharded_state_dict, str(checkpoint_dir), sharded_strategy=InProcessTorchDistSaveStrategy())


def save_sharded_atomically(sharded_state_dict: dict, final: str | Path, partial: str | Path,
                            finish: Callable[[Path], None] | None = None) -> Path:
    """Collective: `save_sharded` into `partial` (emptied first); once every rank has written, rank 0 runs
    `finish(partial)` (extra files) and renames `partial` onto `final`, replacing an older one. A crash leaves
    `partial` behind, never a half-written `final`."""
    import torch.distributed as dist

    final, partial = Path(final), Path(partial)
    rank0 = not dist.is_initialized() or dist.get_rank() == 0
    if rank0:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    if dist.is_initialized():
        dist.barrier()
    save_sharded(sharded_state_dict, partial)
    if dist.is_initialized():
        dist.barrier()
    if rank0:
        if finish is not None:
            finish(partial)
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
    if dist.is_initialized():
        dist.barrier()
    return final
