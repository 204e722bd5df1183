"""Forward passes through Megatron's schedule (works for any PP size)."""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region


def forward_full_logits(model, tokens: torch.Tensor, vocab_size: int, micro_batch_size: int | None = None):
    """Logits over the true vocabulary for `tokens` [b, s]: a [b, s, V] tensor on the last PP stage, else None.

    Gathers the vocab-parallel logits on every TP rank: meant for checks and small evaluations, not training
    (training uses the vocab-parallel statistics in `algo`, which never gather the vocabulary).
    """
    b, s = tokens.shape
    mbs = micro_batch_size or b
    device = next(model.parameters()).device
    micro = list(tokens.to(device).split(mbs))
    out: list[torch.Tensor] = []
    config = model.config
    if not torch.cuda.is_available():
        config.batch_p2p_comm = False  # gloo has no coalesced batch_isend_irecv

    def step(data_iter, model):
        t = next(data_iter)
        pos = torch.arange(t.shape[1], device=t.device).unsqueeze(0).expand(t.shape[0], -1)
        output = model(t, pos, None)

        def collect(output_tensor):
            full = gather_from_tensor_model_parallel_region(output_tensor)[..., :vocab_size]
            out.append(full.detach().float())
            return output_tensor.new_zeros(()), {}

        return output, collect

    with torch.no_grad():
        get_forward_backward_func()(
            forward_step_func=step, data_iterator=iter(micro), model=[model], num_microbatches=len(micro),
            seq_length=s, micro_batch_size=mbs, forward_only=True,
        )
    return torch.cat(out) if parallel_state.is_pipeline_last_stage() else None
