"""Export the trained policy to Hugging Face layout from the newest training checkpoint (the tools' converter)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from prefix_rft_megatron.checkpoint_io.hf_io import TOKENIZER_SIDE_FILES
from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf
from prefix_rft_megatron.data.config import resolve_path
from prefix_rft_megatron.parallel import collectives


def training_tokenizer_dir(data_tokenizer: str) -> Path | None:
    """The directory of the tokenizer the trainer used (`data.tokenizer`), if it is a local one."""
    path = resolve_path(data_tokenizer)
    return path if any((path / name).is_file() for name in TOKENIZER_SIDE_FILES) else None


def export_hf(checkpoint: Path | None, out_dir: Path, hf_config_dir: str, data_tokenizer: str) -> Path | None:
    """Rank 0 converts the model tensors of `checkpoint` (the run's latest; optimizer state is ignored) to `out_dir`.

    Config files come from `hf_config_dir` (model.hf_path), the tokenizer from `data_tokenizer` (data.tokenizer: the
    one the prompts and demonstrations were tokenized with; model.hf_path's when it is not a local directory), so
    that `prefix-rft eval` on the export tokenizes and templates prompts as the trainer's evaluation did."""
    if checkpoint is not None and dist.get_rank() == 0:
        convert_megatron_to_hf(checkpoint, out_dir, hf_config_dir=hf_config_dir, overwrite=True, progress=False,
                               tokenizer_dir=training_tokenizer_dir(data_tokenizer))
    collectives.barrier()
    return out_dir if checkpoint is not None else None
