"""rollout.weight_sync=distributed: servers on other GPUs or nodes join one NCCL group with trainer rank 0 (rank 0 of
the group; the servers' TP ranks after it), and each bucket is broadcast through it after its metadata is posted."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from ...config.validate import routable_address
from .. import weight_buckets

logger = logging.getLogger(__name__)


class DistributedTransport:
    path = "/update_weights_from_distributed"

    def __init__(self, cfg, group_factory: Optional[Callable[..., Any]] = None,
                 broadcast: Optional[Callable[[torch.Tensor, Any], None]] = None):
        """group_factory(master_address, master_port, world_size, rank, group_name) -> group and
        broadcast(tensor, group) replace the trainer side (defaults: sglang's init_custom_process_group and
        torch.distributed.broadcast from rank 0)."""
        self.cfg = cfg
        self._group_factory = group_factory or _default_group_factory
        self._broadcast = broadcast or _default_broadcast
        self.group = None

    def connect(self, servers) -> None:
        """Form the group {trainer rank 0} + every server's TP ranks; blocks until all joined."""
        cfg = self.cfg
        world_size = 1 + cfg.tp_size * len(servers.clients)
        # the servers dial this address: trainer rank 0's host as they can reach it
        address = cfg.update_group_master_address or routable_address(servers.urls[0])
        logger.info("weight-update group: servers connect to %s:%d", address, cfg.update_group_master_port)
        futs = [servers.submit("/init_weights_update_group", c, {
            "master_address": address, "master_port": cfg.update_group_master_port,
            "rank_offset": 1 + i * cfg.tp_size, "world_size": world_size, "group_name": cfg.update_group_name,
            "backend": "nccl"}) for i, c in enumerate(servers.clients)]
        self.group = self._group_factory(address, cfg.update_group_master_port, world_size, 0, cfg.update_group_name)
        servers.check(futs, "/init_weights_update_group")

    def send(self, servers, bucket, version: str) -> None:
        assert self.group is not None, "connect() first (the engine does, before it pauses generation)"
        body, flat = weight_buckets.distributed_update_payload(bucket, self.cfg.update_group_name, False, version)
        futs = servers.submit_each(self.path, lambda: body)
        self._broadcast(flat, self.group)
        servers.check(futs, self.path)

    def close(self) -> None:
        pass


def _default_group_factory(master_address: str, master_port: int, world_size: int, rank: int, group_name: str):
    try:
        from sglang.srt.utils import init_custom_process_group
    except ImportError as e:  # pragma: no cover - GPU path only
        raise ImportError(
            "rollout.weight_sync=distributed needs sglang in the trainer's environment (init_custom_process_group)"
        ) from e
    return init_custom_process_group(  # pragma: no cover
        backend="nccl", init_method=f"tcp://{master_address}:{master_port}", world_size=world_size, rank=rank,
        group_name=group_name,
    )  # fmt: skip


def _default_broadcast(flat: torch.Tensor, group: Any) -> None:  # pragma: no cover - GPU path only
    torch.distributed.broadcast(flat, src=0, group=group)
