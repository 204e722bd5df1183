"""megatron-core 0.16's torch_dist save strategy, synchronous, with no helper process that can outlive the caller.

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
from contextlib import contextmanager

from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

from prefix_rft_megatron.compat import require
from prefix_rft_megatron.process.parent_death import die_with_parent

require("megatron-core")

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
