"""The loss gradient through megatron's forward_backward_func with TP=2 equals TP=1 (same weights, same batch).

argv: OUT_PATH. TP = world size (1 or 2), DP = 1. Each rank's grads are all-gathered over TP along the
parameter's partition dimension, so rank 0 saves full-size gradients comparable across TP sizes.
"""

import os
import sys

import torch
import torch.distributed as dist

from algo_common import N_SEQ, step_batch, tiny_model
from prefix_rft_megatron.algo.config import AlgorithmConfig, LossConfig
from prefix_rft_megatron.algo.loss import LossInputs, make_loss_func
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel

out_path = sys.argv[1]
layout = initialize_parallel(tp=int(os.environ["WORLD_SIZE"]))
from megatron.core import parallel_state  # noqa: E402
from megatron.core.pipeline_parallel import get_forward_backward_func  # noqa: E402

cfg = AlgorithmConfig(temperature=0.9, loss=LossConfig(entropy_coef=0.01, max_response_tokens=12))
batch = step_batch()
positions = torch.arange(batch["input_ids"].size(1)).expand_as(batch["input_ids"])
model = tiny_model(vocab_size=256)  # 256 pads to 256 for TP=1 and TP=2: same vocabulary, same weights
mbs, num_mb = 4, N_SEQ // 4


def forward_step(data_iterator, module):
    mb = next(data_iterator)
    logits = module(mb["input_ids"], positions[:mbs], None)
    inputs = LossInputs(**{k: v for k, v in mb.items() if k != "input_ids"})
    return logits, make_loss_func(inputs, cfg, num_global_sequences=N_SEQ, num_microbatches=num_mb)


micro = [{k: v[i * mbs:(i + 1) * mbs] for k, v in batch.items()} for i in range(num_mb)]
get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter(micro), model=model,
                            num_microbatches=num_mb, seq_length=positions.size(1), micro_batch_size=mbs)

tp, group = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_group()
grads, weights = {}, {}
for name, p in model.named_parameters():
    g, w = p.grad.detach(), p.detach()
    if tp > 1 and getattr(p, "tensor_model_parallel", False):
        parts_g = [torch.empty_like(g) for _ in range(tp)]
        parts_w = [torch.empty_like(w) for _ in range(tp)]
        dist.all_gather(parts_g, g.contiguous(), group=group)
        dist.all_gather(parts_w, w.contiguous(), group=group)
        if name.endswith("mlp.linear_fc1.weight"):
            # Fused SwiGLU: each rank holds [gate_r; up_r], the TP=1 weight is [gate_0..gate_tp; up_0..up_tp].
            parts_g = [c for i in range(2) for c in (x.chunk(2, dim=0)[i] for x in parts_g)]
            parts_w = [c for i in range(2) for c in (x.chunk(2, dim=0)[i] for x in parts_w)]
        g, w = torch.cat(parts_g, dim=p.partition_dim), torch.cat(parts_w, dim=p.partition_dim)
    grads[name], weights[name] = g.clone(), w.clone()
if layout.rank == 0:
    torch.save({"grads": grads, "weights": weights}, out_path)
print(f"rank {layout.rank}: tp={tp} grads saved", flush=True)
if __name__ == "__main__":
    destroy_parallel()
