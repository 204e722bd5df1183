"""A trainer checkpoint loaded at another TP/PP/DP layout holds exactly what was saved (train/checkpoint.py).

Usage: resume_reshard.py HF_DIR OUT_DIR CKPT@TPxPP [CKPT@TPxPP ...]   (DP = world size / (TP x PP))
For each CKPT@layout: builds the trainer's model, DDP and distributed optimizer at that layout, loads CKPT with
CheckpointManager and checks that every parameter has its own Adam `step` tensor equal to the recorded count. It then
saves it again and, on rank 0, checks that every tensor of the two checkpoints is bit-identical (model weights, fp32
main weights, exp_avg, exp_avg_sq: global tensors, so the comparison does not depend on either layout) and so are the
optimizer's param groups (lr, step, betas, ...). Also at each layout: a dp_reshardable save loads back exactly at the
same layout, the dp_reshardable save of the previous (other) layout is refused with one line, and a model whose
vocabulary is padded differently is refused with one line naming the make_vocab_size_divisible_by that fits.
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


def check_steps(optimizer, expected: float, tag: str) -> None:
    steps = []
    for group, state in adam_states(optimizer):
        assert float(group["step"]) == expected, (tag, group["step"], expected)
        assert float(state["step"]) == expected, (tag, float(state["step"]), expected)
        steps.append(state["step"])
    assert len(steps) > 1 and len({id(s) for s in steps}) == len(steps), f"{tag}: Adam steps shared or missing"


def resave(mgr_dir: Path, step: int, ddp, optimizer, common, fmt="fully_reshardable") -> Path:
    loop_state = {k: common[k] for k in LOOP_STATE}
    return CheckpointManager(mgr_dir, optimizer_format=fmt).save(step, ddp, optimizer, loop_state)


def same_checkpoint(a: Path, b: Path, tag: str) -> int:
    """Rank 0: every tensor and the optimizer's param groups bit-identical. Returns the number of tensors."""
    if dist.get_rank() != 0:
        return 0
    ra, rb = CheckpointReader(a), CheckpointReader(b)
    keys = set(ra.tensor_keys())
    assert keys == set(rb.tensor_keys()), f"{tag}: {sorted(keys ^ set(rb.tensor_keys()))[:4]}"
    kinds = {k.split(".")[2] for k in keys if k.startswith("optimizer.state.")}
    assert kinds == {"param", "exp_avg", "exp_avg_sq"}, kinds
    for k in sorted(keys):
        x, y = ra.read(k), rb.read(k)
        assert x.dtype == y.dtype and torch.equal(x, y), f"{tag}: {k} differs (max {(x - y).abs().max():.3g})"
    from megatron.core import dist_checkpointing

    ga = dist_checkpointing.load_common_state_dict(str(a))["optimizer"]["optimizer"]["param_groups"]
    gb = dist_checkpointing.load_common_state_dict(str(b))["optimizer"]["optimizer"]["param_groups"]
    assert ga == gb, f"{tag}: param groups {ga} != {gb}"
    return len(keys)


def expect_refusal(fn, *fragments: str) -> str:
    try:
        fn()
    except CheckpointLayoutError as e:
        msg = str(e)
        assert "\n" not in msg and all(f in msg for f in fragments), msg
        return msg
    raise AssertionError(f"not refused (wanted {fragments})")


def main(hf_dir, out, *jobs):
    arch, out = ModelArch.from_hf(hf_dir), Path(out)
    previous_dp = None  # (path, tp, pp) of the dp_reshardable checkpoint written at the previous layout
    for i, job in enumerate(jobs):
        ckpt, layout = job.rsplit("@", 1)
        tp, pp = map(int, layout.split("x"))
        ckpt = Path(ckpt)
        tag = f"{i}_{ckpt.parent.parent.name}_{ckpt.name}_at_tp{tp}pp{pp}"
        initialize_parallel(tp=tp, pp=pp)

        ddp, optimizer = build(arch)
        common = CheckpointManager(out / tag / "unused").load(ckpt, ddp, optimizer, vocab_size=arch.vocab_size)
        expected = float(common["optimizer"]["optimizer"]["param_groups"][0]["step"])
        assert expected > 0
        check_steps(optimizer, expected, tag)
        n = same_checkpoint(ckpt, resave(out / tag / "full", common["step"], ddp, optimizer, common), tag)

        # dp_reshardable: exact at the same layout, refused at another TP/PP.
        dp_ckpt = resave(out / tag / "dp", common["step"], ddp, optimizer, common, fmt="dp_reshardable")
        ddp2, optimizer2 = build(arch)
        CheckpointManager(out / tag / "unused").load(dp_ckpt, ddp2, optimizer2)
        check_steps(optimizer2, expected, tag + "_dp")
        same_checkpoint(ckpt, resave(out / tag / "dp_back", common["step"], ddp2, optimizer2, common), tag + "_dp")
        refused = previous_dp is not None and previous_dp[1:] != (tp, pp)
        if refused:
            expect_refusal(lambda: CheckpointManager(out).load(previous_dp[0], ddp2, optimizer2),
                           "dp_reshardable", f"TP={previous_dp[1]} PP={previous_dp[2]}", "fully_reshardable")
        previous_dp = (dp_ckpt, tp, pp)

        # The vocabulary (721 tokens here) padded to a multiple of 512 x TP instead of the checkpoint's 768 rows.
        ddp3, optimizer3 = build(arch, divisible_by=512)
        msg = expect_refusal(lambda: CheckpointManager(out).load(ckpt, ddp3, optimizer3, vocab_size=arch.vocab_size),
                             "padded to 768 rows", "make_vocab_size_divisible_by=")
        fit = int(msg.rsplit("=", 1)[1])
        assert arch.padded_vocab_size(tp, fit) == 768, (msg, tp)

        if dist.get_rank() == 0:
            print(f"[{tag}] loaded at TP={tp} PP={pp}: {n} tensors bit-identical after re-save, Adam step "
                  f"{expected:g} per parameter; dp_reshardable exact here"
                  f"{', refused from the previous layout' if refused else ''}", flush=True)
        dist.barrier()
        # the next initialize_parallel rebuilds the parallel groups for the next layout
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

    main(*sys.argv[1:])
