"""Weight-sync throughput: a Megatron model (a few hundred MB, fp32) -> the HF engine, vs a plain copy of the bytes.

    python benchmarks/bench_weight_sync.py                      # TP=1, one process
    torchrun --nproc-per-node 2 benchmarks/bench_weight_sync.py --tp 2

Both figures are measured in the same run on global rank 0 (which holds the HF engine):
- sync: `WeightSync.sync()` end to end (TP gathers, HF mapping, bucketing, PP transfer, the engine's in-place
  copy into its parameters), best and median of --repeats;
- plain copy: `dst.copy_(src)` of every engine parameter into a preallocated tensor of the same shape (the same
  bytes, no resharding), run right after each sync (the machine may be shared), best and median: the
  memory-bandwidth floor of the engine's own copy.
Peak extra memory is the peak process RSS during a sync (sampled every ms) minus the RSS just before it, next to
the largest bucket the sync formed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import psutil
import torch
import torch.distributed as dist


def rss() -> int:
    return psutil.Process().memory_info().rss


class PeakRSS:
    """Peak RSS above the level at entry, sampled in a thread."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s

    def __enter__(self):
        self.base = rss()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(self.interval_s)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def extra(self) -> int:
        return self.peak - self.base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--bucket-mib", type=int, nargs="+", default=[512, 64])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    from prefix_rft_megatron.model import ModelArch, build_gpt_model
    from prefix_rft_megatron.model.tiny import tiny_hf_config
    from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
    from prefix_rft_megatron.rollout.hf_engine import HFEngine
    from prefix_rft_megatron.sync import WeightSync

    layout = initialize_parallel(tp=args.tp, pp=args.pp)
    hf_cfg = tiny_hf_config(family="llama", vocab_size=args.vocab, hidden_size=args.hidden,
                            intermediate_size=args.ffn, num_hidden_layers=args.layers, num_attention_heads=16,
                            num_key_value_heads=4)
    arch = ModelArch.from_hf(hf_cfg)
    model = build_gpt_model(arch)
    rank0 = dist.get_rank() == 0
    engine = HFEngine.from_config(hf_cfg) if rank0 else None
    if rank0:
        n_bytes = sum(t.numel() * t.element_size() for t in engine.model.state_dict().values())
        print(f"model: llama hidden={args.hidden} ffn={args.ffn} layers={args.layers} vocab={args.vocab}, "
              f"{n_bytes / 1e6:.1f} MB fp32 (HF state dict); tp={layout.tp} pp={layout.pp} dp={layout.dp}; "
              f"torch threads={torch.get_num_threads()}", flush=True)

    # The plain copy runs interleaved with the syncs (same load conditions on a shared machine), on rank 0.
    if rank0:
        src = list(engine.model.state_dict().values())
        dst = [torch.empty_like(t) for t in src]
        for d, s in zip(dst, src):  # first touch of the destination pages outside the timing
            d.copy_(s)
    copy_times = []
    results = []
    for mib in args.bucket_mib:
        sync = WeightSync(model, arch, engine=engine, bucket_bytes=mib * 2**20)
        times, peak_extra, stats = [], 0, None
        for _ in range(args.repeats):
            dist.barrier()
            with PeakRSS() as mem:
                s = sync.sync(version=0)
            peak_extra = max(peak_extra, mem.extra)
            if rank0:
                stats = s
                times.append(s.seconds)
                t0 = time.perf_counter()
                for d, t in zip(dst, src):
                    d.copy_(t)
                copy_times.append(time.perf_counter() - t0)
        if rank0:
            best, med = min(times), statistics.median(times)
            print(f"sync  bucket={mib:4d} MiB: {stats.bytes / 1e6:.1f} MB, {stats.tensors} tensors, "
                  f"{stats.buckets} buckets (max {stats.max_bucket_bytes / 2**20:.1f} MiB); best {best:.3f}s "
                  f"= {stats.bytes / 1e9 / best:.2f} GB/s, median {med:.3f}s = {stats.bytes / 1e9 / med:.2f} GB/s; "
                  f"peak extra RSS {peak_extra / 2**20:.1f} MiB", flush=True)
            results.append((mib, stats.bytes / 1e9 / best, stats.bytes / 1e9 / med))

    if rank0:
        cbest, cmed = min(copy_times), statistics.median(copy_times)
        print(f"plain copy: {n_bytes / 1e6:.1f} MB, {len(src)} tensors; best {cbest:.3f}s = "
              f"{n_bytes / 1e9 / cbest:.2f} GB/s, median {cmed:.3f}s = {n_bytes / 1e9 / cmed:.2f} GB/s", flush=True)
        for mib, gbest, gmed in results:
            print(f"ratio sync/plain copy, bucket {mib} MiB: best {gbest / (n_bytes / 1e9 / cbest):.2f}, "
                  f"median {gmed / (n_bytes / 1e9 / cmed):.2f}", flush=True)
    dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
