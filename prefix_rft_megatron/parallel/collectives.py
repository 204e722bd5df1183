"""Every collective the package makes, each checked against the devices its process group's backend serves.

Why: NCCL serves CUDA tensors only, and a CPU tensor handed to an NCCL group fails at run time on a GPU cluster, a
failure no CPU test sees. The default group is therefore created with a backend per device (`parallel.backends`:
"cpu:gloo,cuda:nccl" on CUDA, so small CPU bookkeeping tensors travel over gloo and CUDA tensors over NCCL), and
every tensor collective below first checks the tensor's device against its group.

The rule (`PREFIX_RFT_COLLECTIVE_RULE`):
- "actual" (default): the devices the group's real backend serves (torch's own `ProcessGroup._device_types`).
- "nccl": the devices the group's backend would serve on a CUDA cluster: a group that inherits the default backend
  gets `process_group_backend("cuda")`, a group recorded with `declare(group, backend_on_cuda)` what it declared.
  Tests set it so that a CPU run fails where a GPU run would (tests/train/test_collective_devices.py).
Object collectives pick their own device (CPU where the group has a CPU backend) and are passed through.
The package calls `torch.distributed`'s collectives only through this module (tests/test_imports_layers.py checks).
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist

from prefix_rft_megatron.parallel.backends import backend_devices, process_group_backend

RULE_ENV = "PREFIX_RFT_COLLECTIVE_RULE"
RULES = ("actual", "nccl")

# groups created here with a backend of their own: group -> its backend string on a CUDA run
_declared_on_cuda: dict = {}


class CollectiveDeviceError(RuntimeError):
    """A tensor on a device its process group's backend does not serve (a bug of the package, not of a config)."""


def rule() -> str:
    value = os.environ.get(RULE_ENV, "actual")
    if value not in RULES:
        raise ValueError(f"{RULE_ENV}={value!r}: expected one of {', '.join(RULES)}")
    return value


def declare(group, backend_on_cuda: str) -> None:
    """Record the CUDA-run backend of a group with a backend of its own (the custom group with the servers); every
    other group inherits the default group's."""
    _declared_on_cuda[group] = backend_on_cuda


def served_device_types(group=None) -> set[str]:
    """The device types whose tensors `group` (default: the world) takes, under the current rule."""
    pg = group if group is not None else dist.group.WORLD
    if rule() == "nccl":
        return backend_devices(_declared_on_cuda.get(pg, process_group_backend("cuda")))
    types = getattr(pg, "_device_types", None)
    if types is None:  # a torch without the attribute: read the backend string
        return backend_devices(dist.get_backend_config(group))
    return {d.type for d in types}


def _describe(group) -> str:
    if group is None or group is dist.group.WORLD:
        return "the default group"
    desc = getattr(group, "group_desc", "") or "a group"
    return f"{desc} (ranks {dist.get_process_group_ranks(group)})"


def check_devices(op: str, tensors: Iterable[torch.Tensor], group=None) -> None:
    served = served_device_types(group)
    for t in tensors:
        if t.device.type not in served:
            raise CollectiveDeviceError(
                f"{op}: a {t.device.type} tensor {tuple(t.shape)} {t.dtype} handed to {_describe(group)}, whose "
                f"backend serves {sorted(served)} tensors only (rule {rule()!r}); move it to "
                f"{'CUDA' if 'cuda' in served else 'the CPU'} first")


# ---- tensor collectives ----

def all_reduce(tensor: torch.Tensor, op=dist.ReduceOp.SUM, group=None) -> None:
    check_devices("all_reduce", [tensor], group)
    dist.all_reduce(tensor, op=op, group=group)


def all_gather(out: list[torch.Tensor], tensor: torch.Tensor, group=None) -> None:
    check_devices("all_gather", [tensor, *out], group)
    dist.all_gather(out, tensor, group=group)


def broadcast(tensor: torch.Tensor, src: int, group=None) -> None:
    """`src` is a global rank, as in torch."""
    check_devices("broadcast", [tensor], group)
    dist.broadcast(tensor, src=src, group=group)


def send(tensor: torch.Tensor, dst: int, group=None) -> None:
    check_devices("send", [tensor], group)
    dist.send(tensor, dst=dst, group=group)


def recv(tensor: torch.Tensor, src: int, group=None) -> None:
    check_devices("recv", [tensor], group)
    dist.recv(tensor, src=src, group=group)


def barrier(group=None) -> None:
    dist.barrier(group=group)


# ---- object collectives (torch pickles into a tensor on the device it picks for the group) ----

def all_gather_object(obj, group=None) -> list:
    out = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def broadcast_object(obj, src: int = 0, group=None):
    """`obj` of global rank `src`, on every rank of `group`."""
    holder = [obj]
    dist.broadcast_object_list(holder, src=src, group=group)
    return holder[0]


def scatter_object(payloads: list | None, src: int = 0, group=None):
    """payloads[r] (given on `src`) on rank r of `group`."""
    holder = [None]
    dist.scatter_object_list(holder, payloads, src=src, group=group)
    return holder[0]


def gather_object(obj, dst: int = 0, group=None) -> list | None:
    """Every rank's `obj` on global rank `dst` (None elsewhere)."""
    out = [None] * dist.get_world_size(group) if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst, group=group)
    return out


def send_object(obj, dst: int, group=None) -> None:
    dist.send_object_list([obj], dst=dst, group=group)


def recv_object(src: int, group=None):
    box = [None]
    dist.recv_object_list(box, src=src, group=group)
    return box[0]
