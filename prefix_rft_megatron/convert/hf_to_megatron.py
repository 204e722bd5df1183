"""HF safetensors directory -> Megatron distributed checkpoint, streamed tensor by tensor.

The output is what megatron-core's `dist_checkpointing.save` writes for this model, so any TP/PP layout loads it
(`dist_checkpointing.load` reshards on read). The TP size given here fixes the vocabulary padding (a multiple of
make_vocab_size_divisible_by * TP) and is checked against the heads; PP is checked against the layers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm import tqdm

from prefix_rft_megatron.checkpoint_io import HF_SUBDIR, META_FILE
from prefix_rft_megatron.convert import mapping
from prefix_rft_megatron.checkpoint_io.dist_ckpt import LazyChunk, write_checkpoint
from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader, atomic_output_dir, copy_side_files
from prefix_rft_megatron.model.arch import ArchError, ModelArch

logger = logging.getLogger(__name__)

# Megatron 0.16's local layer spec writes one (empty) `_extra_state` object per linear layer and layer.
EXTRA_STATE_MODULES = ("self_attention.linear_proj", "self_attention.linear_qkv", "mlp.linear_fc1", "mlp.linear_fc2")


def plan_chunks(arch: ModelArch, hf: HFCheckpointReader, padded_vocab: int, dtype: torch.dtype | None,
                on_chunk=None) -> list[LazyChunk]:
    """One lazy chunk per (tensor, layer) (two for fc1: gate and up), in HF order."""
    chunks: list[LazyChunk] = []

    def make(key, global_shape, offsets, sizes, src_dtype, produce):
        out_dtype = dtype or src_dtype

        def run():
            t = produce().to(out_dtype)
            if on_chunk:
                on_chunk(t)
            return t

        chunks.append(LazyChunk(key, tuple(global_shape), tuple(offsets), tuple(sizes), out_dtype, run))

    nq_rows = arch.num_attention_heads * arch.head_dim
    kv_rows = arch.num_query_groups * arch.head_dim
    for rule in mapping.param_rules(arch):
        key = mapping.megatron_key(rule)
        first = mapping.hf_names(rule, 0 if rule.per_layer else None)
        shapes = [hf.shape(n) for n in first]
        src_dtype = hf.dtype(first[0])
        if rule.kind == "qkv":
            expect = [(nq_rows, *shapes[0][1:]), (kv_rows, *shapes[0][1:]), (kv_rows, *shapes[0][1:])]
            if shapes != expect:
                raise ArchError(f"{hf.dir}: {first} have shapes {shapes}, config implies {expect}")
            layer_shape = (nq_rows + 2 * kv_rows, *shapes[0][1:])
        elif rule.kind == "gate_up":
            layer_shape = (shapes[0][0] + shapes[1][0], *shapes[0][1:])
        elif rule.kind == "vocab":
            if shapes[0][0] != arch.vocab_size:
                raise ArchError(f"{hf.dir}: {first[0]} has {shapes[0][0]} rows, config vocab_size={arch.vocab_size}")
            layer_shape = (padded_vocab, *shapes[0][1:])
        else:
            layer_shape = shapes[0]
        if not rule.per_layer:
            make(key, layer_shape, (0,) * len(layer_shape), layer_shape, src_dtype,
                 lambda rule=rule, names=first: mapping.to_megatron(rule, [hf.get(n) for n in names], arch,
                                                                     padded_vocab))
            continue
        global_shape = (arch.num_layers, *layer_shape)
        zeros = (0,) * len(layer_shape)
        for i in range(arch.num_layers):
            names = mapping.hf_names(rule, i)
            if rule.kind == "gate_up":  # a chunk per half: each reads one HF tensor
                half = layer_shape[0] // 2
                for h, name in enumerate(names):
                    make(key, global_shape, (i, h * half, *zeros[1:]), (1, half, *layer_shape[1:]), src_dtype,
                         lambda name=name: hf.get(name).unsqueeze(0))
            else:
                make(key, global_shape, (i, *zeros), (1, *layer_shape), src_dtype,
                     lambda rule=rule, names=names: mapping.to_megatron(
                         rule, [hf.get(n) for n in names], arch, padded_vocab).unsqueeze(0))
    return chunks


def extra_state_objects(arch: ModelArch) -> dict[str, None]:
    L = arch.num_layers
    return {
        f"{mapping.LAYERS_PREFIX}{m}._extra_state/shard_{i}_{L}": None
        for i in range(L) for m in EXTRA_STATE_MODULES
    }


def convert_hf_to_megatron(hf_dir: str | Path, out_dir: str | Path, tp: int = 1, pp: int = 1,
                           make_vocab_size_divisible_by: int = 128, dtype: torch.dtype | None = None,
                           overwrite: bool = False, progress: bool = True) -> Path:
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    arch = ModelArch.from_hf(hf_dir)
    arch.check_parallel(tp, pp, where=str(hf_dir / "config.json"))
    hf = HFCheckpointReader(hf_dir)
    missing = [n for n in mapping.all_hf_names(arch) if n not in hf.weight_map]
    if missing:
        raise ArchError(f"{hf_dir}: checkpoint lacks {len(missing)} tensors the config implies, e.g. {missing[0]!r}")
    padded = arch.padded_vocab_size(tp, make_vocab_size_divisible_by)
    with atomic_output_dir(out_dir, overwrite) as tmp:
        with tqdm(total=0, unit="B", unit_scale=True, desc="hf->megatron", disable=not progress) as bar:  # closed
            # also on an error, so that the error's line starts a line of its own
            chunks = plan_chunks(arch, hf, padded, dtype, on_chunk=lambda t: bar.update(t.numel() * t.element_size()))
            bar.total = sum(_numel(c.sizes) * c.dtype.itemsize for c in chunks)
            write_checkpoint(tmp, chunks, extra_state_objects(arch))
        (tmp / HF_SUBDIR).mkdir()
        copy_side_files(hf_dir, tmp / HF_SUBDIR)
        meta = {
            "arch": arch.to_dict(), "padded_vocab_size": padded, "tp": tp, "pp": pp,
            "make_vocab_size_divisible_by": make_vocab_size_divisible_by,
            "dtype": str(dtype or hf.dtype(mapping.all_hf_names(arch)[0])).removeprefix("torch."),
            "source": str(hf_dir),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    logger.info("hf->megatron: %s -> %s (%d tensors, padded vocab %d)", hf_dir, out_dir, len(chunks), padded)
    return out_dir


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
