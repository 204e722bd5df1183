"""Export the trained policy to Hugging Face layout from the newest training checkpoint (the tools' converter)."""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist

from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf


def export_hf(trainer, out_dir: Path) -> Path | None:
    """Rank 0 converts the model tensors of the latest checkpoint (optimizer state is ignored) to `out_dir`."""
    latest = trainer.checkpoints.latest()
    if latest is not None and dist.get_rank() == 0:
        convert_megatron_to_hf(latest, out_dir, hf_config_dir=trainer.cfg.model.hf_path, overwrite=True,
                               progress=False)
    dist.barrier()
    return out_dir if latest is not None else None
