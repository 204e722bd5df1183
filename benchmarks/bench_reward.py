"""Reward throughput: answers/s of the math-verify process pool vs a single-process loop, same answers, same run.

    python benchmarks/bench_reward.py [--n 2000] [--workers 2] [--seed 0]

The answers are distinct (so math-verify's parse caches do not flatter either side) and mixed like real rollouts:
integers, fractions written as `\\frac`, `a/b` or decimals, intervals, sets, some wrong, some unboxed.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefix_rft_megatron.reward import RewardConfig, RewardScorer, score_one  # noqa: E402


def make_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        a, b = rng.randint(1, 999), rng.randint(2, 97)
        wrong = rng.random() < 0.4
        kind = i % 6
        if kind == 0:
            gold, pred = str(a), str(a + 1 if wrong else a)
        elif kind == 1:
            gold, pred = f"{a}/{b}", f"\\frac{{{a + wrong}}}{{{b}}}"
        elif kind == 2:
            gold, pred = f"\\frac{{{a}}}{{4}}", f"{(a + wrong) / 4}"
        elif kind == 3:
            gold, pred = f"({a},{a + b}]", f"({a},{a + b}{')' if wrong else ']'}"
        elif kind == 4:
            gold, pred = f"\\{{{a},{b}\\}}", f"\\{{{b},{a + wrong}\\}}"
        else:
            gold, pred = str(-a), f"the answer is ${-a - wrong}$"
            pairs.append((f"Adding the terms step by step gives {pred}.", gold))
            continue
        pairs.append((f"Step by step we find the result. So the answer is $\\boxed{{{pred}}}$.", gold))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pairs = make_pairs(args.n, args.seed)
    responses, golds = [p[0] for p in pairs], [p[1] for p in pairs]
    cfg = RewardConfig(num_workers=args.workers)

    t0 = time.perf_counter()
    serial = [score_one(r, g, cfg) for r, g in zip(responses, golds)]
    t_serial = time.perf_counter() - t0

    t0 = time.perf_counter()
    scorer = RewardScorer(cfg)
    t_start = time.perf_counter() - t0
    scorer.score(responses[:8], golds[:8])  # wait until every worker is ready
    t0 = time.perf_counter()
    pooled = scorer.score(responses, golds)
    t_pool = time.perf_counter() - t0
    scorer.close()

    assert [r.reward for r in pooled] == [r.reward for r in serial], "pool and serial disagree"
    acc = sum(r.correct for r in serial) / len(serial)
    print(f"answers: {args.n} distinct, {acc:.1%} correct, cpu cores: {os.cpu_count()}")
    print(f"single-process loop : {args.n / t_serial:8.1f} answers/s  ({t_serial:.2f} s)")
    print(f"pool, {args.workers} workers     : {args.n / t_pool:8.1f} answers/s  ({t_pool:.2f} s; "
          f"pool start {t_start:.2f} s)")
    print(f"speed-up            : {t_serial / t_pool:8.2f}x")


if __name__ == "__main__":
    main()
