"""Turn a live TP/PP-sharded Megatron model into full HF-named tensors, one parameter at a time.

Each pipeline stage emits the parameters it owns: TP shards are all-gathered inside the TP group and merged into
the canonical layout (`mapping.merge_tp_shards`), then converted to HF names and layout (`mapping.to_hf`). At most
one full parameter is alive at a time on a rank, never the whole model.
"""

from __future__ import annotations

from typing import Iterator

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

from prefix_rft_megatron.convert import mapping
from prefix_rft_megatron.model.arch import ModelArch
from prefix_rft_megatron.model.builder import unwrap_model
from prefix_rft_megatron.parallel import collectives



def _tensor_of(param: torch.nn.Parameter, what: str) -> torch.Tensor:
    if what == "param":
        return param.detach()
    grad = getattr(param, "main_grad", None)
    if grad is None:
        grad = param.grad
    if grad is None:
        return torch.zeros_like(param)
    return grad.detach()


def gather_tp(tensor: torch.Tensor, rule: mapping.ParamRule) -> torch.Tensor:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    if rule.tp_dim is None or tp == 1:
        return tensor
    shards = [torch.empty_like(tensor) for _ in range(tp)]
    collectives.all_gather(shards, tensor.contiguous(), group=parallel_state.get_tensor_model_parallel_group())
    return mapping.merge_tp_shards(rule, shards)


def iter_hf_tensors(model, arch: ModelArch, what: str = "param") -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (hf_name, full tensor) for the parameters (what="param") or gradients ("grad") of this PP stage.

    Every rank of a TP group must iterate (the gathers are collective); all of them get the full tensors.
    With tied embeddings the last stage's copy of the embedding is skipped (the first stage emits it).
    """
    module = unwrap_model(model)
    offset = get_transformer_layer_offset(module.config)
    for name, param in module.named_parameters():
        canonical, layer = mapping.canonical_param_name(name, offset)
        if canonical == "output_layer.weight" and arch.tie_word_embeddings:
            continue
        rule = mapping.rule_for(canonical, arch)
        full = gather_tp(_tensor_of(param, what), rule)
        yield from mapping.to_hf(rule, full, arch, layer)
