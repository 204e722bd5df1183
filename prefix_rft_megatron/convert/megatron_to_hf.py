"""Megatron distributed checkpoint -> HF safetensors directory, streamed layer by layer."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

from prefix_rft_megatron.convert import mapping
from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader
from prefix_rft_megatron.checkpoint_io.hf_io import (
    MODEL_SIDE_FILES, TOKENIZER_SIDE_FILES, HFShardWriter, atomic_output_dir, copy_side_files,
)
from prefix_rft_megatron.checkpoint_io import HF_SUBDIR, META_FILE
from prefix_rft_megatron.model.arch import ArchError, ModelArch

logger = logging.getLogger(__name__)


def read_checkpoint_arch(ckpt_dir: Path, hf_config_dir: Path | None = None) -> tuple[ModelArch, Path | None]:
    """The architecture of a checkpoint (from our record, or an HF config given by the user)."""
    side = hf_config_dir or (ckpt_dir / HF_SUBDIR if (ckpt_dir / HF_SUBDIR / "config.json").is_file() else None)
    if side is not None:
        return ModelArch.from_hf(side), side
    meta = ckpt_dir / META_FILE
    if meta.is_file():
        return ModelArch.from_dict(json.loads(meta.read_text())["arch"]), None
    raise ArchError(f"{ckpt_dir}: no {META_FILE} or {HF_SUBDIR}/config.json; pass --hf-config DIR")


def convert_megatron_to_hf(ckpt_dir: str | Path, out_dir: str | Path, hf_config_dir: str | Path | None = None,
                           max_shard_bytes: int = 5 * 2**30, overwrite: bool = False, progress: bool = True,
                           tokenizer_dir: str | Path | None = None) -> Path:
    """`tokenizer_dir`: take the tokenizer files from there (and only the model's config files from the HF config
    directory); the trainer passes the tokenizer it trained with."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    if ckpt_dir.name.endswith(".partial") or not (ckpt_dir / "metadata.json").is_file():
        raise ArchError(f"{ckpt_dir}: an incomplete checkpoint (a save that was interrupted, or not a checkpoint); "
                        "convert a complete one (checkpoints/latest names the newest)")
    reader = CheckpointReader(ckpt_dir)
    arch, side_dir = read_checkpoint_arch(ckpt_dir, Path(hf_config_dir) if hf_config_dir else None)
    rules = mapping.param_rules(arch)
    for rule in rules:
        key = mapping.megatron_key(rule)
        if key not in reader.metadata.state_dict_metadata:
            raise ArchError(f"{ckpt_dir}: checkpoint has no {key!r} (does it belong to this architecture?)")
        if rule.per_layer and reader.shape(key)[0] != arch.num_layers:
            raise ArchError(f"{ckpt_dir}: {key} has {reader.shape(key)[0]} layers, config says {arch.num_layers}")
    with atomic_output_dir(out_dir, overwrite) as tmp:
        writer = HFShardWriter(tmp, max_shard_bytes)
        # HF order: embeddings, then layer by layer, then final norm and head.
        order = [(r, None) for r in rules if r.megatron.startswith("embedding")]
        order += [(r, i) for i in range(arch.num_layers) for r in rules if r.per_layer]
        order += [(r, None) for r in rules if not r.per_layer and not r.megatron.startswith("embedding")]
        for rule, layer in tqdm(order, desc="megatron->hf", disable=not progress):
            key = mapping.megatron_key(rule)
            full = reader.read_layer(key, layer) if rule.per_layer else reader.read(key)
            for name, tensor in mapping.to_hf(rule, full, arch, layer):
                writer.add(name, tensor)
        writer.close()
        if side_dir is not None:
            copy_side_files(side_dir, tmp, skip=TOKENIZER_SIDE_FILES if tokenizer_dir else ())
        if tokenizer_dir:
            copy_side_files(tokenizer_dir, tmp, skip=MODEL_SIDE_FILES)
        if not (tmp / "config.json").is_file():
            raise ArchError(f"{ckpt_dir}: no HF config.json to ship with the weights; pass --hf-config DIR")
    logger.info("megatron->hf: %s -> %s", ckpt_dir, out_dir)
    return out_dir
