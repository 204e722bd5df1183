"""Vocab-parallel log-probs and entropy against a full-vocab float64 softmax; TP=2 against TP=1."""

import pytest
import torch

from prefix_rft_megatron.algo import token_stats
from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats


def _reference(logits, target, temperature):
    """Full-vocab float64 log-softmax: log p(target) and -sum p log p."""
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logp.gather(-1, target.unsqueeze(-1)).squeeze(-1), -(logp.exp() * logp).sum(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("layout", ["bsv", "sbv"])
def test_values_and_grads_match_full_softmax(temperature, layout, monkeypatch):
    monkeypatch.setattr(token_stats, "_CHUNK_ELEMENTS", 64)  # several row chunks even at tiny sizes
    g = torch.Generator().manual_seed(1)
    shape = (3, 7, 97) if layout == "bsv" else (7, 3, 97)
    logits = (4 * torch.randn(shape, generator=g)).requires_grad_()
    target = torch.randint(0, 97, shape[:-1], generator=g)
    w_lp, w_h = torch.randn(shape[:-1], generator=g), torch.randn(shape[:-1], generator=g)

    lp, h = vocab_parallel_token_stats(logits, target, temperature)
    (lp * w_lp + h * w_h).sum().backward()
    grad = logits.grad.clone()

    ref_logits = logits.detach().double().requires_grad_()
    ref_lp, ref_h = _reference(ref_logits, target, temperature)
    (ref_lp * w_lp.double() + ref_h * w_h.double()).sum().backward()
    # fp32 computation vs a float64 reference on logits of magnitude ~10: errors are a few ulp of values ~10.
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.double(), ref_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.double(), ref_logits.grad, atol=1e-5, rtol=1e-4)


def test_logprob_only_and_entropy_only_backward():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 11, 33, generator=g).requires_grad_()
    target = torch.randint(0, 33, (4, 11), generator=g)
    for pick in (0, 1):
        logits.grad = None
        out = vocab_parallel_token_stats(logits, target, 0.8)[pick]
        out.sum().backward()
        ref_logits = logits.detach().double().requires_grad_()
        _reference(ref_logits, target, 0.8)[pick].sum().backward()
        # Same fp32-vs-float64 comparison as above.
        torch.testing.assert_close(logits.grad.double(), ref_logits.grad, atol=1e-5, rtol=1e-4)


def test_entropy_gradient_formula_against_autograd():
    """dH/dz = -p (log p + H): the closed form used by the backward, derived independently by autograd in float64."""
    z = torch.randn(5, 19, dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(z, -1)
    h = -(logp.exp() * logp).sum(-1)
    (auto,) = torch.autograd.grad(h.sum(), z)
    p = logp.detach().exp()
    closed = -p * (logp.detach() + h.detach().unsqueeze(-1))
    torch.testing.assert_close(closed, auto, atol=1e-12, rtol=1e-10)  # float64 identities: round-off only


def test_bf16_logits_and_extreme_values():
    g = torch.Generator().manual_seed(3)
    logits = (30 * torch.randn(2, 5, 64, generator=g)).bfloat16().requires_grad_()
    logits.data[0, 0, 3] = 1e4  # a near-one-hot row: p = 0 underflows elsewhere, p log p must stay finite
    target = torch.randint(0, 64, (2, 5), generator=g)
    lp, h = vocab_parallel_token_stats(logits, target)
    (lp.sum() + h.sum()).backward()
    assert logits.grad.dtype == torch.bfloat16 and torch.isfinite(logits.grad.float()).all()
    ref_lp, ref_h = _reference(logits.detach().float(), target, 1.0)
    # Same bf16 inputs, upcast: only fp32 vs float64 arithmetic differs; values up to ~1e4 -> relative 1e-5.
    torch.testing.assert_close(lp.double(), ref_lp, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(h.double(), ref_h, atol=1e-4, rtol=1e-5)
    assert float(h[0, 0].detach()) < 1e-6


def test_tensor_parallel_2_matches_1(algo_dist):
    """tests/dist_scripts/algo_token_stats_tp.py: values and gradients, TP=2 slices vs TP=1, on both ranks."""
    for rank in range(2):
        got = torch.load(algo_dist.out_dir / f"token_stats_rank{rank}.pt")
        tp1, tp2 = got["tp1"], got["tp2"]
        # Same fp32 arithmetic; TP=2 only re-associates the vocabulary sums (two partial sums added): a few ulp.
        torch.testing.assert_close(tp2["logprobs"], tp1["logprobs"], atol=2e-6, rtol=1e-6)
        torch.testing.assert_close(tp2["entropy"], tp1["entropy"], atol=2e-6, rtol=1e-6)
        torch.testing.assert_close(tp2["grad"], tp1["grad"], atol=2e-6, rtol=1e-5)
        assert float(tp1["grad"].abs().max()) > 1e-3  # a gradient worth comparing


def test_full_qwen_vocabulary_accuracy():
    """152064 entries per row: fp32 sums over the vocabulary must stay accurate (a dot-product accumulation was
    measured at ~1e-4 relative error on the entropy here; pairwise sums give ~1e-7)."""
    g = torch.Generator().manual_seed(5)
    logits = 3 * torch.randn(3, 152064, generator=g)
    target = torch.randint(0, 152064, (3,), generator=g)
    lp, h = vocab_parallel_token_stats(logits, target, 0.9)
    ref_lp, ref_h = _reference(logits, target, 0.9)
    # Entropy ~7 nats, log-probs ~-20: 2e-5 relative is ~20x the measured error and ~6x below the failure seen.
    torch.testing.assert_close(lp.double(), ref_lp, atol=0, rtol=2e-5)
    torch.testing.assert_close(h.double(), ref_h, atol=0, rtol=2e-5)
