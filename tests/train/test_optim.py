"""train.optim: Megatron DDP + (distributed) optimizer + LR schedule vs torch.optim.AdamW on the HF model.

Each case runs 2 updates through Megatron's schedule on 2 gloo processes and checks (inside the script) that the
weights equal the reference's to 1e-5 (fp32; measured ~1e-6), that the reported grad norm equals the reference's
before clipping (rtol 1e-5) and that each update's learning rate follows the warm-up. Here we check that clipping
engaged exactly when the norm exceeded the bound (the script also checks that it changed the reference weights).
"""

import re

import pytest

from distributed import run_torchrun
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron

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
    log = run_torchrun("optim_steps.py", str(tiny_hf_models[variant]), str(ckpts[variant]), str(tp), str(pp),
                       str(dist_opt), str(clip), str(warmup), nproc=2)
    assert log.count("OK") >= 1, log[-3000:]
    updates = re.findall(r"update (\d): lr=(\S+) .* engaged=(True|False)", log)
    assert len(updates) == 2 * 2, log[-3000:]  # 2 updates x 2 ranks
    assert {e == "True" for _, _, e in updates} == {engages}
    lrs = sorted({(int(k), float(lr)) for k, lr, _ in updates})
    expected = [(k, 1e-3 * min(1.0, (k + 1) / max(warmup, 1))) for k in range(2)]
    assert [k for k, _ in lrs] == [0, 1] and all(abs(a - b[1]) < 1e-12 for (_, a), b in zip(lrs, expected))
    assert "adam=torch" in log  # no TE/apex on this machine: Megatron wraps torch.optim.AdamW


def test_build_optimizer_rejects_bad_lr():
    """Users get the one-line check of train.lr at config load (tests/config); the library call asserts it."""
    from prefix_rft_megatron.train.optim import build_optimizer

    with pytest.raises(AssertionError, match="lr=0.0 must be > 0"):
        build_optimizer([], lr=0.0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_eps=1e-8,
                        grad_clip=1.0, use_distributed_optimizer=False)
