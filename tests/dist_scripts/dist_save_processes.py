"""save_sharded (checkpoint_io/dist_save.py): which processes outlive each save, the parent-death signal each of
megatron's writer processes had, whether megatron's own results queue is put back, and whether the checkpoint loads
back as what megatron's default strategy writes. Each rank reports (tests/train/test_checkpoint_processes.py).

Usage: dist_save_processes.py WORK_DIR
"""

import ctypes
import os
import sys
from pathlib import Path

import psutil
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.dist_checkpointing.mapping import ShardedTensor
from megatron.core.dist_checkpointing.strategies import filesystem_async

from prefix_rft_megatron.checkpoint_io.dist_save import save_sharded
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from results import report

PR_GET_PDEATHSIG = 2


def state(rank, world):
    torch.manual_seed(0)
    full = {f"w{i}": torch.randn(8 * world, 16) for i in range(4)}
    return {k: ShardedTensor.from_rank_offsets(k, v.chunk(world)[rank].clone(), (0, rank, world))
            for k, v in full.items()}


def main(work):
    work = Path(work)
    initialize_parallel(tp=1, pp=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    signals = work / f"pdeathsig_rank{rank}"
    signals.mkdir(parents=True, exist_ok=True)
    write = filesystem_async.FileSystemWriterAsync.write_preloaded_data

    def spy(*args, **kwargs):  # runs in each forked writer: record its parent-death signal
        sig = ctypes.c_int(-1)
        ctypes.CDLL(None).prctl(PR_GET_PDEATHSIG, ctypes.byref(sig), 0, 0, 0)
        (signals / str(os.getpid())).write_text(str(sig.value))
        return write(*args, **kwargs)

    filesystem_async.FileSystemWriterAsync.write_preloaded_data = staticmethod(spy)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    left_running = []
    for step in range(2):
        if rank == 0:
            (work / f"ckpt{step}").mkdir()
        dist.barrier()
        save_sharded(state(rank, world), work / f"ckpt{step}")
        left_running.append([" ".join(p.cmdline())[:120] for p in psutil.Process().children(recursive=True)
                             if p.pid not in before])
    loaded = dist_checkpointing.load(state(rank, world), str(work / "ckpt1"))
    dist.barrier()
    report({"left_running_after_each_save": left_running,
            "megatron_results_queue_restored": filesystem_async._results_queue is None,
            "writer_pdeathsigs": [int(f.read_text()) for f in signals.iterdir()],
            "loaded_equal": all(torch.equal(loaded[k], v.data) for k, v in state(rank, world).items()),
            "metadata": (work / "ckpt1" / "metadata.json").read_text()})
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:])
