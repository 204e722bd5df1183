"""TP=2 vocab-parallel log-probs / entropy (values and gradients) equal TP=1 on the same logits.

TP=1 is computed first in each process (megatron TP group of one), then the same logits are sliced by vocabulary
(rank r keeps [r V/2, (r+1) V/2)) and computed with TP=2 through megatron's TP group. Needs 2 processes.
argv: OUT_PATH (each rank saves its values and gradients to OUT_PATH with its rank before the suffix, for
tests/algo/test_token_stats.py to compare).
"""

import sys
from pathlib import Path

import torch

from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel

V, TEMP = 64, 0.7
g = torch.Generator().manual_seed(11)
full = 3 * torch.randn(6, 5, V, generator=g)
target = torch.randint(0, V, (6, 5), generator=g)
target[0, :] = torch.tensor([0, V // 2 - 1, V // 2, V - 1, 5])  # ids at the slice boundaries
w_lp, w_h = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)

initialize_parallel(tp=1)
ref = full.clone().requires_grad_()
lp1, h1 = vocab_parallel_token_stats(ref, target, TEMP)
(lp1 * w_lp + h1 * w_h).sum().backward()

layout = initialize_parallel(tp=2)
from megatron.core import parallel_state  # noqa: E402

rank = parallel_state.get_tensor_model_parallel_rank()
part = full[..., rank * V // 2:(rank + 1) * V // 2].clone().requires_grad_()
lp2, h2 = vocab_parallel_token_stats(part, target, TEMP)
(lp2 * w_lp + h2 * w_h).sum().backward()

out = Path(sys.argv[1])
torch.save({"tp1": {"logprobs": lp1.detach(), "entropy": h1.detach(),
                    "grad": ref.grad[..., rank * V // 2:(rank + 1) * V // 2].clone()},
            "tp2": {"logprobs": lp2.detach(), "entropy": h2.detach(), "grad": part.grad.clone()}},
           out.with_name(f"{out.stem}_rank{layout.rank}{out.suffix}"))
if __name__ == "__main__":
    destroy_parallel()
