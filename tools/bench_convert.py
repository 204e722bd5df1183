#!/usr/bin/env python
"""Converter throughput and peak memory, against a plain safetensors read of the same files in the same run.

Makes a synthetic HF checkpoint (Qwen2 layout, sizes from the flags; default ~375M parameters, 0.75 GB in bf16, sharded),
then runs, each in a fresh process so peak RSS is its own:
  plain read     every tensor of every shard through safetensors (the floor for any converter)
  plain copy     read every shard and write it back out as safetensors, fsynced (read + write, no conversion)
  hf->megatron   tools' converter, streamed into a Megatron distributed checkpoint
  megatron->hf   back to sharded safetensors
Prints GB/s (weight bytes / wall time), the ratio to the plain read, and peak RSS above the process's RSS just before the
step, next to the largest shard. The page cache is warmed first so every run reads from memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import gc, json, sys, threading, time, warnings
warnings.filterwarnings("ignore")
import psutil, torch
from safetensors import safe_open
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf
mode, src, dst = sys.argv[1:4]
proc = psutil.Process()
gc.collect()
before = proc.memory_info().rss
peak, done = [before], threading.Event()
def sample():  # RSS sampled every 2 ms while the work runs (ru_maxrss would include import-time spikes)
    while not done.is_set():
        peak[0] = max(peak[0], proc.memory_info().rss)
        time.sleep(0.002)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
t0 = time.perf_counter()
if mode == "read":
    for f in sorted(__import__("pathlib").Path(src).glob("*.safetensors")):
        with safe_open(f, "pt") as h:
            for k in h.keys():
                h.get_tensor(k).clone()  # get_tensor may be mmap-backed: clone() really reads the bytes
elif mode == "copy":  # read + write the same bytes as safetensors, fsynced like the converter's output
    import os, pathlib
    from safetensors.torch import load_file, save_file
    pathlib.Path(dst).mkdir(exist_ok=True)
    for f in sorted(pathlib.Path(src).glob("*.safetensors")):
        save_file(load_file(f), os.path.join(dst, f.name))
        fd = os.open(os.path.join(dst, f.name), os.O_RDONLY); os.fsync(fd); os.close(fd)
elif mode == "hf2meg":
    convert_hf_to_megatron(src, dst, tp=1, overwrite=True, progress=False)
elif mode == "meg2hf":
    convert_megatron_to_hf(src, dst, overwrite=True, progress=False, max_shard_bytes=int(sys.argv[4]))
dt = time.perf_counter() - t0
done.set(); sampler.join()
print(json.dumps({"seconds": dt, "peak_extra_bytes": peak[0] - before, "rss_before": before}))
"""


def run(mode: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--ffn", type=int, default=2816)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--vocab", type=int, default=16000)
    p.add_argument("--shard-mb", type=int, default=50)
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--workdir", default=None)
    args = p.parse_args()

    import torch

    from prefix_rft_megatron.model.tiny import build_hf_model, tiny_hf_config

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_convert_"))
    hf_dir = work / "hf"
    cfg = tiny_hf_config(family="qwen2", vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=args.ffn, num_hidden_layers=args.layers, num_attention_heads=16,
                         num_key_value_heads=4)
    model = build_hf_model(cfg).to(getattr(torch, args.dtype))
    model.save_pretrained(hf_dir, max_shard_size=f"{args.shard_mb}MB")
    del model
    shards = sorted(hf_dir.glob("*.safetensors"))
    total = sum(f.stat().st_size for f in shards)
    largest = max(f.stat().st_size for f in shards)
    print(f"checkpoint: {len(shards)} shards, {total / 1e9:.3f} GB, largest shard {largest / 1e6:.1f} MB "
          f"({args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, {args.dtype})")

    run("read", str(hf_dir), "")  # warm the page cache
    results = {
        "plain read": run("read", str(hf_dir), ""),
        "plain copy": run("copy", str(hf_dir), str(work / "copy")),
        "hf->megatron": run("hf2meg", str(hf_dir), str(work / "meg")),
        "megatron->hf": run("meg2hf", str(work / "meg"), str(work / "hf_back"), str(args.shard_mb * 10**6)),
    }
    base = results["plain read"]["seconds"]
    print(f"{'step':<14} {'seconds':>8} {'GB/s':>7} {'vs read':>8} {'vs copy':>8} {'peak RSS +MB':>13} {'/ largest shard':>16}")
    for name, r in results.items():
        extra = r["peak_extra_bytes"]
        print(f"{name:<14} {r['seconds']:>8.2f} {total / r['seconds'] / 1e9:>7.2f} {base / r['seconds']:>7.2f}x "
              f"{results['plain copy']['seconds'] / r['seconds']:>7.2f}x "
              f"{extra / 1e6:>13.1f} {extra / largest:>15.2f}x")
    print(f"peak RSS is measured above the process's RSS just before the step (after imports); "
          f"total model {total / 1e6:.0f} MB; workdir {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
