"""Megatron vs Hugging Face on the same tokens (fp32, CPU): logits, loss and gradients; PP=2 and TP=2 vs PP=1.

Tolerances: logits and log-probs 1e-4 (the issue's bound; measured ~3e-7 at TP=2, exact at TP=1), gradients 1e-5
against HF autograd (checked inside the script) and 1e-6 between layouts here (fp32 round-off of reordered sums).
"""

import pytest
import torch

from distributed import run_torchrun
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron

LAYOUTS = [(1, 1), (2, 1), (1, 2)]


@pytest.fixture(scope="module")
def parity_runs(tiny_hf_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("parity")
    runs = {}
    for variant in ("llama_untied", "qwen2_tied"):
        hf_dir = tiny_hf_models[variant]
        ckpt = convert_hf_to_megatron(hf_dir, root / f"{variant}_meg", tp=2, progress=False)
        for tp, pp in LAYOUTS:
            out_dir = root / f"{variant}_tp{tp}_pp{pp}"
            out_dir.mkdir()
            log = run_torchrun("model_parity.py", str(hf_dir), str(ckpt), str(tp), str(pp), str(out_dir),
                               nproc=tp * pp)
            merged = {}
            for f in sorted(out_dir.glob("stage*.pt")):
                merged.update(torch.load(f))
            runs[(variant, tp, pp)] = (merged, log)
    return runs


@pytest.mark.parametrize("variant", ["llama_untied", "qwen2_tied"])
@pytest.mark.parametrize("tp,pp", LAYOUTS)
def test_logits_match_hf(parity_runs, variant, tp, pp):
    got, _ = parity_runs[(variant, tp, pp)]
    # fp32 on CPU, the same weights: matmul round-off only
    assert float(got["diff/logits_vs_hf"]) <= 1e-4
    assert float(got["diff/logprobs_vs_hf"]) <= 1e-4
    assert float(got["diff/loss_vs_hf"]) <= 1e-5
    # every gradient against HF autograd: fp32 sums over a few hundred terms
    stages = [k for k in got if k.startswith("diff/grads_vs_hf/")]
    assert len(stages) == pp and all(float(got[k]) <= 1e-5 for k in stages)


@pytest.mark.parametrize("variant", ["llama_untied", "qwen2_tied"])
@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_loss_and_grads_equal_single_rank(parity_runs, variant, tp, pp):
    ref, _ = parity_runs[(variant, 1, 1)]
    got, _ = parity_runs[(variant, tp, pp)]
    assert {k for k in ref if not k.startswith("diff/")} == {k for k in got if not k.startswith("diff/")}
    assert torch.allclose(got["loss"], ref["loss"], rtol=0, atol=1e-6)
    grads = [k for k in ref if k.startswith("grad/")]
    assert len(grads) >= 39
    for k in grads:
        assert torch.allclose(got[k], ref[k], rtol=0, atol=1e-6), (k, (got[k] - ref[k]).abs().max())
        assert ref[k].abs().max() > 0, k  # every parameter really received gradient
