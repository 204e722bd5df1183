"""Weight sync: a live TP x PP (x DP) sharded Megatron model -> rollout engines, in HF names, in bounded buckets.

Who does what (every rank calls `WeightSync.sync(step)`; it is collective):
- One DP replica sends: the replica whose first rank (TP rank 0, PP rank 0) owns an engine. On CPU that is global
  rank 0 with the HF engine in its process; with SGLang it is the trainer's rank 0 driving the servers over HTTP
  (one engine object, all servers). Ranks of other DP replicas return at once (their weights are the same).
- Each PP stage of that replica walks its parameters (`gather.iter_hf_tensors`: TP all-gather inside the stage's TP
  group, the one HF mapping); the stage's TP rank 0 groups the full HF tensors into buckets of at most
  `bucket_bytes` (a single larger tensor travels alone; one dtype per bucket).
- Stage 0's buckets go straight to the engine; stage s > 0 sends each bucket to the owner as metadata
  (`send_object_list`) plus one flat byte tensor (`send`) over the PP group, stages in order. The owner hands the
  buckets lazily to `engine.update_weights(buckets, version=step)`.
No process holds the whole model: per rank, at most one bucket's tensors (at TP=1 mostly views of the live
parameters), its flat send/receive buffer, and the TP shards plus merged copy of the tensor being gathered.

Per-rank mode (colocated SGLang servers, `rollout.weight_sync=tensor`): every server TP rank must open a CUDA-IPC
handle of its OWN GPU's memory. So every rank of every replica walks the whole model (each PP stage's TP-gathered
tensors broadcast over the PP group), buckets it the same way, flattens each bucket on its own GPU and serializes
it; the handles of the ranks whose GPU hosts a server rank (`server_ranks`) are gathered on the engine's rank, which
posts each server its own ranks' handles (`weight_buckets.RankHandles`); a barrier after each bucket keeps every
rank's flat copy alive until the servers have opened it.
If the engine fails mid-update, the owner drains the remaining buckets (so no stage stays blocked in a send) and
re-raises.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from prefix_rft_megatron.model.arch import ModelArch
from prefix_rft_megatron.parallel import collectives
from prefix_rft_megatron.rollout.weight_buckets import (RankHandles, bucketize, flatten_bucket, free_ipc_memory,
                                                       serialize_one, tensor_nbytes, unflatten_bucket)
from prefix_rft_megatron.sync.gather import iter_hf_tensors

logger = logging.getLogger(__name__)

Bucket = List[Tuple[str, torch.Tensor]]
DEFAULT_BUCKET_MIB = 512  # rollout.weight_bucket_mib's default


@dataclass
class SyncStats:
    """What one sync moved, as seen by this rank (the owner's figures are the whole model's)."""

    version: Optional[int] = None
    tensors: int = 0
    buckets: int = 0
    bytes: int = 0
    max_bucket_bytes: int = 0
    seconds: float = 0.0
    sent_to_engine: bool = False

    @property
    def gb_per_s(self) -> float:
        return self.bytes / 1e9 / self.seconds if self.seconds > 0 else 0.0

    def metrics(self, prefix: str = "weight_sync/") -> dict:
        return {f"{prefix}bytes": self.bytes, f"{prefix}buckets": self.buckets, f"{prefix}tensors": self.tensors,
                f"{prefix}seconds": self.seconds, f"{prefix}gb_per_s": self.gb_per_s}

    def add(self, bucket: Bucket) -> None:
        nb = sum(tensor_nbytes(t) for _, t in bucket)
        self.tensors += len(bucket)
        self.buckets += 1
        self.bytes += nb
        self.max_bucket_bytes = max(self.max_bucket_bytes, nb)


@dataclass(frozen=True)
class _Role:
    active: bool  # this rank belongs to the replica that feeds an engine
    is_owner: bool  # this rank holds the engine
    owner: int  # global rank of the owner of this rank's replica (-1 when inactive)
    pp_rank: int
    pp_size: int
    tp_rank: int
    pp_group: object = field(default=None, compare=False)


class WeightSync:
    """Push the current weights of `model` (this rank's TP/PP shard; DDP-wrapped or not) to `engine`.

    `engine` is given on the rank that owns it (TP rank 0 and PP rank 0 of some DP replica; normally global rank 0)
    and None elsewhere. Construction is collective (ranks agree on which replica sends).
    """

    def __init__(self, model, arch: ModelArch, engine=None, bucket_bytes: int = DEFAULT_BUCKET_MIB * 2**20,
                 server_ranks: Optional[List[int]] = None):
        """`server_ranks`: per-rank mode (see the module docstring), the global ranks whose GPU hosts a server TP
        rank; None: one replica sends through the engine's rank."""
        if bucket_bytes <= 0:
            raise ValueError(f"weight sync: bucket size {bucket_bytes} bytes must be > 0")
        self.model = model
        self.arch = arch
        self.engine = engine
        self.bucket_bytes = int(bucket_bytes)
        self.server_ranks = None if server_ranks is None else set(server_ranks)
        if self.server_ranks is not None and max(self.server_ranks) >= dist.get_world_size():
            raise ValueError(f"weight sync: colocated server ranks sit on GPUs {sorted(self.server_ranks)}, but the "
                             f"trainer has {dist.get_world_size()} ranks (rollout.base_gpu_id, num_servers, tp_size)")
        self.role = self._agree_roles(engine is not None)

    @staticmethod
    def _agree_roles(has_engine: bool) -> _Role:
        tp_rank = parallel_state.get_tensor_model_parallel_rank()
        pp_rank = parallel_state.get_pipeline_model_parallel_rank()
        pp_size = parallel_state.get_pipeline_model_parallel_world_size()
        # The replica's first rank: TP rank 0 of PP stage 0 in this rank's model-parallel group.
        mp_group = parallel_state.get_model_parallel_group()
        me = (dist.get_rank(), tp_rank, pp_rank, has_engine)
        members = collectives.all_gather_object(me, group=mp_group)
        owner = next(r for r, tp, pp, _ in members if tp == 0 and pp == 0)
        wrong = [r for r, tp, pp, e in members if e and (tp, pp) != (0, 0)]
        if wrong:
            raise ValueError(
                f"weight sync: an engine was given on rank(s) {wrong}, which are not TP/PP rank 0 of their "
                "model replica; give it to the replica's first rank (normally global rank 0)"
            )
        active = any(e for r, _, _, e in members if r == owner)
        pp_group = parallel_state.get_pipeline_model_parallel_group()
        return _Role(active, dist.get_rank() == owner and has_engine, owner if active else -1, pp_rank, pp_size,
                     tp_rank, pp_group)

    # ---- the collective ----

    def sync(self, version: Optional[int] = None) -> SyncStats:
        """Send every weight to the engine once (collective over all ranks; inactive replicas return at once)."""
        if self.server_ranks is not None:
            return self._sync_per_rank(version)
        stats = SyncStats(version=version)
        role = self.role
        if not role.active:
            return stats
        start = time.perf_counter()
        if role.is_owner:
            buckets = self._owner_buckets(stats)
            try:
                self.engine.update_weights(buckets, version=version)
            finally:
                # Drain what the engine did not take (it failed or stopped early) so the senders are not left
                # blocked in a send.
                leftover = sum(1 for _ in buckets)
            if leftover:
                raise RuntimeError(
                    f"weight sync: the engine consumed only part of the update ({leftover} buckets left over)"
                )
            stats.sent_to_engine = True
        else:
            self._send_stage(stats)
        stats.seconds = time.perf_counter() - start
        if role.is_owner:
            logger.info(
                "weight sync v%s: %d tensors, %d buckets (max %.1f MiB), %.1f MiB in %.2fs (%.2f GB/s)",
                version, stats.tensors, stats.buckets, stats.max_bucket_bytes / 2**20, stats.bytes / 2**20,
                stats.seconds, stats.gb_per_s,
            )
        return stats

    # ---- per-rank mode ----

    def _sync_per_rank(self, version: Optional[int]) -> SyncStats:
        stats = SyncStats(version=version)
        start = time.perf_counter()
        owner = self.engine is not None
        handles = self._rank_handles(stats, owner)
        try:
            if owner:
                self.engine.update_weights(handles, version=version)
        finally:
            leftover = sum(1 for _ in handles)  # the other ranks finish every bucket's gather and barrier
        if owner and leftover:
            raise RuntimeError(f"weight sync: the engine consumed only part of the update ({leftover} buckets left "
                               "over)")
        stats.sent_to_engine = owner
        stats.seconds = time.perf_counter() - start
        if owner:
            logger.info("weight sync v%s (per-rank handles): %d tensors, %d buckets, %.1f MiB in %.2fs", version,
                        stats.tensors, stats.buckets, stats.bytes / 2**20, stats.seconds)
        return stats

    def _rank_handles(self, stats: SyncStats, owner: bool) -> Iterator[RankHandles]:
        """Every rank: each bucket of the whole model flattened on its own device; the ranks in `server_ranks`
        serialize theirs; all are gathered on global rank 0, which yields them to its engine."""
        hosts_server = dist.get_rank() in self.server_ranks
        for bucket in bucketize(self._whole_model(), self.bucket_bytes):
            flat, meta = flatten_bucket(bucket)
            stats.add(bucket)
            gathered = collectives.gather_object(serialize_one(flat, meta) if hosts_server else None, dst=0)
            if owner:
                yield RankHandles(gathered)
            collectives.barrier()  # the owner's engine has posted: the servers hold their own references now
            del flat, bucket
            free_ipc_memory()

    def _whole_model(self) -> Iterator[Tuple[str, torch.Tensor]]:
        """The whole model's HF tensors, on every rank: this stage's TP-gathered ones, and the other stages' received
        over the PP group (one tensor at a time, stages in order)."""
        local = iter_hf_tensors(self.model, self.arch, what="param")
        role = self.role
        if role.pp_size == 1:
            yield from local
            return
        for stage in range(role.pp_size):
            src = dist.get_global_rank(role.pp_group, stage)
            if stage == role.pp_rank:
                for name, t in local:
                    t = t.contiguous()
                    collectives.broadcast_object((name, tuple(t.shape), t.dtype), src=src, group=role.pp_group)
                    collectives.broadcast(t, src=src, group=role.pp_group)
                    yield name, t
                collectives.broadcast_object(None, src=src, group=role.pp_group)
                continue
            while (head := collectives.broadcast_object(None, src=src, group=role.pp_group)) is not None:
                name, shape, dtype = head
                t = torch.empty(shape, dtype=dtype, device=_device())
                collectives.broadcast(t, src=src, group=role.pp_group)
                yield name, t

    def _local_buckets(self) -> Iterator[Bucket]:
        """This stage's buckets (every TP rank iterates: the gathers are collective; all get full tensors)."""
        return bucketize(iter_hf_tensors(self.model, self.arch, what="param"), self.bucket_bytes)

    def _owner_buckets(self, stats: SyncStats) -> Iterator[Bucket]:
        for bucket in self._local_buckets():
            stats.add(bucket)
            yield bucket
        for stage in range(1, self.role.pp_size):
            src = dist.get_global_rank(self.role.pp_group, stage)
            while True:
                meta = collectives.recv_object(src=src, group=self.role.pp_group)
                if meta is None:
                    break
                nbytes = meta[-1].end_idx
                flat = torch.empty(nbytes, dtype=torch.uint8, device=_device())
                collectives.recv(flat, src=src, group=self.role.pp_group)
                bucket = unflatten_bucket(flat, meta)
                stats.add(bucket)
                yield bucket
                del bucket, flat

    def _send_stage(self, stats: SyncStats) -> None:
        """Non-owner ranks of the sending replica: TP peers only take part in the gathers; TP rank 0 of a later
        stage sends its buckets to the owner (its PP group's rank 0) and then an end marker."""
        role = self.role
        sender = role.tp_rank == 0 and role.pp_rank > 0
        dst = dist.get_global_rank(role.pp_group, 0)
        for bucket in self._local_buckets():
            if not sender:
                continue
            flat, meta = flatten_bucket(bucket)
            collectives.send_object(meta, dst=dst, group=role.pp_group)
            collectives.send(flat, dst=dst, group=role.pp_group)
            stats.add(bucket)
            del flat, bucket
        if sender:
            collectives.send_object(None, dst=dst, group=role.pp_group)


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
