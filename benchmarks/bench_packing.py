"""Training compute with a realistic spread of sequence lengths: padded vs token-budget vs packed micro-batches.

    python benchmarks/bench_packing.py [--sequences 64] [--mean-tokens 128] [--sigma 0.9] [--runs 3] [--reps 3]

One step batch of --sequences rollouts whose response lengths are lognormal (longest >= 4x the mean, checked), at a
fixed number of real tokens; the trainer's own stages on it (`Trainer._share_step`, `step_tensors`, `recompute`, the
entropy mask, `accumulate_grads` and the optimizer step: the recompute pass + one update), in four layouts:
- padded:       train.packing=false, micro-batches of 8 sequences, every row padded to the step's longest;
- token_budget: train.packing=false, train.max_tokens_per_micro_batch=--budget (rows padded to their own longest);
- packed:       train.packing=true, the same budget in real tokens;
- no_padding:   the baseline: as many sequences of the same real tokens, all of the mean length (nothing to pad).
Each layout runs in a fresh process (--runs rounds, layouts alternating); per process the median of --reps timed
steps after one warm-up, and the peak memory above the set-up's: torch.cuda.max_memory_allocated on a GPU, else the
peak RSS (sampled every 2 ms, with glibc's mmap threshold lowered so freed tensors leave the RSS).
Prints a table; last line `packed/padded step time 0.NN, packed/no-padding 1.NN, packed/padded peak memory 0.NN`.
The model is a Qwen2-shaped policy (--hidden, --layers) over the bundled tokenizer, random weights, fp32.
Timings are of this machine, under whatever else runs on it: measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LAYOUTS = ("padded", "token_budget", "packed", "no_padding")
GROUP = 8
PROMPT_TOKENS = 16


def response_lengths(n: int, mean: int, sigma: float, seed: int = 0) -> list[int]:
    """Lognormal lengths with the given mean, rescaled so they sum to exactly n * mean."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(0.0, sigma) for _ in range(n)]
    scale = n * mean / sum(raw)
    lengths = [max(1, round(x * scale)) for x in raw]
    lengths[lengths.index(max(lengths))] += n * mean - sum(lengths)  # exact total
    return lengths


def layout_overrides(layout: str, budget: int) -> list[str]:
    return {"padded": ["train.packing=false"],
            "token_budget": ["train.packing=false", f"train.max_tokens_per_micro_batch={budget}"],
            "packed": ["train.packing=true", f"train.max_tokens_per_micro_batch={budget}"],
            "no_padding": ["train.packing=false"]}[layout]


