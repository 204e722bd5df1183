"""Prefix-RFT on Qwen2.5-Math-7B, one 8-GPU node, through NeMo-Run's LocalExecutor (torchrun, 8 processes).

    python examples/qwen2.5-math-7b/launch.py [--dryrun] [key=value ...]

Run from the repository root. Paths in conf/qwen2.5-math-7b.yaml are placeholders: override them here or edit the
file. Same as `python -m prefix_rft_megatron.launch --gpus-per-node 8 conf/qwen2.5-math-7b.yaml ...`.
"""

import sys

from prefix_rft_megatron.launch.config import LaunchConfig
from prefix_rft_megatron.launch.recipes import dryrun, launch


def main(argv):
    dry = "--dryrun" in argv
    overrides = [a for a in argv if a != "--dryrun"]
    lc = LaunchConfig(
        executor="local",
        gpus_per_node=8,
        config_files=["conf/qwen2.5-math-7b.yaml"],
        overrides=overrides,
        env={"CUDA_DEVICE_MAX_CONNECTIONS": "1", "TOKENIZERS_PARALLELISM": "false"},
        job_name="qwen2.5-math-7b-prefix-rft",
    )
    if dry:
        print(dryrun(lc)["command"])
        return 0
    result = launch(lc, tail_logs=True)
    print(result)
    return 0 if result["status"].upper().startswith("SUCCEEDED") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
