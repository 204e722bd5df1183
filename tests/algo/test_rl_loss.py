"""The loss: per-token terms against a loop reference, and the gradient's independence from the layout."""

import math

import pytest
import torch

from prefix_rft_megatron.algo.advantages import group_advantages, token_advantages
from prefix_rft_megatron.algo.config import AlgorithmConfig, KLEstimator, LossConfig, PrefixMaskConfig
from prefix_rft_megatron.algo.loss import LossInputs, make_loss_func, reduce_metrics, token_losses
from prefix_rft_megatron.algo.prefix_mask import apply_prefix_keep, prefix_keep_masks
from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats


def _loop_token_loss(logp, old, adv, ent, ref, response, prefix, cfg):
    """One token at a time, straight from prefix-rft.md sections 5-6 (floats, no tensors)."""
    lc = cfg.loss
    out = [[0.0] * len(logp[0]) for _ in logp]
    for b in range(len(logp)):
        for t in range(len(logp[0])):
            if not response[b][t]:
                continue
            if cfg.name == "sft":
                out[b][t] = -logp[b][t]
                continue
            a, ratio = adv[b][t], math.exp(logp[b][t] - old[b][t])
            if cfg.name == "luffy" and prefix[b][t]:
                p = math.exp(logp[b][t])
                l_t = -a * p / (p + lc.luffy_gamma)
            else:
                clipped = min(max(ratio, 1 - lc.clip_eps_low), 1 + lc.clip_eps_high)
                l_t = max(-a * ratio, -a * clipped)
                if a < 0 and lc.dual_clip_c > 0:
                    l_t = min(l_t, -lc.dual_clip_c * a)
            if lc.entropy_coef > 0 and not (lc.entropy_exclude_prefix and prefix[b][t]):
                l_t -= lc.entropy_coef * ent[b][t]
            if lc.kl_coef > 0:
                d = ref[b][t] - logp[b][t]
                l_t += lc.kl_coef * (-d if lc.kl_estimator == KLEstimator.K1 else math.exp(d) - d - 1)
            out[b][t] = l_t
    return out


def _random_inputs(seed, b=4, s=9):
    g = torch.Generator().manual_seed(seed)
    logp = -3 * torch.rand(b, s, generator=g)
    response = torch.rand(b, s, generator=g) < 0.8
    prefix = response & (torch.rand(b, s, generator=g) < 0.4)
    return dict(
        logp=logp, ent=2 * torch.rand(b, s, generator=g),
        inputs=LossInputs(
            target_ids=torch.zeros(b, s, dtype=torch.long), response_mask=response, prefix_mask=prefix,
            advantages=torch.randn(b, s, generator=g), old_logprobs=logp + 1.0 * torch.randn(b, s, generator=g),
            ref_logprobs=logp + 0.3 * torch.randn(b, s, generator=g),
        ),
    )


@pytest.mark.parametrize("name,loss_kwargs", [
    ("prefix_rft", {}),
    ("prefix_rft", dict(entropy_exclude_prefix=True, kl_coef=0.1, kl_estimator="k1", dual_clip_c=0.0)),
    ("prefix_rft", dict(kl_coef=0.2, kl_estimator="k3", clip_eps_high=0.28)),
    ("luffy", dict(entropy_coef=0.0)),
    ("sft", {}),
])
def test_token_loss_matches_loop(name, loss_kwargs):
    cfg = AlgorithmConfig(name=name, num_prefixed=0 if name == "rft" else 1, loss=LossConfig(**loss_kwargs))
    d = _random_inputs(0)
    x = d["inputs"]
    got, metrics = token_losses(d["logp"], d["ent"], x, cfg)
    ref = _loop_token_loss(d["logp"].tolist(), x.old_logprobs.tolist(), x.advantages.tolist(), d["ent"].tolist(),
                           x.ref_logprobs.tolist(), x.response_mask.tolist(), x.prefix_mask.tolist(), cfg)
    # fp32 tensors vs float64 Python arithmetic on O(1) values: a few fp32 ulp.
    torch.testing.assert_close(got.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-5, rtol=1e-5)
    if name == "prefix_rft" and not loss_kwargs:
        # The random ratios straddle the clip range: both clip counters must have seen clipped tokens.
        assert metrics["pg/clipfrac_on_policy"][0] > 0 and metrics["pg/dual_clipfrac"][0] > 0


def test_loss_scaling_for_both_megatron_paths():
    cfg = AlgorithmConfig(loss=LossConfig(max_response_tokens=7))
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 5, 16, generator=g)
    x = LossInputs(target_ids=torch.randint(0, 16, (2, 5), generator=g),
                   response_mask=torch.ones(2, 5, dtype=torch.bool),
                   advantages=torch.randn(2, 5, generator=g), old_logprobs=-torch.rand(2, 5, generator=g) * 3)
    lp, h = vocab_parallel_token_stats(logits, x.target_ids, cfg.temperature)
    raw = token_losses(lp, h, x, cfg)[0].sum() / 7
    scaled, _ = make_loss_func(x, cfg, num_global_sequences=24, num_microbatches=3, data_parallel_size=4)(logits)
    # megatron divides by num_microbatches (3) and DDP averages over DP (4): returning raw * 3 * 4 / 24 leaves raw / 24.
    torch.testing.assert_close(scaled, raw * 3 * 4 / 24, atol=1e-7, rtol=1e-6)
    value, count, _ = make_loss_func(x, cfg, 24, 3, calculate_per_token_loss=True, data_parallel_size=4)(logits)
    torch.testing.assert_close(value, raw, atol=1e-7, rtol=1e-6)
    assert int(count) == 2  # sequences of this micro-batch; megatron sums these over micro-batches and DP


