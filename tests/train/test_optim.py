"""train.optim: Megatron DDP + (distributed) optimizer + LR schedule vs torch.optim.AdamW on the HF model.

Each case runs 2 updates through Megatron's schedule on 2 gloo processes; every rank reports its stage's weights
against the reference's, and the grad norm and learning rate of each update.
"""

import pytest

from distributed import run_torchrun_results
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron

WEIGHT_TOL = 1e-5  # max |w_megatron - w_reference| after two updates
NORM_RTOL = 1e-5  # reported grad norm vs the reference's

# (variant, tp, pp, distributed optimizer, grad_clip, warmup updates, clipping expected to engage)
CASES = [
    ("qwen2_tied", 2, 1, 0, 0.1, 2, True),  # TP=2, clip engages, warm-up lr/2 then lr
    ("llama_untied", 1, 1, 1, 10.0, 0, False),  # DP=2 with the distributed optimizer, clip does not engage
    ("llama_tied", 1, 2, 1, 1.0, 0, True),  # PP=2 (tied embedding split across stages), distributed optimizer
]


@pytest.fixture(scope="module")
def ckpts(tiny_hf_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("optim")
    return {v: convert_hf_to_megatron(tiny_hf_models[v], root / v, tp=2, progress=False)
            for v in {c[0] for c in CASES}}


@pytest.mark.parametrize("variant,tp,pp,dist_opt,clip,warmup,engages", CASES,
                         ids=["tp2_clip_warmup", "dp2_distopt", "pp2_tied_distopt"])
def test_two_updates_match_adamw(tiny_hf_models, ckpts, variant, tp, pp, dist_opt, clip, warmup, engages):
    ranks = run_torchrun_results("optim_steps.py", str(tiny_hf_models[variant]), str(ckpts[variant]), str(tp),
                                 str(pp), str(dist_opt), str(clip), str(warmup), nproc=2)
    for r in ranks:
        assert r["tensors"] > 0
        # fp32 on CPU; two Adam updates at lr 1e-3 move weights by ~2e-3. Layout differences in the gradients
        # (reordered fp32 sums) reach the weights through Adam's g / (sqrt(v) + eps), which amplifies them for
        # gradients near eps: with eps=1e-8 we measured up to 9e-6 (tied embeddings, TP=2); with eps=1e-6
        # (optim_common.Hyper) <= 1.2e-6.
        assert r["max_weight_diff"] <= WEIGHT_TOL
        assert r["max_moved"] > 100 * WEIGHT_TOL  # the updates really changed the weights
        assert r["adam"] == "torch"  # no TE/apex on this machine: Megatron wraps torch.optim.AdamW
        assert len(r["updates"]) == 2
        for k, u in enumerate(r["updates"]):
            assert u["applied"]
            assert u["lr"] == pytest.approx(1e-3 * min(1.0, (k + 1) / max(warmup, 1)), rel=1e-12)
            assert u["lr"] == pytest.approx(u["ref_lr"], rel=1e-12)
            # the norm Megatron reports is the one before clipping, equal to the reference's
            assert u["grad_norm"] == pytest.approx(u["ref_norm"], rel=NORM_RTOL)
            # clipping engaged exactly when the norm exceeded the bound (and then changed the reference's weights)
            assert (u["ref_norm"] > clip) == engages
        assert (r["clip_effect_on_ref"] > 0) == engages


def test_build_optimizer_rejects_bad_lr():
    """Users get the one-line check of train.lr at config load (tests/config); the library call asserts it."""
    from prefix_rft_megatron.train.optim import build_optimizer

    with pytest.raises(AssertionError, match="lr=0.0 must be > 0"):
        build_optimizer([], lr=0.0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
                        grad_clip=1.0, use_distributed_optimizer=False)
