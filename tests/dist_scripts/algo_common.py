"""Shared pieces of the algo dist scripts: a tiny Megatron GPT model, a fixed step batch."""

import torch

from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.tiny import tiny_hf_config

VOCAB, SEQ, N_SEQ = 128, 10, 8  # token ids stay below 128 even for a 256-entry vocabulary


def tiny_model(vocab_size: int = VOCAB, **config_overrides):
    arch = ModelArch.from_hf(tiny_hf_config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2))
    return build_gpt_model(arch, **config_overrides)


def step_batch(seed: int = 5) -> dict[str, torch.Tensor]:
    """N_SEQ sequences of SEQ positions: prompt, then response (some with a demonstration prefix), then padding.

    Advantages include zeros, positives and negatives; old/ref log-probs are random so that the ratio is far from 1
    and the clip and dual-clip branches are both active on some tokens.
    """
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, VOCAB, (N_SEQ, SEQ), generator=g)
    target_ids = torch.roll(input_ids, -1, dims=1)
    response = torch.zeros(N_SEQ, SEQ, dtype=torch.bool)
    prefix = torch.zeros(N_SEQ, SEQ, dtype=torch.bool)
    for i in range(N_SEQ):
        start, end = 2 + i % 3, SEQ - 1 - i % 2
        response[i, start:end] = True
        if i % 4 == 3:  # one prefixed rollout per group of 4
            prefix[i, start:start + 3] = True
    keep = prefix & (torch.rand(N_SEQ, SEQ, generator=g) < 0.5)
    adv = torch.randn(N_SEQ, 1, generator=g).expand(N_SEQ, SEQ).clone()
    adv[0] = 0.0
    adv = adv.masked_fill(prefix & ~keep, 0.0).masked_fill(~response, 0.0)
    return dict(
        input_ids=input_ids, target_ids=target_ids, response_mask=response, prefix_mask=prefix,
        prefix_keep_mask=keep, advantages=adv,
        old_logprobs=-4.8 + 0.8 * torch.randn(N_SEQ, SEQ, generator=g),
        ref_logprobs=-4.8 + 0.8 * torch.randn(N_SEQ, SEQ, generator=g),
    )
