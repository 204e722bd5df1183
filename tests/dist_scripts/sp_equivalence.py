"""One forward-backward of a tiny GPT at TP=2 with or without sequence parallelism (gloo); writes the loss, every
gradient (full, HF names) and whether SP was really active to OUT.pt for the pytest test to compare.

Usage: sp_equivalence.py SP(0|1) OUT.pt
"""

import sys

import torch
import torch.distributed as dist
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func

from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats
from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.tiny import tiny_hf_config
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from prefix_rft_megatron.sync.gather import iter_hf_tensors

sp, out = sys.argv[1] == "1", sys.argv[2]
initialize_parallel(tp=2, pp=1)
arch = ModelArch.from_hf(tiny_hf_config(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2))
torch.manual_seed(0)
model = build_gpt_model(arch, sequence_parallel=sp)
ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(), model)
model.config.finalize_model_grads_func = finalize_model_grads
batch, seq, n_micro = 2, 12, 2  # seq divisible by TP, as SP requires
g = torch.Generator().manual_seed(0)
micro = [torch.randint(0, arch.vocab_size, (batch, seq + 1), generator=g) for _ in range(n_micro)]


def forward_step(data_iter, m):
    t = next(data_iter)
    output = m(t[:, :-1], torch.arange(seq).unsqueeze(0).expand(batch, -1), None)

    def loss_func(logits):  # log-prob and entropy terms: gradients through both statistics
        logprob, entropy = vocab_parallel_token_stats(logits, t[:, 1:])
        loss = -(logprob.sum() + 0.1 * entropy.sum())
        return loss, {"loss": loss.detach().clone()}

    return output, loss_func


losses = get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter(micro), model=[ddp],
                                     num_microbatches=n_micro, seq_length=seq, micro_batch_size=batch,
                                     forward_only=False)
grads = dict(iter_hf_tensors(ddp, arch, what="grad"))
norm_marked = all(getattr(p, "sequence_parallel", False) for n, p in model.named_parameters() if "layernorm" in n)
if dist.get_rank() == 0:
    torch.save({"sp_active": model.config.sequence_parallel, "norms_marked": norm_marked,
                "loss": torch.stack([l["loss"] for l in losses]), "grads": grads}, out)
destroy_parallel()
