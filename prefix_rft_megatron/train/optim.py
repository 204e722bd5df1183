"""Megatron DDP wrapping, the (distributed) optimizer and the learning-rate schedule the trainer uses.

One training update is, with these pieces:

    zero_grads(ddp_models, optimizer)
    get_forward_backward_func()(...)        # the schedule calls config.finalize_model_grads_func (DP grad sync)
    stats = optimizer_step(optimizer, scheduler)   # clip, Adam step, scheduler.step(1)

Gradients accumulate in fp32 buffers (`grad_reduce_in_fp32`), are clipped to a global norm (`grad_clip`, computed
over all TP/PP/DP shards by Megatron) and fed to Adam with decoupled weight decay (AdamW). Megatron's standard
parameter groups apply: no weight decay on biases and on 1-D parameters (norm weights). The Adam kernel is Transformer
Engine's or apex's fused Adam when importable, `torch.optim.AdamW` otherwise (the CPU path); which one is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from prefix_rft_megatron.compat import cpu

logger = logging.getLogger(__name__)


_ADAM_NAMES = {
    "torch": "torch.optim.AdamW",
    "apex": "apex FusedAdam",
    "transformer_engine": "Transformer Engine FusedAdam",
}


def adam_implementation() -> str:
    """Which Adam kernel Megatron's optimizer wraps here: "transformer_engine", "apex" or "torch"."""
    import megatron.core.optimizer as mopt

    if getattr(mopt, "USING_PYTORCH_OPTIMIZER", True):
        return "torch"
    module = getattr(mopt.Adam, "__module__", "")
    return "transformer_engine" if module.startswith("transformer_engine") else "apex"


def wrap_ddp(
    model: torch.nn.Module,
    use_distributed_optimizer: bool,
    overlap_grad_reduce: bool = False,
    bucket_size: Optional[int] = None,
) -> DistributedDataParallel:
    """Wrap one model chunk in Megatron's DistributedDataParallel (fp32 grad buffers) and make DP ranks equal.

    Sets `config.finalize_model_grads_func` (DP grad all-reduce / reduce-scatter, tied-embedding and layer-norm
    grad sync across PP/TP), which Megatron's schedules call after the last backward. Parameters are broadcast
    from DP rank 0, since CPU-initialised weights may differ across DP ranks. `overlap_grad_reduce` (GPU only, not
    exercised by the CPU tests) also installs the no-sync / grad-sync hooks the schedules use to overlap the grad
    reduction with backward, as Megatron-LM's training loop does.
    Collective over the DP group.
    """
    if overlap_grad_reduce and not torch.cuda.is_available():
        raise ValueError("wrap_ddp: overlap_grad_reduce is for the CUDA path only (not supported here without CUDA)")
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=overlap_grad_reduce,
        overlap_param_gather=False,
        use_distributed_optimizer=use_distributed_optimizer,
        bucket_size=bucket_size,
    )
    ddp = DistributedDataParallel(model.config, ddp_config, model)
    config = model.config
    config.finalize_model_grads_func = finalize_model_grads
    if overlap_grad_reduce:
        config.no_sync_func = ddp.no_sync
        config.grad_sync_func = ddp.start_grad_sync
    cpu.configure(config)
    ddp.broadcast_params()
    return ddp


