"""Two reaches into torch's private parts that the SGLang weight transports need, written here so that the trainer's
environment does not need sglang (it goes only where the servers run). Checked at import: torch 2.6 or later (the
release that renamed `_new_process_group_helper`'s `pg_options` to `backend_options`).

- `init_custom_process_group`: a process group outside the default world (trainer rank 0 + the servers' TP ranks),
  the store as sglang 0.5.23's `sglang.srt.utils.init_custom_process_group` makes it on the server side (a
  multi-tenant TCP store at init_method, hosted by rank 0, prefixed by the group name; group rank = rank), so both
  sides meet. The store is made directly, not through torch's `rendezvous`: under torchrun
  (TORCHELASTIC_USE_AGENT_STORE=True) `rendezvous` makes every rank a client of the agent's store, and rank 0 would
  wait for a master that nobody hosts.
- `UUIDForkingPickler`: torch's ForkingPickler with the CUDA-tensor reduction carrying the device's UUID where torch
  puts its index. sglang 0.5.23's receiving side (`monkey_patch_torch_reductions`, applied by the server before it
  deserialises) maps a UUID back to its own index, so a server with another CUDA_VISIBLE_DEVICES opens the handle on
  the right GPU. The rebuild function stays torch's own name (`torch.multiprocessing.reductions.
  rebuild_cuda_tensor`, on the allow-list of sglang 0.5.23's SafeUnpickler), which the server resolves to its
  UUID-aware version because it patches before deserialising (`tp_worker.deserialize_own_rank`, read in the
  installed 0.5.23); no torch global is patched here. Not run on a GPU yet.
"""

from __future__ import annotations

import datetime
from multiprocessing.reduction import ForkingPickler

import torch
from torch.multiprocessing import reductions

_DEVICE_ARG = 6  # index of the device in the argument tuple of torch's CUDA-tensor reduction (torch 2.x)


def _require_torch() -> None:
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    if (major, minor) < (2, 6):
        from prefix_rft_megatron.compat import UnsupportedVersion

        raise UnsupportedVersion(f"torch {torch.__version__}: compat/torch_distributed.py needs torch >= 2.6")


_require_torch()


def init_custom_process_group(backend: str, init_method: str, world_size: int, rank: int, group_name: str,
                              timeout: datetime.timedelta | None = None, device_id: torch.device | None = None):
    from urllib.parse import urlparse

    from torch.distributed import PrefixStore, TCPStore
    from torch.distributed.distributed_c10d import _new_process_group_helper, _world, default_pg_timeout

    timeout = timeout or default_pg_timeout
    address = urlparse(init_method)
    if address.scheme != "tcp" or not address.hostname or not address.port:
        raise ValueError(f"init_custom_process_group: {init_method!r} is not tcp://HOST:PORT")
    store = TCPStore(address.hostname, address.port, world_size, is_master=rank == 0, timeout=timeout,
                     multi_tenant=True)
    store = PrefixStore(group_name, store)
    group, _ = _new_process_group_helper(world_size, rank, [], backend, store, group_name=group_name,
                                         timeout=timeout, device_id=device_id)
    _world.pg_group_ranks[group] = {i: i for i in range(world_size)}  # group rank = rank, no default world behind
    return group


def _reduce_with_device_uuid(tensor: torch.Tensor):
    rebuild, args = reductions.reduce_tensor(tensor)
    if tensor.is_cuda and rebuild is reductions.rebuild_cuda_tensor:
        args = list(args)
        args[_DEVICE_ARG] = str(torch.cuda.get_device_properties(args[_DEVICE_ARG]).uuid)
        args = tuple(args)
    return rebuild, args


class UUIDForkingPickler(ForkingPickler):
    """ForkingPickler whose tensors carry their GPU's UUID (see the module docstring); CPU tensors as ForkingPickler
    reduces them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dispatch_table[torch.Tensor] = _reduce_with_device_uuid
        self.dispatch_table[torch.nn.Parameter] = _reduce_with_device_uuid
