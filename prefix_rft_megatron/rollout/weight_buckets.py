"""Weight-update payloads for SGLang (pinned to sglang 0.5.23): bounded buckets, flattened and serialized.

SGLang's `load_format="flattened_bucket"` (srt/weight_sync/tensor_bucket.py) moves a bucket as one uint8 tensor:
the tensors' bytes concatenated in order, plus metadata (name, shape, dtype, start_idx, end_idx, numel) per tensor,
offsets in bytes. The same layout serves both transports:

- colocated (`/update_weights_from_tensor`): `{"flattened_tensor": flat, "metadata": [...]}` pickled with
  ForkingPickler (CUDA tensors travel as CUDA-IPC handles that name their GPU by UUID:
  `compat.torch_distributed.UUIDForkingPickler`) and base64-encoded, one copy
  per TP rank of the server (each rank deserialises the entry at its own index). The server unpickles with its
  `SafeUnpickler`, whose allow-list admits `types.SimpleNamespace` but no class of ours, so metadata entries are
  SimpleNamespaces; the server reads them by attribute only.
- separate GPUs (`/update_weights_from_distributed`): names, dtypes (torch names without "torch."), shapes go over
  HTTP and the server allocates the flat buffer itself (`FlattenedTensorBucket.empty`: offsets are the running byte
  sums, each aligned to its dtype's itemsize or it refuses); the trainer broadcasts `flat` from rank 0.
"""

from __future__ import annotations

import base64
import io
import itertools
import pickle
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import torch

NamedTensors = Sequence[Tuple[str, torch.Tensor]]


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def bucketize(named: Iterable[Tuple[str, torch.Tensor]], max_bytes: int,
              split_on_dtype: bool = True) -> Iterator[List[Tuple[str, torch.Tensor]]]:
    """Group (name, tensor) pairs, in order, into buckets of at most `max_bytes`; a tensor larger than that goes
    alone, and (with `split_on_dtype`) a change of dtype starts a new bucket, so a flat byte buffer keeps every
    tensor aligned without relying on the order of itemsizes.
    Only references are grouped: nothing is copied, and a lazy input stays lazy (one bucket alive at a time)."""
    if max_bytes <= 0:
        raise ValueError(f"weight buckets: bucket size {max_bytes} bytes must be > 0")
    cur: List[Tuple[str, torch.Tensor]] = []
    size = 0
    for name, t in named:
        nb = tensor_nbytes(t)
        if cur and (size + nb > max_bytes or (split_on_dtype and t.dtype != cur[0][1].dtype)):
            yield cur
            cur, size = [], 0
        cur.append((name, t))
        size += nb
    if cur:
        yield cur


def rebucket(buckets: Iterable[NamedTensors], max_bytes: int) -> Iterator[List[Tuple[str, torch.Tensor]]]:
    """Regroup a stream of buckets into buckets of at most `max_bytes`, dtypes mixed (see `bucketize`);
    `flatten_bucket` checks the alignment of each tensor in the flat buffer."""
    return bucketize(itertools.chain.from_iterable(buckets), max_bytes, split_on_dtype=False)


def flatten_bucket(named: NamedTensors) -> Tuple[torch.Tensor, List[SimpleNamespace]]:
    """(flat uint8 tensor on the tensors' device, metadata) in SGLang's flattened-bucket layout.

    Raises if a tensor's byte offset is not a multiple of its itemsize (SGLang's receive side refuses those);
    keep one dtype per bucket, or order larger itemsizes first."""
    if not named:
        raise ValueError("flatten_bucket: empty bucket")
    pieces, meta, offset = [], [], 0
    devices = {t.device for _, t in named}
    if len(devices) != 1:
        raise ValueError(f"flatten_bucket: tensors on several devices {sorted(map(str, devices))}")
    for name, t in named:
        if offset % t.element_size():
            raise ValueError(
                f"flatten_bucket: {name!r} ({t.dtype}) would start at byte {offset}, not a multiple of "
                f"{t.element_size()}; SGLang refuses unaligned tensors"
            )
        flat = t.detach().contiguous().reshape(-1).view(torch.uint8)
        pieces.append(flat)
        nb = flat.numel()
        meta.append(
            SimpleNamespace(
                name=name, shape=torch.Size(t.shape), dtype=t.dtype, start_idx=offset, end_idx=offset + nb, numel=nb
            )
        )
        offset += nb
    return torch.cat(pieces), meta


