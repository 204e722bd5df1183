"""KL to a reference policy (algorithm.loss.kl_coef > 0): the trainer keeps the initial weights frozen on its own
TP / PP layout and the loss's `kl/ref` is the per-token estimate a plain loop computes.

tests/dist_scripts/kl_reference.py runs the trainer's stages (two updates at lr 1e-2 move the policy); here:
- the reference's log-probs equal a per-token loop over a `transformers` forward of the initial HF weights (1e-4:
  Megatron vs HF logits in fp32, measured <= 1e-6) after the updates, and equal the policy's before them (exact);
- `kl/ref` equals the loop's mean over response tokens of k1 = logp - logp_ref or k3 = exp(r) - r - 1,
  r = logp_ref - logp, from the trainer's own log-probs (1e-6 relative), and is clearly > 0;
- the reference costs one more copy of each rank's weights (its parameter count = the policy's), no gradients.
"""

import math

import pytest
import torch

from distributed import run_torchrun


def hf_logprobs(hf_dir, input_ids, target_ids, lengths, temperature):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
    out = []
    with torch.no_grad():
        for row, n in enumerate(lengths.tolist()):
            logits = model(input_ids[row:row + 1, :n]).logits[0].float() / temperature
            logp = torch.log_softmax(logits, dim=-1)
            out.append([float(logp[t, target_ids[row, t]]) for t in range(n)])  # one target at a time
    return out


# TP=2 and PP=2 (one process each is the same code on fewer ranks); both estimators
@pytest.mark.parametrize("tp,pp,estimator", [(2, 1, "k1"), (1, 2, "k3")])
def test_kl_to_the_frozen_initial_policy(tiny_policy, tmp_path, tp, pp, estimator):
    path = tmp_path / "kl.pt"
    run_torchrun("kl_reference.py", str(tiny_policy), str(tmp_path / "run"), str(path), str(tp), str(pp), estimator,
                 nproc=tp * pp)
    r = torch.load(path, weights_only=False)
    t = r["tensors"]
    lengths = t["lengths"]
    assert torch.equal(t["before_ref"], t["before_policy"])  # the same initial weights, the same forward
    hf = hf_logprobs(tiny_policy, t["input_ids"], t["target_ids"], lengths, r["temperature"])
    total, count = 0.0, 0
    for row, n in enumerate(lengths.tolist()):
        for pos in range(n):
            ref, pol = float(t["ref"][row, pos]), float(t["policy"][row, pos])
            assert abs(ref - hf[row][pos]) <= 1e-4, (row, pos, ref, hf[row][pos])
            if t["response_mask"][row, pos]:
                d = ref - pol
                total += -d if estimator == "k1" else math.exp(d) - d - 1
                count += 1
    loop = total / count
    assert abs(loop) > 1e-4  # the updates moved the policy
    assert r["metrics"]["kl/ref"] == pytest.approx(loop, rel=1e-6, abs=1e-9)
    ranks = r["ranks"]
    assert all(x["frozen"] for x in ranks) and all(x["ref_params"] > 0 for x in ranks)