def build_optimizer(
    ddp_models: Sequence[DistributedDataParallel],
    lr: float,
    weight_decay: float,
    adam_beta1: float,
    adam_beta2: float,
    adam_eps: float,
    grad_clip: float,
    use_distributed_optimizer: bool,
    params_dtype: torch.dtype = torch.float32,
    warmup_steps: int = 0,
):
    """(Megatron optimizer, OptimizerParamScheduler) for the DDP-wrapped model chunks.

    Learning rate: linear warm-up over `warmup_steps` updates, then constant `lr`: update k (0-based, counted by
    `scheduler.step(1)` after each update) runs at lr * min(1, (k + 1) / warmup_steps), so the first update already
    moves the weights. `grad_clip` <= 0 disables clipping. bf16/fp16 params get fp32 master weights (Megatron's
    mixed-precision optimizer); fp16 also gets a dynamic loss scale. On resume, `scheduler.load_state_dict` keeps
    the checkpoint's schedule values (lr, warm-up) over the ones passed here. Collective (param groups are agreed on
    by all ranks).
    """
    # the user-facing checks are TrainConfig's (config load); here they are invariants of the library call
    assert lr > 0 and warmup_steps >= 0, f"build_optimizer: lr={lr} must be > 0, warmup_steps={warmup_steps} >= 0"
    for m in ddp_models:
        if m.ddp_config.use_distributed_optimizer != use_distributed_optimizer:
            raise ValueError(
                "build_optimizer: use_distributed_optimizer must match the DDP wrapping "
                f"(wrap_ddp(..., use_distributed_optimizer={m.ddp_config.use_distributed_optimizer}))"
            )
    config = OptimizerConfig(
        optimizer="adam",
        lr=lr,
        min_lr=0.0,
        weight_decay=weight_decay,
        adam_beta1=adam_beta1,
        adam_beta2=adam_beta2,
        adam_eps=adam_eps,
        decoupled_weight_decay=True,
        clip_grad=grad_clip if grad_clip > 0 else 0.0,
        use_distributed_optimizer=use_distributed_optimizer,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        main_grads_dtype=torch.float32,
        main_params_dtype=torch.float32,
    )
    optimizer = get_megatron_optimizer(config, list(ddp_models))
    # Warm-up as Megatron's linear ramp from init_lr over W-1 steps: at step k it gives lr * (k + 1) / W.
    w = max(int(warmup_steps), 1)
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=lr / w,
        max_lr=lr,
        min_lr=0.0,
        lr_warmup_steps=w - 1,
        lr_decay_steps=w,
        lr_decay_style="constant",
        start_wd=weight_decay,
        end_wd=weight_decay,
        wd_incr_steps=1,
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True,
    )
    logger.info(
        "optimizer: Megatron %s over %s (decoupled weight decay %g, clip %g, params %s, warm-up %d updates)",
        describe_optimizer(optimizer), _ADAM_NAMES[adam_implementation()], weight_decay, config.clip_grad,
        str(params_dtype).removeprefix("torch."), warmup_steps,
    )
    return optimizer, scheduler


def describe_optimizer(optimizer) -> str:
    """Class names of the Megatron optimizer(s), e.g. "DistributedOptimizer" or "FP32Optimizer"."""
    inner = getattr(optimizer, "chained_optimizers", [optimizer])
    return "+".join(sorted({type(o).__name__ for o in inner}))


@dataclass(frozen=True)
class StepStats:
    """One optimizer update: whether it was applied (fp16 overflow skips it), the global grad norm before
    clipping (None when not computed), and the learning rate it ran at."""

    applied: bool
    grad_norm: Optional[float]
    lr: float


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def zero_grads(ddp_models: Sequence[DistributedDataParallel], optimizer) -> None:
    """Reset the DDP grad buffers and the optimizer's grads before a new forward-backward."""
    for m in ddp_models:
        m.zero_grad_buffer()
    optimizer.zero_grad()


def optimizer_step(optimizer, scheduler: OptimizerParamScheduler) -> StepStats:
    """Clip, step (the distributed optimizer also all-gathers the updated params), then advance the schedule."""
    lr = current_lr(optimizer)
    applied, grad_norm, _ = optimizer.step()
    if applied:
        scheduler.step(1)
    return StepStats(bool(applied), None if grad_norm is None else float(grad_norm), lr)


__all__: List[str] = [
    "StepStats", "adam_implementation", "build_optimizer", "current_lr", "describe_optimizer", "optimizer_step",
    "wrap_ddp", "zero_grads",
]
