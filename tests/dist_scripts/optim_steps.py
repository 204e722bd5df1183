"""Megatron DDP + optimizer (train.optim) vs torch.optim.AdamW on the HF model: weights after 2 updates.

Usage: optim_steps.py HF_DIR MEGATRON_CKPT TP PP DIST_OPT GRAD_CLIP WARMUP
Checks on every rank, for the parameters of its PP stage (full tensors, HF names): max |w_megatron - w_reference|
<= WEIGHT_TOL; the grad norm Megatron reports equals the reference's (before clipping) to NORM_RTOL; the learning
rate of each update follows the warm-up; whether clipping engaged (norm > clip) is printed for the test to check.
"""

import sys

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from optim_common import Hyper, build_trained, reference_trained
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from prefix_rft_megatron.sync.gather import iter_hf_tensors
from prefix_rft_megatron.train.optim import adam_implementation

# fp32 on CPU; two Adam updates at lr 1e-3 move weights by ~2e-3. Layout differences in the gradients (reordered
# fp32 sums) reach the weights through Adam's g / (sqrt(v) + eps), which amplifies them for gradients near eps: with
# eps=1e-8 we measured up to 9e-6 (tied embeddings, TP=2); with eps=1e-6 (optim_common.Hyper) <= 1.2e-6.
WEIGHT_TOL = 1e-5
NORM_RTOL = 1e-5
STEPS = 2


def main(hf_dir, ckpt, tp, pp, dist_opt, grad_clip, warmup):
    layout = initialize_parallel(tp=int(tp), pp=int(pp))
    hyper = Hyper(grad_clip=float(grad_clip), warmup_steps=int(warmup))
    use_dist_opt = dist_opt == "1"
    ddp, arch, stats = build_trained(hf_dir, ckpt, hyper, STEPS, use_dist_opt)
    ref, ref_stats = reference_trained(hf_dir, hyper, STEPS, layout.dp)
    unclipped, _ = reference_trained(hf_dir, hyper, STEPS, layout.dp, clip=False)
    ref_sd = ref.state_dict()
    raw_sd = unclipped.state_dict()

    worst, moved, clip_effect, n = 0.0, 0.0, 0.0, 0
    init = dict(iter_hf_tensors_initial(hf_dir))
    for name, w in iter_hf_tensors(ddp, arch):
        worst = max(worst, (w - ref_sd[name]).abs().max().item())
        moved = max(moved, (w - init[name]).abs().max().item())
        clip_effect = max(clip_effect, (ref_sd[name] - raw_sd[name]).abs().max().item())
        n += 1
    tag = f"[tp={tp} pp={pp} dp={layout.dp} dist_opt={use_dist_opt} rank={dist.get_rank()}]"
    print(f"{tag} adam={adam_implementation()} {n} tensors, max|w - w_ref|={worst:.3e} max|w - w0|={moved:.3e} "
          f"clip effect on ref={clip_effect:.3e}", flush=True)
    for k, (s, (rn, rlr)) in enumerate(zip(stats, ref_stats)):
        engaged = rn > hyper.grad_clip
        print(f"{tag} update {k}: lr={s.lr:.3e} (ref {rlr:.3e}) grad_norm={s.grad_norm:.6f} (ref {rn:.6f}) "
              f"clip={hyper.grad_clip} engaged={engaged}", flush=True)
        assert s.applied
        assert abs(s.lr - rlr) <= 1e-12 * rlr, (s.lr, rlr)
        assert abs(s.grad_norm - rn) <= NORM_RTOL * rn, (s.grad_norm, rn)
    assert moved > 100 * WEIGHT_TOL, moved  # the updates really changed the weights
    assert worst <= WEIGHT_TOL, worst
    if parallel_state.get_data_parallel_rank() == 0:
        print(f"{tag} OK", flush=True)
    dist.barrier()
    destroy_parallel()


def iter_hf_tensors_initial(hf_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).state_dict().items()


if __name__ == "__main__":
    main(*sys.argv[1:])
