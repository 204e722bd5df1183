"""The kept prefix set (`scope: batch`) is identical for TP=1/TP=2, DP=1/DP=2 and micro-batch sizes 1/2/4/8.

The entropies come from `vocab_parallel_token_stats` on fixed logits (the same numbers every layout would produce
from the same model), so the check covers the full path: vocab-parallel entropy -> DP gather -> exact threshold.
Reference: TP=1, DP=1 (a process group of one rank), the whole step batch as one micro-batch. Needs 2 processes.
argv: OUT_PATH; each rank saves the reference and every layout's kept mask of its rows (OUT_PATH with its rank before
the suffix), for tests/algo/test_prefix_mask.py to compare.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from prefix_rft_megatron.algo.config import PrefixMaskConfig
from prefix_rft_megatron.algo.prefix_mask import prefix_keep_masks
from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel

N, S, V = 8, 12, 48
g = torch.Generator().manual_seed(21)
logits = 2 * torch.randn(N, S, V, generator=g)
target = torch.randint(0, V, (N, S), generator=g)
prefix = torch.zeros(N, S, dtype=torch.bool)
for i in range(N):  # rows with 0..S-2 prefix tokens, uneven across the DP halves
    prefix[i, 1:1 + (i * 5) % (S - 1)] = True
cfg = PrefixMaskConfig(rho=0.2)


def keep_set(rows, mbs, tp_rank, tp, group=None):
    """Kept mask for `rows` of the step batch, computed in micro-batches of `mbs` with this rank's vocab slice."""
    lo, hi = tp_rank * V // tp, (tp_rank + 1) * V // tp
    ents, masks = [], []
    for a in range(0, len(rows), mbs):
        idx = rows[a:a + mbs]
        with torch.no_grad():
            _, h = vocab_parallel_token_stats(logits[idx, :, lo:hi], target[idx])
        ents.append(h)
        masks.append(prefix[idx])
    return torch.cat(prefix_keep_masks(ents, masks, cfg, group=group))


initialize_parallel(tp=1)
solo = [dist.new_group([r]) for r in range(dist.get_world_size())][dist.get_rank()]  # DP "group" of one
reference = keep_set(list(range(N)), N, 0, 1, group=solo)
result = {"reference": reference, "prefix": prefix, "layouts": []}

for tp in (2, 1):
    layout = initialize_parallel(tp=tp)
    from megatron.core import parallel_state

    dp, dp_rank = parallel_state.get_data_parallel_world_size(), parallel_state.get_data_parallel_rank()
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    rows = list(range(dp_rank, N, dp))  # interleaved split: a DP rank's batch is not a contiguous block
    for mbs in (1, 2, 4):
        result["layouts"].append({"tp": tp, "dp": dp, "micro_batch": mbs, "rows": rows,
                                  "keep": keep_set(rows, mbs, tp_rank, tp)})
# One process group for every layout (initialize_parallel rebuilds only megatron's groups): re-creating the default
# group under torchrun's agent store is not supported.
out = Path(sys.argv[1])
torch.save(result, out.with_name(f"{out.stem}_rank{dist.get_rank()}{out.suffix}"))
if __name__ == "__main__":
    destroy_parallel()
