"""The step's rollouts as token tensors.

A sequence (`rollout.types.Rollout`) is prompt ++ prefix ++ response, all token ids: `prefix` are demonstration
tokens (off-policy), `response` what the policy sampled. The model reads tokens[:-1] and position t scores
tokens[t+1] (`target_ids`), so masks are in target space: a target belongs to the response when it lies past the
prompt.
Sequences are right-padded to a common length; causal attention keeps padding from touching real positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from prefix_rft_megatron.rollout.types import Rollout


@dataclass
class SequenceBatch:
    """[N, S] tensors for N sequences (S = longest sequence - 1)."""

    input_ids: torch.Tensor
    target_ids: torch.Tensor
    response_mask: torch.Tensor  # targets in prefix or response
    prefix_mask: torch.Tensor  # targets that are demonstration tokens
    sampled_mask: torch.Tensor  # targets the engine sampled (have rollout log-probs)
    rollout_logprobs: torch.Tensor  # engine log-probs on sampled targets, 0 elsewhere
    sample_index: torch.Tensor  # [N] Rollout.index
    from_demo: torch.Tensor  # [N] bool: made from the demonstration (Rollout.kind), whatever its prefix length
    lengths: torch.Tensor  # [N] positions of each row that hold tokens (the rest is padding)
    sequences: list[Rollout] = field(default_factory=list)

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def build_batch(seqs: Sequence[Rollout], pad_id: int = 0, length: int | None = None,
                multiple_of: int = 1) -> SequenceBatch:
    """`length`: positions per row (default: the longest sequence's), rounded up to a multiple of `multiple_of`."""
    S = length if length is not None else max(s.length for s in seqs) - 1
    S = -(-S // multiple_of) * multiple_of
    n = len(seqs)
    input_ids = torch.full((n, S), pad_id, dtype=torch.long)
    target_ids = torch.full((n, S), pad_id, dtype=torch.long)
    response_mask = torch.zeros((n, S), dtype=torch.bool)
    prefix_mask = torch.zeros((n, S), dtype=torch.bool)
    sampled_mask = torch.zeros((n, S), dtype=torch.bool)
    rollout_logprobs = torch.zeros((n, S), dtype=torch.float32)
    for i, s in enumerate(seqs):
        full = torch.tensor(s.prompt_ids + s.prefix_ids + s.response_ids, dtype=torch.long)
        if len(full) - 1 > S:
            raise ValueError(f"batch: sequence {s.index} has {len(full) - 1} positions, batch length is {S}")
        m = len(full) - 1
        input_ids[i, :m] = full[:-1]
        target_ids[i, :m] = full[1:]
        p, k = len(s.prompt_ids), len(s.prefix_ids)
        # target position t holds token t+1: the prompt's last position predicts the first response token.
        response_mask[i, p - 1:m] = True
        prefix_mask[i, p - 1:p - 1 + k] = True
        sampled_mask[i, p - 1 + k:m] = True
        if s.response_logprobs:
            rollout_logprobs[i, p - 1 + k:m] = torch.tensor(s.response_logprobs, dtype=torch.float32)
    sample_index = torch.tensor([s.index for s in seqs], dtype=torch.long)
    from_demo = torch.tensor([s.from_demo for s in seqs], dtype=torch.bool)
    lengths = torch.tensor([s.length - 1 for s in seqs], dtype=torch.long)
    return SequenceBatch(input_ids, target_ids, response_mask, prefix_mask, sampled_mask, rollout_logprobs,
                         sample_index, from_demo, lengths, list(seqs))
