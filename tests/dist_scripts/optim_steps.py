"""Megatron DDP + optimizer (train.optim) vs torch.optim.AdamW on the HF model: weights after 2 updates.

Usage: optim_steps.py HF_DIR MEGATRON_CKPT TP PP DIST_OPT GRAD_CLIP WARMUP
Reports on every rank, for the parameters of its PP stage (full tensors, HF names): max |w_megatron - w_reference|,
how far the weights moved, and per update the learning rate and grad norm Megatron reports beside the reference's
(tests/train/test_optim.py asserts them).
"""

import sys

import torch
import torch.distributed as dist

from optim_common import Hyper, build_trained, reference_trained
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from prefix_rft_megatron.sync.gather import iter_hf_tensors
from prefix_rft_megatron.train.optim import adam_implementation

from results import report

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
    report({"tensors": n, "max_weight_diff": worst, "max_moved": moved, "clip_effect_on_ref": clip_effect,
            "adam": adam_implementation(), "grad_clip": hyper.grad_clip,
            "updates": [{"applied": s.applied, "lr": s.lr, "ref_lr": rlr, "grad_norm": s.grad_norm, "ref_norm": rn}
                        for s, (rn, rlr) in zip(stats, ref_stats)]})
    dist.barrier()
    destroy_parallel()


def iter_hf_tensors_initial(hf_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).state_dict().items()


if __name__ == "__main__":
    main(*sys.argv[1:])
