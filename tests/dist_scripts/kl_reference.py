"""KL to the reference policy through the trainer (algorithm.loss.kl_coef > 0), at the TP x PP of this torchrun.

One step's stages on a fixed batch: the reference's log-probs before any update must equal the policy's (the same
initial weights); then two optimizer updates; then the reference's log-probs (unchanged) and the policy's (moved)
are recomputed by the trainer, and the loss's `kl/ref` metric of a forward-backward on them is reported with them.
Rank 0 reports (for tests/train/test_kl_reference.py, which recomputes everything with a per-token loop over an HF
model of the initial weights): the rows' tokens, lengths, the trainer's policy and reference log-probs of each real
target, the metric, and how many parameters the reference holds on each rank.

Usage: kl_reference.py HF_DIR OUT_DIR OUT.pt TP PP ESTIMATOR
"""

import random
import sys

import torch
import torch.distributed as dist
from megatron.core import parallel_state

PROMPTS, GROUP = 2, 4


def main():
    from prefix_rft_megatron.config import load_config
    from prefix_rft_megatron.rollout.types import Rollout, RolloutKind
    from prefix_rft_megatron.train.loop import Trainer
    from prefix_rft_megatron.train.optim import optimizer_step

    hf_dir, out_dir, out_path, tp, pp, est = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
        int(sys.argv[5]), sys.argv[6]
    cfg = load_config([], [
        f"model.hf_path={hf_dir}", f"logging.output_dir={out_dir}", f"parallel.tp={tp}", f"parallel.pp={pp}",
        f"train.prompts_per_step={PROMPTS}", f"train.mini_batch_prompts={PROMPTS}", "train.micro_batch_size=4",
        "train.lr=1e-2", "rollout.max_new_tokens=12", "algorithm.loss.max_response_tokens=12", "eval.benchmarks=[]",
        "logging.tensorboard=false", "logging.progress=false", "checkpoint.export_hf_at_end=false",
        "algorithm.name=rft", "algorithm.num_prefixed=0", f"algorithm.group_size={GROUP}",
        "algorithm.loss.kl_coef=0.5", f"algorithm.loss.kl_estimator={est}", "algorithm.temperature=0.8"])
    trainer = Trainer(cfg)
    rng = random.Random(0)
    vocab = trainer.arch.vocab_size
    rollouts = []
    for j in range(PROMPTS):
        prompt = [rng.randrange(3, vocab) for _ in range(5)]
        for k in range(GROUP):
            resp = [rng.randrange(3, vocab) for _ in range(rng.randint(3, 12))]
            r = Rollout(prompt, [], resp, [-1.0] * len(resp), "stop", j, k, RolloutKind.ON_POLICY)
            r.reward, r.index = float(k % 2), j * GROUP + k
            rollouts.append(r)
    share = trainer._share_step(rollouts if dist.get_rank() == 0 else None)
    batch, advantages, plans = trainer.step_tensors(share)
    before_policy, _ = trainer.recompute(batch, plans)
    before_ref = trainer.reference_logprobs(batch, plans)
    for _ in range(2):  # move the policy away from the reference
        ref = trainer.reference_logprobs(batch, plans)
        old, _ = trainer.recompute(batch, plans)
        trainer.accumulate_grads(batch, plans[0], advantages, old, None, None, ref)
        optimizer_step(trainer.optimizer, trainer.scheduler)
    policy, _ = trainer.recompute(batch, plans)
    ref = trainer.reference_logprobs(batch, plans)
    metrics = trainer._reduce_train_metrics(trainer.accumulate_grads(batch, plans[0], advantages, policy, None, None,
                                                                     ref))
    ref_params = sum(p.numel() for p in trainer.reference.parameters())
    frozen = all(not p.requires_grad for p in trainer.reference.parameters())
    gathered = [None] * dist.get_world_size()
    last = parallel_state.is_pipeline_last_stage()
    dist.all_gather_object(gathered, {"last": last, "ref_params": ref_params, "frozen": frozen})
    tensors = {"input_ids": batch.input_ids, "target_ids": batch.target_ids, "response_mask": batch.response_mask,
               "lengths": batch.lengths, "policy": policy, "ref": ref, "before_policy": before_policy,
               "before_ref": before_ref} if last else None
    holder = [None] * dist.get_world_size()
    dist.all_gather_object(holder, tensors)
    if dist.get_rank() == 0:
        torch.save({"tensors": next(t for t in holder if t is not None), "metrics": metrics,
                    "ranks": gathered, "temperature": cfg.algorithm.temperature}, out_path)
    trainer.close()


if __name__ == "__main__":  # the reward pool's workers re-import this file: no work at import
    main()