def unflatten_bucket(flat: torch.Tensor, meta: Sequence) -> List[Tuple[str, torch.Tensor]]:
    """The inverse of `flatten_bucket` (what SGLang's `FlattenedTensorBucket.reconstruct_tensors` computes)."""
    return [(m.name, flat[m.start_idx : m.end_idx].view(m.dtype).reshape(m.shape)) for m in meta]


def serialize_for_ranks(obj, tp_size: int, by_value: bool = False) -> List[str]:
    """`obj` pickled and base64-encoded once per TP rank (what SGLang's MultiprocessingSerializer.deserialize
    reads); separate pickles so each rank holds its own IPC references.

    ForkingPickler shares tensors instead of copying them: a CUDA tensor as a CUDA-IPC handle naming its GPU by UUID
    (the colocated GPU path, as sglang's own patched reduction does), a CPU tensor as a file descriptor of torch's
    shared memory, which only a process that torch's
    multiprocessing connected can receive: an SGLang server, an unrelated process, rejects it (multiprocessing's
    authentication digest) and its scheduler dies. `by_value` (CPU tensors) uses the plain pickler instead: the
    bytes travel in the body, nothing is shared and nothing is left behind."""
    from prefix_rft_megatron.compat.torch_distributed import UUIDForkingPickler

    out = []
    for _ in range(tp_size):
        buf = io.BytesIO()
        (pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL) if by_value else UUIDForkingPickler(buf)).dump(obj)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def free_ipc_memory() -> None:
    """After each colocated bucket: release the CUDA-IPC blocks the servers have closed and return the flat copy's
    block to the driver, so an update holds one bucket at a time (slime does the same per bucket)."""
    if torch.cuda.is_available():
        torch.cuda.ipc_collect()
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class RankHandles:
    """One bucket as every trainer rank serialized it on its own GPU (colocated, `sync.weight_sync` per-rank mode):
    `payloads[r]` is global rank r's `{"flattened_tensor", "metadata"}` pickle, for the server TP rank on rank r's
    GPU (None for a rank whose GPU hosts no server rank)."""

    payloads: List[Optional[str]]


def serialize_one(flat: torch.Tensor, meta: Sequence) -> str:
    """This rank's payload of a bucket for the server rank on its own device (see `serialize_for_ranks`)."""
    return serialize_for_ranks({"flattened_tensor": flat, "metadata": list(meta)}, 1, by_value=not flat.is_cuda)[0]


def tensor_update_body(
    flat: torch.Tensor, meta: Sequence, tp_size: int, flush_cache: bool = False, weight_version: str = ""
) -> dict:
    """JSON body of one `/update_weights_from_tensor` call for ONE server, from `flatten_bucket`'s output.

    Build a fresh body per server (and per call): every deserialisation consumes its own IPC references (a CPU
    tensor's shared fd can be received once; a CUDA-IPC handle is reference-counted per pickle), so one serialized
    payload must never be sent twice. Keep `flat` alive until the server has answered. A CPU tensor (SGLang's CPU
    engine) travels by value (see serialize_for_ranks)."""
    body = {
        "serialized_named_tensors": serialize_for_ranks({"flattened_tensor": flat, "metadata": list(meta)}, tp_size,
                                                        by_value=not flat.is_cuda),
        "load_format": "flattened_bucket",
        "flush_cache": flush_cache,
    }
    if weight_version:
        body["weight_version"] = weight_version
    return body


def distributed_update_payload(
    named: NamedTensors, group_name: str, flush_cache: bool = False, weight_version: str = ""
) -> Tuple[dict, torch.Tensor]:
    """JSON body of one `/update_weights_from_distributed` call, and the flat tensor to broadcast from rank 0."""
    flat, meta = flatten_bucket(named)
    body = {
        "names": [m.name for m in meta],
        "dtypes": [str(m.dtype).removeprefix("torch.") for m in meta],
        "shapes": [list(m.shape) for m in meta],
        "group_name": group_name,
        "load_format": "flattened_bucket",
        "flush_cache": flush_cache,
    }
    if weight_version:
        body["weight_version"] = weight_version
    return body, flat
