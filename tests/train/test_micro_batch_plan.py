"""Micro-batch planning (train/micro_batches.py): every row once, budgets kept, tensors laid out and back exactly."""

import random

import pytest
import torch

from prefix_rft_megatron.train.micro_batches import MicroBatchLayout, balanced_shares, plan_micro_batches


def lengths_of(n, seed=0):
    rng = random.Random(seed)
    return [max(1, int(rng.lognormvariate(4, 0.8))) for _ in range(n)]


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("budget", [64, 200, 1000])
@pytest.mark.parametrize("multiple_of", [1, 2])
def test_token_budget_plan_covers_every_row_within_budget(packed, budget, multiple_of):
    lengths = lengths_of(40)
    rows = list(range(100, 140))
    plan = plan_micro_batches(rows, lengths, MicroBatchLayout(8, budget, packed, multiple_of), max(lengths))
    assert sorted(r for mb in plan for r in mb.rows) == rows
    for mb in plan:
        b, s = mb.shape
        assert s % multiple_of == 0
        assert s >= (sum(mb.lengths) if packed else max(mb.lengths))
        if b * s > budget:  # only a sequence longer than the budget may exceed it, alone
            assert mb.num_sequences == 1 and mb.lengths[0] + multiple_of - 1 >= budget
    # first-fit decreasing: no two micro-batches could have been merged under the budget
    if packed:
        sums = sorted(sum(mb.lengths) for mb in plan)
        assert len(plan) == 1 or sums[0] + sums[1] > budget - multiple_of + 1


def test_by_count_plans_keep_the_order_and_the_step_width():
    plan = plan_micro_batches([5, 6, 7, 8, 9], [3, 9, 2, 4, 4], MicroBatchLayout(2), step_length=12)
    assert [mb.rows for mb in plan] == [[5, 6], [7, 8], [9]] and all(mb.shape[1] == 12 for mb in plan)
    packed = plan_micro_batches([5, 6, 7], [3, 9, 2], MicroBatchLayout(3, packed=True, multiple_of=4), 12)
    assert packed[0].shape == (1, 16) and packed[0].segments() == [3, 9, 2, 2]


@pytest.mark.parametrize("layout", [MicroBatchLayout(3), MicroBatchLayout(3, 40), MicroBatchLayout(3, packed=True),
                                    MicroBatchLayout(3, 40, packed=True, multiple_of=2)])
def test_gather_then_scatter_restores_every_real_position(layout):
    lengths = [5, 17, 1, 9, 12, 3]
    S = 18
    t = torch.arange(len(lengths) * S, dtype=torch.float32).reshape(len(lengths), S) + 1
    plan = plan_micro_batches(range(len(lengths)), lengths, layout, S)
    back = torch.zeros_like(t)
    for mb in plan:
        laid = mb.gather(t)
        assert laid.shape == mb.shape
        mb.scatter(laid, back)
        pos = mb.position_ids()
        assert pos.shape == mb.shape
        if mb.packed:  # positions restart at every sequence start given by cu_seqlens
            cu = mb.packed_seq_params().cu_seqlens_q.tolist()
            assert cu[-1] == mb.width and all(int(pos[0, c]) == 0 for c in cu[:-1])
    for i, n in enumerate(lengths):
        assert torch.equal(back[i, :n], t[i, :n])


def test_balanced_shares_equal_counts_and_close_token_totals():
    lengths = lengths_of(64, seed=3)
    shares = balanced_shares(lengths, 4)
    assert sorted(i for s in shares for i in s) == list(range(64))
    assert all(len(s) == 16 for s in shares)
    totals = [sum(lengths[i] for i in s) for s in shares]
    strided = [sum(lengths[i] for i in range(r, 64, 4)) for r in range(4)]
    assert max(totals) - min(totals) <= max(lengths)
    assert max(totals) - min(totals) <= max(strided) - min(strided)
