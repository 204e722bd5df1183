"""Prefix entropy mask: exact top-rho selection against a sort-based reference; layout independence."""

import math

import pytest
import torch

from prefix_rft_megatron.algo.config import MaskScope, MaskSelection, PrefixMaskConfig
from prefix_rft_megatron.algo.prefix_mask import apply_prefix_keep, kept_count, prefix_keep_masks


def _reference_keep(entropies, prefix_masks, rho, sign=1.0):
    """Python loop: list every prefix token's score, sort descending, the k-th is tau, keep score >= tau."""
    scored = []
    for h, m in zip(entropies, prefix_masks):
        for b in range(h.shape[0]):
            for t in range(h.shape[1]):
                if m[b, t]:
                    scored.append(sign * float(h[b, t]))
    keep = [torch.zeros_like(m, dtype=torch.bool) for m in prefix_masks]
    if not scored:
        return keep
    k = math.ceil(round(rho * len(scored), 6))
    tau = sorted(scored, reverse=True)[k - 1]
    for i, (h, m) in enumerate(zip(entropies, prefix_masks)):
        for b in range(h.shape[0]):
            for t in range(h.shape[1]):
                keep[i][b, t] = bool(m[b, t]) and sign * float(h[b, t]) >= tau
    return keep


def _random_batch(seed, n_mb=3, b=4, s=9):
    g = torch.Generator().manual_seed(seed)
    ents = [torch.rand(b, s, generator=g) * 3 for _ in range(n_mb)]
    masks = [torch.rand(b, s, generator=g) < 0.5 for _ in range(n_mb)]
    return ents, masks


@pytest.mark.parametrize("rho", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("selection,sign", [(MaskSelection.TOP, 1.0), (MaskSelection.BOTTOM, -1.0)])
def test_batch_scope_matches_sort_reference(rho, selection, sign):
    ents, masks = _random_batch(0)
    got = prefix_keep_masks(ents, masks, PrefixMaskConfig(rho=rho, selection=selection))
    for g_, r_ in zip(got, _reference_keep(ents, masks, rho, sign)):
        assert torch.equal(g_, r_)
    n = sum(int(m.sum()) for m in masks)
    assert sum(int(k.sum()) for k in got) == math.ceil(round(rho * n, 6))  # continuous draws: no ties


def test_microbatch_scope_ranks_each_microbatch_alone():
    ents, masks = _random_batch(1)
    got = prefix_keep_masks(ents, masks, PrefixMaskConfig(rho=0.2, scope=MaskScope.MICROBATCH))
    for g_, h, m in zip(got, ents, masks):
        assert torch.equal(g_, _reference_keep([h], [m], 0.2)[0])


def test_rho_one_keeps_all_and_ties_are_all_kept():
    ents, masks = _random_batch(2)
    got = prefix_keep_masks(ents, masks, PrefixMaskConfig(rho=1.0))
    assert all(torch.equal(g_, m) for g_, m in zip(got, masks))
    # 10 prefix tokens, k = 2, but the top three share the value 5.0: ties at tau are all kept.
    h = torch.tensor([[5.0, 5.0, 5.0, 1.0, 2.0, 3.0, 0.5, 0.1, 0.2, 0.3]])
    keep = prefix_keep_masks([h], [torch.ones_like(h, dtype=torch.bool)], PrefixMaskConfig(rho=0.2))[0]
    assert keep.tolist() == [[True, True, True] + [False] * 7]
    assert kept_count(0.2, 15) == 3 and kept_count(0.2, 16) == 4 and kept_count(0.2, 1) == 1


def test_random_selection_is_seeded_per_sample_not_per_layout():
    ents, masks = _random_batch(3, n_mb=2, b=4)
    ids = [torch.arange(0, 4), torch.arange(4, 8)]
    cfg = PrefixMaskConfig(rho=0.5, selection=MaskSelection.RANDOM)
    a = prefix_keep_masks(ents, masks, cfg, seed=5, step=2, sample_indices=ids)
    # Same sequences regrouped into 4 micro-batches of 2, in another order: the same tokens are kept.
    order = [3, 1, 0, 2]
    e_all, m_all, id_all = torch.cat(ents), torch.cat(masks), torch.cat(ids)
    regroup = [torch.tensor([order[i] * 2, order[i] * 2 + 1]) for i in range(4)]
    b = prefix_keep_masks([e_all[r] for r in regroup], [m_all[r] for r in regroup], cfg, seed=5, step=2,
                          sample_indices=[id_all[r] for r in regroup])
    full_b = torch.zeros_like(m_all)
    for r, k in zip(regroup, b):
        full_b[r] = k
    assert torch.equal(torch.cat(a), full_b)
    c = prefix_keep_masks(ents, masks, cfg, seed=6, step=2, sample_indices=ids)
    assert not torch.equal(torch.cat(a), torch.cat(c))  # another seed, another draw


def test_apply_prefix_keep_zeroes_only_dropped_prefix_tokens():
    adv = torch.full((1, 5), 2.0)
    prefix = torch.tensor([[1, 1, 1, 0, 0]], dtype=torch.bool)
    keep = torch.tensor([[1, 0, 0, 0, 0]], dtype=torch.bool)
    assert apply_prefix_keep(adv, prefix, keep).tolist() == [[2.0, 0.0, 0.0, 2.0, 2.0]]


def test_kept_set_independent_of_tp_dp_and_microbatching(algo_dist):
    """tests/dist_scripts/algo_prefix_mask_layout.py: TP=2 and DP=2 x micro-batch 1/2/4 vs TP=1, DP=1, one batch."""
    assert algo_dist.two_ranks.count("prefix keep set identical across layouts: OK") == 2
