"""Shared pieces of the optimizer / weight-sync test bodies: a Megatron model trained for a few updates through
Megatron's schedule and `train.optim`, and the plain reference (HF model + torch.optim.AdamW on the same tokens).

The loss is the token-mean cross-entropy of each micro-batch; Megatron's schedule divides it by the number of
micro-batches and DDP averages over DP ranks, so one update minimises the mean over all DP x micro micro-batches of
the global batch. The reference computes exactly that on one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from megatron.core import parallel_state
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.load import load_model_weights
from prefix_rft_megatron.train.optim import build_optimizer, optimizer_step, wrap_ddp, zero_grads

MICRO_BATCH, SEQ, MICRO_PER_RANK = 2, 12, 2


@dataclass
class Hyper:
    lr: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-6  # see WEIGHT_TOL in optim_steps.py: keeps Adam well-conditioned for near-zero grads
    grad_clip: float = 1.0
    warmup_steps: int = 0


def global_batches(arch: ModelArch, steps: int, dp: int) -> list[torch.Tensor]:
    """Per update, all micro-batches of the global batch [dp * MICRO_PER_RANK, MICRO_BATCH, SEQ + 1]; the same on
    every rank (seeded), DP rank r takes micro-batches r*MICRO_PER_RANK ... ."""
    g = torch.Generator().manual_seed(1234)
    return [torch.randint(0, arch.vocab_size, (dp * MICRO_PER_RANK, MICRO_BATCH, SEQ + 1), generator=g)
            for _ in range(steps)]


def token_mean_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -logp.gather(-1, labels.unsqueeze(-1)).mean()


def build_trained(hf_dir: str, ckpt: str, hyper: Hyper, steps: int, use_distributed_optimizer: bool):
    """(ddp model, arch, [StepStats]) after `steps` updates on `global_batches`. Collective."""
    arch = ModelArch.from_hf(hf_dir)
    model = build_gpt_model(arch)
    load_model_weights(model, ckpt)
    ddp = wrap_ddp(model, use_distributed_optimizer=use_distributed_optimizer)
    optimizer, scheduler = build_optimizer(
        [ddp], lr=hyper.lr, weight_decay=hyper.weight_decay, adam_beta1=hyper.beta1, adam_beta2=hyper.beta2,
        adam_eps=hyper.eps, grad_clip=hyper.grad_clip, use_distributed_optimizer=use_distributed_optimizer,
        warmup_steps=hyper.warmup_steps,
    )
    dp_rank = parallel_state.get_data_parallel_rank()
    dp = parallel_state.get_data_parallel_world_size()
    stats = []
    for batch in global_batches(arch, steps, dp):
        mine = list(batch[dp_rank * MICRO_PER_RANK:(dp_rank + 1) * MICRO_PER_RANK])

        def forward_step(data_iter, model):
            t = next(data_iter)
            inp, labels = t[:, :-1], t[:, 1:]
            pos = torch.arange(SEQ).unsqueeze(0).expand(t.shape[0], -1)
            out = model(inp, pos, None)

            def loss_func(output):
                full = gather_from_tensor_model_parallel_region(output)[..., : arch.vocab_size]
                loss = token_mean_ce(full, labels)
                return loss, {"loss": loss.detach().clone()}

            return out, loss_func

        zero_grads([ddp], optimizer)
        get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(mine), model=[ddp], num_microbatches=len(mine),
            seq_length=SEQ, micro_batch_size=MICRO_BATCH, forward_only=False,
        )
        stats.append(optimizer_step(optimizer, scheduler))
    return ddp, arch, stats


def reference_trained(hf_dir: str, hyper: Hyper, steps: int, dp: int, clip: bool = True):
    """(HF model, [(grad norm before clipping, lr)]) after `steps` AdamW updates on the same global batches.

    Parameter groups as Megatron's: no weight decay on biases and 1-D parameters."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    arch = ModelArch.from_hf(hf_dir)
    decay = [p for n, p in hf.named_parameters() if p.ndim > 1 and not n.endswith(".bias")]
    no_decay = [p for n, p in hf.named_parameters() if not (p.ndim > 1 and not n.endswith(".bias"))]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": hyper.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=hyper.lr, betas=(hyper.beta1, hyper.beta2), eps=hyper.eps,
    )
    w = max(hyper.warmup_steps, 1)
    out = []
    for k, batch in enumerate(global_batches(arch, steps, dp)):
        lr = hyper.lr * min(1.0, (k + 1) / w)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        for t in batch:
            loss = token_mean_ce(hf(t[:, :-1]).logits, t[:, 1:]) / len(batch)
            loss.backward()
        params = list(hf.parameters())
        if clip and hyper.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, hyper.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        opt.step()
        out.append((float(norm), lr))
    return hf.eval(), out
