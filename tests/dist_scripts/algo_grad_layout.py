"""Gradient of one step batch through megatron's forward_backward_func + DistributedDataParallel for several
micro-batch sizes and both loss-scaling paths; saves them (rank 0) for the pytest to compare across DP sizes.

argv: OUT_PATH. The world size is the DP size (TP = PP = 1). With DP=1 it also saves the gradient of a plain
autograd reference: (1 / N) sum_seq sum_t l_t / L_max with a full-vocab log_softmax and the loss written out here.
"""

import sys

import torch
import torch.nn.functional as F

from algo_common import N_SEQ, step_batch, tiny_model
from prefix_rft_megatron.algo.config import AlgorithmConfig, LossConfig
from prefix_rft_megatron.algo.loss import LossInputs, make_loss_func, make_recompute_func
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel

out_path = sys.argv[1]
layout = initialize_parallel(tp=1)
from megatron.core import parallel_state  # noqa: E402
from megatron.core.distributed import (  # noqa: E402
    DistributedDataParallel,
    DistributedDataParallelConfig,
    finalize_model_grads,
)
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402

cfg = AlgorithmConfig(temperature=0.9, loss=LossConfig(entropy_coef=0.01, kl_coef=0.05, max_response_tokens=12))
batch = step_batch()
dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
rows = slice(dp_rank * N_SEQ // dp, (dp_rank + 1) * N_SEQ // dp)
local = {k: v[rows] for k, v in batch.items()}
n_local = N_SEQ // dp
positions = torch.arange(local["input_ids"].size(1)).expand_as(local["input_ids"])

forward_backward = get_forward_backward_func()
first_model = None


def wrap(per_token: bool):
    """A fresh model + DDP: DDP picks its gradient scaling (1/dp or 1) from calculate_per_token_loss at construction."""
    global first_model
    model = tiny_model(calculate_per_token_loss=per_token)
    if first_model is None:
        first_model = model
    else:
        model.load_state_dict(first_model.state_dict())  # identical weights for every configuration
    ddp = DistributedDataParallel(
        config=model.config,
        ddp_config=DistributedDataParallelConfig(grad_reduce_in_fp32=True, overlap_grad_reduce=False),
        module=model,
    )
    ddp.broadcast_params()  # DP replicas start from the same weights
    model.config.finalize_model_grads_func = finalize_model_grads
    model.config.no_sync_func = ddp.no_sync
    return model, ddp


def run(model, ddp, mbs: int, per_token: bool) -> dict[str, torch.Tensor]:
    ddp.zero_grad_buffer()
    num_mb = n_local // mbs
    micro = [{k: v[i * mbs:(i + 1) * mbs] for k, v in local.items()} for i in range(num_mb)]

    def forward_step(data_iterator, module):
        mb = next(data_iterator)
        logits = module(mb["input_ids"], positions[: mb["input_ids"].size(0)], None)
        inputs = LossInputs(**{k: v for k, v in mb.items() if k != "input_ids"})
        return logits, make_loss_func(inputs, cfg, num_global_sequences=N_SEQ, num_microbatches=num_mb,
                                      calculate_per_token_loss=per_token)

    forward_backward(forward_step_func=forward_step, data_iterator=iter(micro), model=ddp,
                     num_microbatches=num_mb, seq_length=positions.size(1), micro_batch_size=mbs, forward_only=False)
    return {n: p.main_grad.detach().clone() for n, p in model.named_parameters()}


results = {}
for per_token in (False, True):
    model, ddp = wrap(per_token)
    for mbs in sorted({n_local, 1, max(n_local // 2, 1)}):
        results[f"dp{dp}_mbs{mbs}_pt{int(per_token)}"] = run(model, ddp, mbs, per_token)
        print(f"rank {layout.rank}: dp={dp} mbs={mbs} per_token={per_token} done", flush=True)

if dp == 1:
    # Plain autograd reference, no megatron schedule, no custom autograd function.
    ddp.zero_grad_buffer()  # DDP's backward hooks move each .grad into .main_grad, so read main_grad below
    b = batch
    logits = model(b["input_ids"], positions, None).float() / cfg.temperature
    logp_all = F.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, b["target_ids"].unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    lc = cfg.loss
    ratio = torch.exp(logp - b["old_logprobs"])
    A = b["advantages"]
    pg = torch.maximum(-A * ratio, -A * ratio.clamp(1 - lc.clip_eps_low, 1 + lc.clip_eps_high))
    pg = torch.where(A < 0, torch.minimum(pg, -lc.dual_clip_c * A), pg)
    d = b["ref_logprobs"] - logp
    token = pg - lc.entropy_coef * ent + lc.kl_coef * (torch.exp(d) - d - 1)
    loss = (token * b["response_mask"]).sum(dim=1).div(lc.max_response_tokens).mean()
    loss.backward()
    results["reference"] = {n: p.main_grad.detach().clone() for n, p in model.named_parameters()}

    # The recompute pass (forward only, micro-batches of 3, 3, 2) returns the same log-probs and entropies.
    splits = [slice(0, 3), slice(3, 6), slice(6, 8)]

    def recompute_step(data_iterator, module):
        mb = next(data_iterator)
        return module(mb["input_ids"], positions[: mb["input_ids"].size(0)], None), make_recompute_func(
            mb["target_ids"], cfg.temperature)

    with torch.no_grad():
        stored = forward_backward(
            forward_step_func=recompute_step, data_iterator=iter([{k: v[s] for k, v in batch.items()} for s in splits]),
            model=ddp, num_microbatches=3, seq_length=positions.size(1), micro_batch_size=3, forward_only=True)
    results["recompute"] = {"logprobs": torch.cat([d["logprobs"] for d in stored]), "reference_logprobs": logp.detach(),
                            "entropy": torch.cat([d["entropy"] for d in stored]), "reference_entropy": ent.detach()}

if layout.rank == 0:
    torch.save(results, out_path)
print(f"rank {layout.rank}: grads saved", flush=True)
if __name__ == "__main__":
    destroy_parallel()
