"""Per-token log-prob + entropy, forward + backward: the vocab-parallel autograd Function vs the naive way.

    python benchmarks/bench_token_stats.py [--tokens 1024] [--vocab 152064] [--dtype float32] [--repeats 3]

naive: z = logits / T; logp_all = log_softmax(z); logp = gather(logp_all); H = -(exp(logp_all) * logp_all).sum(-1),
backward through torch autograd. vocab-parallel: `vocab_parallel_token_stats` at TP=1 (same math the TP ranks run
on their slice, without the all-reduces). Both get the same logits, targets and output weights.

What is measured, per variant, each in its own fresh process (so one variant's peak cannot hide in the other's):
- time: median wall-clock of `--repeats` forward+backward runs after one warm-up run.
- memory: the peak above the baseline taken once the inputs (logits, their grad buffer, targets) exist.
  CUDA: torch.cuda.max_memory_allocated() - baseline allocated. CPU: the process's peak resident set
  (getrusage ru_maxrss, which the OS keeps) minus the RSS at the baseline. CPU figures therefore include allocator
  slack and count pages actually touched; they are upper bounds of what the computation needed at once.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

TEMPERATURE = 0.9


def _naive(logits: torch.Tensor, target: torch.Tensor):
    logp_all = torch.log_softmax(logits.float() / TEMPERATURE, dim=-1)
    logp = logp_all.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _vocab_parallel(logits: torch.Tensor, target: torch.Tensor):
    from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats

    return vocab_parallel_token_stats(logits, target, TEMPERATURE)


CHECK_ROWS = 8


def _inputs_head(tokens: int, vocab: int):
    """Targets and the first CHECK_ROWS rows of logits (the parent rebuilds them for the float64 check)."""
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, vocab, (tokens,), generator=g)
    return target, 3 * torch.randn(min(CHECK_ROWS, tokens), vocab, generator=g)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _measure(variant: str, tokens: int, vocab: int, dtype: str, repeats: int, device: str, queue) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    fn = {"naive": _naive, "vocab_parallel": _vocab_parallel}[variant]
    if variant == "vocab_parallel":
        _vocab_parallel(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))  # import outside the measurement
    # Drawn on the CPU (same numbers on any device, and the parent can rebuild the first rows), then moved.
    target, first_rows = _inputs_head(tokens, vocab)
    target = target.to(device)
    g = torch.Generator().manual_seed(1)
    logits = torch.empty(tokens, vocab, dtype=getattr(torch, dtype), device=device)
    logits[: first_rows.size(0)] = first_rows.to(device)
    for a in range(first_rows.size(0), tokens, 256):  # fill in chunks: no full-size temporary before the baseline
        logits[a:a + 256] = (3 * torch.randn(min(256, tokens - a), vocab, generator=g)).to(device)
    logits.requires_grad_()
    logits.grad = torch.zeros_like(logits)  # the grad buffer exists in both variants: part of the baseline
    w_lp = torch.randn(tokens, generator=g).to(device)
    w_h = torch.randn(tokens, generator=g).to(device)

    def step():
        lp, h = fn(logits, target)
        (lp * w_lp + h * w_h).sum().backward()
        return lp.detach(), h.detach()

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
        if _peak_rss_bytes() > base + (64 << 20):
            print(f"warning: {variant}: peak RSS before the measurement is above the baseline", file=sys.stderr)
        base_peak = _peak_rss_bytes()
    lp, h = step()  # warm-up; also the run whose peak memory is recorded (same work as the timed ones)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _peak_rss_bytes() - base if _peak_rss_bytes() > base_peak else 0
    times = []
    for _ in range(repeats):
        logits.grad.zero_()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    logits.grad.zero_()
    step()
    # numpy, not tensors: torch would share tensors through file descriptors that die with this process
    queue.put(dict(time=statistics.median(times), peak=peak, logp=lp.cpu().numpy(), entropy=h.cpu().numpy(),
                   grad=logits.grad[:CHECK_ROWS].float().cpu().numpy()))


def _run(variant: str, args, device: str) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_measure, args=(variant, args.tokens, args.vocab, args.dtype, args.repeats, device, queue)
    )
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=152064, help="152064 = Qwen2 (padded) vocabulary")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gib = 1 << 30
    one_copy = args.tokens * args.vocab * 4 / gib
    print(f"device={device} threads={os.environ.get('OMP_NUM_THREADS', os.cpu_count())} tokens={args.tokens} "
          f"vocab={args.vocab} logits dtype={args.dtype}; one fp32 [tokens, vocab] tensor = {one_copy:.2f} GiB")
    naive = _run("naive", args, device)
    ours = _run("vocab_parallel", args, device)
    what = "peak RSS above baseline" if device == "cpu" else "peak allocated above baseline"
    print(f"{'':16}{'fwd+bwd time (s)':>18}{what:>32}")
    for name, r in (("naive", naive), ("vocab_parallel", ours)):
        print(f"{name:16}{r['time']:>18.3f}{r['peak'] / gib:>26.2f} GiB  ({r['peak'] / gib / one_copy:.1f} copies)")
    print(f"ratio naive / vocab_parallel: time {naive['time'] / ours['time']:.2f}x, "
          f"peak memory {naive['peak'] / max(ours['peak'], 1):.2f}x")

    # Accuracy of both against float64 autograd on the first rows (same inputs as in the measured runs).
    target, rows = _inputs_head(args.tokens, args.vocab)
    rows = rows.to(getattr(torch, args.dtype)).double().requires_grad_()
    n = rows.size(0)
    logp_all = torch.log_softmax(rows / TEMPERATURE, dim=-1)
    lp64 = logp_all.gather(-1, target[:n].unsqueeze(-1)).squeeze(-1)
    h64 = -(logp_all.exp() * logp_all).sum(-1)
    # Values are checked against float64; gradients only between the two variants (both fp32).
    for name, r in (("naive", naive), ("vocab_parallel", ours)):
        err_lp = abs(r["logp"][:n] - lp64.detach().numpy()).max()
        err_h = abs(r["entropy"][:n] - h64.detach().numpy()).max()
        print(f"{name:16} max |error| vs float64 on {n} rows: logp {err_lp:.2e}, entropy {err_h:.2e}")
    print(f"max |grad difference| naive vs vocab_parallel, {n} rows: {abs(naive['grad'] - ours['grad']).max():.2e}")

if __name__ == "__main__":
    main()
