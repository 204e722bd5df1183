"""Layout invariance of a training step: padded, by token budget (two budgets) and packed micro-batches, on one
process and at TP=2 (sequence parallel), PP=2 and DP=2, give the same step.

The trainer's own stages run on one fixed step batch (tests/dist_scripts/train_layout_grads.py: 4 groups of 8, 4
to 40 response tokens, prefixed members, an entropy mask). Against the padded one-process run:
- the update's gradient (full tensors, HF names): 1e-7 absolute (gradients ~7e-3; fp32 sums in another order,
  measured <= 3e-9);
- recomputed log-probs and entropies of every sequence's real positions: 1e-5 (measured <= 1e-6);
- the kept-prefix masks: the same tokens (an entropy tie within float noise may swap one pair: <= 2 tokens differ);
- the loss metrics: 1e-5 absolute.
"""

import pytest
import torch

from distributed import run_torchrun

LAYOUTS = ["padded", "budget_small", "budget_large", "packed", "packed_budget"]
PROCESSES = {"single": (1, 1, 1), "tp2": (2, 2, 1), "pp2": (2, 1, 2), "dp2": (2, 1, 1)}


@pytest.fixture(scope="module")
def runs(tiny_policy, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, (nproc, tp, pp) in PROCESSES.items():
        path = root / f"{name}.pt"
        run_torchrun("train_layout_grads.py", str(tiny_policy), str(root / f"run_{name}"), str(path), str(tp), str(pp),
                     nproc=nproc)
        out[name] = torch.load(path, weights_only=False)
    return out


@pytest.mark.parametrize("procs", list(PROCESSES))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_step_is_the_same_in_every_layout(runs, procs, layout):
    ref, got = runs["single"]["padded"], runs[procs][layout]
    assert set(got["grads"]) == set(ref["grads"]) and len(ref["grads"]) > 0
    assert max(float(g.abs().max()) for g in ref["grads"].values()) > 1e-3  # a real gradient to compare
    for name, g in ref["grads"].items():
        assert torch.allclose(got["grads"][name], g, rtol=0, atol=1e-7), name
    assert set(got["per_seq"]) == set(ref["per_seq"]) == set(range(32))
    differing = 0
    for i, (logprobs, entropy, keep, n) in ref["per_seq"].items():
        lp2, ent2, keep2, n2 = got["per_seq"][i]
        assert n2 == n
        assert torch.allclose(lp2[:n], logprobs[:n], rtol=0, atol=1e-5), i
        assert torch.allclose(ent2[:n], entropy[:n], rtol=0, atol=1e-5), i
        differing += int((keep2[:n] != keep[:n]).sum())
    assert differing <= 2
    for k, v in ref["metrics"].items():
        assert got["metrics"][k] == pytest.approx(v, rel=0, abs=1e-5, nan_ok=True), k


@pytest.mark.parametrize("procs", list(PROCESSES))
def test_each_rank_receives_only_its_data_parallel_share(runs, procs):
    """32 sequences per step: at DP=2 each rank is sent its 16 (TP / PP peers the same 16), else all 32."""
    dp = 2 if procs == "dp2" else 1
    assert all(n == 32 // dp for _, n in runs[procs]["padded"]["received"])
    assert sorted({d for d, _ in runs[procs]["padded"]["received"]}) == list(range(dp))


def test_the_layouts_really_differ(runs):
    counts = {name: r["micro_batches"] for name, r in runs["single"].items()}
    assert counts["padded"] == [4, 4]  # 16 sequences per mini-batch, 4 per micro-batch
    assert counts["budget_small"][0] > counts["budget_large"][0] > 1  # a smaller budget, more micro-batches
    assert counts["packed"] == [4, 4]  # by count, 4 sequences per packed row


def test_a_packed_run_reproduces_the_padded_run(tiny_policy, tmp_path):
    """Two real `prefix-rft train` runs of 2 steps (2 updates each, so the second trains on changed weights): packed
    with a token budget vs padded by count. Every metric but timings agrees to 1e-5 (measured <= 4e-7: fp32 sums in
    another order)."""
    from train_runs import read_run_metrics, run_train, train_args

    runs = {}
    for name, extra in {"padded": {"train.packing": "false"},
                        "packed": {"train.packing": "true", "train.max_tokens_per_micro_batch": "200"}}.items():
        rc, _, err = run_train(train_args(tiny_policy, tmp_path / name, 2, **extra))
        assert rc == 0, err[-20:]
        runs[name] = read_run_metrics(tmp_path / name)
    assert len(runs["padded"]) == len(runs["packed"]) == 2
    for padded, packed in zip(runs["padded"], runs["packed"]):
        assert set(padded) == set(packed) and "loss/per_sequence" in padded and "train/grad_norm" in padded
        for k, v in padded.items():
            assert packed[k] == pytest.approx(v, rel=1e-5, abs=1e-5), k
