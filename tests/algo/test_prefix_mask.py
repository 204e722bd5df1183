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
    for rank in range(2):
        got = torch.load(algo_dist.out_dir / f"prefix_mask_rank{rank}.pt")
        reference = got["reference"]
        assert 0 < int(reference.sum()) < int(got["prefix"].sum())  # rho=0.2 keeps some, not all
        assert {(c["tp"], c["dp"], c["micro_batch"]) for c in got["layouts"]} == {
            (tp, dp, mbs) for tp, dp in ((2, 1), (1, 2)) for mbs in (1, 2, 4)}
        for c in got["layouts"]:
            assert torch.equal(c["keep"], reference[c["rows"]]), f"{c['tp']=} {c['dp']=} {c['micro_batch']=}"


def _per_microbatch_reference(entropy, prefix, micro_batches, rho):
    """Python loop: for each micro-batch, list its rows' prefix-token entropies, keep those >= the k-th largest."""
    keep = [[False] * entropy.shape[1] for _ in range(entropy.shape[0])]
    for rows in micro_batches:
        scores = sorted((float(entropy[r, t]) for r in rows for t in range(entropy.shape[1]) if prefix[r, t]),
                        reverse=True)
        if not scores:
            continue
        tau = scores[kept_count(rho, len(scores)) - 1]
        for r in rows:
            for t in range(entropy.shape[1]):
                keep[r][t] = bool(prefix[r, t]) and float(entropy[r, t]) >= tau
    return torch.tensor(keep)


def test_microbatch_scope_ranks_the_rows_of_a_microbatch_together():
    """The trainer's rows as it runs them: two rows in one micro-batch, entropies 5.1-5.5 and 0.1-0.5, rho 0.2:
    the micro-batch rule keeps the 2 highest of its 10 prefix tokens, both in the first row (ranking each row on its
    own, the bug this guards against, kept one of each)."""
    from prefix_rft_megatron.algo.prefix_mask import keep_masks_for_rows

    entropy = torch.tensor([[5.1, 5.2, 5.3, 5.4, 5.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    prefix = torch.ones_like(entropy, dtype=torch.bool)
    cfg = PrefixMaskConfig(rho=0.2, scope=MaskScope.MICROBATCH)
    keep = keep_masks_for_rows(entropy, prefix, [[0, 1]], cfg)
    assert keep.tolist() == [[False, False, False, True, True], [False] * 5]
    assert torch.equal(keep, _per_microbatch_reference(entropy, prefix, [[0, 1]], 0.2))
    # random micro-batch plans over a larger batch: equal to the reference, and batch scope ignores the plan
    g = torch.Generator().manual_seed(3)
    entropy, prefix = torch.rand(12, 9, generator=g) * 3, torch.rand(12, 9, generator=g) < 0.5
    plans = [[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], [[5, 0], [3, 1, 11], [2, 4, 6, 7, 8, 9, 10]]]
    for plan in plans:
        assert torch.equal(keep_masks_for_rows(entropy, prefix, plan, cfg),
                           _per_microbatch_reference(entropy, prefix, plan, 0.2))
    batch_cfg = PrefixMaskConfig(rho=0.2)
    assert torch.equal(keep_masks_for_rows(entropy, prefix, plans[0], batch_cfg),
                       keep_masks_for_rows(entropy, prefix, plans[1], batch_cfg))


def test_a_tiny_rho_still_keeps_the_top_token():
    h = torch.tensor([[0.3, 2.0, 1.0, 0.5]])
    keep = prefix_keep_masks([h], [torch.ones_like(h, dtype=torch.bool)], PrefixMaskConfig(rho=1e-9))[0]
    assert keep.tolist() == [[False, True, False, False]]
    assert kept_count(1e-9, 0) == 0
