"""The RMSNorm of the local (non-Transformer-Engine) layer spec, usable with sequence parallelism.

Megatron's local spec wraps `torch.nn.RMSNorm` and refuses `sequence_parallel` (megatron-core 0.16,
`WrappedTorchNorm`): with sequence parallelism each TP rank normalises its own slice of the sequence, so the norm
weight's gradient on a rank is a partial sum, and `finalize_model_grads` all-reduces it over TP only for parameters
marked `sequence_parallel` (which TE's and apex's norms do). This entry is the same torch RMSNorm with that mark.
"""

from __future__ import annotations

import torch
from megatron.core.transformer.transformer_config import TransformerConfig


class RMSNorm(torch.nn.RMSNorm):
    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_unused):
        super().__init__(hidden_size, eps=eps)
        setattr(self.weight, "sequence_parallel", config.sequence_parallel)