class PeakRSS:
    """Peak resident memory of this process while active, sampled by a thread."""

    def __init__(self, interval_s: float = 0.002):
        import psutil

        self.proc, self.interval, self.peak, self._stop = psutil.Process(), interval_s, 0, threading.Event()

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def worker(args) -> dict:
    """One layout in this process: build the trainer, time the step, measure its peak memory."""
    import torch

    from prefix_rft_megatron.config import load_config
    from prefix_rft_megatron.rollout.types import Rollout, RolloutKind
    from prefix_rft_megatron.train.loop import Trainer
    from prefix_rft_megatron.train.optim import optimizer_step

    torch.set_num_threads(args.threads)
    n = args.sequences
    lengths = response_lengths(n, args.mean_tokens, args.sigma) if args.layout != "no_padding" \
        else [args.mean_tokens] * n
    cfg = load_config([], [
        f"model.hf_path={args.policy}", f"logging.output_dir={args.out}/{args.layout}", "eval.benchmarks=[]",
        f"train.prompts_per_step={n // GROUP}", f"train.mini_batch_prompts={n // GROUP}", "train.micro_batch_size=8",
        f"rollout.max_new_tokens={max(lengths)}", f"algorithm.loss.max_response_tokens={max(lengths)}",
        "logging.tensorboard=false", "logging.progress=false", "checkpoint.export_hf_at_end=false",
        "train.recompute=always", *layout_overrides(args.layout, args.budget)])
    trainer = Trainer(cfg)
    rng = random.Random(1)
    vocab = trainer.arch.vocab_size
    rollouts = []
    for i, length in enumerate(lengths):
        j, k = divmod(i, GROUP)
        prefixed = k >= GROUP - 2
        prefix = [rng.randrange(3, vocab) for _ in range(min(length // 2, 64))] if prefixed else []
        resp = [rng.randrange(3, vocab) for _ in range(length - len(prefix))]
        r = Rollout([rng.randrange(3, vocab) for _ in range(PROMPT_TOKENS)], prefix, resp, [-1.0] * len(resp), "stop",
                    j, k, RolloutKind.PREFIXED if prefixed else RolloutKind.ON_POLICY, index=i)
        r.reward = float(rng.random() < 0.5)
        rollouts.append(r)
    cuda = torch.cuda.is_available()

    def step():
        share = trainer._share_step(rollouts)
        batch, advantages, plans = trainer.step_tensors(share)
        old, entropy = trainer.recompute(batch, plans)
        advantages, keep = trainer.prefix_mask(batch, plans, advantages, entropy, step=0)
        trainer.accumulate_grads(batch, plans[0], advantages, old, keep)
        optimizer_step(trainer.optimizer, trainer.scheduler)
        if cuda:
            torch.cuda.synchronize()
        return batch, plans

    batch, plans = step()  # warm-up
    times, peaks = [], []
    for _ in range(args.reps):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        peaks.append(torch.cuda.max_memory_allocated() - base if cuda else rss.peak - rss.base)
    positions = sum(math.prod(mb.shape) for plan in plans for mb in plan)
    trainer.close()
    return {"layout": args.layout, "step_s": statistics.median(times), "peak_bytes": max(peaks),
            "real_tokens": int(batch.lengths.sum()), "positions": positions,
            "micro_batches": sum(len(p) for p in plans), "longest": max(lengths), "mean": sum(lengths) / n}


def build_policy(out: Path, hidden: int, layers: int, max_len: int) -> Path:
    from prefix_rft_megatron.data import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    tok = load_tokenizer("bundled:tokenizer")
    path = save_tiny_hf_model(out / "policy", family="qwen2", tie_word_embeddings=True, vocab_size=len(tok),
                              hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
                              num_attention_heads=max(hidden // 64, 1), num_key_value_heads=max(hidden // 128, 1),
                              max_position_embeddings=max_len, seed=0)
    tok.save_pretrained(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=64, help="rollouts in the step (groups of 8)")
    ap.add_argument("--mean-tokens", type=int, default=128, help="mean response tokens")
    ap.add_argument("--sigma", type=float, default=0.9, help="lognormal sigma of the response lengths")
    ap.add_argument("--budget", type=int, default=2048, help="train.max_tokens_per_micro_batch of the budget layouts")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="rounds of the four layouts, each a fresh process")
    ap.add_argument("--reps", type=int, default=3, help="timed steps per process after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)  # worker mode
    ap.add_argument("--policy", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.layout:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0

    lengths = response_lengths(args.sequences, args.mean_tokens, args.sigma)
    if max(lengths) < 4 * args.mean_tokens:
        raise SystemExit(f"error: the longest response ({max(lengths)}) is < 4x the mean ({args.mean_tokens}); "
                         "raise --sigma")
    tmp = tempfile.TemporaryDirectory() if args.out is None else None
    out = Path(tmp.name) if tmp else args.out
    out.mkdir(parents=True, exist_ok=True)
    policy = build_policy(out, args.hidden, args.layers, PROMPT_TOKENS + max(lengths) + 64)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore")
    results: dict[str, list[dict]] = {k: [] for k in LAYOUTS}
    print(f"step batch: {args.sequences} sequences, responses mean {args.mean_tokens} / longest {max(lengths)} "
          f"tokens (lognormal sigma {args.sigma}), prompts {PROMPT_TOKENS}; budget {args.budget} tokens; "
          f"policy hidden {args.hidden} x {args.layers} layers, fp32, {args.threads} threads", flush=True)
    for run in range(args.runs):
        for layout in (LAYOUTS if run % 2 == 0 else tuple(reversed(LAYOUTS))):
            cmd = [sys.executable, __file__, "--layout", layout, "--policy", str(policy), "--out", str(out / f"r{run}"),
                   *[f"--{k.replace('_', '-')}={getattr(args, k)}" for k in
                     ("sequences", "mean_tokens", "sigma", "budget", "reps", "threads")]]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                raise SystemExit(f"error: the {layout} worker failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT "):])
            results[layout].append(r)
            print(f"  run {run + 1}/{args.runs} {layout:13s} step {r['step_s']:.2f} s, peak "
                  f"{r['peak_bytes'] / 2**20:.0f} MiB", flush=True)
    med = {k: v[0] | {m: statistics.median(r[m] for r in v) for m in ("step_s", "peak_bytes")}
           for k, v in results.items()}
    print(f"{'layout':14s}{'step s':>9s}{'peak MiB':>10s}{'positions':>11s}{'real tokens':>13s}{'micro-batches':>15s}")
    for k in LAYOUTS:
        m = med[k]
        print(f"{k:14s}{m['step_s']:9.2f}{m['peak_bytes'] / 2**20:10.0f}{m['positions']:11d}{m['real_tokens']:13d}"
              f"{m['micro_batches']:15d}")
    p, d, n = med["packed"], med["padded"], med["no_padding"]
    print(f"packed/padded step time {p['step_s'] / d['step_s']:.2f}, packed/no-padding {p['step_s'] / n['step_s']:.2f}, "
          f"packed/padded peak memory {p['peak_bytes'] / d['peak_bytes']:.2f}")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
