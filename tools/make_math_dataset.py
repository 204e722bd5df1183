"""Write the generated arithmetic text the bundled tokenizer is trained on (see
`prefix_rft_megatron/data/synthetic_math.py` for its distribution). Not shipped: `tools/build_tokenizer.py` writes it
to a temporary directory; the demo's task is `assets/math_chain` (`python -m prefix_rft_megatron.demo --make-data`).

    python tools/make_math_dataset.py [--out outputs/math] [--seed 1234]

Deterministic: the same seed and sizes give byte-identical files. Splits are disjoint by problem text.

  train.jsonl       RL/SFT training split, {"id", "kind", "problem", "solution", "answer"} (OpenR1-Math field names)
  eval.jsonl        held-out split, same layout
  pretrain.jsonl    more worked solutions, disjoint from both, for the brief SFT that makes the demo's weak base model
  bench/arith_id.jsonl     {"problem", "answer"}: held-out problems from the training distribution
  bench/arith_ood.jsonl    {"problem", "answer"}: 3-digit operands (out of distribution)
  bench/fractions.jsonl    {"problem", "answer"}: equations with fractional solutions (answers `\\frac{p}{q}`)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefix_rft_megatron.data.synthetic_math import Problem, generate  # noqa: E402

DEFAULT_OUT = Path("outputs/math")


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{path}: {len(rows)} rows, {path.stat().st_size / 1024:.0f} KiB")


def _full(split: str, problems: list[Problem]) -> list[dict]:
    return [{"id": f"{split}-{i:05d}", "kind": p.kind, "problem": p.problem, "solution": p.solution,
             "answer": p.answer} for i, p in enumerate(problems)]


def _bench(problems: list[Problem]) -> list[dict]:
    return [{"problem": p.problem, "answer": p.answer} for p in problems]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--pretrain", type=int, default=2000)
    ap.add_argument("--bench", type=int, default=100)
    args = ap.parse_args(argv)

    # One draw for all in-distribution splits, then cut: disjointness by construction.
    n_id = args.train + args.eval + args.pretrain + args.bench
    pool = generate(n_id, seed=args.seed)
    train, pool = pool[: args.train], pool[args.train :]
    held, pool = pool[: args.eval], pool[args.eval :]
    pre, bench_id = pool[: args.pretrain], pool[args.pretrain :]
    seen = {p.problem for p in train + held + pre + bench_id}
    ood = generate(args.bench, seed=args.seed + 1, mix={"add": 1, "sub": 1, "mul_add": 1, "word": 1}, digits=3,
                   exclude=seen)
    frac = generate(args.bench // 2, seed=args.seed + 2, mix={"linear_frac": 1})

    _write(args.out / "train.jsonl", _full("train", train))
    _write(args.out / "eval.jsonl", _full("eval", held))
    _write(args.out / "pretrain.jsonl", _full("pretrain", pre))
    _write(args.out / "bench" / "arith_id.jsonl", _bench(bench_id))
    _write(args.out / "bench" / "arith_ood.jsonl", _bench(ood))
    _write(args.out / "bench" / "fractions.jsonl", _bench(frac))


if __name__ == "__main__":
    main()
