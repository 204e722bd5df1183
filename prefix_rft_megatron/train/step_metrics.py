"""The per-step metrics computed from the step's rollouts (rewards, lengths, group signal) and the rollout-engine vs
trainer log-prob check; the loss module's own metrics are reduced by
algo/loss.py (reduce_metrics)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from prefix_rft_megatron.algo.spec import AlgorithmSpec
from prefix_rft_megatron.rollout.types import Rollout, by_group
from prefix_rft_megatron.parallel import collectives


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def rollout_metrics(rollouts: Sequence[Rollout], spec: AlgorithmSpec, low_t: float) -> dict[str, float]:
    """Reward, accuracy and length of the step's rollouts, on-policy and from-demonstration apart; `low_t` is the
    prefix schedule's current lower bound."""
    on = [r for r in rollouts if not r.from_demo]
    demo = [r for r in rollouts if r.from_demo]
    m = {
        "reward/mean": _mean(r.reward for r in rollouts),
        "reward/on_policy": _mean(r.reward for r in on),
        "reward/prefixed": _mean(r.reward for r in demo),
        "accuracy/on_policy": _mean(float(r.correct) for r in on),
        "response/length_mean": _mean(len(r.prefix_ids) + len(r.response_ids) for r in rollouts),
        "response/on_policy_length_mean": _mean(len(r.response_ids) for r in on),  # the paper's length curve
        "response/truncated_frac": _mean(float(r.finish_reason == "length") for r in on),
        "prefix/low_t": low_t,
        "prefix/tokens_mean": _mean(len(r.prefix_ids) for r in demo),
    }
    if spec.has_groups:
        groups = by_group(rollouts)
        # groups whose rewards are all equal get zero advantage: no gradient at all from them (Dr. GRPO)
        m["groups/no_signal_frac"] = _mean(float(len({r.reward for r in g}) == 1) for g in groups)
        # groups none of whose on-policy rollouts is correct: RFT learns nothing there, a prefixed rollout can
        m["groups/on_policy_all_wrong_frac"] = _mean(
            float(not any(r.correct for r in g if not r.from_demo)) for g in groups)
    return m


def logprob_gap(trainer_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, sampled_mask: torch.Tensor,
                copies: int = 1) -> dict[str, float]:
    """|trainer - engine| log-prob on the sampled tokens of this rank's rows [n, S], summed over every rank (the
    check slime's users watch at step 0). `copies`: how many ranks hold each row (its TP group), so tokens count
    once. Every rank calls it (with no rows where it holds no log-probs)."""
    diff = (trainer_logprobs - rollout_logprobs).abs()[sampled_mask]
    stats = torch.tensor([diff.sum().item(), float(diff.numel()), diff.max().item() if diff.numel() else 0.0],
                         dtype=torch.float64)
    if dist.is_initialized() and dist.get_world_size() > 1:
        total, peak = stats[:2].clone(), stats[2:].clone()
        collectives.all_reduce(total)  # CPU float64: gloo on a GPU cluster
        collectives.all_reduce(peak, op=dist.ReduceOp.MAX)
        stats = torch.cat([total, peak])
    n = stats[1].item()
    return {"logprob_diff/mean": stats[0].item() / n if n else float("nan"),
            "logprob_diff/max": stats[2].item(), "logprob_diff/tokens": n / copies}