def test_all_zero_on_policy_group_trains_on_kept_prefix_and_continuation():
    """Group: 3 on-policy rollouts with reward 0, one prefixed rollout (4 demo tokens + continuation) with reward 1."""
    cfg = AlgorithmConfig(group_size=4, num_prefixed=1, loss=LossConfig(entropy_coef=0.0, max_response_tokens=8),
                          prefix_mask=PrefixMaskConfig(rho=0.5))
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 8, 32, generator=g).requires_grad_()
    target = torch.randint(0, 32, (4, 8), generator=g)
    response = torch.zeros(4, 8, dtype=torch.bool)
    response[:, 1:] = True
    prefix = torch.zeros(4, 8, dtype=torch.bool)
    prefix[3, 1:5] = True
    seq = group_advantages(torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.zeros(4), torch.tensor([0, 0, 0, 1]).bool())
    adv = token_advantages(seq, response, prefix)
    with torch.no_grad():
        old_lp, ent = vocab_parallel_token_stats(logits, target, cfg.temperature)
    keep = prefix_keep_masks([ent], [prefix], cfg.prefix_mask)[0]
    assert int(keep.sum()) == 2  # rho = 0.5 of 4 demonstration tokens
    x = LossInputs(target_ids=target, response_mask=response, prefix_mask=prefix, prefix_keep_mask=keep,
                   advantages=apply_prefix_keep(adv, prefix, keep), old_logprobs=old_lp)
    loss, _ = make_loss_func(x, cfg, num_global_sequences=4, num_microbatches=1, data_parallel_size=1)(logits)
    loss.backward()
    row_norm = logits.grad.norm(dim=-1)
    assert float(row_norm[:3].abs().max()) == 0.0  # on-policy rollouts: advantage 0, no entropy bonus
    # Each scored token's logit gradient is A / (L_max N) (onehot - p) with A = 1, L_max = 8, N = 4: norm ~ 0.03.
    assert bool((row_norm[3][keep[3]] > 1e-3).all())  # kept demonstration tokens train
    assert bool((row_norm[3][prefix[3] & ~keep[3]] == 0).all())  # dropped ones do not
    assert bool((row_norm[3][5:] > 1e-3).all())  # the continuation trains


def test_reduce_metrics_sums_then_divides():
    a = {"m": torch.tensor([3.0, 2.0]), "advantage/mean": torch.tensor([2.0, 4.0]),
         "advantage/sq_mean": torch.tensor([4.0, 4.0])}
    b = {"m": torch.tensor([1.0, 6.0]), "advantage/mean": torch.tensor([-2.0, 4.0]),
         "advantage/sq_mean": torch.tensor([4.0, 4.0])}
    out = reduce_metrics([a, b])
    assert out["m"] == pytest.approx(0.5)  # (3 + 1) / (2 + 6), not the mean of 1.5 and 1/6
    assert out["advantage/mean"] == pytest.approx(0.0) and out["advantage/std"] == pytest.approx(1.0)


def test_gradient_independent_of_microbatching_and_dp(algo_dist):
    """megatron forward_backward_func + DDP: DP=1 x micro-batch 1/4/8 and DP=2 x micro-batch 1/2/4, both scaling
    paths, against a plain-autograd reference of (1/N) sum_seq sum_t l_t / L_max."""
    grads = torch.load(algo_dist.out_dir / "dp1.pt")
    grads.update(torch.load(algo_dist.out_dir / "dp2.pt"))
    reference = grads.pop("reference")
    # the recompute pass (forward only, micro-batches of 3, 3, 2) gives the autograd reference's log-probs and
    # entropies: the same fp32 model on other micro-batch shapes, round-off of the matmuls only
    rc = grads.pop("recompute")
    torch.testing.assert_close(rc["logprobs"], rc["reference_logprobs"], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(rc["entropy"], rc["reference_entropy"], atol=2e-5, rtol=1e-5)
    assert max(float(g.abs().max()) for g in reference.values()) > 1e-3  # a gradient worth comparing
    assert len(grads) == 12
    for layout, g in grads.items():
        for name, ref in reference.items():
            # fp32 round-off only: sums re-associated across micro-batches / DP ranks, grads of size ~0.1.
            torch.testing.assert_close(g[name], ref, atol=1e-6, rtol=1e-5, msg=lambda m: f"{layout} {name}: {m}")


def test_gradient_tensor_parallel_2_equals_1(algo_dist):
    """Same weights (checked) and batch: the loss gradient gathered over TP=2 equals the TP=1 gradient."""
    tp1, tp2 = torch.load(algo_dist.out_dir / "tp1.pt"), torch.load(algo_dist.out_dir / "tp2.pt")
    for name, w in tp1["weights"].items():
        assert torch.equal(tp2["weights"][name], w), f"{name}: the TP=2 model is not the TP=1 model"
    assert max(float(g.abs().max()) for g in tp1["grads"].values()) > 1e-3
    for name, g in tp1["grads"].items():
        # fp32 round-off: TP splits the matmuls and all-reduces partial sums (measured differences ~1e-8).
        torch.testing.assert_close(tp2["grads"][name], g, atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")
