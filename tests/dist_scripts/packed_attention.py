"""Packed (THD) vs padded forward-backward of a tiny GPT through megatron's schedule, at TP = world size (with
sequence parallelism at TP=2): reports the largest logit difference over real positions and the largest gradient
difference (full gradients, HF names) for the pytest test to assert.

Three sequences of lengths 7, 13, 4 (+ a rounding tail at TP=2); the loss is a sum of log-probs over real tokens.
"""

import torch
import torch.distributed as dist
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats
from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.tiny import tiny_hf_config
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from prefix_rft_megatron.sync.gather import iter_hf_tensors
from prefix_rft_megatron.train.micro_batches import MicroBatchLayout, plan_micro_batches
from results import report

tp = dist.get_world_size() if dist.is_initialized() else int(__import__("os").environ.get("WORLD_SIZE", "1"))
initialize_parallel(tp=tp, pp=1)
arch = ModelArch.from_hf(tiny_hf_config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2))
torch.manual_seed(0)
model = build_gpt_model(arch, sequence_parallel=tp > 1)
ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(), model)
model.config.finalize_model_grads_func = finalize_model_grads
lengths = [7, 13, 4]
S = 16  # step length, a multiple of TP
g = torch.Generator().manual_seed(0)
tokens = torch.randint(0, arch.vocab_size, (len(lengths), S + 1), generator=g)
inputs, targets = tokens[:, :-1], tokens[:, 1:]
real = torch.zeros(len(lengths), S, dtype=torch.bool)
for i, n in enumerate(lengths):
    real[i, :n] = True


def run(layout):
    ddp.zero_grad_buffer()
    micro = plan_micro_batches(range(len(lengths)), lengths, layout, S)
    logits_rows = torch.zeros(len(lengths), S, arch.vocab_size)

    def step(data_iter, m):
        mb = next(data_iter)
        out = m(mb.gather(inputs), mb.position_ids(), None, packed_seq_params=mb.packed_seq_params())

        def loss_func(logits):
            full = gather_from_tensor_model_parallel_region(logits)[..., :arch.vocab_size].detach().float()
            for k in range(arch.vocab_size):  # scatter works on [b, s] tensors
                col = torch.zeros(len(lengths), S)
                mb.scatter(full[..., k], col)
                logits_rows[..., k] += col
            logprob, _ = vocab_parallel_token_stats(logits, mb.gather(targets))
            loss = -(logprob * mb.gather(real)).sum()
            return loss * len(micro), {"loss": loss.detach().clone()}  # the schedule divides by the count

        return out, loss_func

    get_forward_backward_func()(forward_step_func=step, data_iterator=iter(micro), model=[ddp],
                                num_microbatches=len(micro), seq_length=S, micro_batch_size=1, forward_only=False)
    grads = dict(iter_hf_tensors(ddp, arch, what="grad"))
    return logits_rows, grads


padded_logits, padded_grads = run(MicroBatchLayout(micro_batch_size=1, multiple_of=tp))
packed_logits, packed_grads = run(MicroBatchLayout(micro_batch_size=3, packed=True, multiple_of=tp))
budget_logits, budget_grads = run(MicroBatchLayout(micro_batch_size=1, max_tokens=26, multiple_of=tp))
mask = real.unsqueeze(-1)


def max_diff(a, b):
    return float(((a - b) * mask).abs().max())


report({
    "packed_logits": max_diff(packed_logits, padded_logits),
    "budget_logits": max_diff(budget_logits, padded_logits),
    "packed_grads": max(float((packed_grads[k] - padded_grads[k]).abs().max()) for k in padded_grads),
    "budget_grads": max(float((budget_grads[k] - padded_grads[k]).abs().max()) for k in padded_grads),
    "grad_scale": max(float(v.abs().max()) for v in padded_grads.values()),
    "logit_scale": float(padded_logits.abs().max()),
    "num_grads": len(padded_grads),
})
destroy_parallel()
