"""The training loss (prefix-rft.md sections 5-6) as a loss function for Megatron's `forward_backward_func`.

Per token t of a response (demonstration tokens included):
    ratio_t = exp(logp_theta - logp_old)
    l_t     = max(-A_t ratio_t, -A_t clip(ratio_t, 1 - eps_low, 1 + eps_high));  A_t < 0: l_t = min(l_t, -c A_t)
    luffy (shaped_off_policy), off-policy tokens: l_t = -A_t f(p_t), f(p) = p / (p + gamma), p_t = exp(logp_theta), no clipping
    sft (cross_entropy): l_t = -logp_theta(y*_t)
    + kl_coef * KL_t (k1 / k3, to a reference policy)  - entropy_coef * H_t  (optionally not on prefix tokens)
Aggregation (Dr. GRPO): J = (1 / N_global) sum_seq sum_t l_t / L_max, N_global = sequences in the step batch.

Scaling through Megatron (megatron-core 0.16, schedules.forward_step_calc_loss and DistributedDataParallel):
- `calculate_per_token_loss=False` (megatron's default): the schedule multiplies the returned loss by cp_size and
  divides it by num_microbatches; DDP then averages gradients over the DP x CP group. The loss function returns
  `sum_tokens l_t / L_max * num_microbatches * dp_size / N_global`, so the accumulated gradient is dJ/dtheta.
- `calculate_per_token_loss=True`: the loss function returns (sum_tokens l_t / L_max, sequences in the micro-batch,
  metrics); the schedule does not scale, DDP sums over DP, and `finalize_model_grads` divides by the total "token"
  count all-reduced over DP, which here is the number of sequences, N_global. (Needs context parallel size 1.)
Either way the gradient does not depend on micro-batch size, number of micro-batches or DP size.

Tensors of a micro-batch are [B, S], aligned with the logits: position t scores `target_ids[:, t]` (the next token).
GPTModel called without labels returns logits [B, S, V/tp], which is what the loss function expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from prefix_rft_megatron.algo.config import AlgorithmConfig, KLEstimator
from prefix_rft_megatron.algo.spec import LossKind, algorithm_spec
from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats
from prefix_rft_megatron.parallel import collectives

# exp() of a log-ratio beyond this is inf in fp32-adjacent arithmetic; clamping only guards against overflow.
_MAX_LOG_RATIO = 20.0


@dataclass
class LossInputs:
    """One micro-batch, [B, S] each, aligned with the logits (position t scores target_ids[:, t])."""

    target_ids: torch.Tensor
    """int64 token ids to score (padding positions may hold any valid id; they are masked)."""
    response_mask: torch.Tensor
    """bool: response tokens that enter the loss (prefix and continuation; for sft the demonstration)."""
    advantages: torch.Tensor
    """float: per-token advantage, with the dropped prefix tokens already at 0 (prefix_mask.apply_prefix_keep)."""
    old_logprobs: torch.Tensor | None
    """float: log-probs recomputed by the trainer before the update, for all tokens (demonstration included). None:
    the update is the step's only one, so the policy before it is the one being differentiated: the forward's own
    detached log-probs stand in (ratio 1), as TRL does with one update per batch."""
    prefix_mask: torch.Tensor | None = None
    """bool: demonstration (off-policy) tokens; None = none (rft, sft)."""
    prefix_keep_mask: torch.Tensor | None = None
    """bool: prefix tokens kept by the entropy mask (metrics only; None = all prefix tokens kept)."""
    ref_logprobs: torch.Tensor | None = None
    """float: log-probs of the reference policy; needed when loss.kl_coef > 0."""
    logprobs_out: list | None = None
    """When a list: the loss function appends this micro-batch's detached log-probs [B, S] to it (the trainer's
    engine-vs-trainer check when no recompute pass ran)."""
    num_sequences: int | None = None
    """Sequences in the micro-batch; None: one per row (a packed row holds several)."""

    @property
    def sequences(self) -> int:
        return self.num_sequences if self.num_sequences is not None else self.target_ids.size(0)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator) -> torch.Tensor:
    """Per-token estimate of KL(pi_theta || pi_ref) from samples of pi_theta (Schulman's k1 / k3)."""
    log_ratio = ref_logprobs - logprobs
    if estimator == KLEstimator.K1:
        return -log_ratio
    if estimator == KLEstimator.K3:
        log_ratio = log_ratio.clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise AssertionError(f"unknown KL estimator {estimator}")


def _sum_count(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(torch.bool)
    return torch.stack([values.detach().float()[mask].sum(), mask.sum().float()])


def token_losses(
    logprobs: torch.Tensor, entropy: torch.Tensor, inputs: LossInputs, cfg: AlgorithmConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token loss l_t [B, S] (0 outside the response) and metrics as {name: tensor([sum, count])}."""
    lc = cfg.loss
    response = inputs.response_mask.to(torch.bool)
    prefix = inputs.prefix_mask.to(torch.bool) if inputs.prefix_mask is not None else torch.zeros_like(response)
    prefix = prefix & response
    kept = prefix if inputs.prefix_keep_mask is None else prefix & inputs.prefix_keep_mask.to(torch.bool)
    on_policy = response & ~prefix
    adv = inputs.advantages.float()
    metrics: dict[str, torch.Tensor] = {}
    kind = algorithm_spec(cfg).loss
    old = (inputs.old_logprobs if inputs.old_logprobs is not None else logprobs.detach()).float()

    if kind == LossKind.CROSS_ENTROPY:
        loss = -logprobs
    else:
        log_ratio = (logprobs - old).clamp(-_MAX_LOG_RATIO, _MAX_LOG_RATIO)
        ratio = torch.exp(log_ratio)
        pg_unclipped = -adv * ratio
        pg_clipped = -adv * ratio.clamp(1.0 - lc.clip_eps_low, 1.0 + lc.clip_eps_high)
        loss = torch.maximum(pg_unclipped, pg_clipped)
        clipped = pg_clipped > pg_unclipped
        dual_clipped = torch.zeros_like(response)
        if lc.dual_clip_c > 0:
            dual_bound = -lc.dual_clip_c * adv
            dual_clipped = (adv < 0) & (loss > dual_bound)
            loss = torch.where(adv < 0, torch.minimum(loss, dual_bound), loss)
        ppo_tokens = response
        if kind == LossKind.SHAPED_OFF_POLICY:
            # Off-policy tokens: policy shaping replaces the clipped ratio (behaviour probability taken as 1).
            p = torch.exp(logprobs)
            loss = torch.where(prefix, -adv * (p / (p + lc.luffy_gamma)), loss)
            ppo_tokens = on_policy
        metrics["pg/clipfrac_on_policy"] = _sum_count(clipped.float(), on_policy)
        metrics["pg/clipfrac_prefix"] = _sum_count(clipped.float(), kept & ppo_tokens)
        metrics["pg/dual_clipfrac"] = _sum_count(dual_clipped.float(), ppo_tokens)
        # k3 estimate of KL(pi_old || pi_theta) on the sampled tokens: how far the update has moved.
        approx_kl = kl_penalty(old, logprobs, KLEstimator.K3)
        metrics["kl/approx_old"] = _sum_count(approx_kl, response)
        if lc.entropy_coef > 0:
            bonus_tokens = on_policy if lc.entropy_exclude_prefix else response
            loss = loss - lc.entropy_coef * entropy * bonus_tokens
        if lc.kl_coef > 0:
            if inputs.ref_logprobs is None:
                raise ValueError("loss: algo.loss.kl_coef > 0 needs ref_logprobs")
            kl = kl_penalty(logprobs, inputs.ref_logprobs.float(), lc.kl_estimator)
            loss = loss + lc.kl_coef * kl
            metrics["kl/ref"] = _sum_count(kl, response)

    loss = torch.where(response, loss, torch.zeros_like(loss))
    metrics["entropy/on_policy"] = _sum_count(entropy, on_policy)
    metrics["entropy/prefix_kept"] = _sum_count(entropy, kept)
    metrics["entropy/prefix_dropped"] = _sum_count(entropy, prefix & ~kept)
    metrics["entropy/prefix"] = _sum_count(entropy, prefix)  # all demonstration tokens (the paper's entropy curve)
    metrics["tokens/prefix_share"] = torch.stack([prefix.sum().float(), response.sum().float()])
    metrics["tokens/prefix_kept_share"] = torch.stack([kept.sum().float(), prefix.sum().float()])
    metrics["advantage/mean"] = _sum_count(adv, response)
    metrics["advantage/sq_mean"] = _sum_count(adv * adv, response)
    metrics["response/length"] = torch.stack([response.sum().float(), torch.tensor(float(inputs.sequences))])
    metrics["logprob/mean"] = _sum_count(logprobs, response)
    return loss, metrics


def sequence_loss_sum(token_loss: torch.Tensor, max_response_tokens: int) -> torch.Tensor:
    """sum_seq sum_t l_t / L_max over a micro-batch (the Dr. GRPO numerator, before / N_global)."""
    return token_loss.sum() / max_response_tokens


def _data_parallel_size() -> int:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 1
    return parallel_state.get_data_parallel_world_size()


def make_loss_func(
    inputs: LossInputs,
    cfg: AlgorithmConfig,
    num_global_sequences: int,
    num_microbatches: int,
    calculate_per_token_loss: bool = False,
    data_parallel_size: int | None = None,
) -> Callable[[torch.Tensor], tuple]:
    """The `loss_func(output_tensor)` a forward_step_func returns alongside the model output (logits [B, S, V/tp]).

    num_global_sequences: N_global, the sequences of the step batch (mini-batch) over all DP ranks.
    num_microbatches: the `num_microbatches` passed to forward_backward_func for this update.
    calculate_per_token_loss: must equal the model config's flag (see the module docstring for both scalings).
    data_parallel_size: defaults to megatron's DP world size (without context parallelism).
    Metrics come back as {name: tensor([sum, count])}; reduce them with `reduce_metrics`.
    """
    if num_global_sequences < 1 or num_microbatches < 1:
        raise ValueError(f"loss: need num_global_sequences >= 1 and num_microbatches >= 1 "
                         f"(got {num_global_sequences}, {num_microbatches})")
    dp = data_parallel_size if data_parallel_size is not None else _data_parallel_size()
    assert cfg.loss.max_response_tokens > 0, "L_max unset: config.validate.derive sets it from rollout.max_new_tokens"

    def loss_func(output_tensor: torch.Tensor):
        logprobs, entropy = vocab_parallel_token_stats(output_tensor, inputs.target_ids, cfg.temperature)
        token_loss, metrics = token_losses(logprobs, entropy, inputs, cfg)
        if inputs.logprobs_out is not None:
            inputs.logprobs_out.append(logprobs.detach().float().cpu())
        raw = sequence_loss_sum(token_loss, cfg.loss.max_response_tokens)
        metrics["loss/per_sequence"] = torch.stack(
            [raw.detach(), torch.tensor(float(inputs.sequences), device=raw.device)]
        )
        if calculate_per_token_loss:
            from megatron.core import parallel_state

            if parallel_state.model_parallel_is_initialized():
                assert parallel_state.get_context_parallel_world_size() == 1, "per-sequence count needs cp=1"
            num_seqs = torch.tensor(inputs.sequences, dtype=torch.int, device=raw.device)
            return raw, num_seqs, metrics
        return raw * (num_microbatches * dp / num_global_sequences), metrics

    return loss_func


def make_recompute_func(target_ids: torch.Tensor, temperature: float) -> Callable[[torch.Tensor], tuple]:
    """A forward-only `loss_func` that returns (0, {"logprobs": [B, S], "entropy": [B, S]}) for the recompute pass."""

    def loss_func(output_tensor: torch.Tensor):
        with torch.no_grad():
            logprobs, entropy = vocab_parallel_token_stats(output_tensor, target_ids, temperature)
        zero = torch.zeros((), dtype=torch.float32, device=output_tensor.device)
        return zero, {"logprobs": logprobs, "entropy": entropy}

    return loss_func


def reduce_metrics(per_microbatch: Iterable[Mapping[str, torch.Tensor]], group=None) -> dict[str, float]:
    """Sum the [sum, count] pairs over micro-batches, all-reduce over `group` (default: DP), return sum / count.

    Adds "advantage/std" from the mean and the mean square. A metric with count 0 reads 0.0.
    Every rank of the group must call it with the same metric names.
    """
    totals: dict[str, torch.Tensor] = {}
    for metrics in per_microbatch:
        for name, pair in metrics.items():
            pair = pair.detach().double().cpu()
            totals[name] = totals[name] + pair if name in totals else pair
    if not totals:
        return {}
    names = sorted(totals)
    packed = torch.stack([totals[n] for n in names])
    if group is None:
        from megatron.core import parallel_state

        if parallel_state.model_parallel_is_initialized():
            group = parallel_state.get_data_parallel_group(with_context_parallel=True)
    if group is not None and dist.is_initialized() and dist.get_world_size(group) > 1:
        collectives.all_reduce(packed, group=group)  # a few sums: CPU, over gloo on a GPU cluster
    out = {n: float(s / c) if c > 0 else 0.0 for n, (s, c) in zip(names, packed.tolist())}
    if "advantage/mean" in out and "advantage/sq_mean" in out:
        out["advantage/std"] = max(out["advantage/sq_mean"] - out["advantage/mean"] ** 2, 0.0) ** 0.5
    return out
