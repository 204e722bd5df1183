"""The trainer's own stages on one fixed step batch, for every micro-batch layout, at the TP x PP x DP of this
torchrun: rank 0's rollouts are shared out (`Trainer._share_step`), laid out (`step_tensors`), recomputed, entropy-
masked and forward-backwarded (`accumulate_grads`, the update's gradient before the optimizer step). Saves (rank 0,
for the pytest test to compare across layouts and process counts):
- the first mini-batch's gradient (full tensors, HF names, all PP stages gathered);
- the recomputed log-probs / entropies and kept-prefix mask of every sequence, by its index in the step batch;
- the loss metrics of the first mini-batch.

Usage: train_layout_grads.py HF_DIR OUT_DIR OUT.pt TP PP
"""

import random
import sys

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from prefix_rft_megatron.config import load_config
from prefix_rft_megatron.rollout.types import Rollout, RolloutKind
from prefix_rft_megatron.sync.gather import iter_hf_tensors
from prefix_rft_megatron.train.loop import Trainer
from prefix_rft_megatron.train.micro_batches import MicroBatchLayout

PROMPTS, GROUP = 4, 8


def main():
    hf_dir, out_dir, out_path, tp, pp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    cfg = load_config([], [
        f"model.hf_path={hf_dir}", f"logging.output_dir={out_dir}", f"parallel.tp={tp}", f"parallel.pp={pp}",
        "parallel.use_distributed_optimizer=false",  # every DP rank holds the full reduced gradient
        f"train.prompts_per_step={PROMPTS}", "train.mini_batch_prompts=2", "train.micro_batch_size=4",
        "rollout.max_new_tokens=40", "algorithm.loss.max_response_tokens=40", "eval.benchmarks=[]",
        "logging.tensorboard=false", "logging.progress=false", "checkpoint.export_hf_at_end=false",
        "algorithm.loss.entropy_coef=0.01"])
    trainer = Trainer(cfg)
    vocab = trainer.arch.vocab_size


    def step_rollouts() -> list:
        """4 groups of 8: on-policy and prefixed members with a wide length spread (4..40 response tokens)."""
        rng = random.Random(0)
        out = []
        for j in range(PROMPTS):
            prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(4, 10))]
            demo = [rng.randrange(3, vocab) for _ in range(30)]
            for k in range(GROUP):
                prefixed = k >= 6
                prefix = demo[:rng.randint(1, 20)] if prefixed else []
                n = rng.choice([4, 6, 9, 40, 12, 33])
                resp = [rng.randrange(3, vocab) for _ in range(n)]
                r = Rollout(prompt, prefix, resp, [-rng.random() for _ in resp], "stop", j, k,
                            RolloutKind.PREFIXED if prefixed else RolloutKind.ON_POLICY)
                r.reward = float(rng.random() < 0.5)
                out.append(r)
        for i, r in enumerate(out):
            r.index = i
        return out


    LAYOUTS = {
        "padded": MicroBatchLayout(micro_batch_size=4),
        "budget_small": MicroBatchLayout(micro_batch_size=4, max_tokens=64),
        "budget_large": MicroBatchLayout(micro_batch_size=4, max_tokens=256),
        "packed": MicroBatchLayout(micro_batch_size=4, packed=True),
        "packed_budget": MicroBatchLayout(micro_batch_size=4, max_tokens=100, packed=True),
    }
    rollouts = step_rollouts()
    model_config = trainer.model.module.config if hasattr(trainer.model, "module") else trainer.model.config
    results = {}
    for name, layout in LAYOUTS.items():
        trainer.mb_layout = MicroBatchLayout(layout.micro_batch_size, layout.max_tokens, layout.packed,
                                             trainer.mb_layout.multiple_of)
        if pp > 1:
            model_config.variable_seq_lengths = not layout.fixed_shape
        share = trainer._share_step(rollouts if dist.get_rank() == 0 else None)
        batch, advantages, plans = trainer.step_tensors(share)
        old, entropy = trainer.recompute(batch, plans)
        advantages, keep = trainer.prefix_mask(batch, plans, advantages, entropy, step=0)
        out = trainer.accumulate_grads(batch, plans[0], advantages, old, keep)
        grads = dict(iter_hf_tensors(trainer.model, trainer.arch, what="grad"))
        last = parallel_state.is_pipeline_last_stage()
        metrics = trainer._reduce_train_metrics(out)
        per_seq = {int(i): (old[r], entropy[r], keep[r] if keep is not None else None, int(batch.lengths[r]))
                   for r, i in enumerate(batch.sample_index.tolist())} if last else {}
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, {"grads": grads, "per_seq": per_seq, "received": len(share.rollouts),
                                          "dp_rank": parallel_state.get_data_parallel_rank()})
        if dist.get_rank() == 0:
            all_grads, all_seq = {}, {}
            for g in gathered:
                all_grads.update(g["grads"])
                all_seq.update(g["per_seq"])
            results[name] = {"grads": all_grads, "per_seq": all_seq, "metrics": metrics,
                         "received": [(g["dp_rank"], g["received"]) for g in gathered],
                             "micro_batches": [len(p) for p in plans]}
    trainer.close()
    if dist.get_rank() == 0:
        torch.save(results, out_path)


if __name__ == "__main__":  # the reward pool's workers re-import this file: no work at import
    main()
