"""sync.weight_sync: Megatron (TP=1/DP=2, TP=2, PP=2; gloo) -> HF engine after 2 optimizer updates.

Each rank of tests/dist_scripts/sync_after_steps.py reports what it saw; asserted here: engine log-probs of a fixed
sequence (fp32 log_softmax of its own forward) == Megatron's recomputed ones (measured 0 at TP=1/PP=2, ~5e-7 at
TP=2) and different before the sync; buckets <= the bound unless a single larger tensor; names/shapes == the
engine's state dict (tied: no lm_head), each once; engine weights == torch.optim.AdamW reference (measured ~1e-6);
an engine given to a rank that is not its replica's first rank is refused, and an engine that fails mid-update
re-raises on the owner without leaving the sending stages blocked.
A 100 KB bound makes several buckets; the 256 KB embedding / lm_head exceed it and must travel alone.
"""

import pytest
import torch

from distributed import run_torchrun_results
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
from prefix_rft_megatron.sync.weight_sync import bucketize

BOUND = 100_000
LOGPROB_TOL = 1e-4  # engine vs Megatron log-probs after the sync
WEIGHT_TOL = 1e-5  # engine weights vs the AdamW reference
# (variant, tp, pp, distributed optimizer): TP=1 runs as DP=2 (rank 1's replica must stay out of the sync);
# PP=2 untied sends lm_head (a single oversize tensor) from stage 1; TP=2 tied has q/k/v biases and no lm_head.
CASES = [("llama_tied", 1, 1, 1), ("qwen2_tied", 2, 1, 0), ("llama_untied", 1, 2, 1)]


@pytest.fixture(scope="module")
def ckpts(tiny_hf_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("sync")
    return {v: convert_hf_to_megatron(tiny_hf_models[v], root / v, tp=2, progress=False)
            for v in {c[0] for c in CASES}}


@pytest.mark.parametrize("variant,tp,pp,dist_opt", CASES, ids=["tp1_dp2", "tp2", "pp2"])
def test_engine_logprobs_equal_megatron_after_updates(tiny_hf_models, ckpts, variant, tp, pp, dist_opt):
    ranks = run_torchrun_results("sync_after_steps.py", str(tiny_hf_models[variant]), str(ckpts[variant]), str(tp),
                                 str(pp), str(dist_opt), str(BOUND), nproc=2)
    for rank, r in enumerate(ranks):
        err = r["error_paths"]
        # an engine on rank 1 is refused on every rank of its replica; with DP=2 (model-parallel size 1), rank 1 is
        # its own replica's first rank and may hold one
        if err["model_parallel_size"] > 1:
            assert "not TP/PP rank 0 of their model replica" in err["misplaced_engine_error"]
        else:
            assert err["misplaced_engine_error"] is None
        assert err["failing_engine_raised"] == err["owns_failing_engine"] == (rank == 0)
    last = [r for r in ranks if "logprob_diff" in r]
    assert last and all(r["logprob_diff"] <= LOGPROB_TOL < 1e-2 < r["logprob_diff_before_sync"] for r in last)

    # per-rank mode (colocated SGLang): every rank's own copy of every tensor reached the engine's rank, equal to
    # what the plain sync delivered; a failing engine re-raises on rank 0 only and blocks nobody
    per_rank = ranks[0]["per_rank"]
    assert per_rank["ranks"] == [0, 1] and per_rank["names_match"] and per_rank["max_diff"] == 0.0
    assert [r["per_rank"]["failing_engine_raised"] for r in ranks] == [True, False]

    eng = ranks[0]["engine"]
    assert eng["weight_version"] == 2
    sizes = [sum(nb for _, _, nb in b) for b in eng["buckets"]]
    assert all(s <= BOUND or len(b) == 1 for b, s in zip(eng["buckets"], sizes))
    assert len(sizes) >= 5 and sum(s > BOUND for s in sizes) >= 1  # several buckets, an oversize tensor alone
    names = [n for b in eng["buckets"] for n, _, _ in b]
    assert len(names) == len(set(names)), "a tensor was sent twice"
    expected = dict(eng["state_dict"])
    if eng["tied"]:
        expected.pop("lm_head.weight", None)
    assert {n: shape for b in eng["buckets"] for n, shape, _ in b} == expected
    assert eng["stats"] == {"bytes": sum(sizes), "buckets": len(sizes), "tensors": len(names)}
    assert eng["max_weight_diff_vs_adamw"] <= WEIGHT_TOL


def _named(*shapes, dtype=torch.float32):
    return [(f"t{i}", torch.zeros(s, dtype=dtype)) for i, s in enumerate(shapes)]


def test_bucketize_bounds_and_order():
    named = _named((10,), (10,), (100,), (5,), (5,), (5,))  # 40, 40, 400, 20, 20, 20 bytes
    buckets = list(bucketize(named, 80))
    assert [[n for n, _ in b] for b in buckets] == [["t0", "t1"], ["t2"], ["t3", "t4", "t5"]]
    for b in buckets:
        assert sum(t.numel() * 4 for _, t in b) <= 80 or len(b) == 1


def test_bucketize_splits_on_dtype_change():
    named = _named((2,)) + [("h", torch.zeros(2, dtype=torch.bfloat16))] + _named((2,))
    assert [len(b) for b in bucketize(named, 10**6)] == [1, 1, 1]


def test_bucketize_rejects_nonpositive_bound():
    with pytest.raises(ValueError, match="bucket size"):
        list(bucketize(_named((1,)), 0))
