"""One whole trainer step (rollout on rank 0, share, recompute, entropy mask, updates, metrics, weight sync) and a
checkpoint save, at the TP x PP x DP of this torchrun, under the collective rule the environment names
(PREFIX_RFT_COLLECTIVE_RULE=nccl: every tensor must be on a device the group's backend serves on a CUDA cluster).

With PLANT=1 the data-parallel group is declared NCCL-only first (what every group was when the default group was
created with backend="nccl"): the step must then fail on the first CPU tensor handed to it.

Usage: trainer_step_collectives.py HF_DIR OUT_DIR TP PP PLANT
Reports per rank: {"ok": bool, "error": str}.
"""

import sys

from megatron.core import parallel_state

from prefix_rft_megatron.config import load_config
from prefix_rft_megatron.parallel import collectives
from prefix_rft_megatron.train.loop import Trainer

from results import report


def main():
    hf_dir, out_dir, tp, pp, plant = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
    cfg = load_config([], [
        f"model.hf_path={hf_dir}", f"logging.output_dir={out_dir}", f"parallel.tp={tp}", f"parallel.pp={pp}",
        "train.steps=1", "train.prompts_per_step=4", "train.mini_batch_prompts=2", "train.micro_batch_size=8",
        "rollout.max_new_tokens=16", "algorithm.loss.max_response_tokens=16", "eval.benchmarks=[]",
        "logging.tensorboard=false", "logging.progress=false", "checkpoint.export_hf_at_end=false",
        "reward.num_workers=1"])
    trainer = Trainer(cfg)
    if plant:
        collectives.declare(parallel_state.get_data_parallel_group(), "nccl")
    try:
        trainer.resume()
        trainer.weight_sync.sync(version=0)
        metrics = trainer.train_step(0)
        trainer.save(1)
        report({"ok": True, "error": "", "reward": metrics.get("reward/mean")})
    except collectives.CollectiveDeviceError as e:
        report({"ok": False, "error": str(e)})
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
