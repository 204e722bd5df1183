"""Stream tensors into and out of Megatron's distributed checkpoint format without building a model.

Megatron's `torch_dist` checkpoints are PyTorch Distributed Checkpoint (DCP) directories plus `metadata.json` and
`common.pt`. Each tensor is stored as global-shape metadata and a list of chunks; a loader at any TP/PP layout reads
the regions it owns. The writer here hands DCP a plan of chunks whose data is produced only when DCP asks for it
(`resolve_data`, one item at a time with one writer thread), so peak memory is about one chunk, not the model.
The reader asks DCP for one region of one tensor at a time (a layer of a stacked `decoder.layers.*` tensor).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata,
    ChunkStorageMetadata,
    MetadataIndex,
    TensorProperties,
    TensorStorageMetadata,
)
from torch.distributed.checkpoint.planner import (
    LoadPlan,
    SavePlan,
    TensorWriteData,
    WriteItem,
    WriteItemType,
)
from torch.distributed.checkpoint.planner_helpers import create_read_items_for_chunk_list

# What megatron-core 0.16 writes next to the DCP files (read back by dist_checkpointing.load).
MCORE_METADATA = {
    "sharded_backend": "torch_dist",
    "sharded_backend_version": 1,
    "common_backend": "torch",
    "common_backend_version": 1,
}


@dataclass
class LazyChunk:
    """One chunk of a global tensor, produced on demand."""

    key: str
    global_shape: tuple[int, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    dtype: torch.dtype
    produce: Callable[[], torch.Tensor]


class _StreamingSavePlanner(DefaultSavePlanner):
    def __init__(self, chunks: list[LazyChunk], objects: dict[str, object]):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._chunks = {MetadataIndex(c.key, torch.Size(c.offsets)): c for c in chunks}
        self._objects = objects

    def create_local_plan(self) -> SavePlan:
        items = [
            WriteItem(
                index=index,
                type=WriteItemType.SHARD,
                tensor_data=TensorWriteData(
                    chunk=ChunkStorageMetadata(offsets=torch.Size(c.offsets), sizes=torch.Size(c.sizes)),
                    properties=TensorProperties(dtype=c.dtype),
                    size=torch.Size(c.global_shape),
                ),
            )
            for index, c in self._chunks.items()
        ]
        items += [WriteItem(index=MetadataIndex(k), type=WriteItemType.BYTE_IO) for k in self._objects]
        self.plan = SavePlan(items)
        return self.plan

    def resolve_data(self, write_item: WriteItem):
        if write_item.type == WriteItemType.BYTE_IO:
            buf = io.BytesIO()
            # megatron-core stores each ShardedObject as a one-element list (its load unwraps the list).
            torch.save([self._objects[write_item.index.fqn]], buf)
            buf.seek(0)
            return buf
        chunk = self._chunks[MetadataIndex(write_item.index.fqn, write_item.index.offset)]
        tensor = chunk.produce()
        if tuple(tensor.shape) != tuple(chunk.sizes) or tensor.dtype != chunk.dtype:
            raise ValueError(
                f"dist_ckpt: chunk {chunk.key}@{chunk.offsets} produced {tuple(tensor.shape)} {tensor.dtype}, "
                f"planned {tuple(chunk.sizes)} {chunk.dtype}"
            )
        return tensor.contiguous()


def write_checkpoint(out_dir: str | Path, chunks: list[LazyChunk], objects: dict[str, object] | None = None,
                     common: dict | None = None) -> None:
    """Write a Megatron torch_dist checkpoint into `out_dir` (must exist and be empty) from lazy chunks."""
    out = Path(out_dir)
    writer = dcp.FileSystemWriter(str(out), single_file_per_rank=True, thread_count=1, sync_files=True)
    dcp.save({}, storage_writer=writer, planner=_StreamingSavePlanner(chunks, objects or {}), no_dist=True)
    torch.save(common or {}, out / "common.pt")
    (out / "metadata.json").write_text(json.dumps(MCORE_METADATA))


class _RegionLoadPlanner(DefaultLoadPlanner):
    def __init__(self, key: str, offsets: tuple[int, ...], dest: torch.Tensor):
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._key, self._offsets, self._dest = key, offsets, dest

    def create_local_plan(self) -> LoadPlan:
        md = self.metadata.state_dict_metadata[self._key]
        chunk = ChunkStorageMetadata(offsets=torch.Size(self._offsets), sizes=self._dest.shape)
        return LoadPlan(create_read_items_for_chunk_list(self._key, md, [chunk]))

    def resolve_tensor(self, read_item):
        view = self._dest
        for dim, (off, length) in enumerate(zip(read_item.dest_offsets, read_item.lengths)):
            view = view.narrow(dim, off, length)
        return view

    def commit_tensor(self, read_item, tensor):
        pass  # resolve_tensor handed out a view of the destination: the data is already in place


class CheckpointReader:
    """Random access to the tensors of a torch_dist checkpoint, one region at a time."""

    def __init__(self, ckpt_dir: str | Path):
        self.dir = Path(ckpt_dir)
        if not (self.dir / ".metadata").is_file():
            raise FileNotFoundError(f"{self.dir}: not a Megatron distributed checkpoint (no .metadata file)")
        self._reader = dcp.FileSystemReader(str(self.dir))
        self.metadata = self._reader.read_metadata()

    def tensor_keys(self) -> list[str]:
        return [k for k, v in self.metadata.state_dict_metadata.items() if isinstance(v, TensorStorageMetadata)]

    def object_keys(self) -> list[str]:
        return [k for k, v in self.metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata)]

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._md(key).size)

    def dtype(self, key: str) -> torch.dtype:
        return self._md(key).properties.dtype

    def _md(self, key: str) -> TensorStorageMetadata:
        md = self.metadata.state_dict_metadata.get(key)
        if not isinstance(md, TensorStorageMetadata):
            raise KeyError(f"{self.dir}: checkpoint has no tensor {key!r}")
        return md

    def read(self, key: str, offsets: tuple[int, ...] | None = None, sizes: tuple[int, ...] | None = None):
        """Read the region [offsets, offsets+sizes) of tensor `key` (default: the whole tensor)."""
        shape = self.shape(key)
        offsets = offsets or (0,) * len(shape)
        sizes = sizes or shape
        dest = torch.empty(sizes, dtype=self.dtype(key))
        planner = _RegionLoadPlanner(key, tuple(offsets), dest)
        dcp.load({}, storage_reader=self._reader, planner=planner, no_dist=True)
        return dest

    def read_layer(self, key: str, layer: int) -> torch.Tensor:
        """One layer of a layer-stacked tensor (`decoder.layers.*`), without the layer axis."""
        shape = self.shape(key)
        return self.read(key, (layer,) + (0,) * (len(shape) - 1), (1,) + shape[1:])[0]

