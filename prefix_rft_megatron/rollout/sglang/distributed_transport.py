"""rollout.weight_sync=distributed: servers on other GPUs or nodes join one process group with trainer rank 0 (rank 0
of the group; the servers' TP ranks after it), and each bucket is broadcast through it after its metadata is posted.
The group's backend follows the device (`parallel.backends.weight_update_backend`: NCCL on CUDA, gloo on CPU, where
sglang 0.5.23's CPU server takes it too); the group is made by `compat.torch_distributed`, so the trainer needs no
sglang."""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import torch

from ...compat.torch_distributed import init_custom_process_group
from ...config.validate import routable_address
from ...parallel import collectives
from ...parallel.backends import weight_update_backend
from .. import weight_buckets

logger = logging.getLogger(__name__)


class DistributedTransport:
    path = "/update_weights_from_distributed"

    def __init__(self, cfg, group_factory: Optional[Callable[..., Any]] = None,
                 broadcast: Optional[Callable[[torch.Tensor, Any], None]] = None):
        """group_factory(master_address, master_port, world_size, rank, group_name) -> group and
        broadcast(tensor, group) replace the trainer side (defaults: compat.torch_distributed.init_custom_process_group
        and a broadcast from rank 0 through parallel.collectives)."""
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
            "backend": weight_update_backend()}) for i, c in enumerate(servers.clients)]
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
    group = init_custom_process_group(weight_update_backend(), f"tcp://{master_address}:{master_port}", world_size,
                                      rank, group_name)
    collectives.declare(group, weight_update_backend("cuda"))  # one device's tensors: the weights' own
    return group


def _default_broadcast(flat: torch.Tensor, group: Any) -> None:
    collectives.broadcast(flat, src=0, group=group)
