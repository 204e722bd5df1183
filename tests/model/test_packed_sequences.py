"""Packed sequences (THD) through the model: the same logits and gradients as the padded rows they pack.

One forward-backward of a tiny GPT through megatron's schedule, padded (one row per sequence), packed (three
sequences in one row, RoPE positions restarting, attention confined to each sequence) and by token budget, at TP=1
and TP=2 with sequence parallelism. Tolerance: 1e-5 absolute on logits of size ~1 and on gradients (fp32 sums in
another order), measured ~1e-7.
"""

import pytest

from distributed import run_torchrun_results


@pytest.mark.parametrize("tp", [1, 2])
def test_packed_and_token_budget_match_padded(tp):
    r = run_torchrun_results("packed_attention.py", nproc=tp)[0]
    assert r["num_grads"] > 0 and r["grad_scale"] > 1e-3 and r["logit_scale"] > 1e-2  # a real signal to compare
    assert r["packed_logits"] <= 1e-5, r
    assert r["budget_logits"] <= 1e-5, r
    assert r["packed_grads"] <= 1e-5, r
    assert r["budget_grads"] <= 1e-5, r
