"""A trainer checkpoint loaded at another TP/PP/DP layout holds exactly what was saved (train/checkpoint.py).

Usage: resume_reshard.py HF_DIR OUT_DIR CKPT@TPxPP [CKPT@TPxPP ...]   (DP = world size / (TP x PP))
For each CKPT@layout: builds the trainer's model, DDP and distributed optimizer at that layout, loads CKPT with
CheckpointManager, records every parameter's Adam `step` beside the count the checkpoint holds, saves it again and,
on rank 0, compares every tensor of the two checkpoints (model weights, fp32 main weights, exp_avg, exp_avg_sq:
global tensors, so the comparison does not depend on either layout) and the optimizer's param groups. Also at each
layout: a dp_reshardable save loaded back at the same layout (and compared the same way), the dp_reshardable save of
the previous (other) layout loaded here, and a model whose vocabulary is padded differently. Every rank reports what
it saw (tests/train/test_resume_reshard.py asserts it).
"""

import sys
from pathlib import Path

LOOP_STATE = ("step", "sampler", "scheduler", "rng_cpu", "config")  # the trainer's own entries of common.pt


def build(arch, divisible_by=128):
    """The trainer's model + DDP + distributed optimizer (fp32, local spec). Hyper-parameters are placeholders: the
    checkpoint's param groups replace them on load."""
    ddp = wrap_ddp(build_gpt_model(arch, make_vocab_size_divisible_by=divisible_by), use_distributed_optimizer=True)
    optimizer, _ = build_optimizer([ddp], lr=0.5, weight_decay=0.5, adam_beta1=0.5, adam_beta2=0.5, adam_eps=0.5,
                                   grad_clip=1.0, use_distributed_optimizer=True)
    return ddp, optimizer


def adam_states(optimizer):
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        for group in opt.optimizer.param_groups:
            for p in group["params"]:
                yield group, opt.optimizer.state[p]


def adam_steps(optimizer) -> dict:
    """The param groups' and every parameter's own Adam step, and whether each parameter has its own tensor."""
    group_steps, param_steps, ids = [], [], set()
    for group, state in adam_states(optimizer):
        group_steps.append(float(group["step"]))
        param_steps.append(float(state["step"]))
        ids.add(id(state["step"]))
    return {"group": sorted(set(group_steps)), "param": sorted(set(param_steps)), "params": len(param_steps),
            "own_tensors": len(ids) == len(param_steps)}


def resave(mgr_dir: Path, step: int, ddp, optimizer, common, fmt="fully_reshardable") -> Path:
    loop_state = {k: common[k] for k in LOOP_STATE}
    return CheckpointManager(mgr_dir, optimizer_format=fmt).save(step, ddp, optimizer, loop_state)


def compare_checkpoints(a: Path, b: Path) -> dict | None:
    """Rank 0: the tensor keys of both, which differ in dtype or bits, the optimizer-state kinds, and whether the
    optimizer's param groups are equal. None on the other ranks."""
    if dist.get_rank() != 0:
        return None
    ra, rb = CheckpointReader(a), CheckpointReader(b)
    keys_a, keys_b = set(ra.tensor_keys()), set(rb.tensor_keys())
    differ = []
    for k in sorted(keys_a & keys_b):
        x, y = ra.read(k), rb.read(k)
        if not (x.dtype == y.dtype and torch.equal(x, y)):
            differ.append(k)
    from megatron.core import dist_checkpointing

    ga = dist_checkpointing.load_common_state_dict(str(a))["optimizer"]["optimizer"]["param_groups"]
    gb = dist_checkpointing.load_common_state_dict(str(b))["optimizer"]["optimizer"]["param_groups"]
    return {"tensors": len(keys_a), "only_in_one": sorted(keys_a ^ keys_b), "differ": differ,
            "optimizer_kinds": sorted({k.split(".")[2] for k in keys_a if k.startswith("optimizer.state.")}),
            "param_groups_equal": ga == gb}


def refusal(fn) -> str | None:
    """The CheckpointLayoutError's message, or None when `fn` was not refused."""
    try:
        fn()
    except CheckpointLayoutError as e:
        return str(e)
    return None


def main(hf_dir, out, *jobs):
    arch, out = ModelArch.from_hf(hf_dir), Path(out)
    previous_dp = None  # (path, tp, pp) of the dp_reshardable checkpoint written at the previous layout
    results = []
    for i, job in enumerate(jobs):
        ckpt, layout = job.rsplit("@", 1)
        tp, pp = map(int, layout.split("x"))
        ckpt = Path(ckpt)
        tag = f"{i}_{ckpt.parent.parent.name}_{ckpt.name}_at_tp{tp}pp{pp}"
        initialize_parallel(tp=tp, pp=pp)

        ddp, optimizer = build(arch)
        common = CheckpointManager(out / tag / "unused").load(ckpt, ddp, optimizer, vocab_size=arch.vocab_size)
        r = {"tag": tag, "tp": tp, "pp": pp,
             "saved_step": float(common["optimizer"]["optimizer"]["param_groups"][0]["step"]),
             "adam_steps": adam_steps(optimizer),
             "resaved": compare_checkpoints(ckpt, resave(out / tag / "full", common["step"], ddp, optimizer, common))}

        # dp_reshardable: exact at the same layout, refused at another TP/PP.
        dp_ckpt = resave(out / tag / "dp", common["step"], ddp, optimizer, common, fmt="dp_reshardable")
        ddp2, optimizer2 = build(arch)
        CheckpointManager(out / tag / "unused").load(dp_ckpt, ddp2, optimizer2)
        r["dp_adam_steps"] = adam_steps(optimizer2)
        r["dp_resaved"] = compare_checkpoints(
            ckpt, resave(out / tag / "dp_back", common["step"], ddp2, optimizer2, common))
        if previous_dp is not None:
            r["previous_dp_layout"] = list(previous_dp[1:])
            r["previous_dp_refusal"] = refusal(lambda: CheckpointManager(out).load(previous_dp[0], ddp2, optimizer2))
        previous_dp = (dp_ckpt, tp, pp)

        # The vocabulary (721 tokens here) padded to a multiple of 512 x TP instead of the checkpoint's 768 rows.
        ddp3, optimizer3 = build(arch, divisible_by=512)
        msg = refusal(lambda: CheckpointManager(out).load(ckpt, ddp3, optimizer3, vocab_size=arch.vocab_size))
        r["vocab_refusal"] = msg
        if msg and "make_vocab_size_divisible_by=" in msg:
            r["suggested_padding_rows"] = arch.padded_vocab_size(tp, int(msg.rsplit("=", 1)[1]))
        results.append(r)
        dist.barrier()
        # the next initialize_parallel rebuilds the parallel groups for the next layout
    report({"jobs": results})
    destroy_parallel()


if __name__ == "__main__":
    # Imported here, not at the top: megatron's checkpoint writer starts a multiprocessing manager with the "spawn"
    # method, which re-runs this file's top level in a fresh interpreter; that costs seconds if it imports megatron.
    import torch
    import torch.distributed as dist

    from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader
    from prefix_rft_megatron.model import ModelArch, build_gpt_model
    from prefix_rft_megatron.model.load import CheckpointLayoutError
    from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
    from prefix_rft_megatron.train.checkpoint import CheckpointManager
    from prefix_rft_megatron.train.optim import build_optimizer, wrap_ddp
    from results import report

    main(*sys.argv[1:])
