"""Advantages: Dr. GRPO with a prefix-aware baseline (prefix-rft.md section 3).

Dr. GRPO: group-mean baseline, no division by the group's reward std, no per-sequence length normalisation.
A group mixes on-policy rollouts and rollouts that start from a demonstration (prefixed, or for `luffy` the full
demonstration). Each sequence gets two advantages, one for its demonstration tokens and one for the tokens the
policy generated; `token_advantages` broadcasts them onto the response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prefix_rft_megatron.algo.spec import Baseline


@dataclass
class SequenceAdvantages:
    """Per-sequence advantages, shape [num_sequences] each (float32)."""

    prefix: torch.Tensor
    """Used on the sequence's demonstration tokens (equal to `generated` for on-policy rollouts)."""
    generated: torch.Tensor
    """Used on the tokens the policy generated (the whole response, or a prefixed rollout's continuation)."""

    def select(self, rows) -> "SequenceAdvantages":
        """The advantages of some sequences (`rows`: indices), in that order."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return SequenceAdvantages(self.prefix[rows], self.generated[rows])


def group_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    from_demo: torch.Tensor,
    baseline: Baseline = Baseline.ON_POLICY_MEAN,
    raw_continuation_reward: bool = False,
) -> SequenceAdvantages:
    """Dr. GRPO advantages for a batch of groups.

    rewards:   [N] float rewards (0/1 for math-verify).
    group_ids: [N] int, the prompt each rollout belongs to (any labels; groups need not be contiguous).
    from_demo: [N] bool, True for a member made from the demonstration (a prefixed rollout, whatever its prefix
               length, or the demonstration itself).

    baseline=on_policy_mean (prefix_rft, rft): mean of the group's on-policy rewards, for every member; with
      `raw_continuation_reward` a prefixed rollout's generated tokens get the raw reward instead (reference quirk).
    baseline=group_mean (luffy): the demonstration is one more member: mean over all members.
    baseline=none (sft): no advantage; zeros.
    """
    rewards = rewards.to(torch.float64)  # group means in float64: exact for 0/1 rewards and small groups
    group_ids = group_ids.to(torch.long)
    from_demo = from_demo.to(torch.bool)
    if not (rewards.shape == group_ids.shape == from_demo.shape) or rewards.dim() != 1:
        raise ValueError(
            f"advantages: rewards, group_ids, from_demo must be 1-D of one length "
            f"(got {tuple(rewards.shape)}, {tuple(group_ids.shape)}, {tuple(from_demo.shape)})"
        )
    if baseline == Baseline.NONE:
        zeros = torch.zeros_like(rewards, dtype=torch.float32)
        return SequenceAdvantages(prefix=zeros, generated=zeros.clone())

    _, group = torch.unique(group_ids, return_inverse=True)
    num_groups = int(group.max()) + 1 if group.numel() else 0
    counted = torch.ones_like(from_demo) if baseline == Baseline.GROUP_MEAN else ~from_demo
    weight = counted.to(torch.float64)
    total = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, rewards * weight)
    count = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, weight)
    if bool((count == 0).any()):
        bad = int(torch.nonzero(count == 0)[0])
        raise ValueError(f"advantages: group {bad} has no on-policy rollout to form the baseline")
    adv = rewards - (total / count)[group]
    generated = torch.where(from_demo, rewards, adv) if raw_continuation_reward else adv.clone()
    return SequenceAdvantages(prefix=adv.to(torch.float32), generated=generated.to(torch.float32))


def token_advantages(
    seq_adv: SequenceAdvantages, response_mask: torch.Tensor, prefix_mask: torch.Tensor
) -> torch.Tensor:
    """Broadcast per-sequence advantages to tokens: [N, S] masks -> [N, S] float32 advantages.

    Demonstration tokens (`prefix_mask`) take `seq_adv.prefix`, other response tokens `seq_adv.generated`, and
    non-response positions 0. The entropy mask is applied later (prefix_mask.apply_prefix_keep).
    """
    response_mask = response_mask.to(torch.bool)
    prefix_mask = prefix_mask.to(torch.bool)
    if bool((prefix_mask & ~response_mask).any()):
        raise ValueError("advantages: prefix_mask marks tokens outside response_mask")
    adv = torch.where(prefix_mask, seq_adv.prefix[:, None], seq_adv.generated[:, None])
    return torch.where(response_mask, adv, torch.zeros_like(adv))
