#!/usr/bin/env bash
# Prefix-RFT on Qwen2.5-Math-7B on this 8-GPU node (NeMo-Run LocalExecutor + torchrun). Run from the repository root.
# Add --dryrun to print the torchrun command only. Extra key=value arguments override conf/qwen2.5-math-7b.yaml.
set -euo pipefail
python -m prefix_rft_megatron.launch --executor local --gpus-per-node 8 --job-name qwen2.5-math-7b-prefix-rft \
  --env CUDA_DEVICE_MAX_CONNECTIONS=1 --env TOKENIZERS_PARALLELISM=false \
  conf/qwen2.5-math-7b.yaml "$@"
