"""Reading and writing Hugging Face safetensors checkpoints tensor by tensor."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

# Files besides weights that make an HF directory usable: the model's (config, generation settings) and the
# tokenizer's.
MODEL_SIDE_FILES = ("config.json", "generation_config.json")
TOKENIZER_SIDE_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja",
)
HF_SIDE_FILES = MODEL_SIDE_FILES + TOKENIZER_SIDE_FILES


class HFCheckpointReader:
    """Lazy access to the tensors of an HF safetensors directory (single file or sharded with an index)."""

    def __init__(self, hf_dir: str | Path):
        self.dir = Path(hf_dir)
        index = self.dir / "model.safetensors.index.json"
        single = self.dir / "model.safetensors"
        if index.is_file():
            weight_map = json.loads(index.read_text())["weight_map"]
        elif single.is_file():
            with safe_open(single, "pt") as f:
                weight_map = {k: single.name for k in f.keys()}
        else:
            raise FileNotFoundError(f"{self.dir}: no model.safetensors or model.safetensors.index.json")
        self.weight_map: dict[str, str] = weight_map

    def _open(self, name: str):
        # A handle per read, closed at once: safetensors maps the file, and pages touched through a handle that
        # stays open stay resident, which would grow the converter's memory to the whole model.
        if name not in self.weight_map:
            raise KeyError(f"{self.dir}: checkpoint has no tensor {name!r}")
        return safe_open(self.dir / self.weight_map[name], "pt")

    def get(self, name: str) -> torch.Tensor:
        with self._open(name) as f:
            return f.get_tensor(name).clone()  # own memory, not a view of the mapping

    def shape(self, name: str) -> tuple[int, ...]:
        with self._open(name) as f:
            return tuple(f.get_slice(name).get_shape())

    def dtype(self, name: str) -> torch.dtype:
        with self._open(name) as f:
            return _SAFETENSORS_DTYPES[f.get_slice(name).get_dtype()]

    def file_sizes(self) -> dict[str, int]:
        return {f: (self.dir / f).stat().st_size for f in set(self.weight_map.values())}


_SAFETENSORS_DTYPES = {
    "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
    "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}


class HFShardWriter:
    """Accumulate (name, tensor) pairs and flush safetensors shards of at most `max_shard_bytes`."""

    def __init__(self, out_dir: str | Path, max_shard_bytes: int = 5 * 2**30):
        self.dir = Path(out_dir)
        self.max_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[str, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def _flush(self) -> None:
        tmp_name = f"shard-{len(self._shards):05d}.tmp.safetensors"
        save_file(self._pending, str(self.dir / tmp_name), metadata={"format": "pt"})
        self._shards.append((tmp_name, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> None:
        """Give shards their final HF names and write the index (or a single model.safetensors)."""
        if self._pending:
            self._flush()
        n = len(self._shards)
        if n == 1:
            os.replace(self.dir / self._shards[0][0], self.dir / "model.safetensors")
            return
        weight_map = {}
        for i, (tmp_name, names) in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.dir / tmp_name, self.dir / final)
            weight_map.update({k: final for k in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def copy_side_files(src: str | Path, dst: str | Path, skip: tuple[str, ...] = ()) -> list[str]:
    copied = []
    for name in HF_SIDE_FILES:
        if name in skip:
            continue
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    return copied


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path, overwrite: bool = False):
    """Yield a fresh directory beside `out_dir`; on success it replaces `out_dir` in one rename, on any failure
    (or Ctrl-C) it is removed. A crash therefore never leaves a half-written `out_dir`."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file; the output must be a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
