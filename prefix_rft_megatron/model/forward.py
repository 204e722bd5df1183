"""Forward passes through Megatron's schedule (works for any PP size)."""

from __future__ import annotations

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from prefix_rft_megatron.compat import cpu


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
    cpu.configure(config)

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


# Finite rather than -inf: exp() still underflows to 0, and p * logit stays 0 (not nan) in the entropy.
_MASKED_LOGIT = -1e9


def mask_padded_vocab(vocab_parallel_logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Push the padded vocabulary rows (index >= vocab_size) out of the softmax on this TP rank's slice.

    Megatron pads the vocabulary for TP; the padded rows are zero, so their logits are 0, not -inf, and would take
    probability mass that the rollout engine (true vocabulary) never gives them.
    """
    part = vocab_parallel_logits.shape[-1]
    start = parallel_state.get_tensor_model_parallel_rank() * part
    if start + part <= vocab_size:
        return vocab_parallel_logits
    col = torch.arange(start, start + part, device=vocab_parallel_logits.device)
    return vocab_parallel_logits.masked_fill(col >= vocab_size, _MASKED_LOGIT)
