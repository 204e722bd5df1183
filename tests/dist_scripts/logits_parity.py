"""Megatron (TP = world size) vs transformers logits for several HF directories; writes {name: diffs} to OUT.json.

Usage: logits_parity.py OUT.json SEQ_LEN NAME=HF_DIR:MEGATRON_CKPT ...
"""

import json
import sys

import torch.distributed as dist

from prefix_rft_megatron.convert.compare import logits_diff
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel

out, seq_len, *models = sys.argv[1:]
world = int(__import__("os").environ["WORLD_SIZE"])
results = {}
for item in models:
    name, paths = item.split("=", 1)
    hf_dir, ckpt = paths.split(":", 1)
    initialize_parallel(tp=world, pp=1)
    diff = logits_diff(hf_dir, ckpt, tp=world, seq_len=int(seq_len))
    if diff is not None:
        results[name] = diff
if dist.get_rank() == 0:
    with open(out, "w") as f:
        json.dump(results, f)
destroy_parallel()
